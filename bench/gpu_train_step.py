"""The paper-shaped training step on a GPU under `KERAS_BACKEND=torch`, in words per second.

    KERAS_BACKEND=torch python bench/gpu_train_step.py --out gpu.json    # on a CUDA machine
    KERAS_BACKEND=torch python bench/gpu_train_step.py --quick --steps 2   # smoke test, any machine
    KERAS_BACKEND=torch python bench/gpu_train_step.py --host-proxy --batch 8 --length 8 --interleave \
        --variants keras_s2s,wait_free_step,lean_forward   # the host's share, on a CPU

The model is `keras_s2s.models.build_seq2seq` with the `paper` shape (4 x 1000 LSTM layers,
1000-d embeddings, 32k vocabularies), batch 128, source and target length 32, bfloat16
mixed precision, the preset's loss, SGD and global clipping. Words per second count source
and target tokens. Needs keras, torch and numpy only (no TensorFlow).

Variants, timed one after the other in the same process:
- `keras_s2s`: the model as `s2s train` builds it (the masked encoder runs in the fused
  LSTM with its cell state frozen on padding, `keras_s2s.models.lstm`, and every LSTM call
  gets its weights in one buffer: no host-device synchronisation in the layers);
- `keras_s2s, LSTM weights as separate tensors`: the same with each LSTM call's weights as
  separate tensors and the unmasked (decoder) layers in Keras' own cuDNN call, as before
  `keras_s2s.torch_backend.lstm._flat` (torch compacts them on every call, and waits);
- `keras_s2s, batches on the device`: the same with the batch handed over as device tensors,
  as the PyTorch reference has it (Keras otherwise copies each numpy array in the step);
- `keras_s2s, wait-free step`: `keras_s2s` (numpy batches) with
  `keras_s2s.torch_backend.step.install(model)`: Keras' train step without its host-device waits
  (the batch's copy after the forward pass, loss tracker, clipping, SGD update, step count);
- `keras_s2s, wait-free step, float32_logits false`: that, with the vocabulary projection
  in the compute dtype (below);
- `keras_s2s, wait-free step, lean forward` (and with `float32_logits false`): the wait-free
  step with its default forward pass, `keras_s2s.torch_backend.forward` (the layers' `call`s
  without Keras' per-layer machinery; the two rows above keep Keras' `model(x)`);
- `keras_s2s, packed encoder`: the same with the masked encoder run as packed sequences
  (its lengths on the host: a synchronisation per step, the first layer's);
- `keras_s2s, no source mask`: the same with the encoder LSTMs ignoring the source mask
  (every row here is full length, so the results are the same; the cost of packing);
- `keras_s2s, float32_logits false`: the vocabulary projection in the compute dtype instead
  of float32 (`model.float32_logits: false`; the logits are cast to float32 after it);
- `stock Keras LSTM`: the masked encoder in Keras' own LSTM, which under torch runs a
  Python loop over time steps for any mask;
- `PyTorch reference`: the same shapes in plain PyTorch (`nn.LSTM` on cuDNN, bf16 autocast,
  SGD, `clip_grad_norm_`): what the same GPU gives without Keras;
- `PyTorch reference, one cuDNN call per layer`: the same with each layer its own `nn.LSTM`,
  as the layers of a Keras model are.
With `--interleave`, the listed variants (only those that change nothing global:
`INTERLEAVABLE`, every variant but the separate-weights, packed, no-mask, stock and
PyTorch ones) are built
side by side and their steps timed in turns, round r starting at the r-th variant, so a
drifting machine weighs on all of them alike; ratios are against the first variant.
With `--profile DIR`, the `keras_s2s`, `wait-free step`, `lean forward` and per-layer reference rows also
run a few steps under `torch.profiler`; the operators' tables (by GPU time, by CPU time) and, on a GPU, the Python
stacks of every host-device synchronisation in one step are written to DIR.
Each row also counts the LSTM layer calls per step by the path they took.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import git_commit, machine, median, table, write_result  # noqa: E402

VARIANTS = (
    "keras_s2s",
    "separate_weights",
    "device_batches",
    "wait_free_step",
    "wait_free_bf16_logits",
    "lean_forward",
    "lean_forward_bf16_logits",
    "packed_source",
    "no_source_mask",
    "bf16_logits",
    "stock_keras_lstm",
    "torch_reference",
    "torch_reference_per_layer",
)
LABELS = {
    "keras_s2s": "keras_s2s",
    "separate_weights": "keras_s2s, LSTM weights as separate tensors",
    "device_batches": "keras_s2s, batches on the device",
    "wait_free_step": "keras_s2s, wait-free step",
    "wait_free_bf16_logits": "keras_s2s, wait-free step, float32_logits false",
    "lean_forward": "keras_s2s, wait-free step, lean forward",
    "lean_forward_bf16_logits": "keras_s2s, wait-free step, lean forward, float32_logits false",
    "packed_source": "keras_s2s, packed encoder",
    "no_source_mask": "keras_s2s, no source mask",
    "bf16_logits": "keras_s2s, float32_logits false",
    "stock_keras_lstm": "stock Keras LSTM",
    "torch_reference": "PyTorch reference",
    "torch_reference_per_layer": "PyTorch reference, one cuDNN call per layer",
}


def _shape(quick):
    """The `paper` preset's model with 32k vocabularies (the small one for a smoke test)."""
    import dataclasses

    from keras_s2s.config import load_preset

    model = dataclasses.replace(load_preset("paper").model, source_vocabulary_size=32000, target_vocabulary_size=32000)
    if quick:
        model = dataclasses.replace(
            model, num_layers=2, hidden_dim=64, embedding_dim=32, source_vocabulary_size=500, target_vocabulary_size=500
        )
    return dataclasses.asdict(model)


