"""Persistent track ids for detected boxes: the same face keeps the same number in a stream, across
frames and across a few frames where the detector missed it.

A pipeline hook (`Pipeline.hooks`): it runs in the sink thread, which sees each stream's frames in
order, before any sink, and sets `Detection.track_id` on every detection. Matching is greedy on IoU
between each live track's last box (moved by its velocity over the frames since it was seen) and the
frame's boxes, then, for what is left, on centre distance relative to the box size (a face that turns
or is half-hidden changes shape more than position). A track that is not matched for more than
`max_missed` frames ends; a box that matches no track starts a new one with the stream's next id.

Why not a tracker library (checked 2026-11-30): `trackers` 2.6.1 (Roboflow) needs supervision, which
brings matplotlib, PyAV, SciPy and requests to the edge install, and its unpinned `opencv-python`
resolves to OpenCV 5 (no CascadeClassifier) outside edgecv's pin; norfair 2.3.0 pins NumPy < 2 (edgecv
runs on NumPy 2). A few faces in front of a camera need neither appearance features nor a tuned
Kalman filter, so edgecv's box tracker gains ids here instead, in pure Python with no new dependency.
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field

from .detect import Box
from .results import FrameResult
from .track import iou

MIN_IOU = 0.2
MAX_CENTRE_DIST = 0.6  # centre distance / box size below which an unmatched box continues a track


@dataclass
class Track:
    id: int
    box: Box
    last_seen: int  # frame index
    first_seen: int
    hits: int = 1
    v: tuple[float, float] = (0.0, 0.0)  # centre velocity, pixels per frame

    def predicted(self, index: int) -> Box:
        gap = max(0, index - self.last_seen)
        dx, dy = self.v[0] * gap, self.v[1] * gap
        return Box(round(self.box.x + dx), round(self.box.y + dy), self.box.w, self.box.h, self.box.score)


def _centre_dist(a: Box, b: Box) -> float:
    ax, ay = a.x + a.w / 2, a.y + a.h / 2
    bx, by = b.x + b.w / 2, b.y + b.h / 2
    size = max(1.0, (a.w + a.h + b.w + b.h) / 4)
    return ((ax - bx) ** 2 + (ay - by) ** 2) ** 0.5 / size


@dataclass
class _Stream:
    tracks: list[Track] = field(default_factory=list)
    next_id: int = 1
    last_index: int = -1


class IdentityTracker:
    """Track ids per stream. Call `assign(source_id, index, boxes)` with each frame in order, or use the
    object as a pipeline hook (`pipeline.hooks.append(IdentityTracker())`).

    max_missed: frames a track may go undetected and still keep its id (default 10: about 0.4 s at
    25 fps; a detector misses a turning face for a frame or two)."""

    def __init__(self, max_missed: int = 10) -> None:
        if not isinstance(max_missed, int) or max_missed < 0:
            raise ValueError(f"max_missed must be an integer >= 0; got {max_missed!r}")
        self.max_missed = max_missed
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()

    def assign(self, source_id: str, index: int, boxes: list[Box]) -> list[int]:
        """Track ids for `boxes` on frame `index` of the source, one per box, in order."""
        with self._lock:
            st = self._streams.setdefault(source_id, _Stream())
            if index < st.last_index:  # a source that restarted its count (a reopened file): start over
                st.tracks.clear()
            st.last_index = index
            st.tracks = [t for t in st.tracks if index - t.last_seen <= self.max_missed + 1]
            predicted = [t.predicted(index) for t in st.tracks]
            ids: list[int | None] = [None] * len(boxes)
            free_t, free_b = set(range(len(st.tracks))), set(range(len(boxes)))
            for score_of, ok in ((lambda ti, bi: iou(predicted[ti], boxes[bi]), lambda s: s >= MIN_IOU),
                                 (lambda ti, bi: -_centre_dist(predicted[ti], boxes[bi]),
                                  lambda s: -s <= MAX_CENTRE_DIST)):
                pairs = sorted(((score_of(ti, bi), ti, bi) for ti in free_t for bi in free_b), reverse=True)
                for s, ti, bi in pairs:
                    if not ok(s):
                        break
                    if ti in free_t and bi in free_b:
                        free_t.discard(ti)
                        free_b.discard(bi)
                        self._update(st.tracks[ti], boxes[bi], index)
                        ids[bi] = st.tracks[ti].id
            for bi in sorted(free_b, key=lambda i: (boxes[i].x, boxes[i].y)):
                t = Track(st.next_id, boxes[bi], index, index)
                st.next_id += 1
                st.tracks.append(t)
                ids[bi] = t.id
            return [int(i) for i in ids]  # type: ignore[arg-type]

    @staticmethod
    def _update(t: Track, box: Box, index: int) -> None:
        gap = max(1, index - t.last_seen)
        cx, cy = box.x + box.w / 2, box.y + box.h / 2
        ox, oy = t.box.x + t.box.w / 2, t.box.y + t.box.h / 2
        # A smoothed velocity; jitter of a seated face averages out instead of being extrapolated.
        vx, vy = (cx - ox) / gap, (cy - oy) / gap
        t.v = (0.5 * t.v[0] + 0.5 * vx, 0.5 * t.v[1] + 0.5 * vy)
        t.box, t.last_seen = box, index
        t.hits += 1

    def live_ids(self, source_id: str) -> list[int]:
        """Ids of the stream's tracks that have not ended (seen within max_missed frames)."""
        with self._lock:
            st = self._streams.get(source_id)
            if st is None:
                return []
            return [t.id for t in st.tracks if st.last_index - t.last_seen <= self.max_missed]

    def __call__(self, result: FrameResult) -> None:
        """The pipeline hook: set track_id on the frame's detections."""
        dets = result.detections
        ids = self.assign(result.source_id, result.frame.index, [d.box for d in dets])
        result.detections = [dataclasses.replace(d, track_id=i) for d, i in zip(dets, ids)]
        result.live["tracks"] = self.live_ids(result.source_id)
