"""Ensembles (Practitioner ch. 6): average the probabilities of N models trained with different
seeds and report each member's accuracy beside the ensemble's, on the same split."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecv.data import load, split
from edgecv.errors import ConfigError
from edgecv.modelfile import load_spec
from edgecv.preprocess import apply_chain
from edgecv.scores import classification_report


def evaluate_ensemble(runs: Sequence[str | Path], data: str | None = None, which: str = "test") -> dict[str, Any]:
    import keras
    if len(runs) < 2:
        raise ConfigError("an ensemble needs at least two run directories")
    specs = [load_spec(r) for r in runs]
    if len({(s.input_shape, tuple(s.labels), str(s.preprocess)) for s in specs}) != 1:
        raise ConfigError("ensemble members must share input shape, labels and preprocessing")
    spec = specs[0]
    data = data or spec.data["dataset"]
    ds = load(data)
    part = split(ds, which, spec.data.get("split") or ds.split_info)
    x, y = part.load_arrays(lambda imgs: apply_chain(imgs, spec.preprocess, spec.input_shape))
    members, probs = [], []
    for r in runs:
        m = keras.saving.load_model(Path(r) / "model.keras", safe_mode=True)
        p = m.predict(x, batch_size=256, verbose=0)
        probs.append(p)
        members.append({"run": str(r), "accuracy": float(np.mean(p.argmax(1) == y))})
    avg = np.mean(probs, axis=0)
    report = classification_report(avg, np.asarray(y), list(spec.labels))
    accs = [m["accuracy"] for m in members]
    return {"members": members, "member_mean": float(np.mean(accs)), "member_best": float(np.max(accs)),
            "ensemble_accuracy": report["accuracy"], "n": report["n"], "split": which, "data": data,
            **({"ensemble_rank5": report["rank5"]} if "rank5" in report else {})}
