"""Join trained CRNN-CTC runs into one model whose output is their per-time-step probabilities
averaged (an ensemble decoded jointly: the average is decoded once, outside the graph).

    .venv/bin/python scripts/captcha_ensemble.py runs/captcha-v3-a runs/captcha-v3-b --out runs/captcha-v3-ens
    edgecv export runs/captcha-v3-ens --format tflite --quant int8 --out ens.int8.tflite

The result is a run directory (model.keras + spec.json) like `edgecv train captcha-ctc` writes,
so `edgecv export` and `edgecv eval` take it unchanged. Members must share input, charset and
time steps. File size and solve time grow with the number of members.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgecv.modelfile import load_spec
from edgecv.spec import atomic_write_text, file_sha256


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run directories of `edgecv train captcha-ctc`")
    ap.add_argument("--out", required=True, help="run directory to create")
    ap.add_argument("--name", default="captcha-v2")
    args = ap.parse_args(argv)
    if len(args.runs) < 2:
        print("captcha_ensemble: give at least two runs", file=sys.stderr)
        return 2
    out = Path(args.out)
    if (out / "model.keras").exists():
        print(f"captcha_ensemble: {out} already holds a model", file=sys.stderr)
        return 2
    specs = [load_spec(r) for r in args.runs]
    first = specs[0]
    for r, s in zip(args.runs[1:], specs[1:]):
        if (s.charset, tuple(s.input_shape), s.extra.get("time_steps")) != \
                (first.charset, tuple(first.input_shape), first.extra.get("time_steps")):
            print(f"captcha_ensemble: {r} differs from {args.runs[0]} in charset, input or time steps",
                  file=sys.stderr)
            return 2
    import keras
    members = []
    for i, r in enumerate(args.runs):
        m = keras.saving.load_model(Path(r) / "model.keras", safe_mode=True)
        m.name = f"member{i + 1}"
        members.append(m)
    inp = keras.Input(tuple(first.input_shape), name="image")
    avg = keras.layers.Average(name="probs_mean")([m(inp) for m in members])
    model = keras.Model(inp, avg, name="crnn_ensemble")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "model.tmp.keras"
    model.save(tmp)
    tmp.replace(out / "model.keras")
    spec = first.replace(name=args.name, arch="crnn-ensemble", source_hash=file_sha256(out / "model.keras"),
                         metrics={}, extra={**first.extra, "members": [str(r) for r in args.runs]})
    spec.save(out / "spec.json")
    atomic_write_text(out / "members.json", json.dumps(
        {"members": [{"run": str(r), "metrics": s.metrics} for r, s in zip(args.runs, specs)]}, indent=1))
    print(json.dumps({"out": str(out), "members": len(members), "params": model.count_params()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
