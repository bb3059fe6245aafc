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
CPU it runs packed (`torch.nn.utils.rnn`); see `keras_s2s.models._torch_lstm`.
On a GPU a layer without a mask runs in the same kind of call instead of Keras'
cuDNN call, whose weights torch compacts (and waits for the GPU) on every call.

Under mixed precision (bfloat16 or float16 compute) on the other backends,
where Keras has no fused kernel (TensorFlow on a CPU) the step loop keeps the
matrix products in the compute dtype but the gates and the cell state in
float32, as cuDNN does: element-wise bfloat16 is slow on CPUs (about 3x
float32 for the gates' sigmoid and tanh here), and a bfloat16 cell state
loses precision over long sequences. On a 2-core CPU this makes g2p_best's
training step 1.02-1.18x faster (medians of six runs; `bench/train.py --gates`).
cuDNN, when TensorFlow sees a GPU, is still used first.

Everything else (no mask under torch on a CPU, a mask with holes, `go_backwards` under
torch, dropout inside the cell, `unroll`) is `keras.layers.LSTM` unchanged,
and the weights are the same variables, so checkpoints and exports do not see
the difference.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_s2s")
class LSTM(keras.layers.LSTM):
    """`keras.layers.LSTM`; under torch, masked right-padded batches run fused.

    Same arguments as `keras.layers.LSTM`.

    Example:
    >>> layer = LSTM(8, return_sequences=True, return_state=True)
    >>> layer.units
    8
    """

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if keras.tree.is_nested(mask):
            mask = mask[0]
        if (
            keras.backend.backend() == "torch"
            and self.use_cudnn in ("auto", True)
            and not (self.go_backwards or self.unroll or self.dropout or self.recurrent_dropout)
            and self.cell.use_bias
            and self.cell.activation is keras.activations.tanh
            and self.cell.recurrent_activation is keras.activations.sigmoid
        ):
            from keras_s2s.models import _torch_lstm

            if mask is None:
                # On a GPU, Keras' own cuDNN call waits for the GPU (see `_torch_lstm`).
                if _torch_lstm.on_gpu(sequences):
                    return _torch_lstm.unmasked_lstm(
                        sequences, initial_state[0], initial_state[1], kernel=self.cell.kernel,
                        recurrent_kernel=self.cell.recurrent_kernel, bias=self.cell.bias,
                        return_sequences=self.return_sequences,
                    )
                return super().inner_loop(sequences, initial_state, mask, training=training)
            out = _torch_lstm.masked_lstm(
                sequences,
                initial_state[0],
                initial_state[1],
                mask,
                kernel=self.cell.kernel,
                recurrent_kernel=self.cell.recurrent_kernel,
                bias=self.cell.bias,
                return_sequences=self.return_sequences,
                zero_output_for_mask=self.zero_output_for_mask,
            )
            if out is not None:
                return out
        if self._float32_gates():
            from keras_s2s.upstream import private_backend as backend

            try:
                # cuDNN where the backend has it (TensorFlow with a GPU), as Keras does.
                return backend.lstm(
                    sequences, initial_state[0], initial_state[1], mask,
                    kernel=self.cell.kernel, recurrent_kernel=self.cell.recurrent_kernel,
                    bias=self.cell.bias, activation=self.cell.activation,
                    recurrent_activation=self.cell.recurrent_activation,
                    return_sequences=self.return_sequences, go_backwards=self.go_backwards,
                    unroll=False,
                )
            except NotImplementedError:
                return self._float32_gate_loop(sequences, initial_state, mask)
        return super().inner_loop(sequences, initial_state, mask, training=training)

    # Off: Keras' own step under mixed precision (bench/train.py compares the two).
    float32_gates = True

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
