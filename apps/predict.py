"""Batch prediction on any model the user names: a shipped name, a run directory, or a .keras /
.tflite / .onnx file. Exported files run on the runtime backends (no TensorFlow); .keras loads
Keras lazily, in safe mode."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgecv import zoo
from edgecv.errors import ModelError
from edgecv.modelfile import load_spec
from edgecv.preprocess import apply_chain
from edgecv.spec import ModelSpec


def resolve_model(model: str | os.PathLike) -> Path:
    """A model argument as a file path: shipped names first, run directories to their model.keras."""
    s = str(model)
    if zoo.is_shipped(s):
        return zoo.resolve(s)
    p = Path(s).expanduser()
    if p.is_dir():
        if (p / "model.keras").exists():
            return p / "model.keras"
        raise ModelError(f"{p}: a run directory must hold model.keras")
    if not p.exists():
        from edgecv.errors import unknown
        raise ModelError(f"{s}: no such model file, and " + unknown("shipped model", s, zoo.names() or ["(none)"]))
    if p.suffix not in (".keras", ".tflite", ".onnx"):
        raise ModelError(f"{p}: unsupported model file (use .keras, .tflite or .onnx)")
    return p


def load_keras(path: Path):
    try:
        import keras
    except ImportError:
        raise ModelError(f"{path}: running a .keras model needs the [train] extra (keras)") from None
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except ValueError as e:
        msg = str(e)
        if "Lambda" in msg or "safe_mode" in msg:
            raise ModelError(f"{path}: refused: the model contains a Lambda layer (arbitrary code); "
                             "edgecv loads .keras files in Keras' safe mode") from None
        raise ModelError(f"{path}: not a loadable Keras model ({msg.splitlines()[0][:200]})") from None
    except Exception as e:  # zipfile/h5/json errors from a garbage file
        raise ModelError(f"{path}: not a loadable Keras model ({type(e).__name__}: {str(e)[:200]})") from None


class Predictor:
    """`predictor(images) -> outputs`: uint8 images in, model outputs (float32) out, via the spec's chain."""

    def __init__(self, model: str | os.PathLike, backend: str | None = None, device: str = "cpu",
                 threads: int | None = None, batch_size: int = 256):
        self.path = resolve_model(model)
        self.batch_size = batch_size
        self._backend = None
        if self.path.suffix == ".keras":
            self._keras = load_keras(self.path)  # before the spec: a garbage file is named as such
            self.spec: ModelSpec = load_spec(self.path)
            self.run_batch: Callable[[np.ndarray], np.ndarray] = (
                lambda x: np.asarray(self._keras(x, training=False)))
        else:
            from edgecv.runtime.backends import open_backend
            self.spec = load_spec(self.path)
            self._backend = open_backend(self.path, backend=backend, device=device, threads=threads)
            self.run_batch = self._backend.run

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return apply_chain(images, self.spec.preprocess, self.spec.input_shape)

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        outs = [self.run_batch(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0,), np.float32)

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.predict_arrays(self.preprocess(images))

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
