"""Pipeline metrics: per-source fps, per-stage latency percentiles, frame age at the sink, batch sizes.

Stages: decode, detect, preprocess, infer (per batch), sink, and `age` (capture to sink, per frame).
Latencies keep the last `window` samples per stage, so memory stays bounded on endless streams.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from typing import Any

import numpy as np

# Per frame, in the order a frame meets them: decode (the read), queue (captured -> a detect worker
# takes it: the pipeline is behind when this grows), detect, preprocess, infer (per batch: the
# model), order (inferred -> its turn at the sinks, behind earlier frames of its stream), hooks (track
# ids, smile events), sink, other (what of the frame's age no stage above measured: the Python between
# the stages, and the rest of a shared detect call) and age (captured -> written: the sum a viewer sees).
STAGES = ("decode", "queue", "detect", "preprocess", "infer", "order", "hooks", "sink", "other", "age")


class Metrics:
    """Thread-safe counters and latency samples, all on the monotonic clock."""

    def __init__(self, window: int = 4096) -> None:
        self.window = window
        self.t_start = time.monotonic()
        self._lat: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=window))
        self._frames: dict[str, int] = defaultdict(int)
        self._faces: dict[str, int] = defaultdict(int)
        self._first: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._batch_sizes: deque[int] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.sink_errors: dict[str, int] = defaultdict(int)

    def observe(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._lat[stage].append(seconds)

    def batch(self, size: int, seconds: float) -> None:
        with self._lock:
            self._batch_sizes.append(size)
            self._lat["infer"].append(seconds)

    def frame_done(self, source_id: str, age_s: float, faces: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._frames[source_id] += 1
            self._faces[source_id] += faces
            self._first.setdefault(source_id, now)
            self._last[source_id] = now
            self._lat["age"].append(age_s)

    @property
    def frames(self) -> int:
        return sum(self._frames.values())

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready summary: stages in ms (p50/p95/p99/mean/n), per-source frames and fps."""
        with self._lock:
            lat = {k: list(v) for k, v in self._lat.items()}
            frames, faces = dict(self._frames), dict(self._faces)
            first, last = dict(self._first), dict(self._last)
            sizes = list(self._batch_sizes)
        elapsed = time.monotonic() - self.t_start
        stages = {}
        for name in STAGES:
            v = lat.get(name)
            if v:
                a = np.asarray(v) * 1000.0
                stages[name] = {"p50": round(float(np.percentile(a, 50)), 3),
                                "p95": round(float(np.percentile(a, 95)), 3),
                                "p99": round(float(np.percentile(a, 99)), 3),
                                "mean": round(float(a.mean()), 3), "n": len(a)}
        sources = {}
        for sid, n in frames.items():
            span = last[sid] - first[sid]
            sources[sid] = {"frames": n, "faces": faces[sid],
                            "fps": round((n - 1) / span, 2) if n > 1 and span > 0 else 0.0}
        total = sum(frames.values())
        return {"elapsed_s": round(elapsed, 3), "frames": total, "faces": sum(faces.values()),
                "fps": round(total / elapsed, 2) if elapsed > 0 else 0.0,
                "stages_ms": stages, "sources": sources,
                "batches": {"count": len(sizes), "mean_size": round(float(np.mean(sizes)), 2) if sizes else 0.0,
                            "max_size": max(sizes) if sizes else 0},
                "sink_errors": dict(self.sink_errors)}

    def line(self) -> str:
        """One human line for the periodic print."""
        s = self.snapshot()
        parts = [f"{s['frames']} frames {s['fps']:.1f} fps"]
        for sid, v in s["sources"].items():
            parts.append(f"{sid} {v['fps']:.1f} fps")
        for name in ("detect", "infer", "age"):
            if name in s["stages_ms"]:
                st = s["stages_ms"][name]
                parts.append(f"{name} p50 {st['p50']:.1f} p99 {st['p99']:.1f} ms")
        if s["batches"]["count"]:
            parts.append(f"batch {s['batches']['mean_size']:.1f}")
        return " | ".join(parts)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports KiB, macOS bytes). The
    one RSS probe: the pipeline's summary and the benchmark's rows both read it."""
    import resource
    import sys

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(r / (1 << 20) if sys.platform == "darwin" else r / 1024, 1)
