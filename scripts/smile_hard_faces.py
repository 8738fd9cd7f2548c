"""The SMILES test faces that every given model gets wrong, and a contact sheet of them (issue 21:
how much of the last 5-7 points is the label set itself).

    python scripts/smile_hard_faces.py runs/ablate3/*-s? --out docs/smile-hard-faces.jpg

Prints how many faces k of the N models get wrong, for k = 0..N, and writes a sheet of the faces
all N get wrong, each captioned with its SMILES label (S = smiling, N = not smiling). Judging
those faces by eye is what tells label noise from model error; the script does not judge."""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", type=Path, help="contact sheet PNG of the faces every model gets wrong")
    args = ap.parse_args()

    from edgecv.apps.predict import Predictor
    from edgecv.data import load, split

    ds = load("smiles")
    part = split(ds, args.split, ds.split_info)
    imgs = [part.read(i) for i in range(len(part))]
    y = np.asarray(part.labels)
    wrong = np.zeros(len(y), np.int64)
    for m in args.models:
        with Predictor(m) as pred:
            wrong += pred.probabilities(imgs).argmax(1) != y
    n = len(args.models)
    counts = np.bincount(wrong, minlength=n + 1)
    every = np.flatnonzero(wrong == n)
    print(json.dumps({"models": n, "split": args.split, "faces": len(y),
                      "faces_wrong_by_k_models": counts.tolist(),
                      "wrong_by_all": len(every), "wrong_by_all_labelled_smiling": int(y[every].sum()),
                      "files_wrong_by_all": [f"{Path(part.images[i]).parent.name}/{Path(part.images[i]).name}"
                                             for i in every]}))
    if args.out is not None and len(every):
        cell, cols = 96, 16
        rows = math.ceil(len(every) / cols)
        sheet = np.full((rows * (cell + 16), cols * cell, 3), 255, np.uint8)
        for k, i in enumerate(every):
            r, c = divmod(k, cols)
            face = cv2.resize(imgs[i], (cell, cell), interpolation=cv2.INTER_CUBIC)
            if face.ndim == 2:
                face = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
            y0 = r * (cell + 16)
            sheet[y0:y0 + cell, c * cell:(c + 1) * cell] = face
            cv2.putText(sheet, "S" if y[i] else "N", (c * cell + 40, y0 + cell + 13), cv2.FONT_HERSHEY_SIMPLEX,
                        0.45, (0, 0, 200) if y[i] else (200, 0, 0), 1, cv2.LINE_AA)
        tmp = args.out.with_name(f".{args.out.stem}.{os.getpid()}.part{args.out.suffix}")
        if not cv2.imwrite(str(tmp), sheet):
            raise SystemExit(f"could not write {args.out}")
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
