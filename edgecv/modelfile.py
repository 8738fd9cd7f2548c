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


def embed_tflite(data: bytes, spec: ModelSpec) -> bytes:
    """Return TFLite bytes with the spec appended as a zip member."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(TFLITE_MEMBER, spec.to_json())
    return data + buf.getvalue()


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
    """Read the spec from ONNX metadata without the `onnx` package (ORT reads the header)."""
    import onnxruntime as ort

    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own Fail/InvalidProtobuf types
        raise ModelError(f"{path}: not a loadable ONNX model ({first_line(e)})") from None
    text = sess.get_modelmeta().custom_metadata_map.get(ONNX_KEY)
    try:
        return ModelSpec.from_json(text) if text else None
    except ModelSpecError as e:
        raise ModelSpecError(f"{path}: embedded {e}") from None


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
    raise ModelSpecError(f"{path}: no ModelSpec embedded and no {side.name} beside it")


def write_sidecar(model_path: str | os.PathLike, spec: ModelSpec) -> Path:
    side = spec_path_for(model_path)
    atomic_write_bytes(side, (spec.to_json() + "\n").encode())
    return side
