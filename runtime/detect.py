"""Face detectors for the pipeline's optional detect stage, behind one small protocol.

A detector takes a full-resolution HxWx3 uint8 BGR frame and returns boxes in that frame's pixels.
Both built-ins detect on a downscaled copy (detection is the pipeline's bottleneck) and map the
boxes back. Detector objects are not shared between threads: the pipeline builds one per worker
through `make_detector`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import cv2
import numpy as np

from edgecv.errors import ConfigError, ModelError, unknown
from edgecv.spec import CropRule


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in frame pixels (x, y = top-left corner) with the detector's score."""

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0

    def clip(self, width: int, height: int) -> "Box | None":
        x0, y0 = max(0, self.x), max(0, self.y)
        x1, y1 = min(width, self.x + self.w), min(height, self.y + self.h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        return Box(x0, y0, x1 - x0, y1 - y0, self.score)

    def crop(self, image: np.ndarray) -> np.ndarray:
        return image[self.y:self.y + self.h, self.x:self.x + self.w]

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


@runtime_checkable
class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> list[Box]:
        """HxWx3 uint8 BGR frame -> boxes in its pixels."""
        ...


@runtime_checkable
class BatchDetector(Detector, Protocol):
    """A detector that runs several frames in one call (runtime.yunet_batch): the pipeline hands
    it up to `max_batch` frames that are already waiting."""

    max_batch: int

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Box]]:
        """HxWx3 uint8 BGR frames -> one list of boxes per frame, in its pixels, in their order."""
        ...


def detect_batch_of(det: Detector | None) -> int:
    """How many frames the pipeline may hand `det` at once: its max_batch when it batches, else 1."""
    if det is None or not callable(getattr(det, "detect_batch", None)):
        return 1
    n = getattr(det, "max_batch", 1)
    return n if isinstance(n, int) and n > 1 else 1


def downscale(image: np.ndarray, width: int | None) -> tuple[np.ndarray, float]:
    """Resize to `width` (keeping aspect) when wider; returns the image and the factor back to full size.

    INTER_AREA (pixel averaging) for mild reductions, where it keeps small faces: on vtest
    (480 -> 320) YuNet finds 2 faces in 300 frames after INTER_AREA and none after INTER_LINEAR.
    From 2x down INTER_LINEAR: on 1080p -> 320 it costs 0.18 ms instead of 2.4 ms (a sixth of
    the detect stage) and YuNet finds the same 165 faces on smile.mp4 with the same mean score
    (0.909 vs 0.908); the faces left at that scale are large.
    """
    h, w = image.shape[:2]
    if not width or w <= width:
        return image, 1.0
    f = width / w
    interp = cv2.INTER_AREA if f > 0.5 else cv2.INTER_LINEAR
    small = cv2.resize(image, (width, max(1, round(h * f))), interpolation=interp)
    return small, w / width


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade (the books' detector) on a gray frame `width` pixels wide."""

    name = "haar"

    def __init__(self, width: int | None = 300, scale_factor: float = 1.1, min_neighbors: int = 5,
                 min_size: tuple[int, int] = (30, 30), cascade: str | None = None) -> None:
        path = cascade or os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise ModelError(f"cannot load Haar cascade {path}")
        self.width, self.scale_factor, self.min_neighbors = width, scale_factor, min_neighbors
        self.min_size = tuple(min_size)

    def detect(self, image: np.ndarray) -> list[Box]:
        small, f = downscale(image, self.width)
        gray = small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        rects = self.cascade.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                              minSize=self.min_size)
        return [Box(round(x * f), round(y * f), round(w * f), round(h * f)) for x, y, w, h in rects]


class YuNetFaceDetector:
    """YuNet (cv2.FaceDetectorYN, OpenCV Zoo) on a BGR frame `width` pixels wide: faster than Haar on
    large frames and finds turned and small faces."""

    name = "yunet"

    def __init__(self, model: str | os.PathLike | None = None, width: int | None = 320,
                 score_threshold: float = 0.6, nms_threshold: float = 0.3, top_k: int = 500) -> None:
        if model is None:
            from edgecv.data import resource_path

            model = resource_path("yunet", "models/face_detection_yunet_2023mar.onnx")
        if not os.path.isfile(model):
            raise ModelError(f"YuNet model not found: {model}")
        try:
            self.net = cv2.FaceDetectorYN.create(str(model), "", (320, 320), score_threshold, nms_threshold, top_k)
        except cv2.error as e:
            raise ModelError(f"{model}: cv2.FaceDetectorYN cannot load it ({str(e).strip().splitlines()[-1]})") from None
        self.width = width
        self._size: tuple[int, int] | None = None

    def detect(self, image: np.ndarray) -> list[Box]:
        small, f = downscale(image, self.width)
        if small.ndim == 2:
            small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
        size = (small.shape[1], small.shape[0])
        if size != self._size:
            self.net.setInputSize(size)
            self._size = size
        _, faces = self.net.detect(small)
        if faces is None:
            return []
        # Each row: x, y, w, h, 5 landmark pairs, score.
        return [Box(round(r[0] * f), round(r[1] * f), round(r[2] * f), round(r[3] * f), float(r[14])) for r in faces]


def crop_region(b: Box, rule: CropRule) -> Box:
    """The region a model reads for a detected box, by its ModelSpec's crop rule (not clipped).

    "square": YuNet's box is taller than wide and reaches into the hair; Haar's frontal-face box
    (and the SMILES crops, cut with such a detector) is a square from the brows to the chin. Keep
    the width's centre and the chin, drop the forehead (a Haar box, already square, is unchanged).
    The margin then grows the region by that fraction of its side on every side."""
    if rule.kind == "square":
        side = min(b.w, b.h)
        b = Box(b.x + (b.w - side) // 2, b.y + b.h - side, side, side, b.score)
    if rule.margin:
        dx, dy = round(b.w * rule.margin), round(b.h * rule.margin)
        b = Box(b.x - dx, b.y - dy, b.w + 2 * dx, b.h + 2 * dy, b.score)
    return b


def _yunet_ort(**options: Any) -> Detector:
    from .yunet_batch import YuNetBatchDetector  # onnxruntime and onnx load only when asked for

    return YuNetBatchDetector(**options)


def _yunet(**options: Any) -> Detector:
    """"yunet" wherever it is named (run/smile, batch, --ray actors, open_pipeline): YuNet on ONNX
    Runtime, by default one frame a call on one thread, like a Ray task's one core. It finds the same
    boxes as FaceDetectorYN in about half its time on the CPU measured (docs/detection.md).
    `edgecv run/smile` size its threads and frames a call for the machine (runtime.machine.choose_detector)."""
    options.setdefault("max_batch", 1)
    options.setdefault("threads", 1)
    return _yunet_ort(**options)


# "yunet-opencv" (FaceDetectorYN) and "yunet-ort" name one engine each.
DETECTORS: dict[str, Callable[..., Any]] = {"haar": HaarFaceDetector, "yunet": _yunet,
                                            "yunet-opencv": YuNetFaceDetector, "yunet-ort": _yunet_ort}


def register_detector(name: str, factory: Callable[..., Detector]) -> None:
    """Plug in another detector: `factory(**options)` must return an object with `detect(image)`."""
    DETECTORS[name] = factory


def make_detector(name: str, **options: Any) -> Detector:
    if name not in DETECTORS:
        raise ConfigError(unknown("detector", name, [*DETECTORS, "none"]))
    return DETECTORS[name](**options)
