"""What this process may use of the machine, and the pipeline defaults that follow from it.

`usable_cpus()` counts the CPUs the scheduler lets this process run on (affinity: `taskset`,
container cpusets) and caps that by a cgroup v2 CPU quota (`cpu.max`, what `docker --cpus` sets),
so a 2-CPU container on a 64-core host gets 2-CPU defaults. `choose_defaults` turns that and the
number of streams into detect workers, inference threads and frames in flight; the pipeline summary
states what was chosen and why, and a user's explicit flag always wins. `choose_detector` picks the
engine for YuNet (ONNX Runtime, one frame a call on the CPU, batched where the CUDA provider is).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class DetectorChoice:
    """The detector a run uses and its options, when the machine decided part of it: `chosen` names
    what came from the machine (name, max_batch, threads), `why` says on what grounds."""

    name: str
    options: dict[str, Any]
    chosen: tuple[str, ...]
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "max_batch": self.options.get("max_batch", 1),
                "chosen": list(self.chosen), "why": self.why}


BATCHING = ("yunet", "yunet-ort")  # detectors --detect-batch applies to (both run as yunet-ort)
CPU_DETECT_BATCH = 1   # on the CPU batching does not pay (docs/detection.md)
CUDA_DETECT_BATCH = 32


def choose_detector(name: str, cpus: int, detect_workers: int, detect_batch: int | None = None,
                    cuda: bool | None = None, onnx: bool | None = None) -> DetectorChoice:
    """Which engine runs a named detector, and how many frames a call.

    "yunet" runs as "yunet-ort" (YuNet on ONNX Runtime): on the 2-core AMD EPYC box one frame a call
    took about half of FaceDetectorYN's time per frame, and batching did not pay on its CPU
    (docs/detection.md). So on the CPU one frame a call; where this onnxruntime has the CUDA provider,
    32 (a batch needs the onnx package; without it one frame a call, with a warning). --detect-batch
    N sets the frames a call. "yunet-opencv" (FaceDetectorYN) and "haar" are taken as named.
    cuda / onnx: whether the CUDA provider / the onnx package are there (None: look)."""
    from edgecv.errors import ConfigError

    if detect_batch is not None and name not in BATCHING:
        raise ConfigError(f"--detect-batch needs a detector that batches (yunet or yunet-ort); "
                          f"{name} runs one frame a call")
    if name not in BATCHING:
        return DetectorChoice(name, {}, (), f"{name} as asked")
    if cuda is None:
        from .yunet_batch import cuda_available

        cuda = cuda_available()
    if onnx is None:
        import importlib.util

        onnx = importlib.util.find_spec("onnx") is not None
    chosen: list[str] = ["name"] if name == "yunet" else []
    where = "CUDA provider" if cuda else "CPU"
    if detect_batch is None:
        detect_batch = CUDA_DETECT_BATCH if cuda else CPU_DETECT_BATCH
        chosen.append("max_batch")
        if detect_batch > 1 and not onnx:
            log.warning("YuNet would run %d frames a call on the CUDA provider but the onnx package is missing "
                        "(install edgecv[gpu]); one frame a call", detect_batch)
            detect_batch = 1
        why = (f"{where}: YuNet on ONNX Runtime, {detect_batch} frame(s) a call"
               + ("" if cuda else " (faster than FaceDetectorYN on the CPU measured, batching is not)"))
    else:
        why = f"{where}: YuNet on ONNX Runtime, --detect-batch {detect_batch}"
    options: dict[str, Any] = {"max_batch": detect_batch}
    if not cuda:
        # Each detect worker's session gets its share of the CPUs: ORT's default (a thread per core
        # in every session) oversubscribes the cores.
        options["threads"] = max(1, cpus // max(1, detect_workers))
        chosen.append("threads")
    return DetectorChoice("yunet-ort", options, tuple(chosen), why)
