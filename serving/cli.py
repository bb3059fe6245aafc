"""`s2s-translate BUNDLE`: one output line per input line, in order."""

from __future__ import annotations

import argparse
import codecs
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2s-translate", description="Translate with an exported bundle (onnxruntime).")
    parser.add_argument("bundle", help="bundle directory written by s2s-export")
    parser.add_argument("-i", "--input", default=None, help="input file (default: stdin)")
    parser.add_argument("-o", "--output", default=None, help="output file (default: stdout)")
    parser.add_argument("--beam", type=int, default=None, help="beam size (1: greedy)")
    parser.add_argument("--n-best", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--int8", action="store_true", help="use the INT8 models")
    parser.add_argument("--json", action="store_true", help="JSON lines with scores")
    parser.add_argument("--providers", choices=("cpu", "cuda"), default="cpu",
                        help="cuda needs onnxruntime-gpu (installed instead of onnxruntime)")
    return parser


def _read_lines(stream) -> tuple[list[str], int]:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    lines, replaced = [], 0
    for raw in stream:
        text = decoder.decode(raw)
        replaced += "\ufffd" in text
        lines.append(text.rstrip("\n").rstrip("\r"))
    return lines, replaced


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from serving.translator import BundleError, Translator

    try:
        providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if args.providers == "cuda"
                     else ["CPUExecutionProvider"])
        translator = Translator.from_bundle(args.bundle, providers=providers, num_threads=args.threads,
                                            int8=args.int8)
    except BundleError as error:
        print(f"s2s-translate: error: {error}", file=sys.stderr)
        return 2
    if args.input:
        with open(args.input, "rb") as handle:
            lines, replaced = _read_lines(handle)
    else:
        lines, replaced = _read_lines(sys.stdin.buffer)
    if replaced:
        print(f"s2s-translate: warning: invalid UTF-8 replaced on {replaced} line(s)", file=sys.stderr)
    bar = None
    if args.input:
        from tqdm import tqdm

        bar = tqdm(total=len(lines), unit="line", file=sys.stderr, desc="translating")
    results = translator.translate(lines, beam_size=args.beam, n_best=args.n_best, batch_size=args.batch_size,
                                   progress=bar.update if bar else None)
    if bar:
        bar.close()
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for hypotheses in results:
            if args.json:
                out.write(json.dumps([{"text": h.text, "score": h.score} for h in hypotheses], ensure_ascii=False) + "\n")
            else:
                out.write(hypotheses[0].text.replace("\n", " ") + "\n")
    finally:
        if args.output:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
