"""The model builds, trains and gives its inference models under the torch backend, with
no TensorFlow in the process (tests/conftest.py makes importing it fail)."""

import sys

import keras
import numpy as np
import pytest

from keras_s2s.config import ModelConfig
from keras_s2s.losses import SequenceCrossEntropy
from keras_s2s.models import build_inference_models, build_seq2seq

pytestmark = pytest.mark.torch_backend


def test_the_model_builds_and_trains_without_tensorflow():
    assert keras.backend.backend() == "torch" and sys.modules["tensorflow"] is None
    config = ModelConfig(
        num_layers=2,
        hidden_dim=16,
        embedding_dim=8,
        attention="luong",
        bidirectional_encoder=True,
        source_vocabulary_size=20,
        target_vocabulary_size=20,
    )
    model = build_seq2seq(config)
    build_inference_models(model)
    model.compile(optimizer=keras.optimizers.Adam(1e-2, global_clipnorm=5.0), loss=SequenceCrossEntropy())
    x = {
        "source_ids": np.array([[5, 6, 0], [7, 8, 9]], "int32"),
        "decoder_input_ids": np.array([[2, 5], [2, 6]], "int32"),
    }
    y = np.array([[5, 3], [6, 3]], "int32")
    first = float(model.train_on_batch(x, y))
    for _ in range(15):
        last = float(model.train_on_batch(x, y))
    assert last < first
