"""Where a model file keeps its ModelSpec, and how to find it again.

- ONNX: `metadata_props["edgecv.spec"]` (JSON).
- TFLite: a zip archive appended to the flatbuffer holding `edgecv.spec.json`. This is the TFLite
  metadata "associated files" layout: interpreters ignore the trailing bytes and `zipfile` reads them.
- Keras / any file: the sidecar `FILE.spec.json`; a run directory: `RUN/spec.json`.

Lookup order: embedded first, then the sidecar. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import io
import os
import zipfile
import zlib
from pathlib import Path

from .errors import ModelError, ModelSpecError
from .spec import ModelSpec, atomic_write_bytes, spec_path_for

ONNX_KEY = "edgecv.spec"
TFLITE_MEMBER = "edgecv.spec.json"
MODEL_SUFFIXES = (".tflite", ".onnx", ".keras")


def read_tflite_spec(path: str | os.PathLike) -> ModelSpec | None:
    try:
        with zipfile.ZipFile(path) as z:
            if TFLITE_MEMBER not in z.namelist():
                return None
            if z.getinfo(TFLITE_MEMBER).file_size > 1 << 20:
                raise ModelSpecError(f"{path}: embedded ModelSpec is implausibly large")
            return ModelSpec.from_json(z.read(TFLITE_MEMBER))
    except zipfile.BadZipFile:
        return None  # trailing bytes that are no zip: no embedded spec
    except ModelSpecError as e:
        raise ModelSpecError(f"{path}: embedded {e}") from None
    except (zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError, OSError) as e:
        # a zip whose member is damaged (bad deflate data, CRC, encrypted, unknown compression)
        raise ModelSpecError(f"{path}: embedded ModelSpec is unreadable ({first_line(e)})") from None


def read_onnx_spec(path: str | os.PathLike) -> ModelSpec | None:
    """Read the spec from ONNX `metadata_props` without building an inference session (and without
    the `onnx` package): the backend that runs the model builds the only session."""
    props = onnx_metadata(path)
    text = props.get(ONNX_KEY)
    try:
        return ModelSpec.from_json(text) if text else None
    except ModelSpecError as e:
        raise ModelSpecError(f"{path}: embedded {e}") from None


# ModelProto's top-level fields (onnx.proto3): metadata_props is field 14, a repeated
# StringStringEntryProto {key = 1, value = 2}. The graph (field 7), the bulk of the file, is skipped
# by its length without being read.
_METADATA_FIELD = 14
_MAX_PROPS_BYTES = 16 << 20


def onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `metadata_props` of an ONNX file as a dict. Raises ModelError for a file that is not a
    well-formed protobuf message."""
    props: dict[str, str] = {}
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            while f.tell() < size:
                key = _varint(f)
                field_no, wire = key >> 3, key & 7
                if wire == 0:
                    _varint(f)
                elif wire == 1:
                    f.seek(8, 1)
                elif wire == 5:
                    f.seek(4, 1)
                elif wire == 2:
                    n = _varint(f)
                    if f.tell() + n > size:
                        raise ValueError("a field runs past the end of the file")
                    if field_no == _METADATA_FIELD:
                        if n > _MAX_PROPS_BYTES:
                            raise ValueError("a metadata entry is implausibly large")
                        k, v = _string_pair(f.read(n))
                        props[k] = v
                    else:
                        f.seek(n, 1)
                else:
                    raise ValueError(f"wire type {wire}")
                if field_no == 0:
                    raise ValueError("field number 0")
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not a loadable ONNX model (not a protobuf ModelProto: {e})") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read ({e.strerror or e})") from None
    return props


def _varint(f) -> int:
    out, shift = 0, 0
    while True:
        b = f.read(1)
        if not b:
            raise ValueError("truncated varint")
        out |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return out
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _string_pair(buf: bytes) -> tuple[str, str]:
    f = io.BytesIO(buf)
    out = {1: "", 2: ""}
    while f.tell() < len(buf):
        key = _varint(f)
        if key & 7 != 2:
            raise ValueError("metadata entry is not a string pair")
        n = _varint(f)
        data = f.read(n)
        if len(data) != n:
            raise ValueError("truncated metadata entry")
        out[key >> 3] = data.decode("utf-8")
    return out[1], out[2]


def first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:300] if s else type(e).__name__


def load_spec(path: str | os.PathLike) -> ModelSpec:
    """The ModelSpec of a model file or run directory: embedded, else the sidecar. Raises ModelSpecError."""
    path = Path(path)
    if path.is_dir():
        return ModelSpec.load(path / "spec.json")
    if not path.exists():
        raise ModelError(f"{path}: no such model file")
    embedded = None
    if path.suffix == ".tflite":
        embedded = read_tflite_spec(path)
    elif path.suffix == ".onnx":
        embedded = read_onnx_spec(path)
    if embedded is not None:
        return embedded
    side = spec_path_for(path)
    if side.exists():
        return ModelSpec.load(side)
    if path.suffix == ".keras" and (path.parent / "spec.json").exists():
        return ModelSpec.load(path.parent / "spec.json")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):  # name a garbage file as such first
        raise ModelError(f"{path}: not a loadable Keras model (a .keras file is a zip archive)")
    raise ModelSpecError(f"{path}: no ModelSpec embedded and no {side.name} beside it")


def write_sidecar(model_path: str | os.PathLike, spec: ModelSpec) -> Path:
    side = spec_path_for(model_path)
    atomic_write_bytes(side, (spec.to_json() + "\n").encode())
    return side
