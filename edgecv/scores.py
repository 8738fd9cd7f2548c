"""Classification scores in NumPy: accuracy, per-class precision/recall/F1, confusion matrix, rank-k."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def rank_k(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of samples whose true label is among the k most probable (rank-1 = accuracy)."""
    topk = np.argsort(-probs, axis=1)[:, :k]
    return float(np.mean(np.any(topk == labels[:, None], axis=1)))


def confusion(pred: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (labels, pred), 1)
    return cm


def classification_report(probs: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict:
    """accuracy, n, per-class precision/recall/f1/support, confusion matrix, rank-5 for >= 5 classes."""
    labels = np.asarray(labels, np.int64)
    n_cls = max(len(names), probs.shape[1])
    pred = probs.argmax(axis=1)
    cm = confusion(pred, labels, n_cls)
    per_class = {}
    for i in range(n_cls):
        tp = cm[i, i]
        p = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        r = tp / cm[i, :].sum() if cm[i, :].sum() else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        name = names[i] if i < len(names) else str(i)
        per_class[name] = {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(cm[i].sum())}
    out = {"accuracy": float(np.mean(pred == labels)), "n": int(len(labels)),
           "per_class": per_class, "confusion_matrix": cm.tolist(), "labels": list(names)}
    out["rank1"] = out["accuracy"]
    if n_cls >= 5:
        out["rank5"] = rank_k(probs, labels, 5)
    return out


def plot_confusion(cm: Sequence[Sequence[int]], names: Sequence[str], path: str) -> bool:
    """Write a confusion-matrix PNG; False when matplotlib is not installed (edge installs)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cm = np.asarray(cm)
    size = max(4.0, 0.5 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                color="white" if v > cm.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
