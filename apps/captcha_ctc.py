"""Greedy CTC decoding in NumPy, outside the model graph.

CTC decoder ops are not TFLite builtins, so exported CRNN models stop at the per-time-step softmax
(N x T x K, blank = the last class unless told otherwise) and the text is read here: best class per
step, repeats collapsed, blanks dropped. The per-sequence confidence is the probability of that
greedy path (the product of the per-step maxima): one uncertain step anywhere, blank or character,
lowers it, which is what a caller deciding "trust or skip" needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgecv.errors import ModelError


@dataclass(frozen=True)
class Decoded:
    """One decoded sequence: text, path probability in [0, 1], one probability per character."""

    text: str
    confidence: float
    char_confidences: tuple[float, ...] = field(default_factory=tuple)


def _check(probs: np.ndarray, charset: str, blank: int | None) -> tuple[np.ndarray, int]:
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim == 2:
        probs = probs[None]
    if probs.ndim != 3:
        raise ModelError(f"CTC output must be N x T x K probabilities; got shape {probs.shape}")
    k = probs.shape[2]
    if k != len(charset) + 1:
        raise ModelError(f"CTC output has {k} classes but the charset {charset!r} needs "
                         f"{len(charset) + 1} (its {len(charset)} characters and the blank)")
    blank = k - 1 if blank is None else int(blank)
    if not 0 <= blank < k:
        raise ModelError(f"CTC blank index {blank} is outside 0..{k - 1}")
    return probs, blank


def greedy_decode(probs: np.ndarray, charset: str, blank: int | None = None) -> list[Decoded]:
    """Decode N x T x K (or T x K) per-step probabilities; charset maps class i to a character
    (classes after the blank shift down by one). Raises ModelError for a shape that does not fit."""
    probs, blank = _check(probs, charset, blank)
    best = probs.argmax(axis=2)                       # N x T
    pmax = np.take_along_axis(probs, best[..., None], axis=2)[..., 0]
    # Path probability in log space: 25-50 steps of products underflow nothing, but clipping
    # keeps an exact-zero softmax (int8 outputs) from turning into -inf.
    logp = np.log(np.clip(pmax, 1e-12, 1.0)).sum(axis=1)
    out = []
    for n in range(best.shape[0]):
        row, prow = best[n], pmax[n]
        # A new character starts where the class changes and is not the blank.
        starts = np.flatnonzero((row != blank) & np.r_[True, row[1:] != row[:-1]])
        chars, confs = [], []
        for s in starts:
            c = int(row[s])
            e = s
            while e + 1 < len(row) and row[e + 1] == c:
                e += 1
            chars.append(charset[c if c < blank else c - 1])
            confs.append(float(prow[s:e + 1].max()))
        out.append(Decoded("".join(chars), float(np.exp(logp[n])), tuple(confs)))
    return out


def encode_labels(texts: list[str], charset: str, blank: int | None = None) -> np.ndarray:
    """Texts -> N x L int32 class indices padded with -1 (the layout train/captcha.py's loss reads).
    Raises ModelError for a character outside the charset."""
    k = len(charset) + 1
    blank = k - 1 if blank is None else int(blank)
    index = {ch: (i if i < blank else i + 1) for i, ch in enumerate(charset)}
    width = max((len(t) for t in texts), default=0)
    out = np.full((len(texts), width), -1, np.int32)
    for n, t in enumerate(texts):
        for j, ch in enumerate(t):
            if ch not in index:
                raise ModelError(f"label {t!r} has {ch!r}, which is not in the charset {charset!r}")
            out[n, j] = index[ch]
    return out
