"""The hand-written decoder-step graph against a numpy step written from the equations."""

import collections

import numpy as np
import onnxruntime as ort
import pytest

from export.step_graph import decoder_step_graph
from graphs import random_decoder_weights


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _numpy_step(weights, token_ids, states, encoder_outputs=None, source_lengths=None):
    """One decoder step in Keras' conventions (gates i, f, c, o; Luong general attention)."""
    x = weights.embedding[token_ids]
    next_states = []
    for index, (kernel, recurrent, bias) in enumerate(weights.lstm):
        h, c = states[2 * index], states[2 * index + 1]
        i, f, g, o = np.split(x @ kernel + h @ recurrent + bias, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        next_states += [h, c]
        x = h
    if weights.attention is not None:
        scores = np.einsum("bh,bth->bt", x @ weights.attention, encoder_outputs)
        positions = np.arange(encoder_outputs.shape[1])[None, :]
        scores = np.where(positions < source_lengths[:, None], scores, -1e9)
        attention = np.exp(scores - scores.max(-1, keepdims=True))
        attention /= attention.sum(-1, keepdims=True)
        context = np.einsum("bt,bth->bh", attention, encoder_outputs)
        x = np.tanh(np.concatenate([x, context], axis=-1) @ weights.attention_combine)
    logits = x @ weights.logits_kernel + weights.logits_bias
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    return log_probs, np.stack(next_states)


def _session(weights):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        decoder_step_graph(weights).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _feeds(weights, rows=4, time=6, seed=0):
    rng = np.random.default_rng(seed)
    hidden = weights.hidden
    feeds = {
        "token_ids": rng.integers(0, weights.vocabulary, rows).astype(np.int32),
        "states": rng.uniform(-1, 1, (2 * len(weights.lstm), rows, hidden)).astype(np.float32),
        "top_k": np.array([3], np.int64),
    }
    if weights.attention is not None:
        feeds["encoder_outputs"] = rng.uniform(-1, 1, (rows, time, hidden)).astype(np.float32)
        feeds["source_lengths"] = np.array([time, 1, 3, time][:rows], np.int32)
    return feeds


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("layers", [1, 3])
def test_step_graph_matches_the_equations(attention, layers):
    # Larger weights than the U(-0.08, 0.08) start make a wrong gate order or mask visible.
    weights = random_decoder_weights(
        layers, hidden=12, embedding=5, vocabulary=37, attention=attention, seed=layers, scale=0.6
    )
    feeds = _feeds(weights)
    log_probs, next_states, top_values, top_ids = _session(weights).run(
        ["log_probs", "next_states", "top_log_probs", "top_ids"], feeds
    )
    expected_log_probs, expected_states = _numpy_step(
        weights, feeds["token_ids"], feeds["states"], feeds.get("encoder_outputs"), feeds.get("source_lengths")
    )
    np.testing.assert_allclose(next_states, expected_states, atol=1e-5)
    np.testing.assert_allclose(log_probs, expected_log_probs, atol=1e-5)
    np.testing.assert_array_equal(top_ids, np.argsort(-expected_log_probs, axis=-1)[:, :3])
    np.testing.assert_allclose(top_values, np.sort(expected_log_probs, axis=-1)[:, ::-1][:, :3], atol=1e-5)


def test_attention_ignores_encoder_outputs_past_the_source_length():
    weights = random_decoder_weights(2, hidden=8, embedding=4, vocabulary=20, attention=True, scale=0.6)
    session = _session(weights)
    feeds = _feeds(weights)
    before = session.run(["log_probs"], feeds)[0]
    changed = dict(feeds)
    changed["encoder_outputs"] = feeds["encoder_outputs"].copy()
    for row, length in enumerate(feeds["source_lengths"]):
        changed["encoder_outputs"][row, length:] = 100.0
    np.testing.assert_allclose(session.run(["log_probs"], changed)[0], before, atol=1e-6)
    # ... and does read the real positions.
    changed["encoder_outputs"][:, 0] += 1.0
    assert np.abs(session.run(["log_probs"], changed)[0] - before).max() > 1e-3


def test_step_graph_has_no_shape_plumbing():
    """Every node but the selection of the best tokens does the step's arithmetic: one
    node per LSTM, no Transpose, one Cast (the lengths for the mask)."""
    weights = random_decoder_weights(2, hidden=8, embedding=4, vocabulary=2048, attention=True)
    graph = decoder_step_graph(weights).graph
    selection = {"top_log_probs", "top_ids"}
    ops = collections.Counter(
        node.op_type for node in graph.node if not (selection & set(node.output) or node.output[0].startswith("top_k/"))
    )
    assert ops["LSTM"] == 2
    assert ops["Cast"] == 1
    assert not {"Transpose", "Loop", "Scan", "If", "Expand", "Not"} & set(ops)
    assert sum(ops.values()) <= 32
