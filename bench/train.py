"""Training speed on this machine: tokens per second with and without length bucketing.

    python bench/train.py --presets g2p_small,bible_small,paper

For each preset, the real training split (built once into `bench/.cache/`), the preset's
model, loss and optimizer, and `--steps` timed training steps after `--warmup` steps:
- source + target real tokens per second with bucketing (batches of similar length under
  the token budget) and without (shuffled batches padded to their longest sentence),
  and the padding share of each;
- the input pipeline alone (the same `tf.data` pipeline, no model): batches per second,
  against the batches per second training consumes.
`paper` is the paper's shape (4 x 1000, 1000-d embeddings, 32k vocabularies) fed with
`bible_small`'s data; on a CPU it is slow, so it runs fewer steps. `--gates` compares
`LSTM`'s float32 gates with Keras' all-bfloat16 step; `--precisions` the step in float32,
in bfloat16 and under `training.mixed_precision: auto` as it resolves on this machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, git_commit, machine, median, table, write_result  # noqa: E402

CACHE = os.path.join(ROOT, "bench", ".cache")


def _data(preset: str, quick: bool):
    from keras_s2s.config import load_preset
    from keras_s2s.training import prepare_data

    source = "bible_small" if preset == "paper" else preset
    config = load_preset(source)
    if quick:
        config = load_preset("tiny")
        source = "tiny"
    data = prepare_data(config, os.path.join(CACHE, f"data_{source}"))
    return config, data


def _model_config(preset: str, config, data, quick: bool):
    from keras_s2s.config import load_preset

    model = dataclasses.replace(
        config.model,
        source_vocabulary_size=data.source_tokenizer.vocabulary_size,
        target_vocabulary_size=data.target_tokenizer.vocabulary_size,
    )
    training = config.training
    if preset == "paper":
        paper = load_preset("paper")
        model = dataclasses.replace(paper.model, source_vocabulary_size=32000, target_vocabulary_size=32000)
        if quick:
            model = dataclasses.replace(
                model,
                num_layers=2,
                hidden_dim=64,
                embedding_dim=32,
                source_vocabulary_size=500,
                target_vocabulary_size=500,
            )
        training = dataclasses.replace(paper.training, token_budget=128 * 32, max_batch_size=128)
    return dataclasses.replace(config, model=model, training=training)


def _batches(config, data, bucketing: bool, count: int):
    from keras_s2s.data.pipeline import make_dataset

    dataset = make_dataset(
        *data.ids["train"],
        token_budget=config.training.token_budget,
        max_batch_size=config.training.max_batch_size,
        reverse_source=config.model.reverse_source,
        bucketing=bucketing,
        shuffle=True,
        seed=1,
    )
    return dataset, list(dataset.take(count).as_numpy_iterator())


def _pipeline_rate(dataset, count: int) -> float:
    iterator = iter(dataset)
    next(iterator)
    start = time.perf_counter()
    done = 0
    for _ in range(count):
        try:
            next(iterator)
        except StopIteration:
            iterator = iter(dataset)
            next(iterator)
        done += 1
    return done / (time.perf_counter() - start)


def _compiled_model(config):
    import keras

    from keras_s2s.losses import SequenceCrossEntropy
    from keras_s2s.models import build_seq2seq
    from keras_s2s.training import make_optimizer

    keras.utils.set_random_seed(0)
    model = build_seq2seq(config.model)
    model.compile(
        optimizer=make_optimizer(config, 1000),
        loss=SequenceCrossEntropy(),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def _set_precision(config) -> None:
    import keras

    from keras_s2s.training.precision import resolve

    mixed, _ = resolve(config.training.mixed_precision, gpus=0)
    keras.mixed_precision.set_global_policy("float32" if mixed == "none" else f"mixed_{mixed}")


def _take(config, data, bucketing: bool, count: int):
    dataset, batches = _batches(config, data, bucketing, count)
    if len(batches) < count:  # a short epoch: go round again
        batches = (batches * (count // len(batches) + 1))[:count]
    return dataset, batches


def measure(preset: str, bucketing: bool, warmup: int, steps: int, quick: bool) -> dict:
    import numpy as np

    config, data = _data(preset, quick)
    config = _model_config(preset, config, data, quick)
    _set_precision(config)
    model = _compiled_model(config)
    dataset, batches = _take(config, data, bucketing, warmup + steps)
    for inputs, targets, weights in batches[:warmup]:
        model.train_on_batch(inputs, targets, sample_weight=weights)
    times, real, padded = [], 0, 0
    for inputs, targets, weights in batches[warmup:]:
        start = time.perf_counter()
        model.train_on_batch(inputs, targets, sample_weight=weights)
        times.append(time.perf_counter() - start)
        source = inputs["source_ids"]
        real += int(np.count_nonzero(source)) + int(np.count_nonzero(targets))
        padded += source.size + targets.size
    seconds = sum(times)
    pipeline = _pipeline_rate(dataset, max(20, steps))
    return {
        "preset": preset,
        "batching": "length buckets" if bucketing else "padded to batch max",
        "tokens/s": real / seconds,
        "padding %": 100 * (1 - real / padded),
        "step ms (median)": 1000 * median(times),
        "sentences/batch": float(np.mean([b[0]["source_ids"].shape[0] for b in batches[warmup:]])),
        "pipeline batches/s": pipeline,
        "training batches/s": len(times) / seconds,
        "pipeline / training": pipeline / (len(times) / seconds),
    }


def measure_gates(preset: str, warmup: int, steps: int, quick: bool) -> list[dict]:
    """The preset's mixed-precision training step with `LSTM`'s float32 gates and with
    Keras' all-bfloat16 step, two models side by side on the same batches."""
    import numpy as np

    from keras_s2s.models.lstm import configure_lstms

    config, data = _data(preset, quick)
    config = _model_config(preset, config, data, quick)
    if config.training.mixed_precision in ("none", "auto"):  # the gates matter under mixed precision only
        config = dataclasses.replace(config, training=dataclasses.replace(config.training, mixed_precision="bfloat16"))
    _set_precision(config)
    variants = {"float32 gates and cell": True, "Keras (all bfloat16)": False}
    models = {name: _compiled_model(config) for name in variants}
    for name, model in models.items():
        configure_lstms(model, float32_gates=variants[name])  # read when a step is traced
    _, batches = _take(config, data, True, warmup + steps)
    times = {name: [] for name in variants}
    for index, (inputs, targets, weights) in enumerate(batches):
        # Alternate which goes first, so drift in the machine's speed hits both.
        for name in sorted(variants, reverse=bool(index % 2)):
            start = time.perf_counter()
            models[name].train_on_batch(inputs, targets, sample_weight=weights)
            if index >= warmup:
                times[name].append(time.perf_counter() - start)
    tokens = sum(int(np.count_nonzero(b[0]["source_ids"])) + int(np.count_nonzero(b[1])) for b in batches[warmup:])
    base = median(times["Keras (all bfloat16)"])
    return [
        {
            "preset": preset,
            "precision": config.training.mixed_precision,
            "LSTM step": name,
            "step ms (median)": 1000 * median(times[name]),
            "tokens/s": tokens / sum(times[name]),
            "speed-up (median step)": base / median(times[name]),
        }
        for name in variants
    ]


