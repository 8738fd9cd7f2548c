"""The deployable preprocessing chain, in NumPy and OpenCV only.

Training, export calibration, evaluation and the runtime all call `apply_chain` with the steps
stored in a ModelSpec, so a model is always fed exactly as it was trained. Input images are
HxWx3 uint8 BGR (OpenCV's order) or HxW / HxWx1 uint8 gray; output is NxHxWxC float32.

Steps (JSON objects, applied in order):
  {"op": "gray"}                                   BGR -> gray
  {"op": "rgb"}                                    BGR -> RGB
  {"op": "resize", "size": [H, W], "mode": M, "interp": I}
        M = "stretch" (the book's SimplePreprocessor), "aspect" (AspectAwarePreprocessor:
        resize the short side, centre-crop), "pad" (fit the long side, pad to the target
        aspect with edge replication, as the captcha case study does)
        I = "area" | "linear" | "cubic" | "nearest"
  {"op": "crop", "size": [H, W]}                   centre crop (after a resize to a larger size: the
        deployable half of random-patch training; `ten_crops` gives the test-time 10-crop batch)
  {"op": "scale", "factor": f}                     x * f
  {"op": "mean", "values": [..]}                   x - mean (per channel, after earlier steps)
  {"op": "std", "values": [..]}                    x / std
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import cv2
import numpy as np

from .errors import ModelSpecError, unknown

INTERP = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
          "nearest": cv2.INTER_NEAREST}
RESIZE_MODES = ("stretch", "aspect", "pad")
OPS = ("gray", "rgb", "resize", "crop", "scale", "mean", "std")
GEOMETRIC = ("gray", "rgb", "resize", "crop")


def to_gray(image: np.ndarray) -> np.ndarray:
    """HxW uint8 from BGR, BGRA or gray input."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def to_bgr(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 BGR from gray or BGRA input."""
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def resize(image: np.ndarray, size: Sequence[int], mode: str = "stretch", interp: str = "area") -> np.ndarray:
    """Resize one image to (H, W) by one of RESIZE_MODES."""
    h, w = int(size[0]), int(size[1])
    flag = INTERP[interp]
    ih, iw = image.shape[:2]
    if mode == "stretch":
        return cv2.resize(image, (w, h), interpolation=flag)
    if mode == "aspect":
        # Resize so the image covers the target, then centre-crop (AspectAwarePreprocessor).
        s = max(h / ih, w / iw)
        nh, nw = max(h, round(ih * s)), max(w, round(iw * s))
        r = cv2.resize(image, (nw, nh), interpolation=flag)
        y, x = (nh - h) // 2, (nw - w) // 2
        return r[y:y + h, x:x + w]
    if mode == "pad":
        # Fit inside the target, then pad with edge replication to the target's aspect ratio.
        s = min(h / ih, w / iw)
        nh, nw = max(1, round(ih * s)), max(1, round(iw * s))
        r = cv2.resize(image, (nw, nh), interpolation=flag)
        top, left = (h - nh) // 2, (w - nw) // 2
        return cv2.copyMakeBorder(r, top, h - nh - top, left, w - nw - left, cv2.BORDER_REPLICATE)
    raise ModelSpecError(unknown("resize mode", mode, RESIZE_MODES))


def validate_chain(steps: Iterable[Mapping[str, Any]]) -> None:
    for step in steps:
        op = step.get("op")
        if op not in OPS:
            raise ModelSpecError(unknown("preprocess op", str(op), OPS))
        if op == "resize":
            size = step.get("size")
            if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(int(v) > 0 for v in size)):
                raise ModelSpecError(f"resize step needs size [H, W]; got {size!r}")
            if step.get("mode", "stretch") not in RESIZE_MODES:
                raise ModelSpecError(unknown("resize mode", str(step.get("mode")), RESIZE_MODES))
            if step.get("interp", "area") not in INTERP:
                raise ModelSpecError(unknown("interpolation", str(step.get("interp")), INTERP))
        if op == "crop":
            size = step.get("size")
            if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(int(v) > 0 for v in size)):
                raise ModelSpecError(f"crop step needs size [H, W]; got {size!r}")


