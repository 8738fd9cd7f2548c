"""The scale-out measurement of docs/scale.md: an archive of N copies of a video through
`edgecv batch` with 1 and with 2 workers (a local Ray started by the command; its start-up
reported apart), and through today's single-process `edgecv run` with the same files as N sources.

    .venv/bin/python scripts/bench_scale.py --copies 8 --video video:vtest_pets2009_480x360_h264.avi

Prints a Markdown table and writes the raw summaries to --json. One run of each, in this order.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def edgecv(*args: str) -> tuple[dict, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "edgecv", *args], capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"edgecv {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--video", default="video:vtest_pets2009_480x360_h264.avi")
    ap.add_argument("--model", default="smile")
    ap.add_argument("--detector", default="yunet")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--json", help="write the raw summaries here")
    args = ap.parse_args()
    from edgecv.runtime.sources import make_reader

    src = make_reader(args.video).target if args.video.startswith("video:") else args.video
    tmp = Path(tempfile.mkdtemp(prefix="edgecv-scale-"))
    try:
        files = []
        for i in range(args.copies):
            f = tmp / f"copy{i}{Path(src).suffix}"
            shutil.copy(src, f)
            files.append(str(f))
        rows, raw = [], {}
        load = os.getloadavg()
        for w in (int(x) for x in args.workers.split(",")):
            s, wall = edgecv("batch", *files, "--model", args.model, "--detector", args.detector,
                             "--out", str(tmp / f"out{w}"), "--workers", str(w), "--no-progress")
            raw[f"batch_{w}"] = s
            rows.append((f"edgecv batch --workers {w}", s["frames"], wall, s["ray"]["startup_s"], s["work_s"], s["fps"]))
        sources = [a for f in files for a in ("--source", f)]
        s, wall = edgecv("run", "--model", args.model, "--detector", args.detector, *sources, "--no-display",
                         "--metrics-interval", "0", "--policy", "every")
        raw["run"] = s
        rows.append(("edgecv run (one process, N sources)", s["frames"], wall, 0.0, s.get("elapsed_s", wall),
                     s["frames"] / s["elapsed_s"] if s.get("elapsed_s") else s["frames"] / wall))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.copies} x {Path(src).name}, {args.model} + {args.detector}; load average before: "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; usable CPUs {len(os.sched_getaffinity(0))}\n")
    print("| command | frames | wall s | Ray start-up s | work s | fps (work) | fps (wall) |")
    print("|---|---|---|---|---|---|---|")
    for name, frames, wall, start, work, fps in rows:
        print(f"| {name} | {frames:,} | {wall:.1f} | {start:.1f} | {work:.1f} | {fps:.0f} | {frames / wall:.0f} |")
    b = {r[0]: r for r in rows}
    one, two = b.get("edgecv batch --workers 1"), b.get("edgecv batch --workers 2")
    if one and two:
        print(f"\n2 workers / 1 worker (work fps): {two[5] / one[5]:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()
