"""The machine fingerprint stored with every `benchmark models` run: which CPU (model, the SIMD flags that
decide int8 and fp16 speed), how many cores the process may use, the load on the box when it ran,
and the versions of the libraries that did the work. A latency without this is not comparable.

Nothing here imports an inference library: versions come from package metadata, so the
fingerprint costs no import time and no memory in the process that measures.
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

# The flags that change which kernels run: int8 dot products (VNNI, AMX), fp16 conversion, wide SIMD.
# x86 names from /proc/cpuinfo "flags"; ARM names from its "Features" line.
KEY_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
             "neon", "asimd", "asimddp", "fphp", "asimdhp", "i8mm", "bf16", "sve", "sve2")
# Distribution names, not import names: looked up with importlib.metadata (no import).
PACKAGES = ("numpy", "onnxruntime", "onnxruntime-gpu", "ai-edge-litert", "openvino", "tensorflow", "tensorflow-cpu",
            "keras", "opencv-python", "opencv-python-headless", "edgecv")


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """Model name, flags and physical core count from /proc/cpuinfo (empty on non-Linux)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    model = flags = None
    cores = set()
    phys = core = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "Model", "Hardware") and model is None and value:
            model = value
        elif key in ("flags", "Features") and flags is None:
            flags = value.split()
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
        elif not line.strip() and core is not None:
            cores.add((phys, core))
            phys = core = None
    if core is not None:
        cores.add((phys, core))
    flags = flags or []
    return {"cpu_model": model or platform.processor() or platform.machine(),
            "cpu_flags": [f for f in KEY_FLAGS if f in set(flags)],
            # The full set is long; its hash tells two machines apart without storing it.
            "cpu_flags_sha1": hashlib.sha1(" ".join(sorted(flags)).encode()).hexdigest()[:12] if flags else None,
            "physical_cores": len(cores) or None}


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _ort_providers() -> list[str] | None:
    # onnxruntime is imported only when some other code already did (the parent of an ORT run):
    # the fingerprint must not add an import to the process that is measured.
    ort = sys.modules.get("onnxruntime")
    return list(ort.get_available_providers()) if ort is not None else None


def fingerprint(threads: int | None = None) -> dict[str, Any]:
    """A JSON-ready description of this machine and software, taken now."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    env = {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "platform": platform.platform(),
           "machine": platform.machine(),
           **_cpuinfo(),
           "logical_cpus": os.cpu_count(),
           "usable_cpus": usable,
           "threads_requested": threads,
           "mem_total_gb": _mem_total_gb(),
           # Other work on the box slows every number: the load average says how busy it was.
           "loadavg_1_5_15": load,
           "versions": _versions()}
    providers = _ort_providers()
    if providers is not None:
        env["onnxruntime_providers"] = providers
    return env


def summary_line(env: dict[str, Any]) -> str:
    """One line for tables: CPU, cores, load and the runtimes' versions."""
    v = env.get("versions", {})
    flags = ",".join(env.get("cpu_flags") or []) or "-"
    ort = v.get("onnxruntime") or v.get("onnxruntime-gpu") or "-"
    load = env.get("loadavg_1_5_15") or ["?"]
    return (f"{env.get('cpu_model')} ({env.get('usable_cpus')} usable CPUs, {env.get('physical_cores')} physical "
            f"cores; flags {flags}); "
            f"load {load[0]} at start; python {v.get('python')}, numpy {v.get('numpy', '-')}, "
            f"onnxruntime {ort}, ai-edge-litert {v.get('ai-edge-litert', '-')}"
            + (f", openvino {v['openvino']}" if v.get("openvino") else ""))
