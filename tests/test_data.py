"""Loaders on the real data sets and on small folders made from real files: layouts, counts,
splits, and bad data (empty folders, a class with no images, corrupt and non-image files)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgecv.data import load, split
from edgecv.errors import DataError
from edgecv.images import decode_image, header_size, read_image
from edgecv.preprocess import apply_chain, default_chain


def test_smiles_layout_counts_and_labels(data_dir):
    ds = load("smiles")
    assert ds.label_names == ["not_smiling", "smiling"]
    pos = len(list((data_dir / "smiles/SMILEs/positives/positives7").glob("*.jpg")))
    neg = len(list((data_dir / "smiles/SMILEs/negatives/negatives7").glob("*.jpg")))
    assert len(ds) == pos + neg and int(ds.labels.sum()) == pos
    img = ds.read(0, gray=True)
    assert img.shape == (64, 64) and img.dtype == np.uint8


def test_hash_split_is_disjoint_complete_and_stable(data_dir, tmp_path):
    ds = load("smiles")
    parts = {s: split(ds, s) for s in ("train", "val", "test")}
    names = {s: {f"{p.parent.name}/{p.name}" for p in parts[s].images} for s in parts}
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"])
    assert sum(len(v) for v in names.values()) == len(ds)
    assert 0.15 < len(names["test"]) / len(ds) < 0.25
    # A file's split does not depend on which other files exist.
    some = sorted(parts["test"].images)[:5] + sorted(parts["train"].images)[:5]
    for p in some:
        dest = tmp_path / p.relative_to(data_dir / "smiles")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dest)
    small = load(tmp_path)
    assert {p.name for p in split(small, "test").images} == {p.name for p in some[:5]}


def test_mnist_official_split(data_dir):
    ds = load("mnist")
    assert len(split(ds, "test")) == 10000
    assert len(split(ds, "train")) + len(split(ds, "val")) == 60000


def test_registry_sets_load(data_dir):
    assert load("captcha-v2").kind == "captcha"
    assert all(len(t) == 5 for t in load("captcha-v2").labels)
    assert load("ezpass").label_names == list("123456789")
    assert load("animals").label_names == ["cats", "dogs", "panda"]


def test_imagefolder_skips_and_counts_corrupt_files(data_dir, tmp_path):
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for p in sorted((data_dir / "animals" / cls).glob("*.jpg"))[:4]:
            shutil.copy(p, tmp_path / cls / p.name)
    (tmp_path / "cats" / "zero.jpg").write_bytes(b"")
    (tmp_path / "cats" / "text.png").write_bytes(b"this is not a png at all")
    good = (tmp_path / "dogs" / sorted(p.name for p in (tmp_path / "dogs").iterdir())[0]).read_bytes()
    (tmp_path / "dogs" / "truncated.jpg").write_bytes(good[:200])
    ds = load(tmp_path)
    assert ds.label_names == ["cats", "dogs"] and len(ds) == 11
    shape = (32, 32, 3)
    x, y = ds.load_arrays(lambda imgs: apply_chain(imgs, default_chain(shape), shape))
    assert len(x) == len(y) == 8
    assert len(ds.skipped) == 3
    assert any("empty file" in s for s in ds.skipped) and any("not an image" in s for s in ds.skipped)


def test_class_without_images_is_an_error(tmp_path, data_dir):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(next((data_dir / "animals/cats").glob("*.jpg")), tmp_path / "a")
    with pytest.raises(DataError, match="class folder\\(s\\) with no images: b"):
        load(tmp_path)


def test_empty_folder_and_missing_path(tmp_path):
    with pytest.raises(DataError, match="empty folder"):
        load(tmp_path)
    with pytest.raises(DataError, match="no such file"):
        load(tmp_path / "nope")


def test_npz_refuses_pickles(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(DataError):
        load(tmp_path / "obj.npz")


def test_image_reader_errors(tmp_path, data_dir):
    with pytest.raises(DataError, match="no such file"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        read_image(tmp_path / "empty.jpg")
    # A PNG header claiming 100000 x 100000 pixels is refused before decoding (decompression bomb).
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    with pytest.raises(DataError, match="pixel limit"):
        decode_image(bomb, "bomb.png")
    real = (data_dir / "videos/smile.jpg").read_bytes()
    assert header_size(real) == (640, 426)
    assert decode_image(real).shape == (426, 640, 3)


def test_concurrent_loads_of_one_zip_share_a_single_extraction(data_dir, tmp_path):
    """Several trainings started at once on a fresh cache (seen on the GPU machine: one run read a
    half-moved folder, another hit FileNotFoundError) must each see the whole data set."""
    import os
    import subprocess
    import sys
    import zipfile
    src = data_dir / "cifar10" / "cifar10-jpg.zip"
    small = tmp_path / "cifar-small.zip"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(small, "w") as zout:
        per_class: dict[str, int] = {}
        for info in zin.infolist():
            parts = info.filename.split("/")
            if info.is_dir() or len(parts) < 3:
                continue
            k = "/".join(parts[-3:-1])
            if per_class.get(k, 0) < 150:
                per_class[k] = per_class.get(k, 0) + 1
                zout.writestr("/".join(parts[-3:]), zin.read(info))
    code = ("import sys; from edgecv.data import load; ds = load(sys.argv[1]); "
            "print(len(ds), ds.split_info['parts']['train'])")
    env = {**os.environ, "EDGECV_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(small)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert out.split() == ["3000", "1500"], out
    extracted = list((tmp_path / "cache" / "extracted").iterdir())
    assert len([d for d in extracted if not d.name.startswith(".")]) == 1
