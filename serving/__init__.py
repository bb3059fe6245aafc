"""The device side: numpy, onnxruntime and sentencepiece only.

`serving.search` holds the greedy and beam search that both the Keras
reference decoder and the onnxruntime translator use.
"""
