"""`edgecv benchmark models`: which artefact, precision, backend, device and batch size to ship.

Every artefact x backend x device x batch is measured in its own process (harness -> measure);
accuracy is scored once per artefact x backend x device and shown on each of its batch rows, with
its drop against the source model's accuracy from the ModelSpec metrics.
"""
from __future__ import annotations

import importlib
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

from edgecv.errors import ConfigError, DataError, ModelError, unknown
from edgecv.resolve import ModelRef, resolve

from .harness import ChildError, run_child
from .measure import BenchConfig, Scoring
from .report import OVERHEAD_LIMIT_PCT, Progress

SUFFIX_BACKENDS = {".tflite": ("litert",), ".onnx": ("onnxruntime", "openvino"), ".keras": ("keras",)}
# Backends that come with an optional extra: (import name, extra).
EXTRAS = {"openvino": ("openvino", "openvino")}
ARTEFACT_SUFFIXES = (".tflite", ".onnx")   # what a folder is scanned for
ORT_PROVIDER = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


# -- what to measure ------------------------------------------------------------------------------

def discover(arg: str) -> list[Path]:
    """Model files named by one argument: a file, a folder (its .tflite/.onnx files) or a shipped
    name (every artefact shipped under it)."""
    from edgecv import zoo

    p = Path(arg).expanduser()
    if not p.exists() and zoo.is_shipped(arg):
        return zoo.artefacts(arg)
    if p.is_dir():
        found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in ARTEFACT_SUFFIXES)
        if found:
            return found
        if (p / "model.keras").is_file():
            raise ConfigError(f"{p}: a run directory with no exported artefacts; to export every variant "
                              f"and benchmark them: edgecv benchmark models {p} --export-all --out DIR")
        raise ModelError(f"{p}: no .tflite or .onnx files in this folder")
    if not p.exists():
        raise ModelError(f"{arg}: no such model file or folder, and "
                         + unknown("shipped model", arg, zoo.names() or ["(none shipped)"]))
    if p.suffix not in SUFFIX_BACKENDS:
        raise ModelError(f"{p}: not a model file (expected .tflite, .onnx or .keras; got "
                         f"{p.suffix or 'no suffix'})")
    return [p]


def resolve_all(args: Sequence[str]) -> list[ModelRef]:
    """Each model file once, with its ModelSpec read once (edgecv.resolve)."""
    seen: dict[Path, ModelRef] = {}
    for arg in args:
        for path in discover(arg):
            if path.resolve() not in seen:
                seen[path.resolve()] = resolve(path)
    return list(seen.values())


def export_variants(model: str, out_dir: Path, quiet: bool = False) -> list[Path]:
    """Every export variant of `model` into out_dir; the paths of those that passed their gate."""
    try:
        from edgecv.export.api import export_all
    except ImportError as e:
        raise ConfigError(f"--export-all needs the [export] extra ({e.name} is not installed): "
                          "pip install 'edgecv[export]'") from None
    results = export_all(model, out_dir)
    if not quiet:
        for r in results:
            print(f"export {r.variant.key}: " + (f"-> {r.path}" if r.passed else f"FAILED: {r.error}"), file=sys.stderr)
    passed = [r.path for r in results if r.passed]
    if not passed:
        raise ModelError(f"{model}: no export variant passed; nothing to benchmark")
    return passed


def source_accuracy(spec: Any, data: str, split: str) -> float | None:
    """The source model's accuracy on (data, split) from the spec's metrics, when it names that data."""
    if data != spec.data.get("dataset"):
        return None
    keys = [f"{split}_accuracy"] if not spec.task.startswith("captcha") else [f"{split}_sequence_accuracy"] + (
        ["heldout_sequence_accuracy"] if split == "test" else [])
    for k in keys:
        v = spec.metrics.get(k)
        if isinstance(v, (int, float)):
            return float(v)
    return None


