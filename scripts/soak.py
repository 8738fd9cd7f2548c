"""Soak benchmark (not a test): N live streams for M minutes through `edgecv run`, watching for leaks.

usage: nice python scripts/soak.py [--streams 8] [--minutes 10] [--model M.onnx] [--out out/soak]

Each stream is a real network source: an ffmpeg server on 127.0.0.1 looping one of the shared
videos (EDGECV_DATA/videos, `-c copy`, at its own frame rate) as MPEG-TS over HTTP; a server that
exits (its client hung up) is started again on the same port, so reconnects are exercised too.
`edgecv run` is a real subprocess under the `latest` policy, Haar faces, JSON lines to a file.
Every --sample-s seconds its RSS, thread count and open file descriptors are read from /proc/PID;
its periodic metrics lines give the frame age (capture to sink, p50/p99 over the last 4096 frames).
At the end it gets SIGINT (it must drain and exit 0) and its JSON summary is kept.

Verdicts (after --warmup-s): RSS growth < 5% (median of the last minute against the median of the
first minute after warm-up), no thread or fd growth, frame age bounded (the largest per-interval
p99 after warm-up below --max-age-s). Writes OUT/soak.json and OUT/soak.md (a Markdown table).
Without ffmpeg, --synthetic uses paced synthetic:// sources instead (no decode, no reconnects).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGECV_DATA", REPO.parent / "shared" / "data"))
# Looped videos: (file, ffmpeg -readrate). vtest is 480x360 at 10 fps; smile.mp4 is 1080p at 30 fps,
# read at a third of its rate so one 1080p stream costs about what the decode budget allows here.
VIDEOS = (("vtest_pets2009_480x360_h264.avi", 1.0), ("smile.mp4", 0.34))
AGE_RE = re.compile(r"age p50 ([\d.]+) p99 ([\d.]+) ms")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One ffmpeg HTTP server looping a video; restarted whenever it exits until close()."""

    def __init__(self, video: Path, readrate: float) -> None:
        self.video, self.readrate, self.port = video, readrate, free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.starts = 0
        self._proc: subprocess.Popen | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._closed.is_set():
            # +genpts: the AVI's H.264 has no timestamps MPEG-TS can use; -c copy keeps ffmpeg's CPU near zero.
            self._proc = subprocess.Popen(
                ["nice", "ffmpeg", "-hide_banner", "-loglevel", "error", "-readrate", str(self.readrate),
                 "-fflags", "+genpts", "-stream_loop", "-1", "-i", str(self.video), "-an", "-c", "copy",
                 "-f", "mpegts", "-listen", "1", self.url],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.starts += 1
            while self._proc.poll() is None and not self._closed.is_set():
                time.sleep(0.2)
            if not self._closed.is_set():
                time.sleep(0.2)

    def close(self) -> None:
        self._closed.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._thread.join(5)


def proc_sample(pid: int) -> dict | None:
    """RSS (MiB), threads and open fds of a running process, from /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    vals = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mb": round(int(vals["VmRSS"].split()[0]) / 1024, 1), "threads": int(vals["Threads"]), "fds": fds}


def default_model() -> Path:
    shipped = REPO / "edgecv" / "zoo" / "smile.onnx"
    if shipped.exists():
        return shipped
    sys.path.insert(0, str(REPO / "tests"))
    from models import smile_models  # the small real smile model the tests use, built once

    return smile_models(REPO / ".pytest_cache" / "d" / "edgecv-test-models")["onnx"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--model", type=Path, help="default: edgecv/zoo/smile.onnx, else the tests' smile model")
    ap.add_argument("--detector", default="haar", choices=["haar", "yunet", "none"])
    ap.add_argument("--batch", type=int, default=32, help="edgecv run --batch (default 32, edgecv's own)")
    ap.add_argument("--sample-s", type=float, default=5.0)
    ap.add_argument("--warmup-s", type=float, default=60.0)
    ap.add_argument("--max-age-s", type=float, default=5.0,
                    help="frame-age ceiling for the verdict: every interval's p99 after warm-up (default 5)")
    ap.add_argument("--synthetic", action="store_true", help="paced synthetic:// sources instead of ffmpeg")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "soak")
    a = ap.parse_args()
    if a.streams < 1 or a.minutes <= 0 or a.sample_s <= 0:
        ap.error("--streams, --minutes and --sample-s must be positive")
    duration = a.minutes * 60
    if a.warmup_s + 60 > duration:
        ap.error(f"--minutes {a.minutes} leaves no minute after the {a.warmup_s:.0f} s warm-up")
    if not a.synthetic and not shutil.which("ffmpeg"):
        ap.error("ffmpeg not found: install it or pass --synthetic")
    model = a.model or default_model()
    a.out.mkdir(parents=True, exist_ok=True)

    servers: list[Server] = []
    if a.synthetic:
        sources = [f"synthetic://480x360?frames=0&fps=10" for _ in range(a.streams)]
    else:
        for i in range(a.streams):
            name, rate = VIDEOS[1] if i % 8 == 7 else VIDEOS[0]  # one 1080p stream in every eight
            servers.append(Server(DATA / "videos" / name, rate))
        sources = [s.url for s in servers]
        time.sleep(1.0)  # let the servers listen

    cmd = [sys.executable, "-m", "edgecv", "run", "--model", str(model), "--detector", a.detector,
           "--policy", "latest", "--batch", str(a.batch), "--no-display", "--json-out", str(a.out / "events.jsonl"),
           "--metrics-interval", str(a.sample_s), "--summary-out", str(a.out / "summary.json")]
    for s in sources:
        cmd += ["--source", s]
    err_path = a.out / "run.stderr.txt"
    print("soak:", " ".join(cmd), file=sys.stderr)
    with open(err_path, "w") as err, open(a.out / "run.stdout.txt", "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO)
        samples: list[dict] = []
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < duration and proc.poll() is None:
                s = proc_sample(proc.pid)
                if s is not None:
                    s["t"] = round(time.monotonic() - t0, 1)
                    samples.append(s)
                    print(f"soak: t={s['t']:6.0f}s rss {s['rss_mb']} MiB threads {s['threads']} fds {s['fds']}",
                          file=sys.stderr, flush=True)
                time.sleep(a.sample_s)
            alive = proc.poll() is None
            restarts = sum(srv.starts - 1 for srv in servers)  # before the SIGINT, which ends every stream
            if alive:
                proc.send_signal(signal.SIGINT)
            try:
                rc = proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
            for srv in servers:
                srv.close()
    elapsed = time.monotonic() - t0
    report = analyse(samples, err_path.read_text(errors="replace"), a, elapsed, rc, alive)
    report.update({"command": " ".join(["python", "scripts/soak.py"] + sys.argv[1:]),
                   "run_command": " ".join(cmd), "model": str(model), "sources": sources,
                   "server_restarts": restarts})
    try:
        report["summary"] = json.loads((a.out / "summary.json").read_text())
    except (FileNotFoundError, ValueError):
        report["summary"] = None
    if report["summary"]:
        sm = report["summary"]
        report["final"] = {"frames": sm.get("frames"), "fps": sm.get("fps"), "state": sm.get("state"),
                           "age_ms": sm.get("stages_ms", {}).get("age"),
                           "dropped": sum(v.get("dropped", 0) for v in sm.get("sources", {}).values()),
                           "decoded": sum(v.get("decoded", 0) for v in sm.get("sources", {}).values()),
                           "reconnects": sum(v.get("reconnects", 0) for v in sm.get("sources", {}).values()),
                           "peak_rss_mb": sm.get("peak_rss_mb")}
    report["samples"] = samples
    (a.out / "soak.json").write_text(json.dumps(report, indent=1) + "\n")
    (a.out / "soak.md").write_text(markdown(report) + "\n")
    print(markdown(report))
    return 0 if report["pass"] else 1


def analyse(samples: list[dict], stderr: str, a, elapsed: float, rc: int, alive_at_end: bool) -> dict:
    after = [s for s in samples if s["t"] >= a.warmup_s]
    first = [s for s in after if s["t"] < a.warmup_s + 60]
    last = [s for s in after if s["t"] >= after[-1]["t"] - 60] if after else []
    rss0 = statistics.median(s["rss_mb"] for s in first) if first else None
    rss1 = statistics.median(s["rss_mb"] for s in last) if last else None
    growth = round(100 * (rss1 - rss0) / rss0, 2) if rss0 and rss1 else None
    # Age per metrics interval, in order; the interval's time is not printed, so pair by position.
    ages = [(float(p50), float(p99)) for p50, p99 in AGE_RE.findall(stderr)]
    n_warm = int(a.warmup_s // a.sample_s)
    ages_after = ages[n_warm:] or ages
    max_p99 = max((p for _, p in ages_after), default=None)
    # Bounded = below the ceiling and not trending up: a pipeline that falls further behind every
    # minute (what `every` does on a live stream it cannot keep up with) grows its age without limit.
    third = max(1, len(ages_after) // 3)
    early = statistics.median(p for _, p in ages_after[:third]) if ages_after else None
    late = statistics.median(p for _, p in ages_after[-third:]) if ages_after else None
    tracebacks = stderr.count("Traceback")
    res = {
        "streams": a.streams, "minutes": a.minutes, "elapsed_s": round(elapsed, 1), "warmup_s": a.warmup_s,
        "max_age_ms": a.max_age_s * 1000, "exit_code": rc, "alive_until_end": alive_at_end, "tracebacks": tracebacks,
        "rss_mb": {"after_warmup": rss0, "end": rss1, "min": min((s["rss_mb"] for s in after), default=None),
                   "max": max((s["rss_mb"] for s in after), default=None), "growth_pct": growth},
        "threads": {"after_warmup": first[0]["threads"] if first else None, "end": after[-1]["threads"] if after else None,
                    "max": max((s["threads"] for s in after), default=None)},
        "fds": {"after_warmup": first[0]["fds"] if first else None, "end": after[-1]["fds"] if after else None,
                "max": max((s["fds"] for s in after), default=None)},
        "age_ms": {"p50_median": round(statistics.median(p for p, _ in ages_after), 1) if ages_after else None,
                   "p99_max": max_p99, "p99_first": ages_after[0][1] if ages_after else None,
                   "p99_last": ages_after[-1][1] if ages_after else None, "intervals": len(ages_after),
                   "p99_first_third_median": early, "p99_last_third_median": late},
        "warnings": sorted(set(re.findall(r"WARNING [\w.]+: source s\d+: ([a-z ]+)", stderr))),
    }
    leaks = {
        "rss": growth is not None and growth < 5.0,
        "threads": bool(after) and res["threads"]["end"] <= res["threads"]["after_warmup"],
        "fds": bool(after) and res["fds"]["end"] <= res["fds"]["after_warmup"],
        "age": max_p99 is not None and max_p99 < a.max_age_s * 1000 and late <= 1.25 * early + 250,
        "clean_exit": rc == 0 and alive_at_end and tracebacks == 0,
    }
    res["checks"] = leaks
    res["pass"] = all(leaks.values())
    return res


def markdown(r: dict) -> str:
    rss, th, fd, age = r["rss_mb"], r["threads"], r["fds"], r["age_ms"]
    fin = r.get("final") or {}
    ok = lambda k: "pass" if r["checks"][k] else "FAIL"  # noqa: E731
    rows = [
        ("RSS after warm-up -> end (median of a minute)", f"{rss['after_warmup']:.1f} -> {rss['end']:.1f} MiB "
                                                          f"({rss['growth_pct']:+.2f}%; min {rss['min']}, max {rss['max']})",
         "< 5% growth", ok("rss")),
        ("threads after warm-up -> end (max)", f"{th['after_warmup']} -> {th['end']} ({th['max']})", "no growth",
         ok("threads")),
        ("open fds after warm-up -> end (max)", f"{fd['after_warmup']} -> {fd['end']} ({fd['max']})", "no growth",
         ok("fds")),
        ("frame age p99 (last 4096 frames) at each print: first / last / max", f"{age['p99_first']} / {age['p99_last']} / {age['p99_max']} ms",
         f"max < {r['max_age_ms']:.0f} ms", ok("age")),
        ("frame age p99, median of first / last third", f"{age['p99_first_third_median']} / "
                                                         f"{age['p99_last_third_median']} ms",
         "no upward trend (last <= 1.25 x first + 250 ms)", ok("age")),
        ("frame age p50 (median over the prints)", f"{age['p50_median']} ms", "", ""),
        ("frames processed / decoded / dropped (latest)", f"{fin.get('frames')} / {fin.get('decoded')} / "
                                                           f"{fin.get('dropped')}", "", ""),
        ("throughput (all streams)", f"{fin.get('fps')} fps", "", ""),
        ("reconnects / server restarts during the run", f"{fin.get('reconnects')} / {r.get('server_restarts')}", "", ""),
        ("SIGINT at the end", f"exit {r['exit_code']}, state {fin.get('state')}, tracebacks {r['tracebacks']}",
         "exit 0, drained", ok("clean_exit")),
    ]
    head = (f"{r['streams']} streams, {r['minutes']:g} min ({r['elapsed_s']:.0f} s), warm-up {r['warmup_s']:.0f} s, "
            f"sampled every few seconds from /proc\n\n| measure | value | target | verdict |\n|---|---|---|---|\n")
    return head + "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows)


if __name__ == "__main__":
    sys.exit(main())
