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

from .errors import ModelSpecError, unknown
from .preprocess import Step, parse_chain

SPEC_VERSION = 2
TASKS = ("classify", "smile", "captcha-digits", "captcha-ctc")
COLOURS = ("gray", "bgr", "rgb")
QUANTS = ("fp32", "fp16", "dynamic", "int8")
# What the model's first output holds (edgecv.decode reads each kind): class probabilities that sum
# to one, one sigmoid probability of the second label, unnormalised class scores, or per-step
# probabilities for CTC. "boxes" is kept for detectors.
OUTPUTS = ("softmax", "sigmoid", "logits", "ctc")
CROP_KINDS = ("box", "square")


@dataclass(frozen=True)
class CropRule:
    """How a detector-fed model's input region is cut from a detected box.

    kind "box": the detector's box as it is. "square": a square as wide as the box's shorter side,
    centred across and kept at the bottom (from the brows to the chin for a face: the Haar-style
    crop the SMILES faces were cut with, where YuNet's box is taller and reaches into the hair).
    margin: a fraction of the side added on every side after that (0.1 = 10% larger each way).
    """

    kind: str = "box"
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in CROP_KINDS:
            raise ModelSpecError(unknown("crop kind", str(self.kind), CROP_KINDS))
        m = self.margin
        if not isinstance(m, (int, float)) or isinstance(m, bool) or not 0 <= m <= 1:
            raise ModelSpecError(f"crop margin must be a number in [0, 1]; got {m!r}")
        object.__setattr__(self, "margin", float(m))

    @classmethod
    def parse(cls, raw: Any) -> "CropRule":
        if isinstance(raw, CropRule):
            return raw
        if not isinstance(raw, Mapping):
            raise ModelSpecError(f"crop must be an object like {{\"kind\": \"square\", \"margin\": 0}}; got {raw!r}")
        for k in raw:
            if k not in ("kind", "margin"):
                raise ModelSpecError("crop: " + unknown("field", str(k), ("kind", "margin")))
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "margin": self.margin}


def default_output(task: str) -> str:
    return "ctc" if task == "captcha-ctc" else "softmax"


def default_crop(task: str) -> CropRule:
    # The smile model learnt from Haar-style square face crops; every other task classifies boxes.
    return CropRule("square") if task == "smile" else CropRule("box")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to feed a model and read its output.

    input_shape is (H, W, C) of one image after preprocessing; `preprocess` is the exact chain of
    typed steps (edgecv.preprocess; JSON objects are parsed on construction) that turns an HxWx3
    uint8 BGR image (OpenCV's order) into it. `output` says how edgecv.decode reads the model's
    first output; `crop` how a detector's box becomes the model's input region. The full contract,
    field by field: docs/modelspec.md.
    """

    name: str
    task: str
    input_shape: tuple[int, int, int]
    colour: str
    preprocess: tuple[Step, ...]
    labels: tuple[str, ...] = ()
    output: str | None = None
    crop: CropRule | None = None
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
        if isinstance(self.preprocess, (str, bytes, Mapping)) or not isinstance(self.preprocess, (list, tuple)):
            raise ModelSpecError(f"preprocess must be a list of steps; got {self.preprocess!r}")
        object.__setattr__(self, "preprocess", parse_chain(self.preprocess))
        if self.task == "captcha-ctc" and not self.charset:
            raise ModelSpecError("a captcha-ctc ModelSpec needs its charset")
        output = default_output(self.task) if self.output is None else self.output
        if output not in OUTPUTS:
            raise ModelSpecError(unknown("output kind", str(output), OUTPUTS))
        if (output == "ctc") != (self.task == "captcha-ctc"):
            raise ModelSpecError(f"output {output!r} does not fit task {self.task!r} "
                                 "(ctc is the output of captcha-ctc models, and theirs alone)")
        if output == "sigmoid" and len(self.labels) != 2:
            raise ModelSpecError(f"a sigmoid output is the probability of the second of two labels; "
                                 f"this spec has {len(self.labels)} label(s)")
        object.__setattr__(self, "output", output)
        object.__setattr__(self, "crop", default_crop(self.task) if self.crop is None else CropRule.parse(self.crop))

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["labels"] = list(self.labels)
        d["preprocess"] = [s.to_dict() for s in self.preprocess]
        d["crop"] = self.crop.to_dict()
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
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ModelSpecError(f"ModelSpec version must be a positive int; got {version!r}")
        if version > SPEC_VERSION:
            raise ModelSpecError(f"ModelSpec version {version!r} is newer than this edgecv understands ({SPEC_VERSION})")
        for k in d:
            if k not in known:
                raise ModelSpecError(unknown("ModelSpec field", str(k), known))
        if version == 1 and ("output" in d or "crop" in d):
            raise ModelSpecError("ModelSpec version 1 has no output or crop field; write version 2")
        # Version 1 (every artefact shipped before 2) is upgraded here: output and crop follow
        # from the task (default_output, default_crop), the version becomes 2.
        kw = dict(d, version=SPEC_VERSION)
        try:
            kw["input_shape"] = tuple(int(x) for x in kw["input_shape"])
            if not isinstance(kw["preprocess"], list):
                raise TypeError(f"preprocess must be a list of steps; got {type(kw['preprocess']).__name__}")
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
