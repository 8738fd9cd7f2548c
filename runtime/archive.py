"""The work of `edgecv batch` on one node: decode -> detect -> crop -> preprocess for a few inputs in
one CPU task, the crops of many frames sent as one array to a classifier actor, and back the
events `edgecv run --json-out` would write for each input (FrameResult.to_event).

Decode and detect stay together in one process (a frame is never shipped); only preprocessed crops
(32x32x1 float32 for the smile model: 4 KB a face) and the model's outputs cross the object store.
Ray is imported only inside the functions that need it: this module loads on an edge install.
"""
from __future__ import annotations

import logging
import os
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edgecv import decode
from edgecv.errors import EdgecvError
from edgecv.preprocess import apply_chain
from edgecv.resolve import ModelRef

from .detect import Box, crop_region
from .results import Detection, FrameResult
from .sources import Frame
from .track import BoxTracker

log = logging.getLogger(__name__)

# Crops sent to a classifier in one call, and calls one task keeps in flight while it decodes on.
ROWS_PER_CALL = 256
CALLS_IN_FLIGHT = 4
PROGRESS_EVERY = 50   # frames between two progress notes of a task


@dataclass(frozen=True)
class ArchiveJob:
    """What every task of one `edgecv batch` job runs: the model (path + spec, opened inside each
    classifier actor: ONNX Runtime sessions are not picklable), the detector by name and options
    (built inside each task: cv2.FaceDetectorYN is not picklable), and the limits."""

    ref: ModelRef
    detector: str | None
    detector_options: dict[str, Any] = field(default_factory=dict)
    detect_every: int = 1
    backend: str | None = None
    device: str = "cpu"
    max_batch: int = 32
    max_frame_pixels: int | None = None


@dataclass(frozen=True)
class ArchiveInput:
    """One input: `key` is what the manifest and the events call it (the path or URL as resolved),
    `source` the string runtime.sources reads."""

    key: str
    source: str


class Classifier:
    """The model behind a Ray actor: one backend opened in the actor, batches of preprocessed crops
    (N x H x W x C float32, per the ModelSpec) in, the model's outputs (N x K float32) out."""

    def __init__(self, model, spec, backend: str | None, device: str, threads: int = 1,
                 max_batch: int = 32) -> None:
        """model: a path, or an edgecv.raycluster.ShippedFile (copied to this node when it lacks it)."""
        from .backends import open_backend

        self.backend = open_backend(resolve_files(model), spec, backend=backend, device=device, threads=threads)
        self.max_batch = max_batch

    def classify(self, batch: np.ndarray) -> np.ndarray:
        b = self.max_batch
        if len(batch) <= b:
            return self.backend.run(batch)
        return np.concatenate([self.backend.run(batch[i:i + b]) for i in range(0, len(batch), b)])

    def info(self) -> dict[str, Any]:
        return {"backend": self.backend.name, "providers": list(getattr(self.backend, "providers", ())),
                "pid": os.getpid()}


class FrameCounter:
    """Frames decoded so far by every task (behind a Ray actor): the progress line's frames/s. A task
    that Ray retries counts its frames again; the summary counts committed frames only."""

    def __init__(self) -> None:
        self.frames = 0

    def add(self, n: int) -> None:
        self.frames += n

    def get(self) -> int:
        return self.frames


_detectors: dict[tuple, Any] = {}


def _detector(job: ArchiveJob):
    """One detector per worker process and settings (a Ray worker runs many tasks one after another)."""
    if job.detector is None or job.detector == "none":
        return None
    from .build import detector_factory

    options = {k: resolve_files(v) for k, v in job.detector_options.items()}
    key = (job.detector, tuple(sorted(options.items())))
    if key not in _detectors:
        _detectors[key] = detector_factory(job.detector, **options)()
    return _detectors[key]


def resolve_files(value):
    """A ShippedFile becomes a path on this node; anything else is returned as it is."""
    from edgecv.raycluster import ShippedFile, local_path

    return local_path(value) if isinstance(value, ShippedFile) else value


def process_inputs(job: ArchiveJob, items: Sequence[ArchiveInput], classifiers: Sequence[Any],
                   progress: Any = None) -> list[dict]:
    """A Ray task: each input's outcome, in order. A bad input (cannot open, refused frame size) is a
    failed outcome with its reason; the other inputs of the task still run. `progress`: an actor
    (FrameCounter) told about decoded frames now and then, for the command's progress line."""
    import cv2

    from .sources import set_max_frame_pixels

    cv2.setNumThreads(1)  # one task, one core: the task count is the parallelism (TOOLCHAIN.md)
    set_max_frame_pixels(job.max_frame_pixels)
    detector = _detector(job)
    return [process_input(job, item, detector, classifiers, progress) for item in items]


@dataclass
class _FrameRec:
    index: int
    t_capture: float
    height: int
    width: int
    boxes: list[Box]
    timings: dict[str, float]


