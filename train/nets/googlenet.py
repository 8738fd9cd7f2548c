"""MiniGoogLeNet (Practitioner ch. 11, for CIFAR-10) and DeeperGoogLeNet (ch. 12, Tiny ImageNet)."""
from __future__ import annotations

import keras
from keras import layers

from .registry import register


def _conv(x, filters, k, stride=1, padding="same", l2=0.0, bn_first=False):
    reg = keras.regularizers.l2(l2) if l2 else None
    x = layers.Conv2D(filters, k, strides=stride, padding=padding, kernel_regularizer=reg)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


def _mini_inception(x, f1, f3):
    return layers.concatenate([_conv(x, f1, 1), _conv(x, f3, 3)])


def _mini_downsample(x, f):
    a = _conv(x, f, 3, stride=2, padding="valid")
    b = layers.MaxPooling2D(3, strides=2)(x)
    return layers.concatenate([a, b])


@register("minigooglenet")
def minigooglenet(input_shape, classes):
    """Conv, 2 inception + downsample, 4 inception + downsample, 2 inception, global pool, dropout."""
    inp = keras.Input(input_shape)
    x = _conv(inp, 96, 3)
    x = _mini_inception(x, 32, 32)
    x = _mini_inception(x, 32, 48)
    x = _mini_downsample(x, 80)
    for f1, f3 in ((112, 48), (96, 64), (80, 80), (48, 96)):
        x = _mini_inception(x, f1, f3)
    x = _mini_downsample(x, 96)
    x = _mini_inception(x, 176, 160)
    x = _mini_inception(x, 176, 160)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.5)(x)
    out = layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inp, out, name="minigooglenet")


def _inception(x, n1, n3r, n3, n5r, n5, npool, l2):
    a = _conv(x, n1, 1, l2=l2)
    b = _conv(_conv(x, n3r, 1, l2=l2), n3, 3, l2=l2)
    c = _conv(_conv(x, n5r, 1, l2=l2), n5, 5, l2=l2)
    d = _conv(layers.MaxPooling2D(3, strides=1, padding="same")(x), npool, 1, l2=l2)
    return layers.concatenate([a, b, c, d])


@register("deepergooglenet")
def deepergooglenet(input_shape, classes, l2: float = 0.0005):
    """Stem (5x5, pool, 1x1, 3x3, pool), inception 3a-3b, pool, 4a-4e, global pool, dropout 0.4."""
    inp = keras.Input(input_shape)
    x = _conv(inp, 64, 5, l2=l2)
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    x = _conv(x, 64, 1, l2=l2)
    x = _conv(x, 192, 3, l2=l2)
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    x = _inception(x, 64, 96, 128, 16, 32, 32, l2)
    x = _inception(x, 128, 128, 192, 32, 96, 64, l2)
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    for args in ((192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
                 (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128)):
        x = _inception(x, *args, l2)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.4)(x)
    out = layers.Dense(classes, activation="softmax", kernel_regularizer=keras.regularizers.l2(l2))(x)
    return keras.Model(inp, out, name="deepergooglenet")
