"""The paper-shaped training step on a GPU under `KERAS_BACKEND=torch`, in words per second.

    KERAS_BACKEND=torch python bench/gpu_train_step.py            # on a CUDA machine
    KERAS_BACKEND=torch python bench/gpu_train_step.py --quick --steps 2   # smoke test, any machine

The model is `keras_s2s.models.build_seq2seq` with the `paper` shape (4 x 1000 LSTM layers,
1000-d embeddings, 32k vocabularies), batch 128, source and target length 32, bfloat16
mixed precision, the preset's loss, optimizer and clipping. Words per second count source
and target tokens. Needs keras, torch and numpy only (no TensorFlow).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--precision", default="bfloat16", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--quick", action="store_true", help="a small shape (smoke test)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    from keras_s2s.config import ModelConfig
    from keras_s2s.losses import SequenceCrossEntropy
    from keras_s2s.models import build_seq2seq

    if args.precision != "float32":
        keras.mixed_precision.set_global_policy(f"mixed_{args.precision}")
    shape = dict(num_layers=4, hidden_dim=1000, embedding_dim=1000, source_vocabulary_size=32000,
                 target_vocabulary_size=32000, attention="none", reverse_source=True, dropout=0.0)
    if args.quick:
        shape.update(num_layers=2, hidden_dim=64, embedding_dim=32, source_vocabulary_size=500,
                     target_vocabulary_size=500)
    config = ModelConfig(**shape)
    model = build_seq2seq(config)
    model.compile(optimizer=keras.optimizers.SGD(0.7, global_clipnorm=5.0), loss=SequenceCrossEntropy())
    rng = np.random.default_rng(0)
    vocabulary = config.target_vocabulary_size
    source = rng.integers(4, config.source_vocabulary_size, (args.batch, args.length)).astype("int32")
    decoder_in = rng.integers(4, vocabulary, (args.batch, args.length)).astype("int32")
    target = rng.integers(4, vocabulary, (args.batch, args.length)).astype("int32")
    weights = np.ones_like(target, dtype="float32")
    x = {"source_ids": source, "decoder_input_ids": decoder_in}
    for _ in range(args.warmup):
        model.train_on_batch(x, target, sample_weight=weights)

    def sync():
        if keras.backend.backend() == "torch":
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()

    sync()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        model.train_on_batch(x, target, sample_weight=weights)
        sync()
        times.append(time.perf_counter() - start)
    step = float(np.median(times))
    words = 2 * args.batch * args.length
    device = "cpu"
    if keras.backend.backend() == "torch":
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    result = {"backend": keras.backend.backend(), "device": device, "precision": args.precision,
              "shape": shape, "batch": args.batch, "length": args.length, "step ms (median)": 1000 * step,
              "words/s": words / step}
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
