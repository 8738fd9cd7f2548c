"""Scoring captcha solvers: sequence accuracy, character accuracy, CER and the coverage curve
(accuracy among the answers whose confidence clears each threshold), and `evaluate_captcha`, which
runs a shipped or exported model over a labelled folder and reports all of them.

NumPy only: this runs on an edge box and inside training alike.
"""
from __future__ import annotations

import csv
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import edgecv.data as _data_pkg
from edgecv.errors import DataError

log = logging.getLogger("edgecv.captcha")

THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def score_texts(preds: Sequence[str | None], truths: Sequence[str],
                confidences: Sequence[float] | None = None,
                thresholds: Sequence[float] = THRESHOLDS) -> dict[str, Any]:
    """Scores for predicted vs true texts. A None prediction (the solver declined: unreadable or
    not segmentable) counts as wrong, as an empty string for CER, and as confidence 0.

    - sequence_accuracy: whole text exactly right.
    - char_accuracy: characters right at their position, over max(len(pred), len(true)) per item.
    - cer: total edit distance / total true characters.
    - coverage: for each threshold, the share of items answered with confidence >= it and the
      accuracy among those (accuracy None where nothing is answered).
    """
    if len(preds) != len(truths):
        raise DataError(f"{len(preds)} predictions for {len(truths)} labels")
    n = len(truths)
    if n == 0:
        raise DataError("nothing to score: no labelled images")
    conf = np.zeros(n) if confidences is None else np.asarray(
        [0.0 if c is None else float(c) for c in confidences])
    right = np.zeros(n, bool)
    char_right = char_total = edits = true_chars = 0
    for i, (p, t) in enumerate(zip(preds, truths)):
        p = "" if p is None else p
        right[i] = preds[i] is not None and p == t
        char_right += sum(a == b for a, b in zip(p, t))
        char_total += max(len(p), len(t))
        edits += edit_distance(p, t)
        true_chars += len(t)
    answered = np.array([p is not None for p in preds])
    coverage = []
    for th in thresholds:
        keep = answered & (conf >= th)
        k = int(keep.sum())
        coverage.append({"threshold": float(th), "coverage": k / n,
                         "accuracy": float(right[keep].mean()) if k else None, "n": k})
    return {"n": n, "sequence_accuracy": float(right.mean()),
            "char_accuracy": char_right / char_total if char_total else 0.0,
            "cer": edits / true_chars if true_chars else 0.0,
            "declined": int((~answered).sum()), "coverage": coverage}


# Beside the data registry (edgecv/data), which is where it installs from both the checkout and a wheel.
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


def evaluate_captcha(model_path: str | os.PathLike, data: str | os.PathLike, split: str = "test",
                     labels: str | os.PathLike | None = None, backend: str | None = None,
                     limit: int | None = None, thresholds: Sequence[float] = THRESHOLDS) -> dict[str, Any]:
    """Solve every labelled captcha of `data` (see `labelled_images`) with a model (a shipped name
    such as "captcha-v2", a run directory, or a .tflite/.onnx/.keras file) and score it.

    Returns a JSON-able dict: `score_texts`' scores (sequence_accuracy, char_accuracy, cer,
    coverage), the wrong answers, and the median time per captcha (one image at a time, reading
    and segmentation included).
    """
    from .captcha import Solver

    pairs = labelled_images(data, split, labels)
    if limit:
        pairs = pairs[:int(limit)]
    solver = Solver.open(model_path, backend=backend)
    preds: list[str | None] = []
    confs: list[float] = []
    wrong: list[dict[str, Any]] = []
    times = []
    for path, truth in pairs:
        t0 = time.perf_counter()
        r = solver.solve_file(path)
        times.append(time.perf_counter() - t0)
        preds.append(r.text)
        confs.append(r.confidence or 0.0)
        if r.text != truth:
            wrong.append({"file": str(path), "label": truth, "text": r.text, "confidence": r.confidence,
                          **({"error": r.error} if r.error else {})})
    report = score_texts(preds, [t for _, t in pairs], confs, thresholds)
    solver.close()
    report.update({"model": str(solver.model_path), "task": solver.spec.task, "data": str(data), "split": split,
                   "ms_per_captcha_median": round(float(np.median(times)) * 1000, 3),
                   "wrong": wrong})
    return report
