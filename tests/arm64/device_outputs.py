"""What the device-side translator gives on one machine, for comparing machines:

    python tests/arm64/device_outputs.py BUNDLE INPUTS.json > OUTPUTS.json

INPUTS.json is `{"texts": [...]}`. For each precision (float32, int8), engine (graph:
translator.onnx; steps: the numpy search over the step graphs) and setting (greedy; the
bundle's beam with its whole n-best list), the n-best lists of every text as
`[token_ids, score, finished]`, one thread per session. It needs only the device side
(numpy, onnxruntime), so it runs the same in an ARM64 sysroot under QEMU as on x86-64;
`platform` and `family` (`serving.cpu`) say which CPU ran it.
"""

from __future__ import annotations

import json
import os
import platform
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from serving.translator import Translator  # noqa: E402


def outputs(bundle: str, texts: list[str]) -> dict:
    import onnxruntime

    from serving.cpu import cpu_family

    result = {
        "platform": platform.machine(),
        "family": cpu_family(),
        "onnxruntime": onnxruntime.__version__,
        "runs": {},
    }
    for precision in ("float32", "int8"):
        for engine in ("graph", "steps"):
            translator = Translator.from_bundle(bundle, num_threads=1, int8=precision == "int8", engine=engine)
            beam = translator.decode["beam_size"]
            for beam_size, n_best in ((1, 1), (beam, beam)):
                found = translator.translate_ids(
                    [translator.source_vocabulary.encode(text) for text in texts], beam_size=beam_size, n_best=n_best
                )
                result["runs"][f"{precision}/{engine}/beam{beam_size}"] = [
                    [[list(map(int, h.token_ids)), float(h.score), bool(h.finished)] for h in hypotheses]
                    for hypotheses in found
                ]
    return result


def main(argv: list[str]) -> int:
    import warnings

    bundle, inputs = argv
    with open(inputs, encoding="utf-8") as handle:
        texts = json.load(handle)["texts"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # over-long lines are cut, as the translator says
        json.dump(outputs(bundle, texts), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
