"""The torch half of `keras_s2s.models.lstm.LSTM`: one fused LSTM call for a masked batch.

Two ways to run a right-padded masked batch in one fused call, with the results of
Keras' per-step loop:
- `packed_lstm` packs the batch (`torch.nn.utils.rnn`): no work on padding, but the
  lengths must be on the host, a host-device synchronisation per mask on a GPU;
- `frozen_lstm` runs the padded batch as it is and freezes the cell state on padded
  steps (see there): no synchronisation, the padding's share of extra work.
The layer takes `frozen_lstm` on a GPU and `packed_lstm` elsewhere (its `TorchPaths`
say otherwise where a benchmark asks); `unmasked_lstm` runs a batch without a mask on a GPU.

Every call hands torch the weights as views into one contiguous buffer (`_flat`), the
layout cuDNN keeps them in. Keras' own cuDNN call passes separate tensors, which torch
compacts into such a buffer on every call ("RNN module weights are not part of single
contiguous chunk of memory"), and that compaction makes the host wait for the GPU once
per layer call (`torch.cuda.set_sync_debug_mode` lists them; `bench/gpu_train_step.py
--profile`). What the masked
calls derive from the mask (lengths, the right-padding check, the padding indicator) is
computed once per mask tensor (`_facts`), not once per layer.

Imported only under `KERAS_BACKEND=torch`.
"""

from __future__ import annotations

import functools

import keras
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

# Added on padded steps to the input gate's pre-activation (minus) and the forget gate's (plus).
_FREEZE = 1e4


def on_gpu(inputs) -> bool:
    return torch.as_tensor(inputs).is_cuda


def _flat(weights):
    """`weights` as views into one new contiguous buffer, in order (differentiable).

    torch's cuDNN LSTM uses such a buffer as it is when the views sit where cuDNN
    expects them (for one layer: the input weights, the recurrent weights, the two
    biases, back to back), so it neither copies nor waits; where they do not, it
    compacts them itself, with the same results.
    """
    buffer = torch.cat([w.reshape(-1) for w in weights])
    views, offset = [], 0
    for w in weights:
        views.append(buffer[offset : offset + w.numel()].view(w.shape))
        offset += w.numel()
    return views


def _fused(data, h0, c0, weight_ih, recurrent_kernel, bias, batch_sizes=None, one_buffer=True):
    """One LSTM layer in torch's fused op (cuDNN on a GPU), with Keras' variables as its
    weights so gradients reach them.

    Args:
        data: `(batch, time, features)`, or a packed sequence's data with `batch_sizes`.
        h0, c0: `(batch, units)`, in `weight_ih`'s dtype.
        weight_ih: `(features, 4 * units)` in the compute dtype (Keras' kernel, gates
            i, f, c, o: torch's order too).
        recurrent_kernel, bias: Keras' other two weights.
        one_buffer: the weights as views into one buffer (`_flat`), else separate tensors.

    Returns:
        torch's `(outputs, h_n, c_n)`, the states with a leading layer axis.
    """
    dtype = weight_ih.dtype
    bias_ih = keras.ops.convert_to_tensor(bias).to(dtype)
    weights = [
        weight_ih.t(),
        keras.ops.convert_to_tensor(recurrent_kernel).to(dtype).t(),
        bias_ih,
        torch.zeros_like(bias_ih),
    ]
    weights = _flat(weights) if one_buffer else [w.contiguous() for w in weights]
    hx = (h0.unsqueeze(0), c0.unsqueeze(0))
    # has_biases, num_layers, dropout, train, bidirectional
    flags = (True, 1, 0.0, torch.is_grad_enabled(), False)
    if batch_sizes is None:
        return torch._VF.lstm(data, hx, weights, *flags, True)  # batch_first
    return torch._VF.lstm(data, batch_sizes, hx, weights, *flags)