class PathCounter:
    """Counts LSTM layer calls by the path they took: the fused ones of `keras_s2s.models.lstm`
    (each layer counts its own) and Keras' own (cuDNN, torch loop, Keras loop; counted inside
    `keras_s2s.upstream.counting_keras_lstm_paths`)."""

    def __init__(self, model, keras_counts):
        self.model, self.keras_counts = model, keras_counts
        self.reset()

    def _ours(self):
        from keras_s2s.models.lstm import fused_calls

        counts = fused_calls(self.model)
        return {key: counts[key] for key in ("packed", "frozen", "unmasked")}

    def reset(self):
        self.start, self.keras_start = self._ours(), dict(self.keras_counts)

    def per_step(self, steps):
        ours = {key: value - self.start[key] for key, value in self._ours().items()}
        theirs = {key: value - self.keras_start.get(key, 0) for key, value in self.keras_counts.items()}
        return {key: value / steps for key, value in {**ours, **theirs}.items() if value}


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _time(step, warmup, steps, counter=None):
    for _ in range(warmup):
        step()
    _sync()
    if counter is not None:
        counter.reset()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        _sync()
        times.append(time.perf_counter() - start)
    return median(times), times


def _profile(step, folder, name, steps=5):
    """Writes torch.profiler's operator tables for `steps` calls of `step` to `folder`."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    os.makedirs(folder, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    _sync()
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        _sync()
    wall = (time.perf_counter() - start) / steps
    averages = prof.key_averages()
    sort_gpu = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    # Kernels only: an operator's row repeats its kernels' time.
    gpu_busy = (
        sum(
            e.self_device_time_total
            for e in averages
            if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA
        )
        / steps
        / 1e3
    )
    with open(os.path.join(folder, f"{name}.profile.txt"), "w", encoding="utf-8") as handle:
        handle.write(
            f"{steps} steps, wall {1000 * wall:.1f} ms/step under the profiler, "
            f"GPU kernels busy {gpu_busy:.1f} ms/step\n\n"
        )
        handle.write("by GPU time\n" + averages.table(sort_by=sort_gpu, row_limit=40) + "\n\n")
        handle.write("by CPU time\n" + averages.table(sort_by="self_cpu_time_total", row_limit=40) + "\n")
    print(f"profile: wall {1000 * wall:.1f} ms/step, GPU busy {gpu_busy:.1f} ms/step", flush=True)
    if torch.cuda.is_available():
        try:
            _sync_stacks(step, os.path.join(folder, f"{name}.syncs.txt"))
        except Exception as error:  # a diagnostic; the timings stand without it
            print(f"synchronisation stacks failed: {error!r}", file=sys.stderr, flush=True)


def _sync_stacks(step, path):
    """Writes the Python stack of every host-device synchronisation in one call of `step`."""
    import collections
    import traceback
    import warnings

    import torch

    stacks = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        # Keras' torch backend lives in `.../keras/src/backend/torch/`: keep its frames.
        frames = [
            f"{frame.filename}:{frame.lineno} {frame.name}"
            for frame in traceback.extract_stack()[:-1]
            if ("/torch/" not in frame.filename or "/keras/" in frame.filename)
            and not frame.filename.endswith("warnings.py")
        ]
        stacks[tuple(frames[-9:])] += 1

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = record
            step()
            torch.cuda.synchronize()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"{sum(stacks.values())} synchronising calls in one step\n")
        for stack, count in stacks.most_common():
            handle.write(f"\n{count}x\n" + "".join(f"    {frame}\n" for frame in stack))


def _data(config, batch, length):
    import numpy as np

    rng = np.random.default_rng(0)
    source = rng.integers(4, config["source_vocabulary_size"], (batch, length)).astype("int32")
    decoder_in = rng.integers(4, config["target_vocabulary_size"], (batch, length)).astype("int32")
    target = rng.integers(4, config["target_vocabulary_size"], (batch, length)).astype("int32")
    return source, decoder_in, target


def variant_paths(variant: str, host_proxy: bool):
    """The LSTM layers' `TorchPaths` of a variant (`--host-proxy`: the paths a GPU takes,
    torch's fused LSTM for every layer and the frozen encoder, on this device)."""
    import dataclasses

    from keras_s2s.models.lstm import TorchPaths

    base = TorchPaths(gpu=True, method="frozen") if host_proxy else TorchPaths()
    return {
        # Each call's weights as separate tensors; the unmasked layers in Keras' cuDNN call.
        "separate_weights": TorchPaths(gpu=False, method="frozen", one_buffer=False),
        "packed_source": dataclasses.replace(base, method="packed"),
        "stock_keras_lstm": TorchPaths(fused=False),
        # Every row is full length here, so dropping the mask changes no result.
        "no_source_mask": TorchPaths(fused=False, use_mask=False),
    }.get(variant, base)


