"""Run training variants x seeds (in parallel processes) and tabulate test accuracy.

usage: python scripts/ablate.py configs/smile-ablation/ --seeds 1 2 3 --jobs 4 --out runs/ablate
Each YAML file in the folder is one variant (TrainConfig options); results go to OUT/results.md
and OUT/results.json (mean and spread of the test-split accuracy over seeds, and the fit time).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def run_one(cfg: Path, seed: int, out: Path, train: bool = True) -> dict:
    run = out / f"{cfg.stem}-s{seed}"
    if train and not (run / "eval.json").exists():
        cmd = [sys.executable, "-m", "edgecv", "train", "classify", "--config", str(cfg), "--seed", str(seed),
               "--out", str(run)]
        log = open(out / f"{cfg.stem}-s{seed}.log", "w")
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
    try:
        ev = json.loads((run / "eval.json").read_text())
    except FileNotFoundError:
        return {"variant": cfg.stem, "seed": seed, "error": "no eval.json (see log)"}
    return {"variant": cfg.stem, "seed": seed, "test_accuracy": ev["test"]["accuracy"], "test_n": ev["test"]["n"],
            "val_accuracy": ev["val"]["accuracy"], "best_epoch": ev["best_epoch"], "fit_seconds": ev["fit_seconds"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--no-run", action="store_true", help="only tabulate the runs OUT already holds")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    cfgs = sorted(a.configs.glob("*.yaml")) if a.configs.is_dir() else [a.configs]
    t0 = time.monotonic()
    with ThreadPoolExecutor(a.jobs) as pool:
        rows = list(pool.map(lambda cs: run_one(cs[0], cs[1], a.out, not a.no_run),
                             [(c, s) for c in cfgs for s in a.seeds]))
    if not a.no_run:
        (a.out / "results.json").write_text(json.dumps(rows, indent=1))
    lines = ["| variant | test accuracy (mean ± sd) | min | max | seeds | best epoch | fit s |",
             "|---|---|---|---|---|---|---|"]
    for c in cfgs:
        r = [x for x in rows if x["variant"] == c.stem and "test_accuracy" in x]
        if not r:
            lines.append(f"| {c.stem} | {'not run' if a.no_run else 'failed'} | | | | | |")
            continue
        acc = [100 * x["test_accuracy"] for x in r]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        lines.append(f"| {c.stem} | {statistics.mean(acc):.2f} ± {sd:.2f} | {min(acc):.2f} | {max(acc):.2f} | "
                     f"{len(r)} | {', '.join(str(x['best_epoch']) for x in r)} | "
                     f"{statistics.mean(x['fit_seconds'] for x in r):.0f} |")
    ns = sorted({x["test_n"] for x in rows if "test_n" in x})
    lines.append(f"\n{len(rows)} runs in {time.monotonic() - t0:.0f} s; test split n = {', '.join(map(str, ns)) or '?'}")
    if not a.no_run:
        (a.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
