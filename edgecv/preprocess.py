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

import math
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import cv2
import numpy as np

from .errors import ModelSpecError, unknown

INTERP = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
          "nearest": cv2.INTER_NEAREST}
RESIZE_MODES = ("stretch", "aspect", "pad")


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


# -- typed steps --------------------------------------------------------------------------------
# A spec's steps are parsed into these once, at load (STYLE.md 17: parse, don't check): an unknown op
# or field, a missing field or a value of the wrong type is a ModelSpecError naming it, so a
# misspelt `sacle` can no longer be skipped at run time.


@dataclass(frozen=True)
class Step:
    """One preprocessing step. `geometric` steps run image by image on uint8; the others run once
    on the whole float32 batch."""

    op: ClassVar[str] = ""
    geometric: ClassVar[bool] = True

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"op": self.op}
        for f in fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d


@dataclass(frozen=True)
class Gray(Step):
    op: ClassVar[str] = "gray"

    def image(self, image: np.ndarray) -> np.ndarray:
        return to_gray(image)


@dataclass(frozen=True)
class Rgb(Step):
    op: ClassVar[str] = "rgb"

    def image(self, image: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(to_bgr(image), cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class Resize(Step):
    op: ClassVar[str] = "resize"
    size: tuple[int, int]
    mode: str = "stretch"
    interp: str = "area"

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _size(self.size, "resize"))
        if self.mode not in RESIZE_MODES:
            raise ModelSpecError(unknown("resize mode", str(self.mode), RESIZE_MODES))
        if self.interp not in INTERP:
            raise ModelSpecError(unknown("interpolation", str(self.interp), INTERP))

    def image(self, image: np.ndarray) -> np.ndarray:
        return resize(image, self.size, self.mode, self.interp)


@dataclass(frozen=True)
class Crop(Step):
    op: ClassVar[str] = "crop"
    size: tuple[int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _size(self.size, "crop"))

    def image(self, image: np.ndarray) -> np.ndarray:
        return centre_crop(image, self.size)


@dataclass(frozen=True)
class Scale(Step):
    op: ClassVar[str] = "scale"
    geometric: ClassVar[bool] = False
    factor: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", _number(self.factor, "scale factor"))

    def batch(self, x: np.ndarray) -> None:
        x *= np.float32(self.factor)


@dataclass(frozen=True)
class Mean(Step):
    op: ClassVar[str] = "mean"
    geometric: ClassVar[bool] = False
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _numbers(self.values, "mean values"))

    def batch(self, x: np.ndarray) -> None:
        x -= np.asarray(self.values, np.float32).reshape(1, 1, 1, -1)


@dataclass(frozen=True)
class Std(Step):
    op: ClassVar[str] = "std"
    geometric: ClassVar[bool] = False
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _numbers(self.values, "std values"))
        if any(v == 0 for v in self.values):
            raise ModelSpecError(f"std values must be non-zero; got {list(self.values)}")

    def batch(self, x: np.ndarray) -> None:
        x /= np.asarray(self.values, np.float32).reshape(1, 1, 1, -1)


STEPS: dict[str, type[Step]] = {c.op: c for c in (Gray, Rgb, Resize, Crop, Scale, Mean, Std)}
OPS = tuple(STEPS)


def _size(v: Any, what: str) -> tuple[int, int]:
    if (isinstance(v, (list, tuple)) and len(v) == 2
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in v)):
        return (int(v[0]), int(v[1]))
    raise ModelSpecError(f"{what} step needs size [H, W] of two positive ints; got {v!r}")


