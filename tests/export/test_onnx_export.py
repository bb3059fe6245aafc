import os

import keras
import numpy as np
import onnx
import pytest

from export.onnx_export import export_onnx
from keras_s2s.config import BOS_ID, EOS_ID, Config, ModelConfig
from keras_s2s.decoder import KerasTranslator
from keras_s2s.models import build_inference_models, build_seq2seq
from serving.batching import max_output_lengths, pad_sources
from serving.search import beam_search


def sessions(out_dir: str):
    """onnxruntime sessions for the two graphs in `out_dir` (CPU, one thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return (
        ort.InferenceSession(os.path.join(out_dir, "encoder.onnx"), options, providers=["CPUExecutionProvider"]),
        ort.InferenceSession(os.path.join(out_dir, "decoder_step.onnx"), options, providers=["CPUExecutionProvider"]),
    )


def onnx_step_function(decoder_session, attention: bool):
    """A `serving.search` step function over the ONNX decoder-step session."""

    def step(token_ids: np.ndarray, state: dict):
        feeds = {"token_ids": token_ids.astype(np.int32), "states": state["states"]}
        if attention:
            feeds["encoder_outputs"] = state["encoder_outputs"]
            feeds["source_lengths"] = state["source_lengths"]
        if has_top_k:
            feeds["top_k"] = np.array([1], np.int64)
        log_probs, next_states = decoder_session.run(["log_probs", "next_states"], feeds)
        return log_probs, {"states": next_states}

    has_top_k = "top_k" in {i.name for i in decoder_session.get_inputs()}
    return step


CASES = {
    "plain": dict(attention="none", bidirectional_encoder=False, num_layers=2),
    "attention-bidirectional": dict(attention="luong", bidirectional_encoder=True, num_layers=2),
    "attention-all-bidirectional": dict(attention="luong", bidirectional_layers=2, num_layers=2),
}


@pytest.fixture(scope="module", params=list(CASES))
def exported(request, tmp_path_factory):
    config = ModelConfig(
        hidden_dim=16,
        embedding_dim=8,
        dropout=0.0,
        source_vocabulary_size=25,
        target_vocabulary_size=30,
        **CASES[request.param],
    )
    keras.utils.set_random_seed(5)
    model = build_seq2seq(config)
    # Larger weights than the U(-0.08, 0.08) start make differences visible.
    for weight in model.weights:
        weight.assign(np.random.default_rng(1).uniform(-0.5, 0.5, weight.shape).astype("float32"))
    out_dir = str(tmp_path_factory.mktemp(request.param))
    report = export_onnx(model, config, out_dir)
    return config, model, out_dir, report


def _sources(seed=0):
    rng = np.random.default_rng(seed)
    return [list(rng.integers(4, 25, n)) for n in (7, 3, 1, 5, 9)]


def test_every_lstm_is_one_fused_node(exported):
    config, _, out_dir, report = exported
    for name in ("encoder", "decoder_step"):
        graph = onnx.load(f"{out_dir}/{name}.onnx").graph
        ops = [node.op_type for node in graph.node]
        assert ops.count("LSTM") == config.num_layers
        assert not {"Loop", "Scan", "If"} & set(ops)
        assert report[name]["LSTM"] == config.num_layers
    encoder = onnx.load(f"{out_dir}/encoder.onnx").graph
    assert all(node.input[4] == "source_lengths" for node in encoder.node if node.op_type == "LSTM")


def test_padded_batch_gives_each_sentence_its_own_states(exported):
    config, model, out_dir, _ = exported
    encoder_session, _ = sessions(out_dir)
    sources = _sources()
    ids, lengths = pad_sources(sources, reverse=True)
    together = encoder_session.run(None, {"source_ids": ids, "source_lengths": lengths})
    names = [output.name for output in encoder_session.get_outputs()]
    together = dict(zip(names, together))
    keras_encoder, _ = build_inference_models(model, config)
    expected = keras.ops.convert_to_numpy(keras_encoder(ids)["states"])
    np.testing.assert_allclose(together["states"], expected, atol=1e-5)
    for row, source in enumerate(sources):
        alone_ids, alone_lengths = pad_sources([source], reverse=True)
        alone = dict(zip(names, encoder_session.run(None, {"source_ids": alone_ids, "source_lengths": alone_lengths})))
        np.testing.assert_allclose(alone["states"][:, 0], together["states"][:, row], atol=1e-5)


def test_keras_and_onnx_agree_step_by_step_and_in_the_search(exported):
    config, model, out_dir, _ = exported
    attention = config.attention == "luong"
    encoder_session, decoder_session = sessions(out_dir)
    run_config = Config(model=config)
    translator = KerasTranslator(model, run_config, None, None)
    sources = _sources(3)
    ids, lengths = pad_sources(sources, reverse=True)
    keras_state = translator.encode_batch(ids, lengths)
    names = [output.name for output in encoder_session.get_outputs()]
    onnx_state = dict(zip(names, encoder_session.run(None, {"source_ids": ids, "source_lengths": lengths})))
    if attention:
        onnx_state["source_lengths"] = lengths
    onnx_step = onnx_step_function(decoder_session, attention)
    tokens = np.random.default_rng(4).integers(4, 30, (len(sources), 6)).astype(np.int32)
    k_state, o_state = dict(keras_state), dict(onnx_state)
    worst = 0.0
    for t in range(tokens.shape[1]):
        k_log_probs, k_update = translator.step(tokens[:, t], k_state)
        o_log_probs, o_update = onnx_step(tokens[:, t], o_state)
        worst = max(worst, float(np.abs(k_log_probs - o_log_probs).max()))
        k_state.update(k_update)
        o_state.update(o_update)
    assert worst <= 1e-4
    limits = max_output_lengths(lengths, 1.5, 5)
    keras_results = beam_search(
        translator.step, keras_state, bos_id=BOS_ID, eos_id=EOS_ID, max_lengths=limits, beam_size=4
    )
    onnx_results = beam_search(onnx_step, onnx_state, bos_id=BOS_ID, eos_id=EOS_ID, max_lengths=limits, beam_size=4)
    assert [r[0].token_ids for r in keras_results] == [r[0].token_ids for r in onnx_results]


def test_saved_model_agrees_with_keras(exported, tmp_path):
    import tensorflow as tf

    from export.bundle import export_saved_model

    config, model, out_dir, _ = exported
    result = export_saved_model(model, Config(model=config), str(tmp_path / "saved"))
    assert result["max_abs_diff"] <= 1e-5
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    encoder_session, _ = sessions(out_dir)
    ids, lengths = pad_sources(_sources(7), reverse=True)
    from_saved = loaded.encode(tf.constant(ids), tf.constant(lengths))["states"].numpy()
    from_onnx = encoder_session.run(["states"], {"source_ids": ids, "source_lengths": lengths})[0]
    np.testing.assert_allclose(from_saved, from_onnx, atol=1e-5)
