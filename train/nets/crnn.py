"""CRNN for segmentation-free text CAPTCHAs (CTC): conv blocks, width as the time axis, a
bidirectional RNN and a per-time-step softmax over the charset plus the CTC blank (last index).

Shaped after the Keras "OCR model for reading captchas" example, with two deployment choices:
- CTC decoding is *not* in the graph (no CTC ops are TFLite builtins); the model outputs
  N x T x (len(charset) + 1) probabilities and `edgecv.ctc` decodes them in NumPy.
- The RNN is unrolled (`unroll=True`). A looped Keras 3 LSTM becomes a TensorList while-loop that
  the TFLite converter rejects ("TensorListReserve ... element_shape to be static"); unrolled, it
  becomes FULLY_CONNECTED / LOGISTIC / TANH builtins that also quantize to int8, and tf2onnx
  converts it as well. Each unrolled step costs file size (about 6 KB per direction-step in int8),
  so the conv stack pools the width 8x (25 time steps for a 200-pixel-wide image: enough for
  5-8 characters, CTC needs at least 2 steps for a doubled letter).
`rnn="none"` gives a conv-only variant (1-D convolutions over time) for runtimes without RNNs.
"""
from __future__ import annotations

import keras
from keras import layers

from edgecv.errors import ConfigError

from .registry import register


@register("crnn", "crnn-ctc")
def crnn(input_shape, classes, filters: tuple[int, ...] = (32, 64, 96), dense: int = 64,
         rnn: str = "lstm", rnn_units: tuple[int, ...] = (64,), dropout: float = 0.2,
         unroll: bool = True):
    """CRNN-CTC: conv-BN-pool blocks, BiLSTM/BiGRU over the width, softmax over charset+blank.

    `classes` counts the blank: len(charset) + 1. The output is N x T x classes probabilities with
    T = W / 2**len(filters). The layer named "logits" is the pre-softmax output used for the loss.
    """
    h, w, _ = input_shape
    pools = len(filters)
    if h >> pools < 1 or w % (1 << pools):
        raise ConfigError(f"crnn: input {h}x{w} does not survive {pools} 2x2 poolings evenly "
                         f"(width must be a multiple of {1 << pools})")
    if rnn not in ("lstm", "gru", "none"):
        raise ConfigError(f"crnn: rnn must be lstm, gru or none; got {rnn!r}")
    inp = keras.Input(input_shape, name="image")
    x = inp
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                          name=f"conv{i + 1}")(x)
        # BatchNorm shortens the long flat stretch CTC training starts with; it folds into the
        # convolution at export, so it costs nothing at inference.
        x = layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    fh, t = h >> pools, w >> pools
    # Width becomes time: (N, H', T, C) -> (N, T, H' * C).
    x = layers.Permute((2, 1, 3))(x)
    x = layers.Reshape((t, fh * filters[-1]))(x)
    x = layers.Dense(dense, activation="relu", kernel_initializer="he_normal", name="proj")(x)
    x = layers.Dropout(dropout)(x)
    for i, units in enumerate(rnn_units):
        if rnn == "none":
            x = layers.Conv1D(2 * units, 5, padding="same", activation="relu", name=f"tconv{i + 1}")(x)
            continue
        cell = layers.LSTM if rnn == "lstm" else layers.GRU
        x = layers.Bidirectional(cell(units, return_sequences=True, dropout=0.25 if dropout else 0.0,
                                      unroll=unroll), name=f"bi{rnn}{i + 1}")(x)
    x = layers.Dense(classes, name="logits")(x)
    out = layers.Softmax(name="probs")(x)
    return keras.Model(inp, out, name="crnn")
