"""One road from what a user names to a model: a shipped name, a run directory or a model file
becomes (path, ModelSpec) once per command. Backends are opened from that pair
(`edgecv.runtime.backends.open_backend(ref.path, ref.spec)`) and never read the spec again."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import zoo
from .errors import ModelError, unknown
from .modelfile import MODEL_SUFFIXES, load_spec
from .safeio import link_problem
from .spec import ModelSpec

# The file suffix each backend runs (a shipped name with --backend picks that artefact).
BACKEND_SUFFIX = {"onnxruntime": ".onnx", "openvino": ".onnx", "litert": ".tflite", "keras": ".keras"}


@dataclass(frozen=True)
class ModelRef:
    """A model file and its ModelSpec, read once."""

    path: Path
    spec: ModelSpec

    @property
    def name(self) -> str:
        return self.spec.name


def model_path(model: str | os.PathLike, backend: str | None = None) -> Path:
    """The file a model argument names: a shipped name (the backend's format when one is given), a
    run directory (its model.keras) or a .keras / .tflite / .onnx file."""
    s = str(model)
    if zoo.is_shipped(s):
        if backend == "keras":
            raise ModelError("shipped models are exported files; --backend keras needs a .keras file "
                             "(--model FILE or a run directory)")
        return zoo.resolve(s, BACKEND_SUFFIX.get(backend or ""))
    p = Path(s).expanduser()
    if p.is_dir():
        if (p / "model.keras").is_file():
            return p / "model.keras"
        raise ModelError(f"{p}: a run directory must hold model.keras")
    if not p.exists() and (problem := link_problem(p)):
        raise ModelError(f"{s}: {problem}")
    if not p.exists():
        raise ModelError(f"{s}: no such model file, and " + unknown("shipped model", s, zoo.names() or ["(none)"]))
    if p.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelError(f"{p}: unsupported model file (use {', '.join(MODEL_SUFFIXES)})")
    return p


def resolve(model: str | os.PathLike, backend: str | None = None) -> ModelRef:
    """(path, spec) for a model argument. Raises ModelError or ModelSpecError (one line each)."""
    path = model_path(model, backend)
    return ModelRef(path, load_spec(path))
