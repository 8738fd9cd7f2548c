"""Batch prediction on any model the user names: a shipped name, a run directory, or a .keras /
.tflite / .onnx file, through the runtime's backends (a .keras file on the Keras backend, loaded
lazily in safe mode). Outputs are read with edgecv.decode."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from edgecv import decode
from edgecv.preprocess import apply_chain
from edgecv.resolve import ModelRef, resolve


class Predictor:
    """`predictor(images) -> raw outputs`: uint8 images in, the model's first output (float32) out,
    via the spec's chain; `probabilities(images)` checks and decodes them (edgecv.decode)."""

    def __init__(self, model: ModelRef | str | os.PathLike, backend: str | None = None, device: str = "cpu",
                 threads: int | None = None, batch_size: int = 256):
        from edgecv.runtime.backends import open_backend

        self.ref = model if isinstance(model, ModelRef) else resolve(model, backend)
        self.path, self.spec = self.ref.path, self.ref.spec
        self.batch_size = batch_size
        self._backend = open_backend(self.path, self.spec, backend=backend, device=device, threads=threads)

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return apply_chain(images, self.spec.preprocess, self.spec.input_shape)

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        outs = [self._backend.run(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0,), np.float32)

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.predict_arrays(self.preprocess(images))

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """N x K class probabilities, checked against the spec and the number of images."""
        return decode.probabilities(self.spec, self(images), len(images))

    def close(self) -> None:
        self._backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
