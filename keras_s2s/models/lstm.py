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

Everything else (another backend, no mask, a mask with holes, `go_backwards`,
dropout inside the cell, `unroll`) is `keras.layers.LSTM` unchanged, and the
weights are the same variables, so checkpoints and exports do not see the
difference.
"""

from __future__ import annotations

import keras


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
            mask is not None
            and keras.backend.backend() == "torch"
            and self.use_cudnn in ("auto", True)
            and not (self.go_backwards or self.unroll or self.dropout or self.recurrent_dropout)
            and self.cell.use_bias
            and self.cell.activation is keras.activations.tanh
            and self.cell.recurrent_activation is keras.activations.sigmoid
        ):
            from keras_s2s.models import _torch_lstm

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
        return super().inner_loop(sequences, initial_state, mask, training=training)
