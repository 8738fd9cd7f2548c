"""What the pipeline hands to sinks: a frame with its detections, labels, scores and timings."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np


from .annotate import annotate
from .detect import Box
from .sources import Frame


@dataclass(frozen=True)
class Detection:
    """One classified region: box in frame pixels (the whole frame when there is no detector)."""

    box: Box
    label: str
    label_index: int
    score: float
    # Set by runtime.identity (a pipeline hook): the same person keeps the same id in a stream.
    track_id: int | None = None


@dataclass
class FrameResult:
    """A processed frame. frame.image is HxWx3 uint8 BGR; timings_ms per stage for this frame.

    events: what pipeline hooks saw happen on this frame (e.g. smile_start), in the JSON line too.
    live: per-stream values hooks computed for viewers (e.g. stream_fps, smiling), not in the JSON line."""

    frame: Frame
    detections: list[Detection]
    timings_ms: dict[str, float] = field(default_factory=dict)
    fps: float = 0.0
    _annotated: np.ndarray | None = field(default=None, repr=False)
    events: list[dict[str, Any]] = field(default_factory=list)
    live: dict[str, Any] = field(default_factory=dict)

    @property
    def source_id(self) -> str:
        return self.frame.source_id

    def _draw(self, image: np.ndarray, scale: float = 1.0) -> np.ndarray:
        dets = self.detections
        texts = [(f"#{d.track_id} " if d.track_id is not None else "") + f"{d.label} {d.score:.2f}" for d in dets]
        fps = self.live.get("stream_fps")
        header = f"{self.frame.source_id}  {fps:.1f} fps" if fps else None
        boxes = [[round(v * scale) for v in d.box.as_list()] for d in dets]
        return annotate(image, boxes, texts, [d.label_index for d in dets], header=header)

    def annotated(self) -> np.ndarray:
        """The frame with boxes and labels drawn (computed once, shared by the sinks)."""
        if self._annotated is None:
            self._annotated = self._draw(self.frame.image)
        return self._annotated

    def annotated_at(self, max_width: int) -> np.ndarray:
        """The annotated frame at most max_width wide: a viewer's copy, drawn on the scaled-down frame
        (cheaper than drawing on a 1080p copy and scaling that) unless a sink already drew it."""
        image = self._annotated if self._annotated is not None else self.frame.image
        h, w = image.shape[:2]
        if w <= max_width:
            return self.annotated()
        size = (max_width, max(1, round(h * max_width / w)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return small if self._annotated is not None else self._draw(small, max_width / w)

    def to_event(self) -> dict[str, Any]:
        """The JSON-lines record of this frame."""
        h, w = self.frame.image.shape[:2]
        dets = []
        for d in self.detections:
            entry = {"box": d.box.as_list(), "label": d.label, "score": round(d.score, 5),
                     "detector_score": round(d.box.score, 5)}
            if d.track_id is not None:
                entry["track_id"] = d.track_id
            dets.append(entry)
        event = {"source": self.frame.source_id, "frame": self.frame.index,
                 "t_capture": round(self.frame.t_capture, 6), "width": w, "height": h,
                 "detections": dets, "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()}}
        if self.events:
            event["events"] = list(self.events)
        return event

