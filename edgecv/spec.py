"""ModelSpec: the one contract between training, export and runtime.

A spec travels with every model (beside it as `*.spec.json` and embedded in it), so the runtime
preprocesses and labels from the file alone and no preprocessing constant is written twice.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ModelSpecError

SPEC_VERSION = 1
TASKS = ("classify", "smile", "captcha-digits", "captcha-ctc")
COLOURS = ("gray", "bgr", "rgb")
QUANTS = ("fp32", "fp16", "dynamic", "int8")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to feed a model and read its output.

    input_shape is (H, W, C) of one image after preprocessing; `preprocess` is the exact chain of
    steps (see edgecv.preprocess) that turns an HxWx3 uint8 BGR image (OpenCV's order) into it.
    """

    name: str
    task: str
    input_shape: tuple[int, int, int]
    colour: str
    preprocess: tuple[Mapping[str, Any], ...]
    labels: tuple[str, ...] = ()
    charset: str | None = None
    arch: str | None = None
    source_hash: str | None = None
    quantization: str = "fp32"
    data: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ModelSpecError(f"ModelSpec.task must be one of {', '.join(TASKS)}; got {self.task!r}")
        if self.colour not in COLOURS:
            raise ModelSpecError(f"ModelSpec.colour must be one of {', '.join(COLOURS)}; got {self.colour!r}")
        if self.quantization not in QUANTS:
            raise ModelSpecError(
                f"ModelSpec.quantization must be one of {', '.join(QUANTS)}; got {self.quantization!r}")
        shape = tuple(self.input_shape)
        if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
            raise ModelSpecError(f"ModelSpec.input_shape must be three positive ints (H, W, C); got {self.input_shape!r}")
        if (shape[2] == 1) != (self.colour == "gray"):
            raise ModelSpecError(f"ModelSpec colour {self.colour!r} does not fit {shape[2]} input channel(s)")
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "preprocess", tuple(dict(s) for s in self.preprocess))
        for step in self.preprocess:
            if "op" not in step:
                raise ModelSpecError(f"every preprocess step needs an 'op'; got {step!r}")
        if self.task == "captcha-ctc" and not self.charset:
            raise ModelSpecError("a captcha-ctc ModelSpec needs its charset")

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["labels"] = list(self.labels)
        d["preprocess"] = [dict(s) for s in self.preprocess]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelSpec":
        if not isinstance(d, Mapping):
            raise ModelSpecError(f"a ModelSpec must be a JSON object; got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("name", "task", "input_shape", "colour", "preprocess") if k not in d]
        if missing:
            raise ModelSpecError(f"ModelSpec is missing field(s): {', '.join(missing)}")
        version = d.get("version", SPEC_VERSION)
        if not isinstance(version, int) or version > SPEC_VERSION:
            raise ModelSpecError(f"ModelSpec version {version!r} is newer than this edgecv understands ({SPEC_VERSION})")
        kw = {k: v for k, v in d.items() if k in known}
        try:
            kw["input_shape"] = tuple(int(x) for x in kw["input_shape"])
            kw["preprocess"] = tuple(kw["preprocess"])
            kw["labels"] = tuple(kw.get("labels") or ())
            for key in ("data", "metrics", "extra"):
                if not isinstance(kw.get(key, {}), Mapping):
                    raise TypeError(f"{key} must be an object")
            return cls(**kw)
        except ModelSpecError:
            raise
        except (TypeError, ValueError, OverflowError) as e:  # OverflowError: int(inf), found by fuzzing
            raise ModelSpecError(f"malformed ModelSpec: {e}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelSpec":
        try:
            d = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise ModelSpecError(f"ModelSpec is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> "ModelSpec":
        return dataclasses.replace(self, **changes)

    # -- files -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        atomic_write_text(path, self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ModelSpec":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ModelSpecError(f"no ModelSpec at {path}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ModelSpecError(f"cannot read ModelSpec {path}: {e}") from None
        try:
            return cls.from_json(text)
        except ModelSpecError as e:  # name the file: a user may have several specs beside several models
            raise ModelSpecError(f"{path}: {e}") from None

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def spec_path_for(model_path: str | os.PathLike) -> Path:
    """`model.onnx` -> `model.onnx.spec.json` (the sidecar beside every artefact)."""
    return Path(str(model_path) + ".spec.json")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write, fsync, rename: a crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
