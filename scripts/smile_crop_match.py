"""How the runtime's face crops differ from the SMILES training crops, and what that costs (issue 21).

    python scripts/smile_crop_match.py edgecv/zoo/smile.int8.onnx --split test

SMILES faces are 64x64 crops cut by a detector of their own. At run time the model reads the region
YuNet's box gives under the spec's crop rule (runtime.detect.crop_region). This re-detects every
face of the split with YuNet (the image doubled in size and padded by replicating its border, since
the face fills the whole crop), then prints: how often YuNet finds the face, where the runtime's
region lies relative to the SMILES crop (side ratio, centre offset, measured on the training split),
and the model's accuracy on the split's faces as SMILES cut them, as the runtime would cut them, and
as the runtime would cut them with the mean offset taken out (the region a calibrated rule would
give). Pixels outside the 64x64 crop do not exist: they are the replicated border."""
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
    ap.add_argument("model")
    ap.add_argument("--split", default="test")
    args = ap.parse_args()

    from edgecv.apps.predict import Predictor
    from edgecv.data import load, split
    from edgecv.runtime.detect import make_detector

    det = make_detector("yunet")
    ds = load("smiles")
    with Predictor(args.model) as pred:
        rule = pred.spec.crop
        method = pred.spec.data.get("split") or ds.split_info

        def gray(part):
            return [part.read(i, gray=True) for i in range(len(part))]

        train = gray(split(ds, "train", method))
        rt = [r for r in regions(train, det, rule) if r is not None]
        side = np.array([s for _, _, s in rt])
        cx = np.array([x + s / 2 for x, _, s in rt]) - 32
        cy = np.array([y + s / 2 for _, y, s in rt]) - 32
        # The mean relation, as fractions of the runtime region's side: SMILES side / region side,
        # and the SMILES centre's offset from the region's centre.
        scale = float(np.median(64 / side))
        dx, dy = float(np.median(-cx / side)), float(np.median(-cy / side))

        part = split(ds, args.split, method)
        imgs = gray(part)
        y = np.array([part.labels[i] for i in range(len(part))])
        found = regions(imgs, det, rule)
        ok = np.array([r is not None for r in found])

        answers = {}

        def acc(crops, mask, name):
            p = pred.probabilities([cv2.cvtColor(c, cv2.COLOR_GRAY2BGR) for c in crops])
            answers[name] = p.argmax(1)
            return round(100 * float((p.argmax(1) == y[mask]).mean()), 2)

        idx = np.flatnonzero(ok)
        as_smiles = acc([imgs[i] for i in idx], ok, "smiles")
        as_runtime = acc([cut(imgs[i], found[i]) for i in idx], ok, "runtime")

        def calibrated(r):
            x, yy, s = r
            c = (x + s / 2 + dx * s, yy + s / 2 + dy * s)
            s2 = s * scale
            return (c[0] - s2 / 2, c[1] - s2 / 2, s2)
        as_calibrated = acc([cut(imgs[i], calibrated(found[i])) for i in idx], ok, "calibrated")
        print(json.dumps({
            "model": args.model, "split": args.split, "n": len(imgs), "yunet_found": int(ok.sum()),
            "train_found": len(rt), "train_n": len(train),
            "region_side_px_median": round(float(np.median(side)), 1),
            "smiles_side_over_region_side": round(scale, 3),
            "smiles_centre_offset_of_side": [round(dx, 3), round(dy, 3)],
            "accuracy_smiles_crops": as_smiles, "accuracy_runtime_crops": as_runtime,
            "accuracy_calibrated_crops": as_calibrated,
            "answers_changed_runtime_vs_smiles": int((answers["runtime"] != answers["smiles"]).sum()),
            "answers_changed_calibrated_vs_runtime": int((answers["calibrated"] != answers["runtime"]).sum())}))


if __name__ == "__main__":
    main()
