"""The export formats and precisions as one table: what each (format, precision) pair writes, what
it needs and what it means. Validation, `--all`, the CLI help and the converters' dispatch all read
this table, so adding a variant is adding a row, never a branch."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from ..errors import ConfigError, unknown


@dataclass(frozen=True)
class Format:
    """One file format: its suffix and the module that converts to it and runs it.

    The module provides `convert(model, spec, quant, calib, workdir) -> bytes`,
    `embed(blob, spec) -> bytes` and `run(path, X) -> probabilities` (see tflite.py, onnx.py).
    """

    name: str
    suffix: str
    module: str
    runtime: str

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


@dataclass(frozen=True)
class Variant:
    """One (format, precision) pair that edgecv can export."""

    fmt: str
    quant: str
    calibrated: bool          # needs representative data (static activation ranges)
    description: str

    @property
    def format(self) -> Format:
        return FORMATS[self.fmt]

    @property
    def suffix(self) -> str:
        return self.format.suffix

    @property
    def key(self) -> str:
        return f"{self.fmt}-{self.quant}"


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("tflite", ".tflite", "edgecv.export.tflite", "ai-edge-litert"),
    Format("onnx", ".onnx", "edgecv.export.onnx", "onnxruntime"),
)}

VARIANTS: tuple[Variant, ...] = (
    Variant("tflite", "fp32", False, "float32, as trained"),
    Variant("tflite", "fp16", False, "float16 weights, float32 compute on CPU (half the size)"),
    Variant("tflite", "dynamic", False, "int8 weights, float activations quantized on the fly"),
    Variant("tflite", "int8", True, "full integer: int8 weights, activations, input and output"),
    Variant("onnx", "fp32", False, "float32, as trained (tf2onnx, opset 17, dynamic batch)"),
    Variant("onnx", "fp16", False, "float16 weights and compute, float32 input/output"),
    Variant("onnx", "dynamic", False, "int8 weights, activations quantized per batch (slow for CNNs)"),
    Variant("onnx", "int8", True, "static QDQ int8, per-channel weights, calibrated activations"),
)

_BY_KEY = {(v.fmt, v.quant): v for v in VARIANTS}


def quants_for(fmt: str) -> tuple[str, ...]:
    return tuple(v.quant for v in VARIANTS if v.fmt == fmt)


def get_variant(fmt: str, quant: str) -> Variant:
    """The table row for (fmt, quant); ConfigError naming the allowed set otherwise."""
    if fmt not in FORMATS:
        raise ConfigError(unknown("export format", str(fmt), FORMATS))
    allowed = quants_for(fmt)
    if quant not in allowed:
        raise ConfigError(f"{fmt} export does not support precision {quant!r}; "
                          f"choose from: {', '.join(allowed)}.")
    return _BY_KEY[(fmt, quant)]


def variants(fmt: str | None = None) -> list[Variant]:
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(unknown("export format", str(fmt), FORMATS))
    return [v for v in VARIANTS if fmt is None or v.fmt == fmt]


def default_filename(model_name: str, variant: Variant, input: str = "float") -> str:
    """`mnist-lenet` + tflite/int8 -> `mnist-lenet-int8.tflite` (the suffix already says the format);
    a non-float input kind is named too: `mnist-lenet-int8-uint8-rgb.tflite`."""
    kind = "" if input == "float" else f"-{input}"
    return f"{model_name}-{variant.quant}{kind}{variant.suffix}"


def table() -> str:
    """The table as text, for `--help`."""
    rows = [f"  {v.fmt:<7} {v.quant:<8} {v.description}" for v in VARIANTS]
    return "\n".join(["  format  quant    what", *rows])


QUANTS_ALL: tuple[str, ...] = tuple(dict.fromkeys(v.quant for v in VARIANTS))
