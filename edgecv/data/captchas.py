"""Labelled captcha folders: the ezpass labels shipped with edgecv, its fixed held-out split, and
(image, text) pairs of a split for any labelled folder."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import edgecv.data as _data_pkg
from edgecv.errors import DataError

EZPASS_LABELS = Path(_data_pkg.__file__).resolve().parent / "ezpass_labels_extra.csv"
SPLITS = ("train", "val", "test", "all")


def read_labels_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a labels CSV with a header (file,label[,...]); '#' comment lines are skipped."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    except OSError as e:
        raise DataError(f"{path}: cannot read labels ({e.strerror or e})") from None
    if rows and not {"file", "label"} <= set(rows[0]):
        raise DataError(f"{path}: expected a header with columns file,label")
    return [r for r in rows if r.get("file") and r.get("label")]


def ezpass_holdout(rows: list[dict[str, str]], test: float = 0.2) -> set[str]:
    """The ezpass raw captchas kept out of digit training (train/captcha.py) and scored by
    `--split test`: the 50 hand-labelled ones (labels.csv) plus the SHA-1 'test' share of the rest."""
    from edgecv.data.loaders import _hash_bucket
    return {r["file"] for r in rows if r.get("source") == "labels.csv" or _hash_bucket(r["file"]) < test}


def _is_ezpass(data: str | os.PathLike) -> Path | None:
    if str(data) == "ezpass":
        from edgecv.data import dataset_root
        return dataset_root("ezpass")
    p = Path(data)
    return p if (p / "raw").is_dir() and (p / "digits").is_dir() else None


def labelled_images(data: str | os.PathLike, split: str = "all",
                    labels: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """(image, text) pairs to score.

    - "ezpass" (or a folder with its raw/ + digits/ layout): raw/ with the labels of
      edgecv/data/ezpass_labels_extra.csv; split "test" = the captchas digit training held out,
      "train"/"val" = the others, "all" = all 405.
    - a folder with labels.csv, or an explicit `labels` CSV: the files it names (split by the
      SHA-1 of the file name, as every edgecv data set is).
    - "captcha-v2" or any folder of images named by their text: that split of it.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    ez = _is_ezpass(data) if labels is None else None
    if ez is not None:
        rows = read_labels_csv(EZPASS_LABELS)
        held = ezpass_holdout(rows)
        keep = [r for r in rows if split == "all" or ((r["file"] in held) == (split == "test"))]
        pairs = [(ez / "raw" / r["file"], r["label"]) for r in keep]
    else:
        root = Path(data)
        csv_path = Path(labels) if labels else (root / "labels.csv" if (root / "labels.csv").is_file() else None)
        if csv_path is not None:
            from edgecv.data.loaders import _hash_bucket
            img_dir = root / "raw" if (root / "raw").is_dir() else root
            pairs = [(img_dir / r["file"], r["label"]) for r in read_labels_csv(csv_path)]
            if split != "all":
                b = {p: _hash_bucket(p.name) for p, _ in pairs}
                want = {"test": lambda v: v < 0.2, "val": lambda v: 0.2 <= v < 0.3, "train": lambda v: v >= 0.3}[split]
                pairs = [(p, t) for p, t in pairs if want(b[p])]
        else:
            from edgecv.data import load
            from edgecv.data import split as split_set
            ds = load(data)
            if ds.kind != "captcha":
                raise DataError(f"{data}: not a captcha data set (expected images named by their text, "
                                "a labels.csv, or the ezpass layout)")
            part = split_set(ds, split)
            pairs = list(zip(part.images, part.labels))
    missing = [str(p) for p, _ in pairs if not Path(p).exists()]
    if missing:
        raise DataError(f"{data}: {len(missing)} labelled file(s) missing, e.g. {missing[0]}")
    if not pairs:
        raise DataError(f"{data}: no labelled captchas in split {split!r}")
    return [(Path(p), str(t)) for p, t in pairs]