def time_keras(variant, shape, args):
    from keras_s2s.upstream import counting_keras_lstm_paths

    model, train = _keras_step(variant, shape, args)
    steps = args.slow_steps if variant == "stock_keras_lstm" else args.steps
    with counting_keras_lstm_paths() as keras_counts:
        counter = PathCounter(model, keras_counts)
        step, times = _time(train, args.warmup, steps, counter)
        paths = counter.per_step(steps)
    if args.profile and variant in ("keras_s2s", "wait_free_step", "lean_forward"):
        _profile(train, args.profile, variant)
    loss = float(train())
    return step, times, paths, loss


def _keras_step(variant, shape, args):
    """`(model, step)`: the variant's compiled model and a function running one training step."""
    import keras
    import numpy as np

    from keras_s2s.config import ModelConfig
    from keras_s2s.losses import SequenceCrossEntropy
    from keras_s2s.models import build_seq2seq
    from keras_s2s.models.lstm import configure_lstms

    keras.mixed_precision.set_global_policy("float32" if args.precision == "float32" else f"mixed_{args.precision}")
    config = ModelConfig(**dict(shape, float32_logits=not variant.endswith("bf16_logits")))
    model = build_seq2seq(config)
    configure_lstms(model, torch_paths=variant_paths(variant, args.host_proxy))
    model.compile(optimizer=keras.optimizers.SGD(0.7, global_clipnorm=5.0), loss=SequenceCrossEntropy())
    if variant.startswith(("wait_free", "lean_forward")):
        from keras_s2s.torch_backend import step as torch_step

        lean = variant.startswith("lean_forward")
        assert torch_step.install(model, lean_forward=lean), "the SGD update should be the wait-free one"
    source, decoder_in, target = _data(shape, args.batch, args.length)
    weights = np.ones_like(target, dtype="float32")
    if variant == "device_batches":
        source, decoder_in, target, weights = (
            keras.ops.convert_to_tensor(a) for a in (source, decoder_in, target, weights)
        )
    x = {"source_ids": source, "decoder_input_ids": decoder_in}
    return model, lambda: model.train_on_batch(x, target, sample_weight=weights)


