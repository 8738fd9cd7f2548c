"""Loading data sets as ImageSets, from the registry or from a path, and splitting them.

`--data` anywhere accepts a registry name or a path: an image folder (class = parent folder), a
zip of one, the SMILES layout, a folder of captchas labelled by file name, an `.npz` (Keras
layout), or an HDF5 file written by edgecv.train.hdf5.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import DataError
from ..images import is_image_path, list_images, read_image
from .download import cache_dir, dataset_root, extract_zip
from .registry import DATASETS, get

log = logging.getLogger("edgecv.data")

SPLITS = ("train", "val", "test", "all")
DEFAULT_SPLIT = {"method": "hash", "val": 0.1, "test": 0.2}


@dataclass
class ImageSet:
    """Images and their labels. `images` is a list of file paths or an NxHxW[xC] uint8 array;
    `labels` are class indices (classification) or strings (captcha texts)."""

    name: str
    images: list[Path] | np.ndarray
    labels: np.ndarray | list[str]
    label_names: list[str] = field(default_factory=list)
    kind: str = "classify"               # classify | captcha | ezpass-raw
    split_info: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.images, np.ndarray)

    def read(self, i: int, gray: bool = False) -> np.ndarray:
        """Image i as HxWx3 uint8 BGR (HxW when gray). Raises DataError for a bad file."""
        if self.in_memory:
            img = self.images[i]
            if gray:
                from ..preprocess import to_gray
                return to_gray(img)
            from ..preprocess import to_bgr
            return to_bgr(img)
        return read_image(self.images[i], gray=gray)

    def subset(self, idx: Sequence[int] | np.ndarray) -> "ImageSet":
        idx = np.asarray(idx, dtype=np.int64)
        images = self.images[idx] if self.in_memory else [self.images[i] for i in idx]
        labels = (self.labels[idx] if isinstance(self.labels, np.ndarray)
                  else [self.labels[i] for i in idx])
        return ImageSet(self.name, images, labels, list(self.label_names), self.kind, dict(self.split_info))

    def load_arrays(self, transform: Callable[[list[np.ndarray]], np.ndarray], batch: int = 512,
                    gray: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """All images through `transform` (a list of uint8 images -> float32 batch), skipping and
        counting unreadable files. Returns (X, y) with y aligned to X."""
        xs, keep = [], []
        for start in range(0, len(self), batch):
            imgs, idx = [], []
            for i in range(start, min(start + batch, len(self))):
                try:
                    imgs.append(self.read(i, gray=gray))
                    idx.append(i)
                except DataError as e:
                    self.skipped.append(str(e))
                    log.warning("skipping %s", e)
            if imgs:
                xs.append(transform(imgs))
                keep.extend(idx)
        if not keep:
            raise DataError(f"{self.name}: no readable images")
        X = np.concatenate(xs)
        y = (self.labels[np.asarray(keep)] if isinstance(self.labels, np.ndarray)
             else [self.labels[i] for i in keep])
        return X, y


def _hash_bucket(key: str) -> float:
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def split(ds: ImageSet, which: str, method: Mapping[str, Any] | None = None) -> ImageSet:
    """One split of a data set.

    "hash" (the default for file data sets): a file's split follows from the SHA-1 of its folder
    and file name,
    so it never changes when files are added or removed, or on another machine.
    "official" data sets (MNIST, CIFAR-10) keep their test set; val is a seeded 10% of train.
    """
    if which not in SPLITS:
        raise DataError(f"unknown split {which!r}; choose from {', '.join(SPLITS)}")
    if which == "all":
        return ds
    method = dict(method or ds.split_info or DEFAULT_SPLIT)
    if method.get("method") == "official":
        part = ds.split_info.get("parts")
        if part is None:
            raise DataError(f"{ds.name}: no official split information")
        n_train = part["train"]
        if which == "test":
            return ds.subset(np.arange(n_train, len(ds)))
        rng = np.random.default_rng(int(method.get("seed", 0)))
        perm = rng.permutation(n_train)
        n_val = int(round(n_train * float(method.get("val", 0.1))))
        idx = np.sort(perm[:n_val] if which == "val" else perm[n_val:])
        return ds.subset(idx)
    val, test = float(method.get("val", 0.1)), float(method.get("test", 0.2))
    if ds.in_memory:
        keys = [f"{ds.name}:{i}" for i in range(len(ds))]
    else:
        # Class folder + file name: SMILES reuses numbers across its two folders.
        keys = [f"{p.parent.name}/{p.name}" for p in ds.images]
    b = np.array([_hash_bucket(k) for k in keys])
    mask = {"test": b < test, "val": (b >= test) & (b < test + val), "train": b >= test + val}[which]
    return ds.subset(np.flatnonzero(mask))


# -- loaders by layout ------------------------------------------------------------------------

def load_smiles(root: Path, name: str = "smiles") -> ImageSet:
    """The SMILES layout: SMILEs/positives/positives7/*.jpg (smiling), SMILEs/negatives/negatives7/*.jpg."""
    base = root / "SMILEs" if (root / "SMILEs").is_dir() else root
    pos = list_images(base / "positives" / "positives7") if (base / "positives").is_dir() else []
    neg = list_images(base / "negatives" / "negatives7") if (base / "negatives").is_dir() else []
    if not pos and not neg:
        raise DataError(f"{root}: no SMILES images (expected SMILEs/positives/positives7/*.jpg and "
                        "SMILEs/negatives/negatives7/*.jpg)")
    labels = np.array([0] * len(neg) + [1] * len(pos), np.int64)
    return ImageSet(name, neg + pos, labels, ["not_smiling", "smiling"], "classify", dict(DEFAULT_SPLIT))


def load_imagefolder(root: Path, name: str | None = None) -> ImageSet:
    """Class = the parent folder's name, classes sorted."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class folders (expected {root}/<class>/<image>)")
    paths, labels, empty = [], [], []
    for ci, c in enumerate(classes):
        files = list_images(root / c)
        if not files:
            empty.append(c)
        paths += files
        labels += [ci] * len(files)
    if empty:
        raise DataError(f"{root}: class folder(s) with no images: {', '.join(empty)}")
    return ImageSet(name or root.name, paths, np.array(labels, np.int64), classes, "classify",
                    dict(DEFAULT_SPLIT))


def load_captcha_folder(root: Path, name: str | None = None) -> ImageSet:
    """Captchas labelled by file name (`2b827.png` reads "2b827")."""
    files = [p for p in sorted(root.iterdir()) if p.is_file() and is_image_path(p)]
    if not files:
        raise DataError(f"{root}: no captcha images")
    return ImageSet(name or root.name, files, [p.stem for p in files], [], "captcha", dict(DEFAULT_SPLIT))


def load_npz(path: Path, name: str | None = None, label_names: Sequence[str] = ()) -> ImageSet:
    try:
        with np.load(path, allow_pickle=False) as z:   # never unpickle a file we did not write
            keys = set(z.files)
            if {"x_train", "y_train", "x_test", "y_test"} <= keys:
                x = np.concatenate([z["x_train"], z["x_test"]])
                y = np.concatenate([z["y_train"], z["y_test"]]).astype(np.int64).ravel()
                parts = {"train": len(z["x_train"])}
                info = {"method": "official", "val": 0.1, "seed": 0, "parts": parts}
            elif {"x", "y"} <= keys:
                x, y = z["x"], z["y"].astype(np.int64).ravel()
                info = dict(DEFAULT_SPLIT)
            else:
                raise DataError(f"{path}: expected arrays x_train/y_train/x_test/y_test or x/y; found {sorted(keys)}")
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: not a readable .npz ({e})") from None
    if x.dtype != np.uint8:
        raise DataError(f"{path}: images must be uint8, got {x.dtype}")
    names = list(label_names) or [str(i) for i in range(int(y.max()) + 1)]
    return ImageSet(name or path.stem, x, y, names, "classify", info)


def load_hdf5(path: Path) -> ImageSet:
    from_h5 = _import_hdf5()
    return from_h5(path)


def _import_hdf5():
    try:
        from edgecv.train.hdf5 import read_imageset
    except ImportError as e:
        raise DataError(f"reading HDF5 needs the [train] extra (h5py): {e}") from None
    return read_imageset


def load_zipfolder(path: Path, name: str | None = None) -> ImageSet:
    """A zip of an image folder: extracted once into the cache (keyed by its content hash)."""
    from .download import sha256_file
    key = sha256_file(path)[:16]
    dest = cache_dir() / "extracted" / key
    if not (dest / ".complete").exists():
        from .lock import cache_lock
        with cache_lock(dest.parent / f".{key}.lock"):
            if not (dest / ".complete").exists():  # another process may have finished meanwhile
                extract_zip(path, dest)
                (dest / ".complete").write_text("ok\n")
    top = [d for d in dest.iterdir() if d.is_dir()]
    loose = [f for f in dest.iterdir() if f.is_file() and f.name != ".complete"]
    if len(top) == 1 and not loose and top[0].name not in ("train", "test"):
        dest = top[0]  # a GitHub archive's single top folder
    if (dest / "train").is_dir() and (dest / "test").is_dir():
        tr, te = load_imagefolder(dest / "train"), load_imagefolder(dest / "test")
        if tr.label_names != te.label_names:
            raise DataError(f"{path}: train and test classes differ")
        ds = ImageSet(name or path.stem, tr.images + te.images, np.concatenate([tr.labels, te.labels]),
                      tr.label_names, "classify",
                      {"method": "official", "val": 0.1, "seed": 0, "parts": {"train": len(tr)}})
        return ds
    return load_imagefolder(dest, name or path.stem)


def load_ezpass(root: Path) -> ImageSet:
    """The ezpass digit crops (digits/1..9) as a classification set."""
    return load_imagefolder(root / "digits", "ezpass")


def load_registered(name: str) -> ImageSet:
    info = get(name)
    root = dataset_root(name)
    if info.kind == "smiles":
        return load_smiles(root, name)
    if info.kind == "ezpass":
        return load_ezpass(root)
    if info.kind == "captcha":
        return load_captcha_folder(root, name)
    if info.kind == "npz":
        return load_npz(root / "mnist.npz", name, info.classes)
    if info.kind == "zipfolder":
        return load_zipfolder(root / "cifar10-jpg.zip", name)
    if info.kind == "imagefolder":
        return load_imagefolder(root, name)
    raise DataError(f"data set {name!r} holds files, not a training set")


def load(data: str | os.PathLike) -> ImageSet:
    """Load a registry name or a path (see the module docstring) as an ImageSet."""
    s = str(data)
    if s in DATASETS:
        return load_registered(s)
    p = Path(s).expanduser()
    if not p.exists():
        from ..errors import unknown
        raise DataError(f"{s}: no such file or folder, and " + unknown("data set", s, DATASETS))
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".npz":
            return load_npz(p)
        if suffix in (".h5", ".hdf5"):
            return load_hdf5(p)
        if suffix == ".zip":
            return load_zipfolder(p)
        raise DataError(f"{p}: unsupported data file (use a folder, .zip, .npz or .h5)")
    if (p / "SMILEs").is_dir() or (p / "positives").is_dir():
        return load_smiles(p)
    if (p / "digits").is_dir() and (p / "raw").is_dir():
        return load_ezpass(p)
    subdirs = [d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")]
    direct = [f for f in p.iterdir() if f.is_file() and is_image_path(f)]
    if direct and not subdirs:
        return load_captcha_folder(p)
    if subdirs:
        return load_imagefolder(p)
    raise DataError(f"{p}: empty folder (no images or class folders)")


def load_split(data: str | os.PathLike, which: str, method: Mapping[str, Any] | None = None) -> ImageSet:
    return split(load(data), which, method)
