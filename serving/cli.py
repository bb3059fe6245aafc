"""`s2s-translate BUNDLE`: one output line per input line, in order."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings

from serving import __version__
from serving.files import atomic_write


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s2s-translate", description="Translate with an exported bundle (onnxruntime)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("bundle", help="bundle directory written by s2s-export")
    parser.add_argument("-i", "--input", default=None, help="input file (default: stdin)")
    parser.add_argument("-o", "--output", default=None, help="output file (default: stdout)")
    parser.add_argument("--beam", type=int, default=None, help="beam size (1: greedy)")
    parser.add_argument("--n-best", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--int8", action="store_true", help="use the INT8 models")
    parser.add_argument(
        "--engine",
        choices=("graph", "steps"),
        default=None,
        help="graph: translator.onnx, the whole search in one onnxruntime call (the default "
        "where the bundle has it); steps: the numpy search over decoder_step.onnx",
    )
    parser.add_argument("--json", action="store_true", help="JSON lines with scores")
    parser.add_argument(
        "--providers",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda needs onnxruntime-gpu (installed instead of onnxruntime)",
    )
    parser.add_argument(
        "--ensemble",
        nargs="+",
        metavar="BUNDLE",
        default=[],
        help="more bundles with the same tokenizers, decoded with BUNDLE as one model "
        "(the mean of their log-probabilities)",
    )
    return parser


def decoded_lines(stream):
    """Yields `(line_number, text, had_invalid_utf8)` for each line of a byte stream.

    Only `\n` ends a line, and `\r\n` is one ending: a bare `\r`, U+2028 or NUL is a
    character of its line. Invalid UTF-8 is replaced by U+FFFD; a byte-order mark on line 1
    is dropped.
    """
    for number, raw in enumerate(stream, start=1):
        if raw.endswith(b"\n"):
            raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        try:
            text, bad = raw.decode("utf-8"), False
        except UnicodeDecodeError:
            text, bad = raw.decode("utf-8", errors="replace"), True
        if number == 1:
            text = text.removeprefix("\ufeff")
        yield number, text, bad


def _chunks(items, size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


MAX_WARNINGS = 10  # per kind; the rest are counted in a summary at the end


def _warn(message: str) -> None:
    print(f"s2s-translate: warning: {message}", file=sys.stderr)


class _Run:
    """Translates chunks of numbered lines; a line that fails gives no hypotheses."""

    def __init__(self, translator, options: dict):
        self.translator = translator
        self.options = options
        self.failed = 0
        self.truncated = 0

    def _translate(self, texts: list[str], first_line: int):
        from serving.translator import TruncationWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = self.translator.translate(texts, **self.options)
        for warning in caught:
            if isinstance(warning.message, TruncationWarning):
                w = warning.message
                self.truncated += 1
                if self.truncated <= MAX_WARNINGS:
                    _warn(f"line {first_line + w.index}: {w.length} tokens, truncated to {w.limit}")
            else:
                _warn(f"line {first_line}: {warning.message}")
        return results

    def chunk(self, numbered: list[tuple[int, str]]):
        texts = [text for _, text in numbered]
        try:
            return self._translate(texts, numbered[0][0])
        except Exception:  # Find the line at fault; translate the others.
            results = []
            for number, text in numbered:
                try:
                    results.extend(self._translate([text], number))
                except Exception as error:
                    self.failed += 1
                    _warn(f"line {number}: not translated ({type(error).__name__}: {error}); writing an empty line")
                    results.append([])
            return results


def _count_lines(path: str) -> int:
    count, last = 0, b"\n"
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from serving.translator import BundleError, EnsembleTranslator, Translator

    try:
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"] if args.providers == "cuda" else ["CPUExecutionProvider"]
        )
        if args.ensemble and args.engine == "graph":
            print("s2s-translate: error: --ensemble combines the members' steps: use --engine steps", file=sys.stderr)
            return 2
        engine = "steps" if args.ensemble else args.engine
        members = [
            Translator.from_bundle(bundle, providers=providers, num_threads=args.threads, int8=args.int8, engine=engine)
            for bundle in [args.bundle, *args.ensemble]
        ]
        translator = members[0] if len(members) == 1 else EnsembleTranslator(members)
    except BundleError as error:
        print(f"s2s-translate: error: {error}", file=sys.stderr)
        return 2
    try:
        source = open(args.input, "rb") if args.input else sys.stdin.buffer
    except OSError as error:
        print(f"s2s-translate: error: cannot read {args.input}: {error.strerror}", file=sys.stderr)
        return 2
    bar = None
    if args.input:
        from tqdm import tqdm

        bar = tqdm(total=_count_lines(args.input), unit="line", file=sys.stderr, desc="translating")
    run = _Run(translator, dict(beam_size=args.beam, n_best=args.n_best, batch_size=args.batch_size))
    invalid = 0
    with contextlib.ExitStack() as stack:
        if args.input:
            stack.enter_context(source)
        if bar:
            stack.enter_context(bar)
        # An interrupted run never leaves a partial file under the output's name.
        out = stack.enter_context(atomic_write(args.output)) if args.output else sys.stdout
        # Chunks keep memory flat on long inputs and let output flow on stdin.
        chunk_size = max(args.batch_size * 8, 256) if args.input else args.batch_size
        for chunk in _chunks(decoded_lines(source), chunk_size):
            for number, _, bad in chunk:
                if bad:
                    invalid += 1
                    if invalid <= MAX_WARNINGS:
                        _warn(f"line {number}: invalid UTF-8 replaced by U+FFFD")
            numbered = [(number, text) for number, text, _ in chunk]
            for hypotheses in run.chunk(numbered):
                if args.json:
                    out.write(
                        json.dumps([{"text": h.text, "score": h.score} for h in hypotheses], ensure_ascii=False) + "\n"
                    )
                else:
                    out.write((hypotheses[0].text.replace("\n", " ") if hypotheses else "") + "\n")
            out.flush()
            if bar:
                bar.update(len(chunk))
    if invalid:
        _warn(f"invalid UTF-8 replaced on {invalid} line(s)")
    if run.truncated:
        _warn(f"{run.truncated} line(s) longer than the model's limit were truncated")
    if run.failed:
        print(f"s2s-translate: error: {run.failed} line(s) not translated (empty lines written)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
