"""The model under `KERAS_BACKEND=torch`: timing and training it on a GPU machine without
TensorFlow (see README.md beside this file).

- `lstm`: the fused torch calls of `keras_s2s.models.lstm.LSTM` for masked, right-padded
  batches (packed, or padded with the cell state frozen) and for unmasked ones on a GPU;
- `forward`: the training model's forward pass without Keras' per-layer call machinery;
- `step`: Keras' torch `train_step` without its host-device waits (`install(model)`).

Imported only under the torch backend; the rest of keras_s2s never imports it otherwise.
"""
