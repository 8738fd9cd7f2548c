"""Input kinds an export can take (`edgecv export --input`), as a table.

`float` is the model as trained: NxHxWxC float32 after the spec's whole chain. `uint8-rgb` is what
cameras, MediaPipe Tasks, Android and NNAPI/Coral-style delegates hand over: NxHxWx3 uint8 RGB
pixels, already at the model's size. The colour conversion (RGB -> gray through a fixed 1x1
convolution with OpenCV's BGR2GRAY weights, or RGB -> BGR), the scaling and the mean / std then run
inside the graph, folded into that one 1x1 convolution, in front of the trained network. The
artefact's ModelSpec says so: colour `rgb`, input 3 channels, and a chain of only the colour and
geometric steps (`rgb`, then the resize / crop steps), so edgecv feeds it exactly what a camera
consumer would.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, unknown
from ..preprocess import Rgb
from ..spec import ModelSpec

# cv2.COLOR_BGR2GRAY's weights, in R, G, B order (the gray step of every spec uses OpenCV's).
GRAY_WEIGHTS_RGB = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class InputKind:
    name: str
    description: str
    tasks: tuple[str, ...] | None      # the tasks it fits (None: every task)
    why_not: str = ""


INPUTS: dict[str, InputKind] = {k.name: k for k in (
    InputKind("float", "NxHxWxC float32 after the spec's whole preprocessing chain (as trained)", None),
    InputKind("uint8-rgb", "NxHxWx3 uint8 RGB pixels at the model's size; colour conversion, scaling and "
                           "(for int8) quantization inside the graph, uint8 output for int8",
              ("classify", "smile"),
              "the consumers that hand over camera frames (MediaPipe ImageClassifier, Android, NNAPI/Coral "
              "delegates) run image classifiers; a captcha model reads a gray captcha image its own chain prepares"),
)}


def get_input(name: str) -> InputKind:
    if name not in INPUTS:
        raise ConfigError(unknown("input kind", str(name), INPUTS))
    return INPUTS[name]


def kind_of(spec: ModelSpec) -> str:
    """The input kind an exported artefact's spec records (`float` when none)."""
    export = spec.extra.get("export") if isinstance(spec.extra, Mapping) else None
    return str(export.get("input", "float")) if isinstance(export, dict) else "float"


def check_fits(spec: ModelSpec, name: str) -> None:
    """ConfigError (one line) when input kind `name` does not fit the model: before anything loads."""
    kind = get_input(name)
    if kind.tasks is not None and spec.task not in kind.tasks:
        raise ConfigError(f"--input {name} does not fit {spec.name!r}: a {spec.task} model "
                          f"({spec.output} output, {spec.colour} input); {name} is for "
                          f"{', '.join(kind.tasks)} models ({kind.why_not})")
    if name == "uint8-rgb":
        colour_steps = [s.op for s in spec.preprocess if s.op in ("gray", "rgb")]
        if spec.colour == "gray" and colour_steps != ["gray"] or spec.colour == "rgb" and colour_steps != ["rgb"] \
                or spec.colour == "bgr" and colour_steps:
            raise ConfigError(f"--input {name} does not fit {spec.name!r}: its chain converts colour as "
                              f"{colour_steps or 'nothing'} for a {spec.colour} model")


def affine(spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """The spec's numeric steps as x * a + b per model channel."""
    c = spec.input_shape[2]
    a = np.ones(c, np.float64)
    b = np.zeros(c, np.float64)
    for step in spec.preprocess:
        if step.op == "scale":
            a, b = a * step.factor, b * step.factor
        elif step.op == "mean":
            b = b - np.broadcast_to(np.asarray(step.values, np.float64), (c,))
        elif step.op == "std":
            s = np.broadcast_to(np.asarray(step.values, np.float64), (c,))
            a, b = a / s, b / s
    return a, b


def input_matrix(spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """(W, bias) with model_input = rgb_pixels @ W + bias: W is 3 x C."""
    a, b = affine(spec)
    if spec.colour == "gray":
        w = np.asarray(GRAY_WEIGHTS_RGB, np.float64)[:, None] * a[None, :]
    elif spec.colour == "rgb":
        w = np.diag(a)
    else:  # bgr: model channel k reads RGB channel 2 - k
        w = np.zeros((3, 3))
        for k in range(3):
            w[2 - k, k] = a[k]
    return w.astype(np.float32), b.astype(np.float32)


def variant_spec(spec: ModelSpec, name: str) -> ModelSpec:
    """The ModelSpec of an artefact exported with input kind `name` (the source spec for `float`)."""
    if name == "float":
        return spec
    h, w, _ = spec.input_shape
    chain = [Rgb()] + [s for s in spec.preprocess if s.geometric and s.op not in ("gray", "rgb")]
    return spec.replace(colour="rgb", input_shape=(h, w, 3), preprocess=tuple(chain))


def wrap(model: Any, spec: ModelSpec, name: str) -> Any:
    """A Keras model taking input kind `name` in front of `model` (the model itself for `float`)."""
    if name == "float":
        return model
    import keras

    h, w, _ = spec.input_shape
    weights, bias = input_matrix(spec)
    inp = keras.Input((h, w, 3), dtype="uint8", name="image")
    x = keras.ops.cast(inp, "float32")
    conv = keras.layers.Conv2D(weights.shape[1], 1, use_bias=True, name="edgecv_input", trainable=False)
    x = conv(x)
    conv.set_weights([weights[None, None], bias])
    out = model(x)
    wrapped = keras.Model(inp, out, name=f"{model.name}_uint8_rgb")
    return wrapped


__all__ = ["GRAY_WEIGHTS_RGB", "INPUTS", "InputKind", "affine", "check_fits", "get_input", "input_matrix",
           "kind_of", "variant_spec", "wrap"]
