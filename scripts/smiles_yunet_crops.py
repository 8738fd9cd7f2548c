"""A copy of SMILES with every face re-cut the way the runtime cuts it (issue 21: training crops that
match what the pipeline feeds).

    python scripts/smiles_yunet_crops.py OUT          # then: edgecv train smile --data OUT ...

Each 64x64 face is re-detected with YuNet and cut by the shipped smile model's crop rule, as
scripts/smile_crop_match.py does (pixels beyond the crop are its replicated border), then resized
back to 64x64 (INTER_AREA) and written under the same folder and file name, so edgecv's hash split
puts every face in the same split as in SMILES. Faces YuNet does not find keep their SMILES crop.
Written to OUT.partial, renamed to OUT when complete."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import cv2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--model", default="smile", help="model whose ModelSpec crop rule is used")
    args = ap.parse_args()
    if args.out.exists():
        print(f"{args.out} exists; choose another OUT", file=sys.stderr)
        return 2

    from smile_crop_match import cut, regions

    from edgecv.data import load
    from edgecv.resolve import resolve
    from edgecv.runtime.detect import make_detector

    rule = resolve(args.model).spec.crop
    ds = load("smiles")
    det = make_detector("yunet")
    tmp = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    found = 0
    for i, src in enumerate(ds.images):
        src = Path(src)
        dst = tmp / "SMILEs" / src.parent.parent.name / src.parent.name / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        g = ds.read(i, gray=True)
        (r,) = regions([g], det, rule)
        if r is None:
            shutil.copyfile(src, dst)
            continue
        found += 1
        face = cv2.resize(cut(g, r), (64, 64), interpolation=cv2.INTER_AREA)
        if not cv2.imwrite(str(dst), face, [cv2.IMWRITE_JPEG_QUALITY, 95]):
            print(f"could not write {dst}", file=sys.stderr)
            return 1
    (tmp / "recut.json").write_text(json.dumps({"faces": len(ds.images), "yunet_found": found,
                                                "crop": {"kind": rule.kind, "margin": rule.margin}}))
    os.replace(tmp, args.out)
    print(json.dumps({"out": str(args.out), "faces": len(ds.images), "yunet_found": found}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
