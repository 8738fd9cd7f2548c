"""Greedy vs beam CTC decoding (and joint decoding of several models) on labelled captcha splits.

    .venv/bin/python scripts/captcha_decode.py captcha-v2 --splits val test
    .venv/bin/python scripts/captcha_decode.py runs/a/model.keras runs/b/model.keras --splits val test

Each model's per-time-step probabilities are computed once; with several models they are averaged
per time step before decoding (an ensemble decoded jointly). Prints one JSON object: for each
decoder, the scores of edgecv.textscore over all the splits named (together and per split) and the
wrong answers. Models must share the charset and input chain.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from edgecv.apps.predict import Predictor

from edgecv.ctc import beam_decode, greedy_decode
from edgecv.data.captchas import labelled_images
from edgecv.images import read_image
from edgecv.textscore import score_texts


def probabilities(model: str, images: list[np.ndarray], backend: str | None = None) -> tuple[np.ndarray, object]:
    pred = Predictor(model, backend=backend)
    try:
        out = np.concatenate([np.asarray(pred([im]), np.float32) for im in images])
    finally:
        pred.close()
    return out, pred.spec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="shipped name, run directory or model file (several: joint)")
    ap.add_argument("--data", default="captcha-v2")
    ap.add_argument("--splits", nargs="+", default=["val", "test"])
    ap.add_argument("--beam", type=int, default=10)
    ap.add_argument("--backend", choices=("litert", "onnxruntime", "keras"))
    args = ap.parse_args(argv)
    pairs, split_of = [], []
    for sp in args.splits:
        got = labelled_images(args.data, sp)
        pairs += got
        split_of += [sp] * len(got)
    images = [read_image(p) for p, _ in pairs]
    truths = [t for _, t in pairs]
    probs, spec = None, None
    for m in args.models:
        y, spec_m = probabilities(m, images, args.backend)
        if spec is not None and (spec_m.charset != spec.charset or y.shape != probs.shape):
            print(f"{m}: charset or output shape differs from {args.models[0]}", file=sys.stderr)
            return 2
        spec = spec_m
        probs = y if probs is None else probs + y
    probs /= len(args.models)
    charset, blank = spec.charset, spec.extra.get("blank")
    report = {"models": args.models, "data": args.data, "splits": args.splits, "n": len(pairs), "beam": args.beam}
    for name, fn in (("greedy", lambda p: greedy_decode(p, charset, blank)),
                     ("beam", lambda p: beam_decode(p, charset, blank, args.beam))):
        t0 = time.perf_counter()
        dec = fn(probs)
        ms = (time.perf_counter() - t0) * 1000 / len(pairs)
        texts, confs = [d.text for d in dec], [d.confidence for d in dec]
        r = score_texts(texts, truths, confs)
        r["per_split"] = {sp: {"n": int(sum(s == sp for s in split_of)),
                               "right": int(sum(t == g for t, g, s in zip(texts, truths, split_of) if s == sp))}
                          for sp in args.splits}
        r["wrong"] = [{"file": p.name, "split": s, "text": d.text, "confidence": round(d.confidence, 4)}
                      for (p, t), d, s in zip(pairs, dec, split_of) if d.text != t]
        r["decode_ms_per_captcha"] = round(ms, 3)
        report[name] = r
    report["beam_changed"] = [{"file": p.name, "label": t, "greedy": g.text, "beam": b.text}
                              for (p, t), g, b in zip(pairs, greedy_decode(probs, charset, blank),
                                                      beam_decode(probs, charset, blank, args.beam))
                              if g.text != b.text]
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
