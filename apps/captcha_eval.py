"""`evaluate_captcha`: run a shipped or exported captcha model over a labelled folder and score it
(edgecv.textscore: sequence and character accuracy, CER, coverage). The scoring and the labelled
folders live in the core (edgecv.textscore, edgecv.data.captchas), where training uses them too.
"""
from __future__ import annotations

import os
import time
from typing import Any, Sequence

import numpy as np

from edgecv.data.captchas import labelled_images
from edgecv.textscore import THRESHOLDS, score_texts


def evaluate_captcha(model_path: str | os.PathLike, data: str | os.PathLike, split: str = "test",
                     labels: str | os.PathLike | None = None, backend: str | None = None,
                     limit: int | None = None, thresholds: Sequence[float] = THRESHOLDS,
                     decoder: str | None = None, beam: int = 10) -> dict[str, Any]:
    """Solve every labelled captcha of `data` (see `labelled_images`) with a model (a shipped name
    such as "captcha-v2", a run directory, or a .tflite/.onnx/.keras file) and score it.

    Returns a JSON-able dict: `score_texts`' scores (sequence_accuracy, char_accuracy, cer,
    coverage), the wrong answers, and the median time per captcha (one image at a time, reading
    and segmentation included). `decoder` ("greedy" or "beam", with `beam` prefixes) overrides
    a CTC model's own (its ModelSpec's extra.decoder, else greedy).
    """
    from .captcha import Solver

    pairs = labelled_images(data, split, labels)
    if limit:
        pairs = pairs[:int(limit)]
    solver = Solver.open(model_path, backend=backend, decoder=decoder, beam=beam)
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
                   **({"decoder": solver.decoder} if solver.spec.task == "captcha-ctc" else {}),
                   "ms_per_captcha_median": round(float(np.median(times)) * 1000, 3),
                   "wrong": wrong})
    return report
