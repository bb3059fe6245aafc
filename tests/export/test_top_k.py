"""The in-graph top-k selection: the two-stage graph returns what one TopK returns."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from export.top_k import block_size, top_k_nodes


def _session(vocabulary, two_stage):
    nodes, initializers = top_k_nodes("scores", vocabulary if two_stage else None)
    graph = helper.make_graph(
        nodes,
        "select",
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["rows", vocabulary]),
            helper.make_tensor_value_info("top_k", TensorProto.INT64, [1]),
        ],
        [
            helper.make_tensor_value_info("top_log_probs", TensorProto.FLOAT, ["rows", "k"]),
            helper.make_tensor_value_info("top_ids", TensorProto.INT64, ["rows", "k"]),
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def test_block_size_rule():
    assert block_size(32000) == 64 and 32000 % 64 == 0
    assert block_size(4000) == 20
    assert block_size(500) is None  # small: one TopK
    assert block_size(8191) is None  # prime: no block width divides it


@pytest.mark.parametrize("vocabulary", [4000, 6000])
def test_two_stage_selection_equals_one_top_k(vocabulary):
    two_stage = _session(vocabulary, True)
    assert sum(node.op_type == "TopK" for node in top_k_nodes("scores", vocabulary)[0]) == 2
    rng = np.random.default_rng(vocabulary)
    blocks = vocabulary // block_size(vocabulary)
    for rows in (1, 5, 37):
        # Rounded scores make ties; the best tokens of a row often share a block.
        scores = np.round(rng.standard_normal((rows, vocabulary)) * 4, 1).astype(np.float32)
        scores[0, 100:110] = 50.0 + np.arange(10)
        for k in (1, 2, 10, blocks - 1, blocks, blocks + 7, vocabulary):
            feeds = {"scores": scores, "top_k": np.array([k], np.int64)}
            values, ids = two_stage.run(None, feeds)
            expected = -np.sort(-scores, axis=1)[:, :k]
            assert values.shape == (rows, k)
            np.testing.assert_array_equal(values, expected)
            # The ids point at those values (which of several tied tokens may differ).
            np.testing.assert_array_equal(np.take_along_axis(scores, ids, axis=1), expected)
            assert all(len(set(row)) == k for row in ids.tolist())
            if k >= 10:
                assert ids[0, :10].tolist() == list(range(109, 99, -1))