def process_input(job: ArchiveJob, item: ArchiveInput, detector, classifiers: Sequence[Any],
                  progress: Any = None) -> dict:
    """Decode every frame of one input, detect and crop as the pipeline does (runtime.pipeline
    `_work`: the ModelSpec's crop rule, clipped; the tracker between detections), classify the
    crops in batches on the actors, and return {"status": "done", "events": [...]} or
    {"status": "failed", "error": reason}."""
    import ray

    from .sources import make_reader

    t0 = time.monotonic()
    spec = job.ref.spec
    try:
        reader = make_reader(item.source)
        reader.open()
    except EdgecvError as e:
        return _failed(item, str(e))
    except Exception as e:  # a reader bug must not end the other inputs of the task
        return _failed(item, f"{type(e).__name__}: {e}")
    tracker = BoxTracker(job.detect_every)
    frames: list[_FrameRec] = []
    crops: list[np.ndarray] = []
    rows = 0
    calls: deque = deque()   # (object ref, t_submit, number of rows)
    outputs: list[tuple[np.ndarray, float, int]] = []
    start = random.randrange(len(classifiers))
    sent = 0

    def send() -> None:
        nonlocal crops, rows, sent
        if not rows:
            return
        batch = np.concatenate(crops) if len(crops) > 1 else crops[0]
        actor = classifiers[(start + sent) % len(classifiers)]
        calls.append((actor.classify.remote(batch), time.monotonic(), len(batch)))
        sent += 1
        crops, rows = [], 0
        while len(calls) > CALLS_IN_FLIGHT:
            collect()

    def collect() -> None:
        ref, t_submit, n = calls.popleft()
        out = ray.get(ref)
        outputs.append((np.asarray(out, np.float32), (time.monotonic() - t_submit) * 1000, n))

    try:
        index = 0
        while True:
            ta = time.monotonic()
            image = reader.read()
            tb = time.monotonic()
            if image is None:
                break
            h, w = image.shape[:2]
            timings = {"decode": (tb - ta) * 1000}
            reused = None if detector is None else tracker.predict("s", index)
            if detector is None:
                boxes = [Box(0, 0, w, h)]
            elif reused is not None:
                boxes = [c for c in (b.clip(w, h) for b in reused) if c is not None]
            else:
                boxes = [c for c in (crop_region(b, spec.crop).clip(w, h) for b in detector.detect(image))
                         if c is not None]
                tracker.update("s", index, boxes)
                timings["detect"] = (time.monotonic() - tb) * 1000
            if boxes:
                tc = time.monotonic()
                crops.append(apply_chain([b.crop(image) for b in boxes], spec.preprocess, spec.input_shape))
                rows += len(boxes)
                timings["preprocess"] = (time.monotonic() - tc) * 1000
                if rows >= ROWS_PER_CALL:
                    send()
            frames.append(_FrameRec(index, tb, h, w, boxes, timings))
            index += 1
            if progress is not None and index % PROGRESS_EVERY == 0:
                progress.add.remote(PROGRESS_EVERY)  # not waited for
        send()
        while calls:
            collect()
        if progress is not None and index % PROGRESS_EVERY:
            progress.add.remote(index % PROGRESS_EVERY)
    except EdgecvError as e:
        return _failed(item, str(e))
    except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError):
        raise  # the classifier is gone: the task fails and Ray retries it
    except Exception as e:
        return _failed(item, f"{type(e).__name__}: {e}")
    finally:
        reader.close()
    if not frames:
        why = getattr(reader, "last_error", None)
        why = why[len("skipped "):] if why and why.startswith("skipped ") else why  # an ImageReader's note
        return _failed(item, why or f"{item.key}: no frame decoded")
    events = _events(item, frames, outputs, spec, reader.fps)
    expected = reader.expected_frames
    warning = None
    if expected and len(frames) < expected:
        warning = f"claims {expected} frames but only {len(frames)} decoded; processed what decoded"
    return {"input": item.key, "status": "done", "events": events, "frames": len(frames),
            "faces": sum(len(f.boxes) for f in frames), "seconds": round(time.monotonic() - t0, 3),
            "warning": warning, "pid": os.getpid(), "node": ray.util.get_node_ip_address()}



def _failed(item: ArchiveInput, why: str) -> dict:
    from edgecv.safeio import redact_url

    return {"input": item.key, "status": "failed", "error": redact_url(why)}  # never a password


def _events(item: ArchiveInput, frames: list[_FrameRec], outputs: list[tuple[np.ndarray, float, int]], spec,
            fps: float) -> list[dict]:
    """Each frame's event, its rows taken in order from the concatenated outputs."""
    preds = []
    infer_ms: list[float] = []
    for out, ms, n in outputs:
        preds.extend(decode.predictions(spec, out, n))
        infer_ms.extend([ms] * n)
    events = []
    row = 0
    for f in frames:
        k = len(f.boxes)
        dets = [Detection(b, p.label, p.index, p.score) for b, p in zip(f.boxes, preds[row:row + k])]
        timings = dict(f.timings)
        if k:
            timings["infer"] = infer_ms[row]
        row += k
        # FrameResult.to_event() is the one event schema; it reads only the frame's size, so the
        # image is an empty H x W x 0 view (no pixels kept after detection).
        frame = Frame(item.key, f.index, f.t_capture, np.empty((f.height, f.width, 0), np.uint8))
        events.append(FrameResult(frame, dets, timings, fps).to_event())
    return events
