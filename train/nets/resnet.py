"""Pre-activation bottleneck ResNet (Practitioner ch. 12-13), CIFAR and Tiny-ImageNet variants.

The book's listing builds every residual module with the default regularisation instead of the
`reg` passed in; here `l2` reaches every convolution of every module, shortcut included.
"""
from __future__ import annotations

import keras
from keras import layers

from .registry import register


def _bn_relu(x, eps, mom):
    x = layers.BatchNormalization(epsilon=eps, momentum=mom)(x)
    return layers.Activation("relu")(x)


def residual_module(x, filters, stride, reduce, l2, eps=2e-5, mom=0.9):
    """BN-RELU-CONV1x1(K/4) -> BN-RELU-CONV3x3(K/4, stride) -> BN-RELU-CONV1x1(K), plus the shortcut."""
    reg = keras.regularizers.l2(l2) if l2 else None
    shortcut = x
    a1 = _bn_relu(x, eps, mom)
    c1 = layers.Conv2D(filters // 4, 1, use_bias=False, kernel_regularizer=reg)(a1)
    a2 = _bn_relu(c1, eps, mom)
    c2 = layers.Conv2D(filters // 4, 3, strides=stride, padding="same", use_bias=False, kernel_regularizer=reg)(a2)
    a3 = _bn_relu(c2, eps, mom)
    c3 = layers.Conv2D(filters, 1, use_bias=False, kernel_regularizer=reg)(a3)
    if reduce:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, kernel_regularizer=reg)(a1)
    return layers.add([c3, shortcut])


def _resnet(input_shape, classes, stages, filters, l2, tiny_imagenet, name):
    reg = keras.regularizers.l2(l2) if l2 else None
    inp = keras.Input(input_shape)
    x = layers.BatchNormalization(epsilon=2e-5, momentum=0.9)(inp)
    if tiny_imagenet:
        x = layers.Conv2D(filters[0], 5, padding="same", use_bias=False, kernel_regularizer=reg)(x)
        x = _bn_relu(x, 2e-5, 0.9)
        x = layers.ZeroPadding2D(1)(x)
        x = layers.MaxPooling2D(3, strides=2)(x)
    else:
        x = layers.Conv2D(filters[0], 3, padding="same", use_bias=False, kernel_regularizer=reg)(x)
    for i, n in enumerate(stages):
        stride = 1 if i == 0 else 2
        x = residual_module(x, filters[i + 1], stride, True, l2)
        for _ in range(n - 1):
            x = residual_module(x, filters[i + 1], 1, False, l2)
    x = _bn_relu(x, 2e-5, 0.9)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(classes, activation="softmax", kernel_regularizer=reg)(x)
    return keras.Model(inp, out, name=name)


@register("resnet", "resnet-cifar")
def resnet_cifar(input_shape, classes, stages: tuple[int, ...] = (9, 9, 9),
                 filters: tuple[int, ...] = (64, 64, 128, 256), l2: float = 0.0005):
    """ResNet for CIFAR-10 (the book's 3x9 bottleneck stages, 64-128-256 filters)."""
    return _resnet(input_shape, classes, stages, filters, l2, False, "resnet_cifar")


@register("resnet-tiny")
def resnet_tiny(input_shape, classes, stages: tuple[int, ...] = (3, 4, 6),
                filters: tuple[int, ...] = (64, 128, 256, 512), l2: float = 0.0005):
    """ResNet for Tiny ImageNet (5x5 stem + max-pool, 3-4-6 stages)."""
    return _resnet(input_shape, classes, stages, filters, l2, True, "resnet_tiny")
