"""keras-s2s: deep LSTM sequence-to-sequence models in Keras 3.

Training side: `keras_s2s.config`, `keras_s2s.data`, `keras_s2s.models`,
`keras_s2s.training`, `keras_s2s.evaluation`, and the `s2s` command line.
"""

from serving import __version__

__all__ = ["__version__"]
