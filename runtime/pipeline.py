"""The streaming pipeline: sources -> [detector] -> crops -> preprocess (ModelSpec) -> batcher ->
backend -> labels -> sinks, with metrics, and an explicit lifecycle.

Threads: one per source (decode), a dispatcher (takes frames round-robin, keeps their order),
`detect_workers` detect/preprocess workers, the batcher, and the sink thread (hands results to the
sinks in each source's frame order, then finalises everything). A detector that batches
(detect.BatchDetector, e.g. runtime.yunet_batch) gets the frames already waiting, up to its
max_batch, in one call; each frame's `detect` time is then its share of the call, and the summary's
`detect_batches` gives the frames per call. `stop()` drains: sources stop,
frames already read are finished and written, files are finalised, threads joined.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
import queue
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Sequence

import numpy as np

from edgecv import decode
from edgecv.errors import BackendError, ConfigError, EdgecvError
from edgecv.preprocess import apply_chain

from .backends import BackendBase
from .batcher import Batcher
from .detect import BatchDetector, Box, Detector, crop_region, detect_batch_of
from .metrics import Metrics, peak_rss_mb
from .results import Detection, FrameResult
from .sinks import Sink, SinkSet
from .sources import Frame, Policy, Source
from .track import BoxTracker

log = logging.getLogger(__name__)


class PipelineState(str, Enum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


# Allowed transitions; anything else is a bug in the caller's use of the API.
TRANSITIONS = {
    PipelineState.CREATED: {PipelineState.STARTING, PipelineState.STOPPED},
    PipelineState.STARTING: {PipelineState.RUNNING, PipelineState.FAILED, PipelineState.DRAINING},
    PipelineState.RUNNING: {PipelineState.DRAINING, PipelineState.FAILED},
    PipelineState.DRAINING: {PipelineState.STOPPED, PipelineState.FAILED},
    PipelineState.STOPPED: set(),
    PipelineState.FAILED: set(),
}


@dataclass
class _Job:
    frame: Frame
    fps: float
    boxes: list[Box] = field(default_factory=list)
    outputs: np.ndarray | None = None
    error: BaseException | None = None
    timings: dict[str, float] = field(default_factory=dict)
    t_done: float = 0.0
    queue_s: float = 0.0  # waiting for a detect worker
    done: threading.Event = field(default_factory=threading.Event)


DetectorFactory = Callable[[], Detector]


@dataclass(frozen=True)
class PipelineOptions:
    """How the pipeline batches and bounds its work.

    max_batch / max_delay_ms: the batcher's limits. detect_workers: detect/preprocess threads.
    detect_every=k detects on every k-th frame of a source and predicts its boxes in between
    (runtime.track). max_inflight: frames between a source and the sinks (None: chosen from the
    sources, `inflight_for`). max_frames: stop after that many frames. metrics_interval: seconds
    between metric lines on the log (0: never).
    """

    max_batch: int = 32
    max_delay_ms: float = 5.0
    detect_workers: int = 1
    detect_every: int = 1
    max_inflight: int | None = None
    max_frames: int | None = None
    metrics_interval: float = 0.0

    def __post_init__(self) -> None:
        for name in ("max_batch", "detect_workers", "detect_every", "max_inflight", "max_frames"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ConfigError(f"{name} must be a positive integer; got {v!r}")
        # A non-finite delay overflows the batcher's timed wait (and NaN compares false everywhere).
        if not (isinstance(self.max_delay_ms, (int, float)) and 0 <= self.max_delay_ms <= 60_000):
            raise ConfigError(f"max_delay_ms must be a number from 0 to 60000; got {self.max_delay_ms!r}")
        if not (isinstance(self.metrics_interval, (int, float)) and 0 <= self.metrics_interval < float("inf")):
            raise ConfigError(f"metrics_interval must be a finite number >= 0; got {self.metrics_interval!r}")

    def inflight_for(self, sources: Sequence[Source], whole_frames: bool, detect_batch: int = 1) -> int:
        """Frames in flight bound memory, the batch the batcher can form, and (for live sources) the
        age of what is shown. Files, whole frames classified: 2 x max_batch, so batches fill (on an
        H100, 16 in flight capped batches at 16 and made batching slower than batch 1; 512 gave
        63-image batches, 2x batch 1). Live (`latest`) sources or a detector: a few per detect
        worker and one per stream, because a frame taken from its source can no longer be dropped
        and ages (the soak saw p99 age 72 s with 64), and frames queued behind the detector only
        age and hold memory (64 1080p frames in flight took the Haar pipeline on smile.mp4 to a
        534 MB peak, 8 to 219 MB, at the same fps; docs/results.md). A detector that batches
        (detect_batch > 1) needs a full call per worker in flight and one more waiting, or no call
        would ever fill."""
        if self.max_inflight is not None:
            return self.max_inflight
        live = any(s.policy is Policy.LATEST for s in sources)
        if whole_frames and not live:
            return max(8, 4 * self.detect_workers, 2 * self.max_batch)
        return max(8, 4 * self.detect_workers, len(sources), detect_batch * (self.detect_workers + 1))


class Pipeline:
    """Run an open backend over one or more sources (STYLE.md 18: objects in; `runtime.build`
    turns names and CLI strings into these objects).

    backend: an open backend (edgecv.runtime.backends.open_backend); the pipeline closes it at the
      end only when owns_backend is true.
    sources: Source objects, not yet started, with unique ids.
    detector: None (each whole frame is classified) or a zero-argument factory that builds one
      detector per detect worker (detectors are not thread-safe). The model's ModelSpec `crop`
      turns each detected box into the region the model reads.
    sinks: where results go (runtime.sinks). options: PipelineOptions.
    """

    def __init__(self, backend: BackendBase, sources: Sequence[Source], detector: DetectorFactory | None = None,
                 sinks: Sequence[Sink] = (), options: PipelineOptions | None = None, *,
                 owns_backend: bool = False) -> None:
        if not isinstance(backend, BackendBase):
            raise ConfigError(f"backend must be an open backend (runtime.backends.open_backend); "
                              f"got {type(backend).__name__}")
        if not sources:
            raise ConfigError("at least one source is needed")
        if not all(isinstance(s, Source) for s in sources):
            raise ConfigError("sources must be Source objects (runtime.build.build_sources makes them from text)")
        if len({s.id for s in sources}) != len(sources):
            raise ConfigError("source ids must be unique")
        if detector is not None and not callable(detector):
            raise ConfigError(f"detector must be a factory (a zero-argument callable); got {type(detector).__name__}")
        self.options = options or PipelineOptions()
        self.backend: BackendBase = backend
        self._owns_backend = owns_backend
        self.sources: list[Source] = list(sources)
        self._detector_factory = detector
        self.max_inflight = self.options.inflight_for(self.sources, whole_frames=detector is None)
        self._tracker = BoxTracker(self.options.detect_every)
        self.sinks = SinkSet(sinks, on_error=self._sink_error)
        self.metrics = Metrics()
        # Callables run on every FrameResult in each stream's frame order, before the sinks (they may
        # set fields: runtime.identity's track ids, the smile app's events). One that raises fails the run.
        self.hooks: list[Callable[[FrameResult], None]] = []
        self.state = PipelineState.CREATED
        self.error: str | None = None
        self._error_exc: BaseException | None = None
        self._state_lock = threading.Lock()
        self._stopping = threading.Event()
        self._finished = threading.Event()
        self._jobs: deque[_Job] = deque()
        self._jobs_cv = threading.Condition()
        self._dispatch_done = False
        self._slots: threading.Semaphore | None = None
        self._local = threading.local()
        self._spare_detectors: list[Detector] = []  # built by start(), one per detect worker
        self._spare_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        # Detect workers take jobs from a C-implemented SimpleQueue: a ThreadPoolExecutor's Future and
        # locks per frame cost ~10 us of the ~100 us of Python each frame takes (yappi, 2-core box).
        self._work_q: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self.batcher: Batcher | None = None
        self._dispatched = 0
        self._detect_calls: deque[int] = deque(maxlen=4096)  # frames per detector call (batching detectors)

    # -- lifecycle ------------------------------------------------------------------------------
    def _set_state(self, new: PipelineState) -> bool:
        with self._state_lock:
            if new not in TRANSITIONS[self.state]:
                return False
            log.debug("pipeline %s -> %s", self.state.value, new.value)
            self.state = new
            return True

    def start(self) -> "Pipeline":
        """Build a detector and start the sources and threads. Raises EdgecvError subclasses; on
        error everything started so far is stopped again."""
        if not self._set_state(PipelineState.STARTING):
            raise ConfigError(f"a pipeline starts once; this one is {self.state.value}")
        try:
            # Every worker's detector is built now: a bad detector fails here, not in a worker, and no
            # model loads while frames wait (the first frames of a short run used to).
            if self._detector_factory is not None:
                self._spare_detectors = [self._detector_factory() for _ in range(max(1, self.options.detect_workers))]
            det = self._spare_detectors[0] if self._spare_detectors else None
            if detect_batch_of(det) > 1:
                self.max_inflight = self.options.inflight_for(self.sources, False, detect_batch_of(det))
            for src in self.sources:
                src.start()
        except BaseException:
            self._abort_start()
            raise
        opts = self.options
        self._slots = threading.Semaphore(self.max_inflight)
        self.batcher = Batcher(self._infer, opts.max_batch, opts.max_delay_ms, on_batch=self.metrics.batch)
        for i in range(opts.detect_workers):
            w = threading.Thread(target=self._worker, name=f"detect-{i}", daemon=True)
            self._workers.append(w)
            w.start()
        self.metrics.t_start = time.monotonic()
        for target, name in ((self._dispatch, "dispatch"), (self._sink_loop, "sink")):
            t = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(t)
            t.start()
        self._set_state(PipelineState.RUNNING)
        if self._stopping.is_set():  # stop() came while starting: sources opened since must stop too
            self.stop()
        return self

    def _abort_start(self) -> None:
        for src in self.sources:
            src.stop()
        for src in self.sources:
            src.join(2.0)
        if self.backend is not None and self._owns_backend:
            self.backend.close()
        self.sinks.close()
        with self._state_lock:
            self.state = PipelineState.FAILED

    def stop(self) -> None:
        """Drain and finish: safe from any state and any thread (a signal handler too)."""
        self._stopping.set()
        for src in self.sources:
            src.stop()
        with self._state_lock:
            if self.state is PipelineState.CREATED:
                self.state = PipelineState.STOPPED
                return
        self._set_state(PipelineState.DRAINING)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the pipeline has finished (True) or timeout passes (False). Prints metrics
        every metrics_interval seconds. Wakes often so signal handlers in the main thread run."""
        if self.state is PipelineState.CREATED:
            raise ConfigError("the pipeline was not started")
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = self.options.metrics_interval
        next_print = time.monotonic() + interval if interval > 0 else None
        for t in self._threads:
            while t.is_alive():
                t.join(0.2)
                now = time.monotonic()
                if next_print is not None and now >= next_print:
                    dropped = sum(src.dropped for src in self.sources)
                    states = ",".join(f"{src.id}:{src.state.value}" for src in self.sources)
                    log.info("%s | dropped %d | %s", self.metrics.line(), dropped, states)
                    next_print = now + interval
                if deadline is not None and now >= deadline:
                    return False
        return True

    def run(self) -> dict[str, Any]:
        """start(), wait for the end (or stop()), and return summary(). A failure while running
        (a model that does not fit its spec, inference that raises) is re-raised as EdgecvError."""
        self.start()
        self.wait()
        if self.state is PipelineState.FAILED:
            if isinstance(self._error_exc, EdgecvError):
                raise type(self._error_exc)(self.error) from None
            raise BackendError(self.error or "pipeline failed")
        return self.summary()

    def __enter__(self) -> "Pipeline":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.wait()

    # -- threads --------------------------------------------------------------------------------
    def _next_frame(self, rr: int) -> tuple[Frame | None, Source | None, int]:
        n = len(self.sources)
        if n == 1:
            src = self.sources[0]
            return src.get(timeout=0.05), src, 0
        for k in range(n):
            src = self.sources[(rr + k) % n]
            frame = src.get()
            if frame is not None:
                return frame, src, (rr + k + 1) % n
        time.sleep(0.002)
        return None, None, rr

    def _dispatch(self) -> None:
        rr = 0
        try:
            while True:
                if all(s.done for s in self.sources):
                    break
                # A slot first, then a frame: under `latest` a frame left in its source's queue can
                # still be replaced by a newer one; a frame taken and waiting for a slot only ages.
                while not self._slots.acquire(timeout=0.1):
                    if self._finished.is_set():  # the sink thread is gone: nobody frees a slot
                        return
                frame, src, rr = self._next_frame(rr)
                if frame is None:
                    self._slots.release()
                    continue
                self.metrics.observe("decode", frame.decode_s)
                job = _Job(frame, src.reader.fps)
                with self._jobs_cv:
                    self._jobs.append(job)
                    self._jobs_cv.notify_all()
                self._work_q.put(job)
                self._dispatched += 1
                if self.options.max_frames is not None and self._dispatched >= self.options.max_frames:
                    self.stop()
                    break
        finally:
            with self._jobs_cv:
                self._dispatch_done = True
                self._jobs_cv.notify_all()

    def _detector_for_thread(self) -> Detector | None:
        """This thread's detector: one that start() built, else a new one (each thread its own: the
        engines are not safe to share between threads)."""
        if not hasattr(self._local, "detector"):
            with self._spare_lock:
                spare = self._spare_detectors.pop() if self._spare_detectors else None
            if spare is None and self._detector_factory is not None:
                spare = self._detector_factory()
            self._local.detector = spare
        return self._local.detector

    def _worker(self) -> None:
        try:
            det = self._detector_for_thread()
        except Exception:  # _work builds it again for each frame and fails that frame visibly
            det = None
        cap = detect_batch_of(det)
        while (job := self._work_q.get()) is not None:
            if cap == 1:
                self._work(job)
                continue
            # A batching detector gets the frames already waiting (never waits for more: a lone frame
            # goes alone, so batching adds no latency when the pipeline keeps up).
            jobs, last = [job], False
            while len(jobs) < cap:
                try:
                    nxt = self._work_q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:  # this worker's stop signal: finish what it holds, then end
                    last = True
                    break
                jobs.append(nxt)
            self._work_batch(jobs, det)
            if last:
                break

    def _work_batch(self, jobs: list[_Job], det: BatchDetector) -> None:
        """_work for several frames with one detector call; each frame's detect time is its share
        of the call (the call's time / frames detected in it)."""
        t0 = time.monotonic()
        for job in jobs:
            job.queue_s = t0 - job.frame.t_capture
            self.metrics.observe("queue", job.queue_s)
        planned: list[list[Box] | None] = []
        detect: list[_Job] = []
        after: list[_Job] = []  # frames whose boxes the tracker predicts from a detection in this call
        pending: dict[str, int] = {}
        every = self.options.detect_every
        try:
            for job in jobs:
                sid, index = job.frame.source_id, job.frame.index
                boxes = self._planned_boxes(job, det)
                if boxes is None and sid in pending and 0 < index - pending[sid] < every:
                    after.append(job)  # one by one this frame would see that detection first
                elif boxes is None:
                    pending[sid] = index
                    detect.append(job)
                planned.append(boxes)
            found = det.detect_batch([j.frame.image for j in detect]) if detect else []
            if len(found) != len(detect):
                raise BackendError(f"detector {det.name} returned {len(found)} box lists for {len(detect)} frames")
        except Exception as e:  # every frame of the call fails; the sink thread reports it
            for job in jobs:
                job.error = e
                job.done.set()
            return
        share = 0.0
        if detect:
            share = (time.monotonic() - t0) / len(detect)
            self._detect_calls.append(len(detect))
        detected = {id(j): b for j, b in zip(detect, found)}
        waits = {id(j) for j in after}
        # In frame order: a frame between two detections of this call is predicted from the one before it.
        for job, boxes in zip(jobs, planned):
            try:
                if id(job) in detected:
                    boxes = self._detected(job, detected[id(job)])
                    self._observe_detect(job, share)
                elif id(job) in waits:
                    boxes = self._planned_boxes(job, det)
                self._classify(job, boxes or [])
            except Exception as e:
                job.error = e
                job.done.set()

    def _work(self, job: _Job) -> None:
        """Detect, crop, preprocess and queue the crops for inference (a detect worker thread)."""
        try:
            t0 = time.monotonic()
            # Where a frame's time goes: waiting for a worker (queue), detect, preprocess, infer
            # (batch forming + the model), waiting behind earlier frames (order), hooks, sink, and
            # the rest of its age (other: the Python between the stages, see _deliver).
            job.queue_s = t0 - job.frame.t_capture
            self.metrics.observe("queue", job.queue_s)
            det = self._detector_for_thread()
            boxes = self._planned_boxes(job, det)
            if boxes is None:
                boxes = self._detected(job, det.detect(job.frame.image))
                self._observe_detect(job, time.monotonic() - t0)
            self._classify(job, boxes)
        except Exception as e:  # keep the frame order moving; the sink thread reports it
            job.error = e
            job.done.set()

    def _planned_boxes(self, job: _Job, det: Detector | None) -> list[Box] | None:
        """The boxes a frame gets without running the detector (the whole frame when there is none;
        with detect_every=k, boxes the tracker predicts between detections), or None: detect it."""
        h, w = job.frame.image.shape[:2]
        if det is None:
            return [Box(0, 0, w, h)]
        reused = self._tracker.predict(job.frame.source_id, job.frame.index)
        if reused is None:
            return None
        return [c for c in (b.clip(w, h) for b in reused) if c is not None]

    def _detected(self, job: _Job, found: list[Box]) -> list[Box]:
        """The detector's boxes for a frame -> the regions the model reads (ModelSpec crop, clipped);
        recorded for the tracker."""
        h, w = job.frame.image.shape[:2]
        rule = self.backend.spec.crop
        boxes = [c for c in (crop_region(b, rule).clip(w, h) for b in found) if c is not None]
        self._tracker.update(job.frame.source_id, job.frame.index, boxes)
        return boxes

    def _observe_detect(self, job: _Job, seconds: float) -> None:
        job.timings["detect"] = seconds * 1000
        self.metrics.observe("detect", seconds)

    def _classify(self, job: _Job, boxes: list[Box]) -> None:
        """Crop and preprocess a frame's boxes and hand them to the batcher (a frame without boxes
        is done here)."""
        job.boxes = boxes
        if not boxes:
            job.done.set()
            return
        t1 = time.monotonic()
        spec = self.backend.spec
        batch = apply_chain([b.crop(job.frame.image) for b in boxes], spec.preprocess, spec.input_shape)
        t2 = time.monotonic()
        job.timings["preprocess"] = (t2 - t1) * 1000
        self.metrics.observe("preprocess", t2 - t1)

        def done(out: np.ndarray | None, err: BaseException | None) -> None:
            job.outputs, job.error = out, err
            job.t_done = time.monotonic()
            job.timings["infer"] = (job.t_done - t2) * 1000
            job.done.set()

        self.batcher.submit(batch, done)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Run and decode a whole batch at once (edgecv.decode checks it against the spec): each
        request gets N x 2 rows of (class index, probability) back, not raw outputs to decode
        frame by frame."""
        idx, score = decode.decide(self.backend.spec, self.backend.run(batch), len(batch))
        return np.stack([idx.astype(np.float64), score.astype(np.float64)], axis=1)

    def _sink_loop(self) -> None:
        spec = self.backend.spec
        try:
            while True:
                with self._jobs_cv:
                    while not self._jobs and not self._dispatch_done:
                        self._jobs_cv.wait(0.5)
                    if not self._jobs:
                        break
                    job = self._jobs[0]
                job.done.wait()
                with self._jobs_cv:
                    self._jobs.popleft()
                self._slots.release()
                if job.error is not None:
                    self._fatal(job.error)
                    continue
                if self.state is PipelineState.FAILED:
                    continue
                try:
                    self._deliver(job, spec)
                except Exception as e:  # a bug here must fail the run visibly, not hang it
                    self._fatal(e)
        finally:
            self._finish()

    def _deliver(self, job: _Job, spec) -> None:
        rows = job.outputs.tolist() if job.outputs is not None else []  # (index, probability) per box
        dets = [Detection(b, decode.label(spec, int(i)), int(i), p) for b, (i, p) in zip(job.boxes, rows)]
        job.timings["decode"] = job.frame.decode_s * 1000
        result = FrameResult(job.frame, dets, job.timings, job.fps)
        t_order = time.monotonic()
        order = t_order - job.t_done if job.t_done else 0.0
        if job.t_done:
            self.metrics.observe("order", order)
        for hook in self.hooks:
            hook(result)
        t0 = time.monotonic()
        if self.hooks:
            self.metrics.observe("hooks", t0 - t_order)
        self.sinks.write(result)
        t1 = time.monotonic()
        self.metrics.observe("sink", t1 - t0)
        age = t1 - job.frame.t_capture
        # What the measured stages leave of the frame's age: dispatch and the Python between stages
        # (the part a faster machine does not shrink, the bound when many streams share one process).
        known = job.queue_s + order + (t1 - t_order) + sum(job.timings.get(k, 0.0) for k in
                                                           ("detect", "preprocess", "infer")) / 1000
        self.metrics.observe("other", max(0.0, age - known))
        self.metrics.frame_done(job.frame.source_id, age, len(dets))

    def _fatal(self, e: BaseException) -> None:
        if self.error is None:
            msg = str(e) if isinstance(e, EdgecvError) else f"{type(e).__name__}: {e}"
            self.error = f"pipeline failed: {msg}"
            self._error_exc = e
            log.error("%s; stopping", self.error)
            self.stop()
            with self._state_lock:
                self.state = PipelineState.FAILED

    def _finish(self) -> None:
        """Close everything, in the order data flows (the sink thread's last act)."""
        self._finished.set()
        for src in self.sources:
            src.stop()
        for _ in self._workers:
            self._work_q.put(None)
        for w in self._workers:
            w.join()
        if self.batcher is not None:
            self.batcher.close()
        self._end_hooks()
        self.sinks.close()
        for src in self.sources:
            if not src.join(10.0):
                log.warning("source %s did not finish within 10 s (a stuck network read?)", src.id)
        if self._owns_backend:
            self.backend.close()
        if self.state is not PipelineState.FAILED:
            with self._state_lock:
                self.state = PipelineState.STOPPED

    def _end_hooks(self) -> None:
        """Hooks that hold state across frames (a smile still on) close it after the last frame: the
        events their `end_of_run()` returns go to the sinks that take events before those close."""
        events: list[dict[str, Any]] = []
        for hook in self.hooks:
            end = getattr(hook, "end_of_run", None)
            if end is None:
                continue
            try:
                events.extend(end())
            except Exception as e:  # the run is over: report it, close the sinks all the same
                log.error("hook %s failed at the end of the run (%s: %s)", getattr(hook, "name", hook),
                          type(e).__name__, e)
        if events:
            self.sinks.write_events(events)

    def _sink_error(self, name: str, e: BaseException) -> None:
        self.metrics.sink_errors[name] += 1

    # -- reporting ------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Metrics plus per-source state and counts, the backend and the sinks that failed (JSON-ready)."""
        snap = self.metrics.snapshot()
        for src in self.sources:
            entry = snap["sources"].setdefault(src.id, {"frames": 0, "faces": 0, "fps": 0.0})
            entry.update(src.stats())
        b = self.backend
        snap["state"] = self.state.value
        snap["error"] = self.error
        snap["backend"] = None if b is None else {"name": b.name, "providers": list(getattr(b, "providers", ())),
                                                  "model": self.backend.spec.name}
        calls = list(self._detect_calls)
        if calls:
            snap["detect_batches"] = {"count": len(calls), "mean_size": round(sum(calls) / len(calls), 2),
                                      "max_size": max(calls)}
        snap["sinks_failed"] = dict(self.sinks.failed)
        snap["peak_rss_mb"] = peak_rss_mb()
        return snap

