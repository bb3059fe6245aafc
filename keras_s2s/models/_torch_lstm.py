"""The torch half of `keras_s2s.models.lstm.LSTM`: one fused LSTM call over a packed batch.

Imported only under `KERAS_BACKEND=torch`.
"""

from __future__ import annotations

import keras
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

# How often `packed_lstm` ran fused and how often it left the layer to Keras (the tests read it).
CALLS = {"packed": 0, "declined": 0}


def packed_lstm(inputs, initial_h, initial_c, mask, kernel, recurrent_kernel, bias, return_sequences,
                zero_output_for_mask=False):
    """Runs one LSTM layer over a right-padded masked batch as a packed sequence.

    Args:
        inputs: `(batch, time, features)`.
        initial_h, initial_c: `(batch, units)`.
        mask: `(batch, time)` bool, true on real steps.
        kernel, recurrent_kernel, bias: Keras' LSTM weights, gates in the order
            i, f, c, o (torch's order too).
        return_sequences: whether to return every step's output.
        zero_output_for_mask: padded steps' outputs are zeros when true, else
            the last real step's output (Keras' loop does the same).

    Returns:
        `(last_output, outputs, [h, c])` as `keras.layers.LSTM.inner_loop`
        returns them, or `None` when the mask is not right-padded or a row is
        empty (the caller then takes Keras' own path).
    """
    # Keras variables read inside a layer call come autocast to the compute dtype.
    kernel = keras.ops.convert_to_tensor(kernel)
    dtype = kernel.dtype
    inputs = torch.as_tensor(inputs).to(dtype)
    mask = torch.as_tensor(mask).to(torch.bool)
    batch, time = mask.shape
    lengths = mask.sum(dim=1)
    holes = (mask != (torch.arange(time, device=mask.device)[None, :] < lengths[:, None])).any()
    # One device-to-host transfer (a synchronisation) per layer: the lengths and the check.
    host = torch.cat([lengths, holes.to(lengths.dtype).reshape(1)]).cpu()
    lengths_host, holes = host[:-1], bool(host[-1])
    if holes or batch == 0 or int(lengths_host.min()) == 0:
        CALLS["declined"] += 1
        return None
    packed = pack_padded_sequence(inputs, lengths_host, batch_first=True, enforce_sorted=False)
    order = packed.sorted_indices
    h0 = torch.as_tensor(initial_h).to(dtype).index_select(0, order).unsqueeze(0)
    c0 = torch.as_tensor(initial_c).to(dtype).index_select(0, order).unsqueeze(0)
    # cuDNN copies the weights into its own flat buffer by `view`: they must be contiguous.
    weight_ih = kernel.t().contiguous()
    weight_hh = keras.ops.convert_to_tensor(recurrent_kernel).to(dtype).t().contiguous()
    bias_ih = keras.ops.convert_to_tensor(bias).to(dtype).contiguous()
    bias_hh = torch.zeros_like(bias_ih)
    # The packed form of the op behind torch.nn.LSTM, with Keras' variables as its
    # weights so gradients reach them.
    data, h_n, c_n = torch._VF.lstm(
        packed.data,
        packed.batch_sizes,
        (h0, c0),
        [weight_ih, weight_hh, bias_ih, bias_hh],
        True,  # has_biases
        1,  # num_layers
        0.0,  # dropout
        torch.is_grad_enabled(),  # train
        False,  # bidirectional
    )
    restore = packed.unsorted_indices
    h_n = h_n[0].index_select(0, restore)
    c_n = c_n[0].index_select(0, restore)
    CALLS["packed"] += 1
    if return_sequences:
        outputs, _ = pad_packed_sequence(
            PackedSequence(data, packed.batch_sizes, order, restore), batch_first=True, total_length=time
        )
        if not zero_output_for_mask:
            outputs = torch.where(mask[:, :, None], outputs, h_n[:, None, :])
    else:
        outputs = h_n.unsqueeze(1)
    return h_n, outputs, [h_n, c_n]