def unmasked_lstm(inputs, initial_h, initial_c, kernel, recurrent_kernel, bias, return_sequences, one_buffer=True):
    """One LSTM layer without a mask in one fused call, as Keras' torch `lstm` runs it.

    Arguments as `packed_lstm`'s, without the mask. Returns `(last_output, outputs,
    [h, c])` as `keras.layers.LSTM.inner_loop` does.
    """
    kernel = keras.ops.convert_to_tensor(kernel)
    dtype = kernel.dtype
    outputs, h_n, c_n = _fused(
        torch.as_tensor(inputs).to(dtype),
        torch.as_tensor(initial_h).to(dtype),
        torch.as_tensor(initial_c).to(dtype),
        kernel,
        recurrent_kernel,
        bias,
        one_buffer=one_buffer,
    )
    last_output = outputs[:, -1]
    if not return_sequences:
        outputs = last_output.unsqueeze(1)
    return last_output, outputs, [h_n[0], c_n[0]]


class _MaskFacts:
    """What the fused calls derive from a mask, computed once per mask: the layers of an
    encoder all get the same mask tensor, so its second to last layers reuse the first's
    (a dozen small operations each, every one a kernel launch on a GPU)."""

    def __init__(self, mask):
        self.source, self.version = mask, _version(mask)
        self.mask = torch.as_tensor(mask).to(torch.bool)
        self.lengths = self.mask.sum(dim=1)
        positions = torch.arange(self.mask.shape[1], device=self.mask.device)
        # A device scalar, true when some row is not real steps followed by padding.
        self.holes = (self.mask != (positions[None, :] < self.lengths[:, None])).any()
        self._derived = {}

    def derived(self, key, make):
        if key not in self._derived:
            self._derived[key] = make()
        return self._derived[key]


_last_mask_facts = None


def _version(mask):
    return getattr(mask, "_version", None)  # in-place changes count up a tensor's version


def _facts(mask) -> _MaskFacts:
    """`mask`'s `_MaskFacts`, reused while the same unmodified tensor comes back."""
    global _last_mask_facts
    facts = _last_mask_facts
    if facts is None or facts.source is not mask or facts.version != _version(mask):
        facts = _last_mask_facts = _MaskFacts(mask)
    return facts


def _masked_inputs(inputs, mask, kernel):
    """`(kernel, inputs, facts)`: the kernel and inputs in the compute dtype and the mask's
    `_MaskFacts`."""
    # Keras variables read inside a layer call come autocast to the compute dtype.
    kernel = keras.ops.convert_to_tensor(kernel)
    inputs = torch.as_tensor(inputs).to(kernel.dtype)
    return kernel, inputs, _facts(mask)


