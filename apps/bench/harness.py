"""The one child-process harness: every isolated measurement of every subcommand runs as
`python -m edgecv.apps.bench.child JOB_JSON` in a fresh interpreter, so its peak RSS, imports
(TensorFlow above all), thread pools and warm caches are its own.

The child prints one JSON line: the job's result (with the child's peak RSS), or {"error": ...}
for an EdgecvError; anything else is reported from its stderr.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Mapping

from edgecv.errors import EdgecvError
from edgecv.runtime.metrics import peak_rss_mb


def own_peak_rss_mb() -> float:
    """This process's own peak resident set size in MiB: VmHWM of /proc/self/status on Linux.

    Not getrusage's ru_maxrss: Linux carries the largest memory map a process ever had across
    fork + exec, the parent's forked copy included, so a child of a parent holding 165 MB (the
    accuracy data, OpenVINO imported to see that it is installed) reported 165 MB whatever it
    loaded. VmHWM belongs to the map exec made. Elsewhere: the runtime's probe."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return peak_rss_mb()


class ChildError(EdgecvError):
    """A measurement that could not be made: the child's own message, or its stderr tail."""


def run_child(job: str, args: Mapping[str, Any], *, label: str, timeout: float | None = None) -> dict[str, Any]:
    """Run `job` (a name in edgecv.apps.bench.child.JOBS) with keyword `args` in a fresh Python
    process; returns its JSON result. label names the measurement in error messages."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    cmd = [sys.executable, "-m", "edgecv.apps.bench.child", json.dumps({"job": job, "args": dict(args)})]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ChildError(f"{label}: measuring took longer than {timeout:.0f} s; gave up") from None
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except ValueError:
        result = None
    if isinstance(result, dict) and "error" in result:
        raise ChildError(result["error"])
    if proc.returncode != 0 or not isinstance(result, dict):
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise ChildError(f"{label}: the measuring process failed (exit {proc.returncode}): " + " | ".join(tail))
    return result
