"""The scale-out measurement of docs/scale.md: an archive of N copies of a video through
`edgecv batch` with 1 and with 2 workers (a local Ray started by the command; its start-up
reported apart), and through today's single-process `edgecv run` with the same files as N sources.

    .venv/bin/python scripts/bench_scale.py --copies 8 --video video:vtest_pets2009_480x360_h264.avi

Prints a Markdown table and writes the raw summaries to --json. One run of each, in this order;
`--fleet 1,2` adds `edgecv run --ray` with the same files as N streams over 1 and 2 actors.
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


def _tree_cpu(root: int, seen: dict[int, float]) -> None:
    """CPU seconds (user + system) of every live process under `root`, by PID, into `seen` (a local Ray's
    GCS, raylet and workers are descendants of the command; getrusage would miss the ones it never reaps)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(d)] = int(fields[1])
        cpu[int(d)] = (int(fields[11]) + int(fields[12])) / tick
    for pid, c in cpu.items():
        p, hops = pid, 0  # the command itself counts too (p == root at once)
        while p not in (0, 1, root) and hops < 64:
            p, hops = parents.get(p, 0), hops + 1
        if p == root:
            seen[pid] = max(seen.get(pid, 0.0), c)


def edgecv(*args: str) -> tuple[dict, float, float]:
    """Run one command; its summary, wall seconds and CPU seconds of its whole process tree (sampled
    every 0.2 s, so the last 0.2 s of a process that exits may be missed)."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "edgecv", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    seen: dict[int, float] = {}
    while proc.poll() is None:
        _tree_cpu(proc.pid, seen)
        try:
            proc.wait(0.2)
        except subprocess.TimeoutExpired:
            pass
    out, err = proc.communicate()
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"edgecv {' '.join(args)} failed ({proc.returncode}): {err[-2000:]}")
    return json.loads(out), wall, sum(seen.values())


def _decode(path: str) -> int:
    import cv2

    cv2.setNumThreads(1)
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    n = 0
    while cap.grab():  # grab + retrieve is what a reader does
        if cap.retrieve()[0]:
            n += 1
    cap.release()
    return n


def decode_only(files: list[str]) -> tuple[int, float]:
    """The decode ceiling: every file decoded in a pool of one process per usable CPU."""
    from multiprocessing import Pool

    t0 = time.monotonic()
    with Pool(len(os.sched_getaffinity(0))) as pool:
        frames = sum(pool.map(_decode, files, chunksize=1))
    return frames, time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--video", default="video:vtest_pets2009_480x360_h264.avi")
    ap.add_argument("--model", default="smile")
    ap.add_argument("--detector", default="yunet")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--fleet", default="", help="also the files as a fleet of N sources over these actor counts (1,2)")
    ap.add_argument("--decode-only", action="store_true",
                    help="also decode the files alone, one process per usable CPU (the ceiling)")
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
            s, wall, cpu = edgecv("batch", *files, "--model", args.model, "--detector", args.detector,
                                  "--out", str(tmp / f"out{w}"), "--workers", str(w), "--no-progress")
            raw[f"batch_{w}"] = s
            rows.append((f"edgecv batch --workers {w}", s["frames"], wall, s["ray"]["startup_s"], s["work_s"], s["fps"],
                         cpu))
        if args.decode_only:
            frames, wall = decode_only(files)
            raw["decode_only"] = {"frames": frames, "wall_s": wall}
            rows.append(("decode only (a process per CPU)", frames, wall, 0.0, wall, frames / wall, float("nan")))
        sources = [a for f in files for a in ("--source", f)]
        for w in (int(x) for x in args.fleet.split(",")) if args.fleet else ():
            s, wall, cpu = edgecv("run", "--model", args.model, "--detector", args.detector, *sources, "--no-display",
                                  "--metrics-interval", "0", "--policy", "every", "--ray", "--ray-actors", str(w))
            raw[f"fleet_{w}"] = s
            rows.append((f"edgecv run --ray --ray-actors {w}", s["frames"], wall, s["ray"]["startup_s"], s["wall_s"],
                         s["fps"], cpu))
        s, wall, cpu = edgecv("run", "--model", args.model, "--detector", args.detector, *sources, "--no-display",
                              "--metrics-interval", "0", "--policy", "every")
        raw["run"] = s
        rows.append(("edgecv run (one process, N sources)", s["frames"], wall, 0.0, s.get("elapsed_s", wall),
                     s["frames"] / s["elapsed_s"] if s.get("elapsed_s") else s["frames"] / wall, cpu))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.copies} x {Path(src).name}, {args.model} + {args.detector}; load average before: "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; usable CPUs {len(os.sched_getaffinity(0))}\n")
    print("| command | frames | wall s | Ray start-up s | work s | fps (work) | fps (wall) | CPU s | CPU ms/frame |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, frames, wall, start, work, fps, cpu in rows:
        print(f"| {name} | {frames:,} | {wall:.1f} | {start:.1f} | {work:.1f} | {fps:.0f} | {frames / wall:.0f} "
              f"| {cpu:.1f} | {1000 * cpu / frames:.2f} |")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    b = {r[0]: r for r in rows}
    one, two = b.get("edgecv batch --workers 1"), b.get("edgecv batch --workers 2")
    if one and two:
        print(f"\n2 workers / 1 worker (work fps): {two[5] / one[5]:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()