def _per_image(image: np.ndarray, steps: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The geometric/colour steps that must run image by image (uint8 in, uint8 out)."""
    for step in steps:
        op = step["op"]
        if op == "gray":
            image = to_gray(image)
        elif op == "rgb":
            image = cv2.cvtColor(to_bgr(image), cv2.COLOR_BGR2RGB)
        elif op == "resize":
            image = resize(image, step["size"], step.get("mode", "stretch"), step.get("interp", "area"))
        elif op == "crop":
            image = centre_crop(image, step["size"])
    return image


def centre_crop(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    h, w = int(size[0]), int(size[1])
    ih, iw = image.shape[:2]
    if ih < h or iw < w:
        raise ModelSpecError(f"crop to {h}x{w} needs an image at least that large; got {ih}x{iw}")
    y, x = (ih - h) // 2, (iw - w) // 2
    return image[y:y + h, x:x + w]


def apply_chain(images: Sequence[np.ndarray] | np.ndarray, steps: Sequence[Mapping[str, Any]],
                input_shape: Sequence[int]) -> np.ndarray:
    """Preprocess images (each HxWx3 BGR or HxW gray, uint8) into an NxHxWxC float32 batch."""
    h, w, c = (int(v) for v in input_shape)
    geometric = [s for s in steps if s["op"] in GEOMETRIC]
    numeric = [s for s in steps if s["op"] in ("scale", "mean", "std")]
    n = len(images)
    out = np.empty((n, h, w, c), np.float32)
    for i, image in enumerate(images):
        if c == 3 and (image.ndim == 2 or image.shape[2] != 3):
            image = to_bgr(image)
        img = _per_image(image, geometric)
        if c == 1 and img.ndim == 3:
            img = to_gray(img)
        if img.shape[:2] != (h, w):
            raise ModelSpecError(f"preprocess chain yields {img.shape[:2]}, model expects {(h, w)}")
        out[i] = img.reshape(h, w, c)
    return _numeric(out, numeric)


def _numeric(out: np.ndarray, numeric: Sequence[Mapping[str, Any]]) -> np.ndarray:
    # Numeric steps run once on the whole batch (vectorised).
    for step in numeric:
        if step["op"] == "scale":
            out *= np.float32(step["factor"])
        elif step["op"] == "mean":
            out -= np.asarray(step["values"], np.float32).reshape(1, 1, 1, -1)
        elif step["op"] == "std":
            out /= np.asarray(step["values"], np.float32).reshape(1, 1, 1, -1)
    return out


def ten_crops(images: Sequence[np.ndarray] | np.ndarray, steps: Sequence[Mapping[str, Any]],
              input_shape: Sequence[int]) -> np.ndarray:
    """The 10-crop test-time batch of a chain with a centre crop: each image is taken through the
    steps before the crop, then cut into its 4 corner crops, centre crop and their mirror images,
    then the numeric steps. Returns (N*10)xHxWxC float32, an image's ten crops together."""
    ops = [s["op"] for s in steps]
    if "crop" not in ops:
        raise ModelSpecError("10-crop evaluation needs a preprocess chain with a crop step "
                             "(a model trained with random patches: --patch-from H W)")
    k = ops.index("crop")
    before = [s for s in steps[:k] if s["op"] in GEOMETRIC]
    after_geometric = [s for s in steps[k + 1:] if s["op"] in GEOMETRIC]
    numeric = [s for s in steps if s["op"] not in GEOMETRIC]
    h, w, c = (int(v) for v in input_shape)
    if [int(v) for v in steps[k]["size"]] != [h, w]:
        raise ModelSpecError(f"crop step size {steps[k]['size']} is not the model input {[h, w]}")
    out = np.empty((len(images) * 10, h, w, c), np.float32)
    for i, image in enumerate(images):
        if c == 3 and (image.ndim == 2 or image.shape[2] != 3):
            image = to_bgr(image)
        big = _per_image(image, before)
        ih, iw = big.shape[:2]
        corners = [(0, 0), (0, iw - w), (ih - h, 0), (ih - h, iw - w), ((ih - h) // 2, (iw - w) // 2)]
        crops = [big[y:y + h, x:x + w] for y, x in corners]
        crops += [cr[:, ::-1] for cr in crops]
        for j, cr in enumerate(crops):
            cr = _per_image(cr, after_geometric)
            if c == 1 and cr.ndim == 3:
                cr = to_gray(cr)
            out[i * 10 + j] = cr.reshape(h, w, c)
    return _numeric(out, numeric)


def default_chain(input_shape: Sequence[int], mode: str = "stretch", scale: float = 1 / 255.0,
                  colour: str | None = None) -> list[dict[str, Any]]:
    """The usual chain: colour conversion, resize, scale to [0, 1]."""
    h, w, c = input_shape
    colour = colour or ("gray" if c == 1 else "bgr")
    steps: list[dict[str, Any]] = []
    if colour == "gray":
        steps.append({"op": "gray"})
    elif colour == "rgb":
        steps.append({"op": "rgb"})
    steps.append({"op": "resize", "size": [h, w], "mode": mode, "interp": "area"})
    steps.append({"op": "scale", "factor": scale})
    return steps
