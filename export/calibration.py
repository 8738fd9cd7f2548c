"""Representative data for quantization and held-out data for the accuracy gate, both fed through
exactly the preprocessing chain stored in the ModelSpec (edgecv.preprocess.apply_chain).

Where the data comes from:
- nothing given: the data set recorded in the spec (`spec.data["dataset"]`), with its recorded split:
  the "train" split for calibration, the "val" split for the check;
- the same data set named explicitly: the same splits;
- any other data set or path (see edgecv.data.load): all of it;
- for calibration only, a `.npy` file holding an already preprocessed NxHxWxC float32 array.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import DataError
from ..preprocess import apply_chain
from ..spec import ModelSpec

DEFAULT_CALIB_SIZE = 256
SEED = 0


@dataclass(frozen=True)
class Samples:
    """Preprocessed inputs (NxHxWxC float32) and, where known, their labels; `source` says where from."""

    x: np.ndarray
    y: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.x)


def _recorded(spec: ModelSpec) -> tuple[str | None, Any]:
    data = dict(spec.data or {})
    name = data.get("dataset")
    return (str(name) if name else None), data.get("split")


def _pick(n: int, size: int | None) -> np.ndarray | None:
    """A seeded random subset (sorted, so file-backed sets read in order), or None for all."""
    if size is None or size >= n:
        return None
    return np.sort(np.random.default_rng(SEED).choice(n, size=size, replace=False))


def _check_shape(x: np.ndarray, spec: ModelSpec, what: str, source: str) -> None:
    expected = tuple(spec.input_shape)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        got = tuple(x.shape[1:]) if x.ndim == 4 else tuple(x.shape)
        raise DataError(f"{what} data {source} has samples of shape {got}; the model expects "
                        f"{expected} (H, W, C) after preprocessing")
    if not np.isfinite(x).all():
        raise DataError(f"{what} data {source} contains NaN or infinite values")


def _load_npy(path: Path, spec: ModelSpec, size: int | None, what: str) -> Samples:
    try:
        x = np.load(path, allow_pickle=False)   # never unpickle a file we did not write
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e})") from None
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{what} array {path} must be preprocessed float data (NxHxWxC); got dtype {x.dtype}")
    x = np.asarray(x, np.float32)
    _check_shape(x, spec, what, str(path))
    idx = _pick(len(x), size)
    return Samples(x if idx is None else x[idx], None, str(path))


def load_samples(spec: ModelSpec, data: str | os.PathLike | None, which: str, size: int | None,
                 what: str) -> Samples:
    """Preprocessed samples for `spec` from `data` (see the module docstring); `which` is the split
    used when the data is the spec's own data set."""
    from ..data import load, split

    recorded, method = _recorded(spec)
    if data is None:
        if recorded is None:
            flag = "--calib" if what == "calibration" else "--check"
            raise DataError(f"the ModelSpec of {spec.name!r} records no training data set; "
                            f"pass {flag} DATA")
        data = recorded
    text = str(data)
    if text.endswith(".npy"):
        if what != "calibration":
            raise DataError(f"{what} data needs labels: use a data set, not the array {text}")
        return _load_npy(Path(text).expanduser(), spec, size, what)
    ds = load(text)
    if recorded is not None and text == recorded:
        ds = split(ds, which, method)
        source = f"{text} ({which} split)"
    else:
        source = text
    if len(ds) == 0:
        raise DataError(f"{what} data {source} is empty")
    idx = _pick(len(ds), size)
    if idx is not None:
        ds = ds.subset(idx)
    x, y = ds.load_arrays(lambda imgs: apply_chain(imgs, spec.preprocess, spec.input_shape))
    _check_shape(x, spec, what, source)
    labels = _labels(y, ds.label_names, spec, source) if what != "calibration" else None
    return Samples(x, labels, source)


def _labels(y: Any, names: list[str], spec: ModelSpec, source: str) -> np.ndarray | None:
    """Class indices aligned with the model's outputs, or None when the data has no such labels
    (captcha texts): then the gate judges agreement only."""
    if not isinstance(y, np.ndarray) or not np.issubdtype(y.dtype, np.integer):
        return None
    if names and spec.labels and list(names) != list(spec.labels):
        raise DataError(f"check data {source} has classes {list(names)}; the model was trained on "
                        f"{list(spec.labels)}")
    if spec.labels and len(y) and int(y.max()) >= len(spec.labels):
        raise DataError(f"check data {source} has class index {int(y.max())}; the model has "
                        f"{len(spec.labels)} classes")
    return y.astype(np.int64)


def calibration_samples(spec: ModelSpec, calib: str | os.PathLike | None = None,
                        size: int = DEFAULT_CALIB_SIZE) -> Samples:
    """Representative inputs for static quantization: `size` random samples (seeded)."""
    return load_samples(spec, calib, "train", size, "calibration")


def check_samples(spec: ModelSpec, check: str | os.PathLike | None = None,
                  size: int | None = None) -> Samples:
    """Held-out labelled inputs for the accuracy gate (all of them unless `size`)."""
    return load_samples(spec, check, "val", size, "check")


class Calibration:
    """Calibration data as an iterator of batches (STYLE.md 4), with adapters for each converter."""

    def __init__(self, samples: Samples, batch: int = 32):
        self.samples = samples
        self.batch = batch

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[np.ndarray]:
        x = self.samples.x
        for start in range(0, len(x), self.batch):
            yield x[start:start + self.batch]

    def tflite_dataset(self, dtype: Any = np.float32):
        """A TFLiteConverter.representative_dataset: one sample per step, as a list of inputs
        (`dtype` uint8 for a model that takes raw pixels)."""
        def gen():
            for sample in self.samples.x:
                yield [_as(sample[None], dtype)]
        return gen

    def onnx_reader(self, input_name: str, dtype: Any = np.float32):
        """An onnxruntime.quantization.CalibrationDataReader over the same batches."""
        from onnxruntime.quantization import CalibrationDataReader

        batches = iter(self)

        class Reader(CalibrationDataReader):
            def get_next(self) -> dict[str, np.ndarray] | None:
                b = next(batches, None)
                return None if b is None else {input_name: _as(b, dtype)}

        return Reader()


def _as(x: np.ndarray, dtype: Any) -> np.ndarray:
    """Samples as the model's input dtype: raw pixels (already whole numbers) as uint8."""
    if np.dtype(dtype) == np.float32:
        return x
    return np.clip(np.round(x), 0, 255).astype(dtype)
