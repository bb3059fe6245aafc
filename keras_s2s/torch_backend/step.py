"""A training step for the torch backend without the waits Keras' step adds.

Keras' torch `train_step` makes the host wait for the GPU several times per step
(`torch.cuda.set_sync_debug_mode("warn")` lists each): it copies numpy targets and
weights to the device in the loss, after the forward pass is queued; the loss
tracker converts the batch size, a Python int, to a CUDA tensor (a blocking
host-to-device copy); gradient clipping converts `1.0`; plain SGD passes the
learning rate, a CUDA tensor, as `torch._foreach_add_`'s `alpha`, a Python number
(a device-to-host read); the iteration counter adds the Python int `1`. Each wait
drains the GPU's queue, so the host's next kernels start on an idle GPU.

`install(model)` replaces the compiled model's `train_step` with one that does
what Keras' does, in the same order and with the same results, without those
waits: the batch goes to the device before any work is queued, the batch size is
a device tensor made once, and for plain SGD (no momentum) the clipping by global
norm and the update are `torch._foreach_*` calls with the learning rate as a device
tensor. Any other optimizer, or an option the fast update does not cover
(per-variable clipping, weight decay, EMA, gradient accumulation, loss scaling),
keeps Keras' own `optimizer.apply` for the update. What still waits: the step's
start (the batch's copy, Keras' mask of the embeddings) and whoever reads the loss.

The forward pass is `keras_s2s.torch_backend.forward.forward` for a `build_seq2seq`
model (its layers' `call`s without Keras' per-layer machinery, same results): where the
step is bound by the host's Python time, that is most of what Keras adds.

The waits' removal pays where the GPU's queue is long at those points; where the step is
bound by the host's Python time, the lean forward pass pays more (BENCHMARKS.md, GPU
section; `bench/gpu_train_step.py --interleave` times them in turns with Keras' step).

Imported only under `KERAS_BACKEND=torch`.
"""

from __future__ import annotations

import functools

import keras
import torch

from keras_s2s.upstream import data_adapter_utils


def fast_update(optimizer) -> bool:
    """Whether `optimizer`'s update can run as the wait-free SGD update here."""
    return (
        type(optimizer).__name__ == "SGD"
        and isinstance(optimizer, keras.optimizers.SGD)
        and optimizer.momentum == 0
        and not optimizer.nesterov
        and optimizer.clipnorm is None
        and optimizer.clipvalue is None
        and not optimizer.weight_decay
        and not optimizer.use_ema
        and not optimizer.gradient_accumulation_steps
        and optimizer.loss_scale_factor is None
    )


def install(model, lean_forward: bool = True) -> bool:
    """Gives a compiled `model` the wait-free `train_step`; returns whether the update is the fast one.

    With `lean_forward` (the default), a `build_seq2seq` model's forward pass runs as
    `keras_s2s.torch_backend.forward.forward` (its layers' `call`s without Keras' per-layer
    machinery, same results); other models, or `lean_forward=False`, run `model(x)`.
    Idempotent; a model compiled again must be installed again (Keras builds a new
    train function on `compile`).
    """
    if keras.backend.backend() != "torch":
        raise RuntimeError("keras_s2s.torch_backend.step runs under KERAS_BACKEND=torch only")
    from keras_s2s.torch_backend import forward as lean

    fast = fast_update(model.optimizer) and not any(v.constraint for v in model.trainable_weights)
    forward = None
    if lean_forward and lean.supported(model):
        forward = functools.partial(lean.forward, model)
    model.train_step = functools.partial(train_step, model, fast, forward)
    model.train_function = None
    return fast


@functools.lru_cache(maxsize=64)
def _constant(value, dtype, device) -> torch.Tensor:
    return torch.full((), value, dtype=dtype, device=device)


def train_step(model, fast, forward, data):
    """Keras' torch `TorchTrainer.train_step`, without host-device waits (`fast`: the SGD update
    here; `forward`: the forward pass, `model`'s call when None)."""
    # The whole batch goes to the device first, before any work is queued: Keras would copy
    # the targets and weights in the loss, after the forward pass, and wait for it.
    data = keras.tree.map_structure(lambda a: a if a is None else keras.ops.convert_to_tensor(a), data)
    x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
    if forward is not None:
        y_pred = forward(x, training=True)
    else:
        y_pred = model(x, training=True) if model._call_has_training_arg else model(x)
    model.zero_grad()
    loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
    first = next(i for i in keras.tree.flatten(x) if i is not None)
    count = _constant(first.shape[0], torch.float32, loss.device)
    model._loss_tracker.update_state(loss, sample_weight=count)
    optimizer = model.optimizer
    if optimizer is not None:
        loss = optimizer.scale_loss(loss)
    variables = model.trainable_weights  # a new list, walked over every layer: once per step
    if variables:
        loss.backward()
        gradients = [v.value.grad for v in variables]
        with torch.no_grad():
            if fast and optimizer.built:
                _sgd_update(optimizer, gradients, variables)
            else:
                optimizer.apply(gradients, variables)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _sgd_update(optimizer, gradients, variables):
    """`keras.optimizers.SGD` without momentum: clip by global norm, `v -= rate * g`, count the step."""
    pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
    if not pairs:
        return
    gradients = [g for g, _ in pairs]
    values = [v.value for _, v in pairs]
    if optimizer.global_clipnorm is not None:
        # Keras' `clip_by_global_norm`: scale = clip * min(1 / norm, 1 / clip), NaN for a non-finite norm.
        clip = float(optimizer.global_clipnorm)
        norm = torch.linalg.vector_norm(torch.stack([n.float() for n in torch._foreach_norm(gradients)]))
        scale = clip * torch.clamp(1.0 / norm, max=1.0 / clip) + (norm - norm)
        gradients = torch._foreach_mul(gradients, scale)
    rate = keras.ops.convert_to_tensor(optimizer.learning_rate)
    steps = torch._foreach_mul(gradients, rate)
    torch._foreach_sub_(values, steps)
    iterations = optimizer._iterations
    iterations.assign(iterations.value + 1)
