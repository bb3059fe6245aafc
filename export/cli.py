"""`s2s-export RUN_DIR --out BUNDLE_DIR [--quantize int8] [--saved-model DIR]`."""

from __future__ import annotations

import argparse
import os
import sys

from keras_s2s.cli import configure_logging, missing_training_package
from serving import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s2s-export",
        description="Export a trained run to a checked ONNX bundle (and optionally a SavedModel).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("run_dir", help="a run directory written by `s2s train`")
    parser.add_argument("--out", required=True, help="bundle directory to write (replaced atomically)")
    parser.add_argument("--quantize", choices=("int8",), default=None, help="also write INT8 models")
    parser.add_argument("--saved-model", default=None, help="also write a SavedModel here")
    parser.add_argument("--gate-sentences", type=int, default=300, help="dev sentences for the quality gate")
    parser.add_argument(
        "--max-int8-loss", type=float, default=1.0, help="largest allowed INT8 loss in BLEU or PER points"
    )
    parser.add_argument(
        "--checkpoint",
        choices=("best", "last", "averaged"),
        default="best",
        help="the run's weights to export: lowest dev loss (default), last epoch, or the average of the last epochs",
    )
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's and the quantiser's own logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, command_line=argv is None)
    # Trace on the CPU: a graph traced with a GPU visible embeds CudnnRNNV3.
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    try:
        from export.bundle import ExportOptions, GateError, export_bundle, summary
        from export.onnx_export import ExportError
    except ImportError as error:
        message = missing_training_package(error, "s2s-export")
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 2

    options = ExportOptions(
        quantize=args.quantize,
        saved_model_dir=args.saved_model,
        gate_sentences=args.gate_sentences,
        max_int8_loss=args.max_int8_loss,
        checkpoint=args.checkpoint,
        verbose=args.verbose,
    )
    try:
        manifest = export_bundle(args.run_dir, args.out, options)
    except (GateError, ExportError, ValueError, FileNotFoundError) as error:
        print(f"s2s-export: error: {error}", file=sys.stderr)
        print(f"s2s-export: {args.out} was left as it was", file=sys.stderr)
        return 2
    print(summary(manifest, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
