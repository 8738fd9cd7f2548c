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


def read_labels_csv(path: str | os.PathLike) -> dict[str, str]:
    """file,label rows (a header row and '#' comment lines are skipped) -> {file name: label}."""
    path = Path(path)
    labels: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = csv.reader(line for line in f if not line.startswith("#"))
            for row in rows:
                if len(row) < 2 or row[0] == "file":
                    continue
                labels[row[0].strip()] = row[1].strip()
    except OSError as e:
        raise DataError(f"{path}: cannot read labels ({e.strerror or e})") from None
    return labels


def labelled_images(data: str | os.PathLike, labels: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """(image, text) pairs from a labelled captcha folder.

    - a folder with labels.csv (the ezpass layout: raw/ + labels.csv, or images + labels.csv),
      or an explicit `labels` CSV: the files it names;
    - otherwise each image's file stem is its label (the captcha-v2 layout).
    """
    from edgecv.images import list_images

    root = Path(data)
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if root.is_file():
        raise DataError(f"{root}: expected a folder of labelled captchas")
    csv_path = Path(labels) if labels else (root / "labels.csv" if (root / "labels.csv").exists() else None)
    if csv_path is not None:
        table = read_labels_csv(csv_path)
        img_dir = root / "raw" if (root / "raw").is_dir() else root
        pairs = [(img_dir / name, text) for name, text in sorted(table.items())]
        missing = [str(p) for p, _ in pairs if not p.exists()]
        if missing:
            raise DataError(f"{csv_path}: {len(missing)} labelled file(s) missing, e.g. {missing[0]}")
        return pairs
    files = list_images(root)
    if not files:
        raise DataError(f"{root}: no images (and no labels.csv)")
    return [(p, p.stem) for p in files]


def evaluate_captcha(model_path: str | os.PathLike, data: str | os.PathLike, labels: str | os.PathLike | None = None,
                     backend: str | None = None, limit: int | None = None,
                     thresholds: Sequence[float] = THRESHOLDS) -> dict[str, Any]:
    """Solve every labelled captcha under `data` with a model (a zoo name such as "captcha-v2",
    or a .tflite/.onnx/.keras path) and score it. Returns a JSON-able dict: the scores of
    `score_texts`, per-image failures, and timing (median ms per captcha, batch of one).
    """
    from .captcha import Solver

    pairs = labelled_images(data, labels)
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
    report.update({"model": str(solver.model_path), "task": solver.spec.task, "data": str(data),
                   "ms_per_captcha_median": round(float(np.median(times)) * 1000, 3),
                   "wrong": wrong})
    return report
