"""The Starter Bundle's plain CNNs: ShallowNet, LeNet, MiniVGGNet, AlexNet, FCHeadNet, and
Kneusel's baseline MNIST CNN. Keras 3 functional API only (runs on TensorFlow, JAX or PyTorch)."""
from __future__ import annotations

import keras
from keras import layers

from .registry import register


def _reg(l2: float):
    return keras.regularizers.l2(l2) if l2 else None


@register("shallownet")
def shallownet(input_shape, classes):
    """INPUT => CONV(32 3x3) => RELU => FC (Starter Bundle ch. 12)."""
    inp = keras.Input(input_shape)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(inp)
    x = layers.Flatten()(x)
    out = layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inp, out, name="shallownet")


@register("lenet")
def lenet(input_shape, classes, filters: tuple[int, int] = (20, 50), dense: int = 500, dropout: float = 0.0):
    """LeNet as in the Starter Bundle (ch. 14): two CONV(5x5)-RELU-POOL blocks, FC-500, softmax.

    `filters`/`dense` widen it and `dropout` regularises it (the smile ablations use these)."""
    inp = keras.Input(input_shape)
    x = layers.Conv2D(filters[0], 5, padding="same", activation="relu")(inp)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(filters[1], 5, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense, activation="relu")(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    out = layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inp, out, name="lenet")


@register("minivggnet")
def minivggnet(input_shape, classes, dropout: float = 0.25, dense_dropout: float = 0.5):
    """Two (CONV-BN-CONV-BN-POOL-DROPOUT) blocks of 32 and 64 filters, FC-512-BN-DROPOUT (ch. 15)."""
    inp = keras.Input(input_shape)
    x = inp
    for f in (32, 64):
        for _ in range(2):
            x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
            x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(dropout)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(512, activation="relu")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Dropout(dense_dropout)(x)
    out = layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inp, out, name="minivggnet")


@register("alexnet")
def alexnet(input_shape, classes, l2: float = 0.0002):
    """AlexNet as in the ImageNet Bundle / Practitioner (BN after activations, dropout).

    Strides and pools adapt to small inputs so it also runs on 32x32 test images."""
    reg = _reg(l2)
    big = min(input_shape[:2]) >= 128
    inp = keras.Input(input_shape)
    x = layers.Conv2D(96, 11 if big else 3, strides=4 if big else 1, padding="same", activation="relu",
                      kernel_regularizer=reg)(inp)
    x = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D(3 if big else 2, strides=2, padding="same")(x)
    x = layers.Dropout(0.25)(x)
    x = layers.Conv2D(256, 5 if big else 3, padding="same", activation="relu", kernel_regularizer=reg)(x)
    x = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D(3 if big else 2, strides=2, padding="same")(x)
    x = layers.Dropout(0.25)(x)
    for f in (384, 384, 256):
        x = layers.Conv2D(f, 3, padding="same", activation="relu", kernel_regularizer=reg)(x)
        x = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D(3 if big else 2, strides=2, padding="same")(x)
    x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    for _ in range(2):
        x = layers.Dense(4096 if big else 512, activation="relu", kernel_regularizer=reg)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Dropout(0.5)(x)
    out = layers.Dense(classes, activation="softmax", kernel_regularizer=reg)(x)
    return keras.Model(inp, out, name="alexnet")


@register("fchead")
def fchead(input_shape, classes, dense: int = 256, dropout: float = 0.5):
    """FCHeadNet (Practitioner ch. 5): the new head for network surgery, on a feature map input."""
    inp = keras.Input(input_shape)
    x = layers.Flatten()(inp)
    x = layers.Dense(dense, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    out = layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inp, out, name="fchead")


@register("kneusel-mnist")
def kneusel_mnist(input_shape, classes):
    """Kneusel's baseline MNIST CNN: CONV32-CONV64-POOL-DROPOUT-FC128-DROPOUT (the Keras MNIST example)."""
    inp = keras.Input(input_shape)
    x = layers.Conv2D(32, 3, activation="relu")(inp)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    out = layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inp, out, name="kneusel_mnist")
