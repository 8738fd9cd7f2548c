"""Solve time of captcha models, alternated in one run (the machine is shared, so only ratios
inside one run mean anything): each round solves every image once with each model in turn.

    .venv/bin/python scripts/captcha_time.py captcha-v2 runs/captcha-v3-b/b.int8.tflite --rounds 5
    .venv/bin/python scripts/captcha_time.py captcha-v2 captcha-v2 --decode greedy beam

Prints one JSON object: per model (and decoder), the median milliseconds per captcha (file read,
preprocessing, inference and decoding; batch 1) and the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from edgecv.apps.captcha import Solver

from edgecv.data.captchas import labelled_images


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--decode", nargs="+", help="one decoder per model (greedy or beam; default: the model's)")
    ap.add_argument("--data", default="captcha-v2")
    ap.add_argument("--split", default="test")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    decoders = args.decode or [None] * len(args.models)
    if len(decoders) != len(args.models):
        print("captcha_time: give one --decode per model", file=sys.stderr)
        return 2
    files = [p for p, _ in labelled_images(args.data, args.split)]
    solvers = [Solver.open(m, decoder=d) for m, d in zip(args.models, decoders)]
    for s in solvers:                       # warm-up: first-call allocations are not the steady state
        s.solve_file(files[0])
    load0 = Path("/proc/loadavg").read_text().split()[:3]
    times: list[list[float]] = [[] for _ in solvers]
    for _ in range(args.rounds):
        for i, s in enumerate(solvers):
            for f in files:
                t0 = time.perf_counter()
                s.solve_file(f)
                times[i].append(time.perf_counter() - t0)
    load1 = Path("/proc/loadavg").read_text().split()[:3]
    base = float(np.median(times[0]))
    print(json.dumps({"n": len(files), "rounds": args.rounds, "loadavg_before": load0, "loadavg_after": load1,
                      "models": [{"model": m, "decoder": s.decoder, "ms_median": round(float(np.median(t)) * 1000, 3),
                                  "ratio_to_first": round(float(np.median(t)) / base, 3)}
                                 for m, s, t in zip(args.models, solvers, times)]}, indent=1))
    for s in solvers:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