class DataCache:
    """Preprocessed (X, y) per data set, split and preprocessing chain, saved once as .npy for the
    measuring processes to read (memory-mapped)."""

    def __init__(self, workdir: Path, split: str, limit: int | None) -> None:
        self.workdir, self.split, self.limit = workdir, split, limit
        self._done: dict[str, tuple[str, str, list[str]]] = {}

    def scoring(self, data: str, spec: Any) -> Scoring:
        import numpy as np

        from edgecv.data import load, split
        from edgecv.preprocess import apply_chain

        from ..evaluate import label_map

        method = spec.data.get("split") if data == spec.data.get("dataset") else None
        key = json.dumps([data, self.split, method, spec.to_dict()["preprocess"], list(spec.input_shape)],
                         sort_keys=True)
        if key not in self._done:
            ds = load(data)
            part = split(ds, self.split, method or ds.split_info)
            if part.kind != "classify":
                raise DataError(f"{data}: a {part.kind} data set cannot score a {spec.task} model")
            if self.limit and self.limit < len(part):
                # Evenly spaced, not the first N: files are sorted by class, so a prefix is one class.
                part = part.subset(np.linspace(0, len(part) - 1, self.limit).round().astype(np.int64))
            x, y = part.load_arrays(lambda imgs: apply_chain(imgs, spec.preprocess, spec.input_shape))
            i = len(self._done)
            xp, yp = self.workdir / f"x{i}.npy", self.workdir / f"y{i}.npy"
            np.save(xp, x)
            np.save(yp, np.asarray(y, np.int64))
            self._done[key] = (str(xp), str(yp), list(part.label_names))
        xp, yp, names = self._done[key]
        m = label_map(names, spec.labels)
        return Scoring(xp, yp, None if m is None else [int(v) for v in m])


def captcha_accuracy(path: str, backend: str, data: str, split: str, limit: int | None) -> dict[str, Any]:
    """Sequence accuracy of a captcha model with the captcha solver (a harness job: it runs in its
    own process, after the timing ones)."""
    from ..captcha_eval import evaluate_captcha

    r = evaluate_captcha(path, data, split=split, backend=backend, limit=limit)
    return {"accuracy": float(r["sequence_accuracy"]), "accuracy_n": int(r.get("n", 0) or 0)}


# -- measuring ------------------------------------------------------------------------------------

def missing_extra(backend: str) -> str | None:
    """Why `backend` cannot run here (its optional extra is not importable), or None."""
    if backend not in EXTRAS:
        return None
    module, extra = EXTRAS[backend]
    try:
        importlib.import_module(module)
    except ImportError as e:
        return f"the {backend} backend needs the [{extra}] extra ({e.name or module} is not installed): " \
               f"pip install 'edgecv[{extra}]'"
    return None


def default_threads(backend: str, threads: int | None) -> int | None:
    """Threads to ask the backend for: the user's --threads, else one per usable CPU for LiteRT
    (whose interpreter otherwise runs one thread on any machine); ONNX Runtime and OpenVINO size
    their own pools (one per physical core), and each row reads back what they chose."""
    if threads is None and backend == "litert":
        from edgecv.runtime.machine import usable_cpus

        return usable_cpus()
    return threads


def _preflight(plan: list[tuple[ModelRef, str, str]]) -> list[str]:
    """Warnings for devices that cannot be honoured, said before the long run starts."""
    warnings = []
    ort_devices = {d for _, b, d in plan if b == "onnxruntime" and d != "cpu"}
    if ort_devices:
        import onnxruntime as ort
        available = ort.get_available_providers()
        for d in sorted(ort_devices):
            if ORT_PROVIDER[d] not in available:
                warnings.append(f"--device {d} requested but this onnxruntime has no {ORT_PROVIDER[d]} (available: "
                                f"{', '.join(available)}); those rows run on the fallback and are marked {d}->cpu")
    for b in ("litert", "openvino", "keras"):
        odd = sorted({d for _, bb, d in plan if bb == b and d != "cpu"})
        if odd:
            warnings.append(f"--device {','.join(odd)} requested but the {b} backend runs on the CPU only; "
                            f"those rows run on cpu and are marked {odd[0]}->cpu")
    return warnings


