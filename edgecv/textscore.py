"""Scoring text answers (captcha solvers): sequence accuracy, character accuracy, CER and the
coverage curve (accuracy among the answers whose confidence clears each threshold). NumPy only.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from edgecv.errors import DataError

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
