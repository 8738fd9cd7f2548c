"""HDF5 data sets: a buffered writer that never leaves a half-written file, and a Keras batch generator.

Layout: datasets "images" (NxHxW[xC], uint8 or float32) and "labels" (N int64), attribute
"label_names" (JSON list). The writer writes to a temporary name and renames on close().
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from edgecv.data.loaders import ImageSet
from edgecv.errors import DataError


class HDF5DatasetWriter:
    """Buffered rows into an HDF5 file; `close()` makes it appear under its final name."""

    def __init__(self, path: str | os.PathLike, dims: Sequence[int], data_key: str = "images",
                 buf_size: int = 1000, dtype: str = "uint8", overwrite: bool = False):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise DataError(f"{self.path} exists; pass overwrite=True (--overwrite) to replace it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        self.db = h5py.File(self.tmp, "w")
        self.data = self.db.create_dataset(data_key, tuple(dims), dtype=dtype)
        self.labels = self.db.create_dataset("labels", (dims[0],), dtype="int64")
        self.buf_size = buf_size
        self.buffer: dict[str, list] = {"data": [], "labels": []}
        self.idx = 0
        self.closed = False

    def add(self, rows: np.ndarray | Sequence[np.ndarray], labels: Sequence[int]) -> None:
        self.buffer["data"].extend(rows)
        self.buffer["labels"].extend(labels)
        if len(self.buffer["data"]) >= self.buf_size:
            self.flush()

    def flush(self) -> None:
        n = len(self.buffer["data"])
        if not n:
            return
        if self.idx + n > self.data.shape[0]:
            raise DataError(f"{self.path}: more rows than the {self.data.shape[0]} declared")
        self.data[self.idx:self.idx + n] = np.asarray(self.buffer["data"])
        self.labels[self.idx:self.idx + n] = np.asarray(self.buffer["labels"])
        self.idx += n
        self.buffer = {"data": [], "labels": []}

    def store_class_labels(self, names: Sequence[str]) -> None:
        self.db.attrs["label_names"] = json.dumps(list(names))

    def close(self) -> Path:
        """Flush, check the row count, fsync and rename into place."""
        if self.closed:
            return self.path
        self.flush()
        declared = self.data.shape[0]
        self.db.close()
        self.closed = True
        if self.idx != declared:
            self.tmp.unlink(missing_ok=True)
            raise DataError(f"{self.path}: wrote {self.idx} rows of the {declared} declared; file discarded")
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if not self.closed:
            self.db.close()
            self.closed = True
        self.tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_imageset(path: str | os.PathLike, images: np.ndarray, labels: Sequence[int],
                   label_names: Sequence[str], overwrite: bool = False) -> Path:
    with HDF5DatasetWriter(path, images.shape, dtype=str(images.dtype), overwrite=overwrite) as w:
        w.store_class_labels(label_names)
        w.add(images, labels)
    return Path(path)


def read_imageset(path: str | os.PathLike) -> ImageSet:
    """An HDF5 file written by HDF5DatasetWriter as an in-memory ImageSet."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as db:
            if "images" not in db or "labels" not in db:
                raise DataError(f"{path}: not an edgecv HDF5 data set (needs 'images' and 'labels')")
            images, labels = db["images"][:], db["labels"][:]
            names = json.loads(db.attrs.get("label_names", "[]"))
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file ({e})") from None
    if images.dtype != np.uint8:
        raise DataError(f"{path}: images are {images.dtype}; an image data set must be uint8")
    names = names or [str(i) for i in range(int(labels.max()) + 1)]
    return ImageSet(path.stem, images, labels.astype(np.int64), names, "classify",
                    {"method": "hash", "val": 0.1, "test": 0.2})