# Variants that change nothing global, so their models can take turns step by step.
INTERLEAVABLE = (
    "keras_s2s",
    "device_batches",
    "wait_free_step",
    "wait_free_bf16_logits",
    "lean_forward",
    "lean_forward_bf16_logits",
    "bf16_logits",
)


def time_interleaved(variants, shape, args):
    """Times the variants' steps in turns (round r starts at variant r mod n): machine drift
    then falls on every variant alike. Returns `{variant: (median, times, loss)}`."""
    steps = {variant: _keras_step(variant, shape, args)[1] for variant in variants}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    _sync()
    times = {variant: [] for variant in variants}
    for turn in range(args.steps):
        for k in range(len(variants)):
            variant = variants[(turn + k) % len(variants)]
            start = time.perf_counter()
            steps[variant]()
            _sync()
            times[variant].append(time.perf_counter() - start)
    return {variant: (median(times[variant]), times[variant], float(steps[variant]())) for variant in variants}


def time_torch_reference(shape, args, per_layer=False):
    """The same shapes in plain PyTorch: embeddings, two 4-layer cuDNN LSTMs, a projection.

    With `per_layer`, each LSTM layer is its own cuDNN call, as in a Keras model (a stacked
    cuDNN call can overlap its layers in time; separate calls cannot).
    """
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    hidden, layers = shape["hidden_dim"], shape["num_layers"]

    class Seq2Seq(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.source_embedding = torch.nn.Embedding(shape["source_vocabulary_size"], shape["embedding_dim"])
            self.target_embedding = torch.nn.Embedding(shape["target_vocabulary_size"], shape["embedding_dim"])
            if per_layer:
                self.encoder, self.decoder = (
                    torch.nn.ModuleList(
                        torch.nn.LSTM(shape["embedding_dim"] if i == 0 else hidden, hidden, batch_first=True)
                        for i in range(layers)
                    )
                    for _ in range(2)
                )
            else:
                self.encoder = torch.nn.LSTM(shape["embedding_dim"], hidden, layers, batch_first=True)
                self.decoder = torch.nn.LSTM(shape["embedding_dim"], hidden, layers, batch_first=True)
            self.logits = torch.nn.Linear(hidden, shape["target_vocabulary_size"])
            for parameter in self.parameters():
                torch.nn.init.uniform_(parameter, -0.08, 0.08)

        def forward(self, source, decoder_in):
            if not per_layer:
                _, states = self.encoder(self.source_embedding(source))
                outputs, _ = self.decoder(self.target_embedding(decoder_in), states)
                return self.logits(outputs)
            x, states = self.source_embedding(source), []
            for layer in self.encoder:
                x, state = layer(x)
                states.append(state)
            y = self.target_embedding(decoder_in)
            for layer, state in zip(self.decoder, states):
                y, _ = layer(y, state)
            return self.logits(y)

    model = Seq2Seq().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.7)
    source, decoder_in, target = (
        torch.as_tensor(a, dtype=torch.long, device=device) for a in _data(shape, args.batch, args.length)
    )
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(args.precision)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            logits = model(source, decoder_in)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), target.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        return loss.detach()

    median, times = _time(step, args.warmup, args.steps)
    if args.profile and per_layer:
        _profile(step, args.profile, "torch_reference_per_layer")
    loss = float(step())
    return median, times, {}, loss


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--slow-steps", type=int, default=3, help="timed steps of the stock Keras LSTM row")
    parser.add_argument("--precision", default="bfloat16", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {','.join(VARIANTS)}")
    parser.add_argument("--quick", action="store_true", help="a small shape (smoke test)")
    parser.add_argument(
        "--host-proxy",
        action="store_true",
        help="the paper's depth with 16-wide layers and 64-token vocabularies, the GPU's LSTM "
        "paths forced on any device: what is left is the host's time per step",
    )
    parser.add_argument("--out", default=None, help="JSON file (default bench/results/gpu_train_step.json)")
    parser.add_argument(
        "--profile",
        default=None,
        help="folder for torch.profiler tables of the keras_s2s, wait-free, lean and per-layer reference rows",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help=f"time the variants step by step in turns (only {', '.join(INTERLEAVABLE)})",
    )
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")

    import keras
    import torch

    shape = _shape(args.quick)
    if args.host_proxy:
        shape.update(hidden_dim=16, embedding_dim=16, source_vocabulary_size=64, target_vocabulary_size=64)
    words = 2 * args.batch * args.length
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    rows, failed = [], []
    if args.interleave:
        if set(variants) - set(INTERLEAVABLE):
            parser.error(f"--interleave takes only {list(INTERLEAVABLE)}")
        for variant, (step, times, loss) in time_interleaved(variants, shape, args).items():
            rows.append(
                {
                    "variant": LABELS[variant],
                    "step ms (median)": 1000 * step,
                    "step ms (all)": [round(1000 * t, 2) for t in times],
                    "words/s": words / step,
                    "LSTM calls per step": {},
                    "loss after": loss,
                    "interleaved": True,
                }
            )
        variants = []
    for variant in variants:
        try:
            if variant.startswith("torch_reference"):
                step, times, paths, loss = time_torch_reference(shape, args, variant.endswith("per_layer"))
            else:
                step, times, paths, loss = time_keras(variant, shape, args)
        except Exception as error:  # one failing row must not lose the others
            print(f"{LABELS[variant]}: failed: {error!r}", file=sys.stderr, flush=True)
            if variant == "keras_s2s":
                raise
            failed.append({"variant": LABELS[variant], "error": repr(error)})
            continue
        rows.append(
            {
                "variant": LABELS[variant],
                "step ms (median)": 1000 * step,
                "step ms (all)": [round(1000 * t, 2) for t in times],
                "words/s": words / step,
                "LSTM calls per step": paths,
                "loss after": loss,
            }
        )
        print(f"{LABELS[variant]}: {1000 * step:.1f} ms/step, {words / step:,.0f} words/s, paths {paths}", flush=True)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    reference = next((r["words/s"] for r in rows if r["variant"] == LABELS["torch_reference"]), None)
    against = "vs PyTorch reference"
    if args.interleave:  # against the first variant, timed in the same turns
        reference, against = rows[0]["words/s"], f"vs {rows[0]['variant']}"
    for row in rows:
        row[against] = row["words/s"] / reference if reference else None

    print(
        f"\ndevice {device}, backend {keras.backend.backend()}, {args.precision}, batch {args.batch}, "
        f"lengths {args.length}, {words:,} words per step"
        + (", steps timed in turns" if args.interleave else "")
        + (", host proxy (16-wide layers, GPU paths)" if args.host_proxy else "")
    )
    printed = [
        {
            "variant": row["variant"],
            "step ms (median)": row["step ms (median)"],
            "words/s": row["words/s"],
            against: f"{row[against]:.2f}x" if row[against] else "-",
            "LSTM calls per step": ", ".join(f"{k} {v:g}" for k, v in row["LSTM calls per step"].items()) or "-",
        }
        for row in rows
    ]
    printed += [{"variant": row["variant"], "step ms (median)": f"failed: {row['error'][:80]}"} for row in failed]
    print(table(printed, ["variant", "step ms (median)", "words/s", against, "LSTM calls per step"]))
    result = {
        "machine": machine(),
        "commit": git_commit(),
        "backend": keras.backend.backend(),
        "device": device,
        "precision": args.precision,
        "shape": shape,
        "batch": args.batch,
        "length": args.length,
        "host_proxy": args.host_proxy,
        "rows": rows,
        "failed": failed,
    }
    ours = next((r for r in rows if r["variant"] == LABELS["keras_s2s"]), None)
    if ours:
        result.update({"step ms (median)": ours["step ms (median)"], "words/s": ours["words/s"]})
    print(f"wrote {write_result('gpu_train_step', result, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
