"""G2P accuracy and speed together, against Phonetisaurus, in one run.

    python bench/g2p.py --runs runs/g2p_small,runs/g2p_best

Phonetisaurus (PyPI `phonetisaurus`, a WFST joint-sequence model, in its own virtual
environment `bench/.phonetisaurus-venv`, created on first use) is trained on the first
run's training split and decodes the same test words as our bundles (`RUN.bundle`, from
`s2s-export RUN --out RUN.bundle --quantize int8`; the table names the checkpoint each was
exported from). For every bundle: PER, WER and words/s
for each engine, precision (float32, INT8), beam (1, 5) and thread count (1, 2); for
Phonetisaurus: its training time, PER, WER and words/s on one core (it is single-threaded;
pinned with `taskset` where there is one). Words/s is the median of `--repeats` timed
decodes of all the words. One PNG: WER against words/s.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, git_commit, machine, table, write_result  # noqa: E402

PHONETISAURUS = "phonetisaurus==0.3.0"


def read_pairs(path: str) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8") as handle:
        return [tuple(line.rstrip("\n").split("\t", 1)) for line in handle if line.strip()]


def _venv(path: str) -> str:
    """The Phonetisaurus command, installing it into `path` first if it is not there."""
    command = os.path.join(path, "bin", "phonetisaurus")
    if not os.path.exists(command):
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
        subprocess.run([os.path.join(path, "bin", "pip"), "install", "--quiet", PHONETISAURUS], check=True)
    return command


def phonetisaurus(command: str, train: list[tuple[str, str]], words: list[str], work: str, repeats: int) -> dict:
    """Trains on `train` and decodes `words`; returns the hypotheses and the timings."""
    os.makedirs(work, exist_ok=True)
    lexicon, model = os.path.join(work, "train.lexicon"), os.path.join(work, "g2p.fst")
    with open(lexicon, "w", encoding="utf-8") as handle:
        handle.writelines(f"{word}\t{phones}\n" for word, phones in train)
    start = time.perf_counter()
    subprocess.run([command, "train", "--model", model, lexicon], check=True, capture_output=True)
    train_seconds = time.perf_counter() - start
    # One core of those this process may use, so a bench pinned with taskset stays there.
    pin = ["taskset", "-c", str(min(os.sched_getaffinity(0)))] if shutil.which("taskset") else []
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run(
            [*pin, command, "predict", "--model", model], input="\n".join(words) + "\n", capture_output=True, text=True
        )
        times.append(time.perf_counter() - start)
        if result.returncode:
            raise RuntimeError(f"phonetisaurus predict failed: {result.stderr[-2000:]}")
    seconds = statistics.median(times)
    best = {}
    for line in result.stdout.splitlines():
        word, _, phones = line.partition(" ")
        best.setdefault(word, phones.strip())  # the first line of a word is its best
    return {"hypotheses": [best.get(w, "") for w in words], "train_seconds": train_seconds, "seconds": seconds}


def ours(bundle: str, words: list[str], engine: str, int8: bool, beam: int, threads: int, repeats: int) -> dict:
    from serving.translator import Translator

    translator = Translator.from_bundle(bundle, num_threads=threads, int8=int8, engine=engine)
    translator.translate_best(words[:64], beam_size=beam)  # warm-up: sessions, first calls
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        hypotheses = translator.translate_best(words, beam_size=beam, batch_size=64)
        times.append(time.perf_counter() - start)
    return {"hypotheses": hypotheses, "seconds": statistics.median(times)}


def _plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    presets = list(dict.fromkeys(r["system"] for r in rows if r["system"] != "Phonetisaurus"))
    beams = sorted({r["beam"] for r in rows if r["system"] != "Phonetisaurus"})
    for index, preset in enumerate(presets):
        for marker, beam in zip("os^Dv", beams):
            mine = [r for r in rows if r["system"] == preset and r["beam"] == beam]
            axis.scatter(
                [r["words/s"] for r in mine],
                [r["wer"] for r in mine],
                color=f"C{index}",
                marker=marker,
                label=f"{preset}, beam {beam}",
            )
    for row in rows:
        if row["system"] == "Phonetisaurus":
            axis.scatter([row["words/s"]], [row["wer"]], color="black", marker="*", s=160, label="Phonetisaurus")
    axis.set_xscale("log")
    axis.set_xlabel("words/s (log scale; float32 and INT8, 1 and 2 threads, both engines)")
    axis.set_ylabel("test WER (%)")
    axis.set_title("G2P: accuracy against speed")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="comma-separated G2P run directories, each with RUN.bundle")
    parser.add_argument("--beams", default="1,5")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--engines", default="graph,steps")
    parser.add_argument("--limit", type=int, default=0, help="the first N test words only (0: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed decodes per setting; words/s from their median")
    parser.add_argument("--phonetisaurus-venv", default=os.path.join(ROOT, "bench", ".phonetisaurus-venv"))
    parser.add_argument("--out", default=None)
    parser.add_argument("--png", default=os.path.join(ROOT, "docs", "g2p_speed_accuracy.png"))
    args = parser.parse_args(argv)

    from keras_s2s.scores import g2p_scores

    runs = [r for r in args.runs.split(",") if r]
    test = read_pairs(os.path.join(runs[0], "data", "test.tsv"))
    for run in runs[1:]:
        if read_pairs(os.path.join(run, "data", "test.tsv")) != test:
            raise SystemExit(f"{run}: its test split differs from {runs[0]}'s")
    references = collections.defaultdict(list)
    for word, phones in test:
        references[word].append(phones)
    words = list(references)[: args.limit or None]

    def scored(system, hypotheses, seconds, **settings):
        scores = g2p_scores(hypotheses, [references[w] for w in words])
        row = {
            "system": system,
            **settings,
            "per": scores["per"],
            "wer": scores["wer"],
            "words/s": len(words) / seconds,
        }
        print(row, file=sys.stderr)
        return row

    rows = []
    work = os.path.join(ROOT, "bench", ".cache", "phonetisaurus")
    baseline = phonetisaurus(
        _venv(args.phonetisaurus_venv),
        read_pairs(os.path.join(runs[0], "data", "train.tsv")),
        words,
        work,
        args.repeats,
    )
    rows.append(
        scored(
            "Phonetisaurus",
            baseline["hypotheses"],
            baseline["seconds"],
            checkpoint="",
            engine="WFST",
            precision="",
            beam="",
            threads=1,
        )
    )
    for run in runs:
        bundle = run.rstrip("/") + ".bundle"
        with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as f:
            checkpoint = json.load(f)["checkpoint"]
        for engine in args.engines.split(","):
            for int8 in (False, True):
                for beam in map(int, args.beams.split(",")):
                    for threads in map(int, args.threads.split(",")):
                        result = ours(bundle, words, engine, int8, beam, threads, args.repeats)
                        precision = "int8" if int8 else "float32"
                        rows.append(
                            scored(
                                os.path.basename(run.rstrip("/")),
                                result["hypotheses"],
                                result["seconds"],
                                checkpoint=checkpoint,
                                engine=engine,
                                precision=precision,
                                beam=beam,
                                threads=threads,
                            )
                        )
    for row in rows:
        row["vs Phonetisaurus words/s"] = row["words/s"] / rows[0]["words/s"]
    columns = [
        "system",
        "checkpoint",
        "engine",
        "precision",
        "beam",
        "threads",
        "per",
        "wer",
        "words/s",
        "vs Phonetisaurus words/s",
    ]
    print(table(rows, columns))
    print(f"\nPhonetisaurus: trained in {baseline['train_seconds'] / 60:.1f} min on {runs[0]}'s training split")
    _plot(rows, args.png)
    payload = {
        "machine": machine(),
        "commit": git_commit(),
        "words": len(words),
        "repeats": args.repeats,
        "phonetisaurus": {"package": PHONETISAURUS, "train_seconds": baseline["train_seconds"]},
        "rows": rows,
    }
    print("wrote", write_result("g2p", payload, args.out), args.png, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
