"""`keras.layers.LSTM` that keeps masked, right-padded batches in the fused kernel on torch.

The encoder masks source padding (`Embedding(mask_zero=True)`), so its final
(h, c) belong to each sentence's last real token. On TensorFlow, Keras hands a
right-padded mask to cuDNN as sequence lengths. Keras' torch backend has no such
path: any mask sends the layer to the generic per-time-step loop, dozens of
small kernels per step and layer. `LSTM` fills that gap: under the torch backend
a right-padded masked batch runs in one fused call (cuDNN on a GPU, ATen's LSTM on
a CPU), with the same outputs as Keras' loop: real steps' outputs, on padding the
last real step's output (or zeros with `zero_output_for_mask`), and the final
states of each sentence's last real token. On a GPU the padded batch runs as it
is, with the cell state frozen on padding (no host-device synchronisation); on a
CPU it runs packed (`torch.nn.utils.rnn`); see `keras_s2s.torch_backend.lstm`.
On a GPU a layer without a mask runs in the same kind of call instead of Keras'
cuDNN call, whose weights torch compacts (and waits for the GPU) on every call.

Under mixed precision (bfloat16 or float16 compute) on the other backends,
where Keras has no fused kernel (TensorFlow on a CPU) the step loop keeps the
matrix products in the compute dtype but the gates and the cell state in
float32, as cuDNN does: element-wise bfloat16 is slow on CPUs (about 3x
float32 for the gates' sigmoid and tanh here), and a bfloat16 cell state
loses precision over long sequences (`bench/train.py --gates` times the two).
cuDNN, when TensorFlow sees a GPU, is still used first.

Everything else (no mask under torch on a CPU, a mask with holes, `go_backwards` under
torch, dropout inside the cell, `unroll`) is `keras.layers.LSTM` unchanged,
and the weights are the same variables, so checkpoints and exports do not see
the difference. Which path a layer takes is set per layer (`configure_lstms`), and each
layer counts the paths its calls took (`LSTM.calls`).
"""

from __future__ import annotations

import collections
import dataclasses

import keras
from keras import ops


@dataclasses.dataclass(frozen=True)
class TorchPaths:
    """Which path an `LSTM` layer's calls take under the torch backend.

    Attributes:
        fused: False: Keras' own `inner_loop` for every call.
        use_mask: False: the mask is dropped (only right for batches without padding).
        method: masked batches: "packed", "frozen", or "auto" (frozen on a GPU, else packed).
        gpu: take the GPU's paths (True) or the CPU's (False) whatever the tensors' device;
            None: the tensors' device decides.
        one_buffer: hand torch the weights as views into one buffer (else as separate
            tensors, which torch compacts and waits for on a GPU).
    """

    fused: bool = True
    use_mask: bool = True
    method: str = "auto"
    gpu: bool | None = None
    one_buffer: bool = True

    def __post_init__(self):
        if self.method not in ("auto", "packed", "frozen"):
            raise ValueError(f"method {self.method!r}: use auto, packed or frozen")


class PathCounts:
    """How many of a layer's calls took each path (a plain object: Keras would track a dict)."""

    def __init__(self):
        self.counts = collections.Counter()

    def __getitem__(self, path: str) -> int:
        return self.counts[path]

    def add(self, path: str) -> None:
        self.counts[path] += 1


