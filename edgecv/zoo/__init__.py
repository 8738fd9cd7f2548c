"""Pretrained models shipped inside the package, each with a model card (NAME.md) beside it.

A name resolves to its artefact by preference: full-int8 TFLite, int8 ONNX, then other TFLite, then
fp32 ONNX (the smallest artefact that passed the export gate; the smile model's full-int8 TFLite did not).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ModelError, unknown

ZOO_DIR = Path(__file__).resolve().parent
PREFERENCE = (".int8.tflite", ".int8.onnx", ".fp16.tflite", ".tflite", ".onnx")


def names() -> list[str]:
    found = set()
    for p in ZOO_DIR.iterdir():
        # The longest matching suffix names the model: smile.int8.onnx is "smile", not "smile.int8".
        suf = max((s for s in PREFERENCE if p.name.endswith(s)), key=len, default=None)
        if suf:
            found.add(p.name[: -len(suf)])
    return sorted(found)


def artefacts(name: str) -> list[Path]:
    return [ZOO_DIR / f"{name}{suf}" for suf in PREFERENCE if (ZOO_DIR / f"{name}{suf}").exists()]


def resolve(name: str, suffix: str | None = None) -> Path:
    """Path of shipped model `name`; `suffix` (".onnx", ".tflite") picks a format."""
    found = artefacts(name)
    if not found:
        raise ModelError(unknown("shipped model", name, names() or ["(none shipped)"]))
    if suffix:
        for p in found:
            if p.suffix == suffix:
                return p
        raise ModelError(f"shipped model {name!r} has no {suffix} artefact; it has: "
                         + ", ".join(p.name for p in found))
    return found[0]


def is_shipped(name: str) -> bool:
    return "/" not in name and "." not in name and bool(artefacts(name))
