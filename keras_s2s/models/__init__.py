"""Keras model builders (keras imports only; `keras_s2s.torch_backend` is imported under the torch backend alone)."""

from keras_s2s.models.seq2seq import LuongAttention, build_inference_models, build_seq2seq

__all__ = ["LuongAttention", "build_inference_models", "build_seq2seq"]
