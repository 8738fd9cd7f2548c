"""What this process may use of the machine, and the pipeline defaults that follow from it.

`usable_cpus()` counts the CPUs the scheduler lets this process run on (affinity: `taskset`,
container cpusets) and caps that by a cgroup v2 CPU quota (`cpu.max`, what `docker --cpus` sets),
so a 2-CPU container on a 64-core host gets 2-CPU defaults. `choose_defaults` turns that and the
number of streams into detect workers, inference threads and frames in flight; the pipeline summary
states what was chosen and why, and a user's explicit flag always wins.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by a cgroup v2 quota ("200000 100000" -> 2.0); None when unlimited or unknown."""
    try:
        text = (root / "cpu.max").read_text().split()
    except OSError:
        return None
    if len(text) != 2 or text[0] == "max":
        return None
    try:
        quota, period = float(text[0]), float(text[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def usable_cpus() -> int:
    """CPUs this process can keep busy: its affinity mask, capped by a cgroup CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


@dataclass(frozen=True)
class Defaults:
    """What the pipeline runs with when the user does not say: per field, `chosen` names the ones
    that came from the machine (the others were given)."""

    cpus: int
    detect_workers: int
    threads: int
    chosen: tuple[str, ...]
    why: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["chosen"] = list(self.chosen)
        return d


def choose_defaults(cpus: int, streams: int, detector: bool, detect_workers: int | None = None,
                    threads: int | None = None) -> Defaults:
    """Detect workers and inference threads for `cpus` usable CPUs and `streams` sources.

    With a detector, detection is most of a frame's CPU time (YuNet 3.5 ms of ~4.5 ms per 480x360
    frame on the 2-core machine) and each worker's OpenCV call releases the interpreter lock, so
    one worker per CPU (up to 8, past which one Python dispatcher caps throughput first) and one
    inference thread: the batched classifier is small next to detection. Whole frames classified:
    inference is the work, so ONNX Runtime / LiteRT get the CPUs and one worker feeds them.
    """
    chosen = []
    if detect_workers is None:
        detect_workers = max(1, min(cpus, 8)) if detector else 1
        chosen.append("detect_workers")
    if threads is None:
        threads = 1 if detector else max(1, min(cpus, 8))
        chosen.append("threads")
    why = (f"{cpus} usable CPU(s), {streams} stream(s), "
           + ("detector: one detect worker per CPU, one inference thread" if detector
              else "whole frames: inference threads on every CPU"))
    return Defaults(cpus, detect_workers, threads, tuple(chosen), why)