def packed_lstm(
    inputs,
    initial_h,
    initial_c,
    mask,
    kernel,
    recurrent_kernel,
    bias,
    return_sequences,
    zero_output_for_mask=False,
    one_buffer=True,
):
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
        one_buffer: as `_fused`'s.

    Returns:
        `(last_output, outputs, [h, c])` as `keras.layers.LSTM.inner_loop`
        returns them, or `None` when the mask is not right-padded or a row is
        empty (the caller then takes Keras' own path).
    """
    kernel, inputs, facts = _masked_inputs(inputs, mask, kernel)
    mask, lengths = facts.mask, facts.lengths
    dtype, (batch, time) = kernel.dtype, mask.shape
    # One device-to-host transfer (a synchronisation) per mask: the lengths and the check.
    host = facts.derived("host", lambda: torch.cat([lengths, facts.holes.to(lengths.dtype).reshape(1)]).cpu())
    lengths_host, holes = host[:-1], bool(host[-1])
    if holes or batch == 0 or int(lengths_host.min()) == 0:
        return None
    packed = pack_padded_sequence(inputs, lengths_host, batch_first=True, enforce_sorted=False)
    order = packed.sorted_indices
    h0 = torch.as_tensor(initial_h).to(dtype).index_select(0, order)
    c0 = torch.as_tensor(initial_c).to(dtype).index_select(0, order)
    data, h_n, c_n = _fused(
        packed.data, h0, c0, kernel, recurrent_kernel, bias, batch_sizes=packed.batch_sizes, one_buffer=one_buffer
    )
    restore = packed.unsorted_indices
    h_n = h_n[0].index_select(0, restore)
    c_n = c_n[0].index_select(0, restore)
    if return_sequences:
        outputs, _ = pad_packed_sequence(
            PackedSequence(data, packed.batch_sizes, order, restore), batch_first=True, total_length=time
        )
        if not zero_output_for_mask:
            outputs = torch.where(mask[:, :, None], outputs, h_n[:, None, :])
    else:
        outputs = h_n.unsqueeze(1)
    return h_n, outputs, [h_n, c_n]


@functools.cache
def _freeze_rows(count: int, units: int, dtype, device) -> torch.Tensor:
    """`(count, 4 * units)`: input-weight rows of the padding indicator (the first; gates
    i, f, c, o) and of the zero features after it."""
    rows = torch.zeros(count, 4 * units, dtype=dtype, device=device)
    rows[0, :units] = -_FREEZE
    rows[0, units : 2 * units] = _FREEZE
    return rows


def frozen_lstm(
    inputs,
    initial_h,
    initial_c,
    mask,
    kernel,
    recurrent_kernel,
    bias,
    return_sequences,
    zero_output_for_mask=False,
    one_buffer=True,
):
    """Runs one LSTM layer over a right-padded masked batch without packing it.

    The batch runs padded through one fused call with one more input feature, 1 on
    padded steps, whose weights push the input gate's pre-activation down and the
    forget gate's up by 1e4: the sigmoids give exactly 0 and 1 there, so from a
    row's last real step on its cell state passes through unchanged (`c = 1 * c +
    0 * g`) and the final cell state is the last real step's. Its hidden state is
    read from the outputs at `length - 1`. The saturated gates pass no gradient, and
    the outputs on padding are replaced, so the gradients equal Keras' loop's too.
    Nothing waits for the GPU: on CUDA a mask that is not right-padded fails a
    device-side assertion instead of being checked on the host.

    Arguments and result as `packed_lstm`'s; rows of length 0 keep their initial
    state and output zeros, as in Keras' loop. Returns `None` (Keras' loop) for a
    mask that is not right-padded on a CPU.
    """
    kernel, inputs, facts = _masked_inputs(inputs, mask, kernel)
    mask, lengths = facts.mask, facts.lengths
    dtype, batch = kernel.dtype, mask.shape[0]
    if mask.is_cuda:
        facts.derived("checked", lambda: torch._assert_async(~facts.holes))
    elif facts.derived("holes", lambda: bool(facts.holes)):
        return None
    recurrent_kernel = keras.ops.convert_to_tensor(recurrent_kernel).to(dtype)
    units = recurrent_kernel.shape[0]
    # The indicator and zeros up to a multiple of 8 features (tensor cores' alignment).
    extra = 8 - kernel.shape[0] % 8
    initial_h = torch.as_tensor(initial_h).to(dtype)
    initial_c = torch.as_tensor(initial_c).to(dtype)
    indicator = facts.derived(
        ("indicator", dtype, extra), lambda: torch.nn.functional.pad((~mask).to(dtype).unsqueeze(-1), (0, extra - 1))
    )
    data = torch.cat([inputs, indicator], dim=-1)
    weight_ih = torch.cat([kernel, _freeze_rows(extra, units, dtype, kernel.device)])
    outputs, _, c_n = _fused(data, initial_h, initial_c, weight_ih, recurrent_kernel, bias, one_buffer=one_buffer)
    empty, rows, last = facts.derived(
        "last", lambda: ((lengths == 0)[:, None], torch.arange(batch, device=mask.device), (lengths - 1).clamp(min=0))
    )
    last_real = outputs[rows, last]
    h_n = torch.where(empty, initial_h, last_real)
    # Keras' loop outputs zeros until a row's first real step.
    last_output = last_real.masked_fill(empty, 0)
    if return_sequences:
        fill = torch.zeros_like(last_output) if zero_output_for_mask else last_output
        outputs = torch.where(mask[:, :, None], outputs, fill[:, None, :])
    else:
        outputs = last_output.unsqueeze(1)
    return last_output, outputs, [h_n, c_n[0]]