def run_benchmark(refs: Sequence[ModelRef], backends: list[str] | None, devices: list[str], batches: list[int],
                  threads: int | None, warmup: int, duration: float, data: str | None, split: str,
                  limit: int | None, work: Path, quiet: bool = False) -> tuple[list[dict], dict, dict]:
    """Measure every configuration; returns (rows, environment, settings)."""
    from .env import fingerprint

    plan: list[tuple[ModelRef, str, str]] = []
    unavailable = {b: why for b in {b for fits in SUFFIX_BACKENDS.values() for b in fits}
                   if (why := missing_extra(b)) and (backends is None or b in backends)
                   and any(b in SUFFIX_BACKENDS[r.path.suffix] for r in refs)}
    for ref in refs:
        fits = SUFFIX_BACKENDS[ref.path.suffix]
        chosen = [b for b in (backends or fits) if b in fits]
        if not chosen:
            print(f"warning: {ref.path.name}: skipped; --backend {','.join(backends or [])} cannot run "
                  f"{ref.path.suffix} files (that takes {', '.join(fits)})", file=sys.stderr)
        plan += [(ref, b, d) for b in chosen if b not in unavailable for d in devices]
    for b, why in sorted(unavailable.items()):
        # Asked for by name: a warning; one of the defaults for .onnx files: a note.
        print(f"{'warning' if backends else 'note'}: {b} rows skipped; {why}", file=sys.stderr)
    if not plan:
        why = "; ".join(unavailable.values())
        raise ConfigError(f"nothing to measure: --backend {','.join(backends or [])} runs none of the given files"
                          + (f" ({why})" if why else ""))
    for w in _preflight(plan):
        print(f"warning: {w}", file=sys.stderr)

    notes = []  # said after the run, and only when something was measured
    cache = DataCache(work, split, limit)
    # path -> (scoring for the timing child, data set for the captcha job, source accuracy, label)
    accuracy: dict[Path, tuple[Scoring | None, str | None, float | None, str | None]] = {}
    for ref in refs:
        d = data or ref.spec.data.get("dataset")
        if not d or d == "none":
            if not d:
                notes.append(f"{ref.path.name}: its ModelSpec names no data set; accuracy skipped (pass --data)")
            accuracy[ref.path] = (None, None, None, None)
        elif ref.spec.task.startswith("captcha"):
            accuracy[ref.path] = (None, str(d), source_accuracy(ref.spec, str(d), split), f"{d}[{split}]")
        else:
            accuracy[ref.path] = (cache.scoring(str(d), ref.spec), None, source_accuracy(ref.spec, str(d), split),
                                  f"{d}[{split}]")

    env = fingerprint(threads)
    progress = Progress(len(plan) * len(batches), enabled=not quiet)
    rows: list[dict] = []
    for ref, backend, device in plan:
        scoring, captcha_data, src_acc, acc_label = accuracy[ref.path]
        group = []
        for batch in batches:
            # Accuracy once per artefact x backend x device, in the largest batch's process.
            cfg = BenchConfig(str(ref.path), backend, device, batch, default_threads(backend, threads), duration,
                              warmup, scoring=scoring if batch == batches[-1] else None,
                              inputs_path=scoring.x_path if scoring else None)
            label = f"{ref.path.name} {backend}/{device} b{batch}"
            progress.start(label)
            row: dict[str, Any] = {
                "artefact": ref.path.name, "path": str(ref.path), "model": ref.spec.name, "task": ref.spec.task,
                "format": ref.path.suffix.lstrip("."), "quant": ref.spec.quantization,
                "size_bytes": ref.path.stat().st_size, "backend": backend, "device": device, "batch": batch,
                "threads": cfg.threads, "threads_requested": threads, "warmup": warmup, "duration_s": duration,
                "accuracy_data": acc_label, "source_accuracy": src_acc}
            try:
                row.update(run_child("measure", {"config": cfg.to_dict()}, label=f"{ref.path} ({backend}, batch "
                                     f"{batch})", timeout=180 + 4 * duration + 2 * warmup))
                row.update(status="ok", error=None, overhead_ok=row["overhead_pct"] <= OVERHEAD_LIMIT_PCT)
            except ChildError as e:
                row.update(status="error", error=str(e), warnings=[])
            progress.finish(label, row)
            group.append(row)
        scored = next((r for r in group if r.get("accuracy") is not None), None)
        if captcha_data and any(r["status"] == "ok" for r in group):
            try:
                scored = run_child("captcha-accuracy", {"path": str(ref.path), "backend": backend,
                                   "data": captcha_data, "split": split, "limit": limit},
                                   label=f"{ref.path} ({backend}) accuracy")
            except ChildError as e:
                for r in group:
                    r.setdefault("warnings", []).append(f"accuracy not scored: {e}")
        for r in group:
            if scored is not None:
                r["accuracy"], r["accuracy_n"] = scored["accuracy"], scored["accuracy_n"]
                if src_acc is not None:
                    r["drop_pts"] = round(100 * (src_acc - scored["accuracy"]), 3)
        rows += group
    progress.close()
    if not quiet and any(r["status"] == "ok" for r in rows):
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
    command = ("edgecv benchmark " + " ".join(shlex.quote(a) for a in sys.argv[2:])
               if len(sys.argv) > 1 and sys.argv[1] == "benchmark" else None)
    settings = {"command": command, "backends": backends, "devices": devices, "batches": batches,
                "threads": threads, "warmup": warmup, "duration_s": duration, "data": data, "split": split,
                "data_limit": limit}
    return rows, env, settings
