"""ONNX Runtime Mobile: the one-file translators in ORT format, and the operator list a
custom minimal build takes.

`onnxruntime.tools.convert_onnx_models_to_ort` writes `translator.ort` (and the INT8 and
text translators' `.ort` files) with its fixed optimisations for ARM (no x86-only NCHWc
layouts), and `required_operators_and_types.config`: every operator of those graphs with
the types it runs on, for `build.sh --minimal_build --include_ops_by_config ...
--enable_reduced_operator_type_support`. The export gate then checks that each `.ort` file
gives its `.onnx` file's outputs (`compare_ort`).

Only onnxruntime is needed here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import pathlib
import shutil
import tempfile

from serving.files import atomic_path

OPERATORS_CONFIG = "required_operators_and_types.config"
CONVERSION = {"optimization_style": "Fixed", "target_platform": "arm", "type_reduction": True}


def ort_name(onnx_name: str) -> str:
    """`translator.int8.onnx` -> `translator.int8.ort`."""
    return onnx_name.removesuffix(".onnx") + ".ort"


def write_ort_translators(bundle_dir: str, names: list[str]) -> dict:
    """Converts the bundle's files `names` (ONNX) to ORT format beside them and writes the
    operator config of all of them together.

    Returns:
        `{"files": {onnx name: ort name}, "operators_config": name, "operators": count,
        "conversion": CONVERSION}`.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory(dir=bundle_dir) as work:
        inputs, outputs = pathlib.Path(work, "onnx"), pathlib.Path(work, "ort")
        inputs.mkdir()
        for name in names:
            os.link(os.path.join(bundle_dir, name), inputs / name)
        # The converter reports every file on stdout and its config through logging.
        with contextlib.redirect_stdout(io.StringIO()), _quiet("ort_format_model"):
            convert_onnx_models_to_ort(
                inputs,
                output_dir=outputs,
                optimization_styles=[OptimizationStyle.Fixed],
                target_platform=CONVERSION["target_platform"],
                enable_type_reduction=CONVERSION["type_reduction"],
            )
        for name in [ort_name(n) for n in names]:
            with atomic_path(os.path.join(bundle_dir, name)) as path:
                shutil.copyfile(outputs / name, path)
        # The config's header names the converted files by their temporary paths.
        lines = (outputs / OPERATORS_CONFIG).read_text(encoding="utf-8").splitlines()
        lines = [f"# - {os.path.basename(line[4:])}" if line.startswith("# - ") else line for line in lines]
        with atomic_path(os.path.join(bundle_dir, OPERATORS_CONFIG)) as path:
            pathlib.Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {
        "files": {name: ort_name(name) for name in names},
        "operators_config": OPERATORS_CONFIG,
        "operators": count_operators(os.path.join(bundle_dir, OPERATORS_CONFIG)),
        "conversion": dict(CONVERSION),
    }


@contextlib.contextmanager
def _quiet(logger_name: str):
    import logging

    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def count_operators(config_path: str) -> int:
    """The distinct operators (domain and name) a config lists (`domain;opset;op{types},op,...`
    per line; an operator appears once per opset version the graphs use)."""
    found = set()
    with open(config_path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#"):
                domain, _, operators = line.split(";", 2)
                depth, name = 0, ""
                for character in operators + ",":  # commas inside {type lists} separate nothing
                    depth += {"{": 1, "}": -1}.get(character, 0)
                    if character == "," and depth == 0:
                        found.add((domain, name.split("{", 1)[0]))
                        name = ""
                    else:
                        name += character
    return len(found)


def compare_ort(bundle_dir: str, onnx_name: str, sources, settings) -> list[dict]:
    """`translator*.ort` against its `.onnx` file on `sources` (id lists), per setting:
    `differences(...)` of the n-best lists (token ids, finished flags, scores)."""
    import functools

    from export.translator_export import differences, keyed
    from serving.batching import in_length_batches
    from serving.sessions import TranslatorGraphSession

    providers = ["CPUExecutionProvider"]
    graphs = [
        TranslatorGraphSession(os.path.join(bundle_dir, name), providers, 1)
        for name in (onnx_name, ort_name(onnx_name))
    ]
    report = []
    for setting in settings:
        expected, found = (
            in_length_batches(functools.partial(graph.search_batch, settings=setting), sources, 64) for graph in graphs
        )
        report.append({**dataclasses.asdict(setting), **differences(keyed(expected), keyed(found))})
    return report


def compare_ort_text(bundle_dir: str, onnx_name: str, texts, settings) -> list[dict]:
    """`translator.text.ort` against `translator.text.onnx` on `texts`, per setting."""
    import numpy as np

    from export.translator_export import differences
    from serving.sessions import open_session, search_feeds

    sessions = [
        open_session(os.path.join(bundle_dir, name), ["CPUExecutionProvider"], 1)
        for name in (onnx_name, ort_name(onnx_name))
    ]
    report = []
    for setting in settings:
        results = []
        for session in sessions:
            lists = []
            for start in range(0, len(texts), 64):
                feeds = {
                    "texts": np.array(texts[start : start + 64], dtype=object),
                    **search_feeds(**dataclasses.asdict(setting)),
                }
                translations, scores = session.run(["translations", "text_scores"], feeds)
                lists += [
                    [(str(t), float(s)) for t, s in zip(row_t, row_s) if np.isfinite(s)]
                    for row_t, row_s in zip(translations, scores)
                ]
            results.append(lists)
        report.append({**dataclasses.asdict(setting), **differences(*results)})
    return report
