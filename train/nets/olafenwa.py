"""Olafenwa's blocks: a squeeze-and-excitation module and a depthwise-separable MiniModel."""
from __future__ import annotations

import keras
from keras import layers

from .registry import register


def se_module(x, ratio: int = 8):
    """Squeeze (global pool) and excite (two dense layers, sigmoid) to re-weight channels."""
    c = x.shape[-1]
    s = layers.GlobalAveragePooling2D()(x)
    s = layers.Dense(max(c // ratio, 4), activation="relu")(s)
    s = layers.Dense(c, activation="sigmoid")(s)
    s = layers.Reshape((1, 1, c))(s)
    return layers.multiply([x, s])


def _sep_block(x, filters, stride, se):
    x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    return se_module(x) if se else x


@register("minimodel")
def minimodel(input_shape, classes, se: bool = True, width: int = 32):
    """Conv stem, then depthwise-separable blocks (optionally with SE), global pool, softmax."""
    inp = keras.Input(input_shape)
    x = layers.Conv2D(width, 3, padding="same", use_bias=False)(inp)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    for f, s in ((width, 1), (2 * width, 2), (2 * width, 1), (4 * width, 2), (4 * width, 1), (8 * width, 2)):
        x = _sep_block(x, f, s, se)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    out = layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inp, out, name="minimodel_se" if se else "minimodel")
