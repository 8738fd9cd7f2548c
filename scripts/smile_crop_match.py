"""How the runtime's face crops differ from the SMILES training crops, and what that costs (issue 21).

    python scripts/smile_crop_match.py edgecv/zoo/smile.int8.onnx edgecv/zoo/smile.onnx [RUN ...] --calibrate

SMILES faces are 64x64 crops cut by a detector of their own. At run time the model reads the region
YuNet's box gives under the spec's crop rule (runtime.detect.crop_region). This re-detects every
face of SMILES' split with YuNet (the image doubled in size and padded by replicating its border,
since the face fills the whole crop) and prints, per model: how often YuNet finds the face, and the
accuracy on the faces it finds as SMILES cut them and as the runtime would cut them. --calibrate
adds where the runtime's region lies relative to the SMILES crop (side ratio, centre offset,
measured on the training split) and the accuracy with that mean offset taken out (the region a
calibrated crop rule would give). Pixels outside the 64x64 crop do not exist: they are the
replicated border, so the runtime-crop accuracy may understate what real frames give."""
from __future__ import annotations

import argparse
import json

import cv2
import numpy as np

UP, PAD = 2, 64  # detect on the crop doubled in size, inside a replicated border of 64 pixels


def regions(images, det, rule):
    """Per image: the runtime's region in the 64x64 crop's pixels (x, y, side) or None."""
    from edgecv.runtime.detect import crop_region
    out = []
    for g in images:
        big = cv2.resize(g, (g.shape[1] * UP, g.shape[0] * UP), interpolation=cv2.INTER_CUBIC)
        big = cv2.copyMakeBorder(big, PAD, PAD, PAD, PAD, cv2.BORDER_REPLICATE)
        boxes = det.detect(cv2.cvtColor(big, cv2.COLOR_GRAY2BGR))
        if not boxes:
            out.append(None)
            continue
        r = crop_region(max(boxes, key=lambda b: b.score), rule)
        out.append(((r.x - PAD) / UP, (r.y - PAD) / UP, r.w / UP))
    return out


def cut(g, region):
    """The region of a 64x64 crop, pixels outside it replicated from its border."""
    x, y, s = region
    big = cv2.copyMakeBorder(g, 64, 64, 64, 64, cv2.BORDER_REPLICATE)
    x0, y0, s = int(round(x)) + 64, int(round(y)) + 64, max(4, int(round(s)))
    return big[y0:y0 + s, x0:x0 + s]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="model files, run directories or shipped names (one JSON line each)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--calibrate", action="store_true",
                    help="also measure the mean offset on the training split and the accuracy without it")
    args = ap.parse_args()

    from edgecv.apps.predict import Predictor
    from edgecv.data import load, split
    from edgecv.resolve import resolve
    from edgecv.runtime.detect import make_detector

    det = make_detector("yunet")
    ds = load("smiles")
    first = resolve(args.models[0]).spec

    def gray(part):
        return [part.read(i, gray=True) for i in range(len(part))]

    part = split(ds, args.split, ds.split_info)  # SMILES' own faces, whatever a model was trained on
    imgs = gray(part)
    y = np.array([part.labels[i] for i in range(len(part))])
    found = regions(imgs, det, first.crop)  # every model here is read through the same crop rule
    ok = np.array([r is not None for r in found])
    idx = np.flatnonzero(ok)
    extra: dict = {}
    variants = {"smiles": [imgs[i] for i in idx], "runtime": [cut(imgs[i], found[i]) for i in idx]}
    if args.calibrate:
        rt = [r for r in regions(gray(split(ds, "train", ds.split_info)), det, first.crop) if r is not None]
        side = np.array([s for _, _, s in rt])
        # The mean relation, as fractions of the runtime region's side: SMILES side / region side,
        # and the SMILES centre's offset from the region's centre.
        scale = float(np.median(64 / side))
        dx = float(np.median(-(np.array([x + s / 2 for x, _, s in rt]) - 32) / side))
        dy = float(np.median(-(np.array([yy + s / 2 for _, yy, s in rt]) - 32) / side))

        def calibrated(r):
            x, yy, s = r
            cx, cy, s2 = x + s / 2 + dx * s, yy + s / 2 + dy * s, s * scale
            return (cx - s2 / 2, cy - s2 / 2, s2)
        variants["calibrated"] = [cut(imgs[i], calibrated(found[i])) for i in idx]
        extra = {"train_found": len(rt), "region_side_px_median": round(float(np.median(side)), 1),
                 "smiles_side_over_region_side": round(scale, 3),
                 "smiles_centre_offset_of_side": [round(dx, 3), round(dy, 3)]}
    for model in args.models:
        with Predictor(model) as pred:
            if pred.spec.crop != first.crop:
                raise SystemExit(f"{model}: crop rule {pred.spec.crop} differs from {first.crop}")
            answers = {k: pred.probabilities([cv2.cvtColor(c, cv2.COLOR_GRAY2BGR) for c in v]).argmax(1)
                       for k, v in variants.items()}
        row = {"model": model, "split": args.split, "n": len(imgs), "yunet_found": int(ok.sum()), **extra}
        for k, a in answers.items():
            row[f"accuracy_{k}_crops"] = round(100 * float((a == y[idx]).mean()), 2)
        row["answers_changed_runtime_vs_smiles"] = int((answers["runtime"] != answers["smiles"]).sum())
        if "calibrated" in answers:
            row["answers_changed_calibrated_vs_runtime"] = int((answers["calibrated"] != answers["runtime"]).sum())
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
