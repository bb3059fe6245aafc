"""The device side: numpy, onnxruntime and sentencepiece only.

`serving.search` holds the greedy and beam search that both the Keras
reference decoder and the onnxruntime translator use.
"""

# The package's version, in this one place (pyproject.toml reads it); every command's --version prints it.
__version__ = "0.1.0"
