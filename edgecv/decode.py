"""The one place model outputs become answers: class indices, labels, scores, texts.

The runtime, `edgecv eval`, the export gate and the benchmark all read outputs through here, so one
rule holds everywhere (a sigmoid probability p means the second label when p >= 0.5, never `>` in
one place and `>=` in another). Every read checks what it was given against the ModelSpec and the
batch: one row per input, one column per label, finite values, probabilities in [0, 1] that sum to
one where the spec says softmax. A mismatch is a ModelError naming the model's answer and the
spec's expectation, never a silently wrong label.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ModelError
from .spec import ModelSpec

THRESHOLD = 0.5            # sigmoid: p >= THRESHOLD is the second label
PROB_TOLERANCE = 1e-3      # a quantized softmax may reach 1.0039 (uint8 steps of 1/256)
SUM_TOLERANCE = 0.05       # and its row may sum to 0.97-1.03


@dataclass(frozen=True)
class Prediction:
    """One input's answer: the label, its index in spec.labels and the model's probability for it."""

    label: str
    index: int
    score: float


def probabilities(spec: ModelSpec, outputs: np.ndarray, n: int | None = None) -> np.ndarray:
    """Raw first-output rows -> N x K class probabilities (K = number of labels; a sigmoid output
    becomes [1 - p, p]). n, when given, is the number of inputs: rows must match it.
    Raises ModelError when the output does not fit the spec."""
    if spec.output == "ctc":
        raise ModelError(f"{spec.name}: a CTC model's output is read as text (decode.texts), not classes")
    y = np.asarray(outputs)
    rows = y.shape[0] if y.ndim else 0
    if n is not None and rows != n:
        raise ModelError(f"{spec.name}: the model returned {rows} output row(s) for {n} input(s); "
                         "a graph whose batch dimension does not follow its input cannot be batched")
    want = expected_columns(spec)
    if rows == 0:
        return np.zeros((0, len(spec.labels) or (want or 1)), np.float32)
    y = y.reshape(rows, -1).astype(np.float32, copy=False)
    cols = y.shape[1]
    if want is not None and cols != want:
        raise ModelError(f"{spec.name}: the model returns {cols} value(s) per input; its ModelSpec "
                         f"({spec.output}, labels {list(spec.labels)}) expects {want}")
    if not np.isfinite(y).all():
        bad = int(np.flatnonzero(~np.isfinite(y).all(axis=1))[0])
        raise ModelError(f"{spec.name}: the model returned non-finite values (NaN or inf) for input {bad}")
    if spec.output == "logits":
        z = y - y.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    if y.min() < -PROB_TOLERANCE or y.max() > 1 + PROB_TOLERANCE:
        raise ModelError(f"{spec.name}: the model returned values outside [0, 1] (min {y.min():.4g}, max "
                         f"{y.max():.4g}) but its ModelSpec says {spec.output} probabilities; if it returns "
                         "logits, set \"output\": \"logits\"")
    y = np.clip(y, 0.0, 1.0)
    if spec.output == "sigmoid":
        return np.concatenate([1.0 - y, y], axis=1)
    sums = y.sum(axis=1)
    if np.abs(sums - 1.0).max() > SUM_TOLERANCE:
        i = int(np.argmax(np.abs(sums - 1.0)))
        raise ModelError(f"{spec.name}: the model's softmax row {i} sums to {sums[i]:.4g}, not 1; "
                         "set the ModelSpec's output to what the model returns (sigmoid or logits)")
    return y


def expected_columns(spec: ModelSpec) -> int | None:
    """Values per input the spec expects of a classifier's output (None: any; a CTC model's
    per-step classes are checked by edgecv.ctc)."""
    if spec.output == "ctc":
        return None
    if spec.output == "sigmoid":
        return 1
    return len(spec.labels) or None  # a spec without labels names classes by index


def decide(spec: ModelSpec, outputs: np.ndarray, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The decided class index (int64) and its probability (float32) per input, for a whole batch
    at once: the pipeline decodes each batch here, not each frame."""
    p = probabilities(spec, outputs, n)
    if spec.output == "sigmoid":
        idx = (p[:, 1] >= THRESHOLD).astype(np.int64)
    else:
        idx = p.argmax(axis=1).astype(np.int64)
    return idx, p[np.arange(len(idx)), idx]


def indices(spec: ModelSpec, outputs: np.ndarray, n: int | None = None) -> np.ndarray:
    """The decided class index per input (int64, shape N)."""
    return decide(spec, outputs, n)[0]


def label(spec: ModelSpec, index: int) -> str:
    """The name of class `index` (its number when the spec has no labels)."""
    return spec.labels[index] if index < len(spec.labels) else str(index)


def predictions(spec: ModelSpec, outputs: np.ndarray, n: int | None = None) -> list[Prediction]:
    """Label, index and probability of the decided class, per input."""
    idx, score = decide(spec, outputs, n)
    return [Prediction(label(spec, int(i)), int(i), float(s)) for i, s in zip(idx, score)]


def texts(spec: ModelSpec, outputs: np.ndarray, n: int | None = None):
    """A CTC model's N x T x K per-step probabilities -> edgecv.ctc.Decoded per input."""
    from .ctc import greedy_decode

    if spec.output != "ctc":
        raise ModelError(f"{spec.name}: its ModelSpec output is {spec.output}, not ctc")
    y = np.asarray(outputs, np.float32)
    if n is not None and (y.ndim != 3 or y.shape[0] != n):
        raise ModelError(f"{spec.name}: the model returned shape {list(y.shape)} for {n} input(s); "
                         "a CTC model returns N x T x K")
    if not np.isfinite(y).all():
        raise ModelError(f"{spec.name}: the model returned non-finite values (NaN or inf)")
    return greedy_decode(y, spec.charset or "", spec.extra.get("blank"))
