"""Cold start, peak memory, install size and bundle size of the device translator.

    python bench/footprint.py --bundle runs/bible_small.bundle --run-dir runs/bible_small

Compares, each in a new process translating one sentence (beam 5):
- `s2s-translate` (onnxruntime, float32 and INT8, the graph and the steps engine) in a
  virtual environment with only `serving/requirements.txt` (created under
  `bench/.serving-venv` on first use);
- `s2s decode`, which loads the Keras model with TensorFlow.
Cold start is the wall time from process start to the first translation written; peak RSS
is the process's maximum resident set (`wait4`). Medians over `--repeats` runs.
Install size sums the files of each requirement set's packages (with dependencies).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import venv

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, git_commit, machine, median, table, write_result  # noqa: E402

SENTENCE = "En el principio creó Dios los cielos y la tierra.\n"


def serving_python(path: str) -> str:
    """A venv with only serving/requirements.txt; created once."""
    python = os.path.join(path, "bin", "python")
    if not os.path.exists(python):
        print(f"creating {path} with serving/requirements.txt", file=sys.stderr)
        venv.create(path, with_pip=True)
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "-r", os.path.join(ROOT, "serving", "requirements.txt")],
            check=True,
        )
    return python


def run_once(command: list[str], env: dict, text: str = SENTENCE) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and stdout of one process."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT
    )
    process.stdin.write(text.encode("utf-8"))
    process.stdin.close()
    first = process.stdout.readline()  # the first translation is out
    seconds = time.perf_counter() - start
    output = (first + process.stdout.read()).decode("utf-8", "replace")
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}")
    return seconds, usage.ru_maxrss / 1024, output.strip()


def requirement_names(path: str) -> list[str]:
    names = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                names.append(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0])
    return names


def install_size(python: str, requirements: str) -> dict:
    """Bytes of the installed files of `requirements` and their dependencies, as seen by `python`."""
    script = r"""
import json, re, sys
from importlib import metadata
def canon(n): return re.sub(r"[-_.]+", "-", n).lower()
todo, seen, total = [canon(n) for n in json.loads(sys.argv[1])], set(), 0
while todo:
    name = todo.pop()
    if name in seen: continue
    seen.add(name)
    try: dist = metadata.distribution(name)
    except metadata.PackageNotFoundError: continue
    for f in dist.files or []:
        try: total += f.locate().stat().st_size
        except OSError: pass
    for req in dist.requires or []:
        if "extra ==" in req: continue
        todo.append(canon(re.split(r"[<>=!~\[; (]", req, maxsplit=1)[0]))
print(json.dumps({"bytes": total, "packages": sorted(seen)}))
"""
    result = subprocess.run(
        [python, "-c", script, json.dumps(requirement_names(requirements))], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--run-dir", required=True, help="the run the bundle was exported from")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--serving-venv", default=os.path.join(ROOT, "bench", ".serving-venv"))
    parser.add_argument(
        "--serving-python",
        default=None,
        help="use this python for the onnxruntime translator instead of --serving-venv",
    )
    parser.add_argument("--skip-tensorflow", action="store_true", help="only the onnxruntime translator")
    parser.add_argument("--out", default=None, help="JSON output (default bench/results/footprint.json)")
    args = parser.parse_args(argv)

    light = args.serving_python or serving_python(args.serving_venv)
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    translate = [light, "-m", "serving.cli", args.bundle, "--beam", "5"]
    variants = [
        ("s2s-translate (onnxruntime float32, graph engine)", translate + ["--engine", "graph"]),
        ("s2s-translate (onnxruntime INT8, graph engine)", translate + ["--engine", "graph", "--int8"]),
        ("s2s-translate (onnxruntime float32, steps engine)", translate + ["--engine", "steps"]),
        ("s2s-translate (onnxruntime INT8, steps engine)", translate + ["--engine", "steps", "--int8"]),
    ]
    if not args.skip_tensorflow:
        variants.append(
            (
                "s2s decode (Keras on TensorFlow)",
                [sys.executable, "-m", "keras_s2s.cli", "decode", args.run_dir, "--beam", "5"],
            )
        )
    rows, outputs = [], {}
    for name, command in variants:
        run_once(command, env)  # warm the file cache
        runs = [run_once(command, env) for _ in range(args.repeats)]
        outputs[name] = runs[0][2]
        rows.append(
            {
                "translator": name,
                "cold start s (median)": median([r[0] for r in runs]),
                "cold start s (min)": min(r[0] for r in runs),
                "peak RSS MiB (median)": median([r[1] for r in runs]),
            }
        )
        print(f"{name}: {rows[-1]}", file=sys.stderr)
    reference = rows[-1] if not args.skip_tensorflow else None
    for row in rows:
        if reference and row is not reference:
            row["cold start vs TF"] = row["cold start s (median)"] / reference["cold start s (median)"]
            row["RSS vs TF"] = row["peak RSS MiB (median)"] / reference["peak RSS MiB (median)"]

    sizes = [
        {
            "requirement set": "serving/requirements.txt",
            **install_size(light, os.path.join(ROOT, "serving", "requirements.txt")),
        },
        {"requirement set": "requirements.txt", **install_size(sys.executable, os.path.join(ROOT, "requirements.txt"))},
    ]
    for row in sizes:
        row["MiB"] = row["bytes"] / 2**20
        row["package count"] = len(row["packages"])
    with open(os.path.join(args.bundle, "manifest.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)
    bundle = []
    for variant, models in manifest["models"].items():
        size = sum(os.path.getsize(os.path.join(args.bundle, name)) for name in models.values())
        bundle.append({"bundle models": variant, "MiB": size / 2**20})

    print(
        table(
            rows,
            [
                "translator",
                "cold start s (median)",
                "cold start s (min)",
                "peak RSS MiB (median)",
                "cold start vs TF",
                "RSS vs TF",
            ],
        )
    )
    print()
    print(table(sizes, ["requirement set", "MiB", "package count"]))
    print()
    print(table(bundle, ["bundle models", "MiB"]))
    payload = {
        "machine": machine(),
        "commit": git_commit(),
        "bundle": args.bundle,
        "repeats": args.repeats,
        "translators": rows,
        "install": sizes,
        "bundle_sizes": bundle,
        "first_outputs": outputs,
    }
    print("wrote", write_result("footprint", payload, args.out), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