@keras.saving.register_keras_serializable(package="keras_s2s")
class LSTM(keras.layers.LSTM):
    """`keras.layers.LSTM`; under torch, masked right-padded batches run fused.

    Same arguments as `keras.layers.LSTM`. Two settings outside the layer's config, for
    benchmarks and tests (`configure_lstms`): `torch_paths` (`TorchPaths`) and
    `float32_gates` (mixed precision on TensorFlow's CPU loop; off: Keras' own step).

    Example:
    >>> layer = LSTM(8, return_sequences=True, return_state=True)
    >>> layer.units, layer.torch_paths.method
    (8, 'auto')
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.torch_paths = TorchPaths()
        self.float32_gates = True
        # Which path each call took: packed, frozen, unmasked, declined (a mask the fused
        # calls do not take), keras.
        self.calls = PathCounts()

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if keras.tree.is_nested(mask):
            mask = mask[0]
        if not self.torch_paths.use_mask:
            mask = None
        if keras.backend.backend() == "torch" and self._fusable():
            out = self._torch_fused(sequences, initial_state, mask)
            if out is not None:
                return out
        elif self._float32_gates():
            return self._float32_gate_call(sequences, initial_state, mask)
        else:
            self.calls.add("keras")
        return super().inner_loop(sequences, initial_state, mask, training=training)

    def _fusable(self) -> bool:
        return (
            self.torch_paths.fused
            and self.use_cudnn in ("auto", True)
            and not (self.go_backwards or self.unroll or self.dropout or self.recurrent_dropout)
            and self.cell.use_bias
            and self.cell.activation is keras.activations.tanh
            and self.cell.recurrent_activation is keras.activations.sigmoid
        )

    def _torch_fused(self, sequences, initial_state, mask):
        """One fused torch call for the layer, or None where Keras' own path must run."""
        from keras_s2s.torch_backend import lstm as fused

        paths = self.torch_paths
        weights = dict(
            kernel=self.cell.kernel,
            recurrent_kernel=self.cell.recurrent_kernel,
            bias=self.cell.bias,
            return_sequences=self.return_sequences,
            one_buffer=paths.one_buffer,
        )
        gpu = fused.on_gpu(sequences) if paths.gpu is None else paths.gpu
        if mask is None:
            # On a GPU, Keras' own cuDNN call waits for the GPU (see `torch_backend.lstm`).
            if gpu:
                self.calls.add("unmasked")
                return fused.unmasked_lstm(sequences, initial_state[0], initial_state[1], **weights)
            self.calls.add("keras")
            return None
        method = paths.method if paths.method != "auto" else "frozen" if gpu else "packed"
        run = fused.frozen_lstm if method == "frozen" else fused.packed_lstm
        out = run(
            sequences,
            initial_state[0],
            initial_state[1],
            mask,
            zero_output_for_mask=self.zero_output_for_mask,
            **weights,
        )
        self.calls.add(method if out is not None else "declined")
        return out

    def _float32_gates(self) -> bool:
        cell = self.cell
        return (
            self.float32_gates
            and keras.backend.backend() != "torch"
            and cell.compute_dtype in ("bfloat16", "float16")
            and self.use_cudnn == "auto"
            and not (self.unroll or cell.dropout or cell.recurrent_dropout)
            and cell.use_bias
            and cell.activation is keras.activations.tanh
            and cell.recurrent_activation is keras.activations.sigmoid
        )

    def _float32_gate_call(self, sequences, initial_state, mask):
        from keras_s2s.upstream import private_backend as backend

        self.calls.add("float32 gates")
        try:
            # cuDNN where the backend has it (TensorFlow with a GPU), as Keras does.
            return backend.lstm(
                sequences,
                initial_state[0],
                initial_state[1],
                mask,
                kernel=self.cell.kernel,
                recurrent_kernel=self.cell.recurrent_kernel,
                bias=self.cell.bias,
                activation=self.cell.activation,
                recurrent_activation=self.cell.recurrent_activation,
                return_sequences=self.return_sequences,
                go_backwards=self.go_backwards,
                unroll=False,
            )
        except NotImplementedError:
            return self._float32_gate_loop(sequences, initial_state, mask)

    def _float32_gate_loop(self, sequences, initial_state, mask):
        from keras_s2s.upstream import private_backend as backend

        cell, dtype = self.cell, sequences.dtype
        kernel = ops.cast(cell.kernel, dtype)
        recurrent_kernel = ops.cast(cell.recurrent_kernel, dtype)
        bias = ops.cast(cell.bias, "float32")

        def step(inputs, states):
            h, c = states
            z = ops.matmul(inputs, kernel) + ops.matmul(h, recurrent_kernel)
            i, f, g, o = ops.split(ops.cast(z, "float32") + bias, 4, axis=-1)
            c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
            h = ops.cast(ops.sigmoid(o) * ops.tanh(c), dtype)
            return h, [h, c]

        h0, c0 = initial_state
        last, outputs, (h, c) = backend.rnn(
            step,
            sequences,
            [h0, ops.cast(c0, "float32")],
            go_backwards=self.go_backwards,
            mask=mask,
            input_length=sequences.shape[1],
            zero_output_for_mask=self.zero_output_for_mask,
            return_all_outputs=self.return_sequences,
        )
        return last, outputs, [h, ops.cast(c, dtype)]


def configure_lstms(model, *, torch_paths: TorchPaths | None = None, float32_gates: bool | None = None) -> list:
    """Sets the given settings on every `LSTM` layer of `model` (nested models included);
    returns the layers. A setting left None stays as it is. `float32_gates` is read when
    a step is traced: set it before the first call."""
    found = [layer for layer in _walk(model) if isinstance(layer, LSTM)]
    for layer in found:
        if torch_paths is not None:
            layer.torch_paths = torch_paths
        if float32_gates is not None:
            layer.float32_gates = float32_gates
    return found


def fused_calls(model) -> collections.Counter:
    """The paths the `LSTM` layers of `model` took, summed over its layers."""
    total = collections.Counter()
    for layer in configure_lstms(model):
        total.update(layer.calls.counts)
    return total


def _walk(layer):
    yield layer
    for child in getattr(layer, "_layers", None) or getattr(layer, "layers", None) or []:
        yield from _walk(child)