def _number(v: Any, what: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    raise ModelSpecError(f"{what} must be a finite number; got {v!r}")


def _numbers(v: Any, what: str) -> tuple[float, ...]:
    if isinstance(v, (list, tuple)) and v:
        return tuple(_number(x, what) for x in v)
    raise ModelSpecError(f"{what} must be a non-empty list of numbers; got {v!r}")


def parse_step(raw: Mapping[str, Any] | Step) -> Step:
    """A JSON step -> its typed Step. Raises ModelSpecError naming an unknown op or field, or a
    missing one, with the allowed set."""
    if isinstance(raw, Step):
        return raw
    if not isinstance(raw, Mapping):
        raise ModelSpecError(f"a preprocess step must be an object; got {raw!r}")
    if "op" not in raw:
        raise ModelSpecError(f"every preprocess step needs an 'op'; got {dict(raw)!r}")
    op = raw["op"]
    if not isinstance(op, str) or op not in STEPS:
        raise ModelSpecError(unknown("preprocess op", str(op), OPS))
    cls = STEPS[op]
    allowed = [f.name for f in fields(cls)]
    kw = {k: v for k, v in raw.items() if k != "op"}
    for k in kw:
        if k not in allowed:
            raise ModelSpecError(f"preprocess step {op!r}: " + unknown("field", str(k), allowed or ["(none)"]))
    required = [f.name for f in fields(cls) if f.default is MISSING]
    missing = [k for k in required if k not in kw]
    if missing:
        raise ModelSpecError(f"preprocess step {op!r} needs field(s) {', '.join(missing)}; got {dict(raw)!r}")
    return cls(**kw)


def parse_chain(steps: Iterable[Mapping[str, Any] | Step]) -> tuple[Step, ...]:
    return tuple(parse_step(s) for s in steps)


def _per_image(image: np.ndarray, steps: Sequence[Step]) -> np.ndarray:
    """The geometric/colour steps that must run image by image (uint8 in, uint8 out)."""
    for step in steps:
        image = step.image(image)  # type: ignore[attr-defined]
    return image


def centre_crop(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    h, w = int(size[0]), int(size[1])
    ih, iw = image.shape[:2]
    if ih < h or iw < w:
        raise ModelSpecError(f"crop to {h}x{w} needs an image at least that large; got {ih}x{iw}")
    y, x = (ih - h) // 2, (iw - w) // 2
    return image[y:y + h, x:x + w]


def apply_chain(images: Sequence[np.ndarray] | np.ndarray, steps: Sequence[Mapping[str, Any] | Step],
                input_shape: Sequence[int]) -> np.ndarray:
    """Preprocess images (each HxWx3 BGR or HxW gray, uint8) into an NxHxWxC float32 batch."""
    steps = parse_chain(steps)
    h, w, c = (int(v) for v in input_shape)
    geometric = [s for s in steps if s.geometric]
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
    return _numeric(out, steps)


def _numeric(out: np.ndarray, steps: Sequence[Step]) -> np.ndarray:
    # Numeric steps run once on the whole batch (vectorised).
    for step in steps:
        if not step.geometric:
            step.batch(out)  # type: ignore[attr-defined]
    return out


def ten_crops(images: Sequence[np.ndarray] | np.ndarray, steps: Sequence[Mapping[str, Any] | Step],
              input_shape: Sequence[int]) -> np.ndarray:
    """The 10-crop test-time batch of a chain with a centre crop: each image is taken through the
    steps before the crop, then cut into its 4 corner crops, centre crop and their mirror images,
    then the numeric steps. Returns (N*10)xHxWxC float32, an image's ten crops together."""
    steps = parse_chain(steps)
    ops = [s.op for s in steps]
    if "crop" not in ops:
        raise ModelSpecError("10-crop evaluation needs a preprocess chain with a crop step "
                             "(a model trained with random patches: --patch-from H W)")
    k = ops.index("crop")
    before = [s for s in steps[:k] if s.geometric]
    after_geometric = [s for s in steps[k + 1:] if s.geometric]
    h, w, c = (int(v) for v in input_shape)
    if list(steps[k].size) != [h, w]:  # type: ignore[attr-defined]
        raise ModelSpecError(f"crop step size {list(steps[k].size)} is not the model input {[h, w]}")  # type: ignore[attr-defined]
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
    return _numeric(out, steps)


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