def measure_precisions(preset: str, warmup: int, steps: int, quick: bool) -> list[dict]:
    """The preset's training step in float32, in bfloat16, and under `auto` (as resolved on
    this machine), three models side by side on the same batches."""
    import keras
    import numpy as np

    from keras_s2s.training.precision import resolve

    config, data = _data(preset, quick)
    config = _model_config(preset, config, data, quick)
    auto, why = resolve("auto", gpus=0)
    variants = {"float32": "none", "bfloat16": "bfloat16", f"auto ({auto})": auto}
    models = {}
    for name, mixed in variants.items():
        keras.mixed_precision.set_global_policy("float32" if mixed == "none" else f"mixed_{mixed}")
        models[name] = _compiled_model(config)
    keras.mixed_precision.set_global_policy("float32")
    _, batches = _take(config, data, True, warmup + steps)
    times = {name: [] for name in variants}
    for index, (inputs, targets, weights) in enumerate(batches):
        order = list(variants)[index % len(variants) :] + list(variants)[: index % len(variants)]
        for name in order:  # a rotating order, so drift in the machine's speed hits all three
            start = time.perf_counter()
            models[name].train_on_batch(inputs, targets, sample_weight=weights)
            if index >= warmup:
                times[name].append(time.perf_counter() - start)
    tokens = sum(int(np.count_nonzero(b[0]["source_ids"])) + int(np.count_nonzero(b[1])) for b in batches[warmup:])
    fastest = min(median(times["float32"]), median(times["bfloat16"]))
    return [
        {
            "preset": preset,
            "precision": name,
            "step ms (median)": 1000 * median(times[name]),
            "tokens/s": tokens / sum(times[name]),
            "faster of float32, bfloat16 / this (median step)": fastest / median(times[name]),
            "auto chose": why,
        }
        for name in variants
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="g2p_small,bible_small,paper")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--paper-steps", type=int, default=4, help="timed steps of the slow paper shape")
    parser.add_argument(
        "--gates",
        default="g2p_best",
        help="presets whose mixed-precision step runs with float32 LSTM gates and without (empty: skip)",
    )
    parser.add_argument(
        "--precisions",
        default="g2p_best",
        help="presets whose step runs in float32, bfloat16 and under `auto` side by side (empty: skip)",
    )
    parser.add_argument("--quick", action="store_true", help="the tiny preset's data and a small shape (smoke test)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = []
    for preset in [p for p in args.presets.split(",") if p]:
        for bucketing in (True, False):
            paper = preset == "paper"
            row = measure(
                preset, bucketing, 2 if paper else args.warmup, args.paper_steps if paper else args.steps, args.quick
            )
            print(row, file=sys.stderr)
            rows.append(row)
    ratios = []
    for preset in dict.fromkeys(r["preset"] for r in rows):
        on, off = [r for r in rows if r["preset"] == preset]
        ratios.append(
            {
                "preset": preset,
                "buckets / padded tokens/s": on["tokens/s"] / off["tokens/s"],
                "padding % with buckets": on["padding %"],
                "padding % without": off["padding %"],
                "pipeline / training": on["pipeline / training"],
            }
        )
    gates = []
    for preset in [p for p in args.gates.split(",") if p]:
        gates += measure_gates(preset, args.warmup, args.steps, args.quick)
        print(gates[-2:], file=sys.stderr)
    precisions = []
    for preset in [p for p in args.precisions.split(",") if p]:
        precisions += measure_precisions(preset, args.warmup, args.steps, args.quick)
        print(precisions[-3:], file=sys.stderr)
    if rows:
        columns = ["preset", "batching", "tokens/s", "padding %", "step ms (median)", "sentences/batch"]
        print(table(rows, columns + ["pipeline batches/s", "training batches/s", "pipeline / training"]))
        print()
        columns = ["preset", "buckets / padded tokens/s", "padding % with buckets", "padding % without"]
        print(table(ratios, columns + ["pipeline / training"]))
    if gates:
        print()
        print(
            table(gates, ["preset", "precision", "LSTM step", "step ms (median)", "tokens/s", "speed-up (median step)"])
        )
    if precisions:
        print()
        columns = [
            "preset",
            "precision",
            "step ms (median)",
            "tokens/s",
            "faster of float32, bfloat16 / this (median step)",
        ]
        print(table(precisions, columns))
        print(precisions[0]["auto chose"])
    payload = {
        "machine": machine(),
        "commit": git_commit(),
        "rows": rows,
        "ratios": ratios,
        "gates": gates,
        "precisions": precisions,
    }
    print("wrote", write_result("train", payload, args.out), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
