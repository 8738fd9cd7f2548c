"""Horizontal-flip test-time averaging for a smile artefact, measured (issue 21's cheapest lever).

    python scripts/smile_flip_tta.py edgecv/zoo/smile.int8.onnx edgecv/zoo/smile.onnx --split test

Prints, per artefact, the accuracy on the SMILES split with one pass and with the mean of the face
and its mirror image, and the per-face inference cost of each (one run, same process, batch 32)."""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", default="smiles")
    ap.add_argument("--split", default="test")
    args = ap.parse_args()

    from edgecv import decode
    from edgecv.apps.predict import Predictor
    from edgecv.data import load, split

    ds = load(args.data)
    for model in args.models:
        with Predictor(model) as pred:
            part = split(ds, args.split, pred.spec.data.get("split") or ds.split_info)
            x, y = part.load_arrays(pred.preprocess)
            flipped = x[:, :, ::-1, ...].copy()  # NHWC: mirror the width axis

            def run(batch: np.ndarray) -> tuple[np.ndarray, float]:
                t0 = time.perf_counter()
                out = np.concatenate([pred.predict_arrays(batch[i:i + 32]) for i in range(0, len(batch), 32)])
                return decode.probabilities(pred.spec, out, len(batch)), time.perf_counter() - t0

            p1, s1 = run(x)
            p2, s2 = run(flipped)
            plain = float((p1.argmax(1) == y).mean())
            tta = float((((p1 + p2) / 2).argmax(1) == y).mean())
            print(json.dumps({"model": model, "split": args.split, "n": int(len(y)),
                              "accuracy": round(100 * plain, 2), "flip_tta_accuracy": round(100 * tta, 2),
                              "mirror_only_accuracy": round(100 * float((p2.argmax(1) == y).mean()), 2),
                              "us_per_face": round(1e6 * s1 / len(y), 1),
                              "us_per_face_tta": round(1e6 * (s1 + s2) / len(y), 1)}))


if __name__ == "__main__":
    main()
