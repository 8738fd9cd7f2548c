"""Measure what `--serve` costs the pipeline and how old the MJPEG frames are when they reach a viewer.

One run does both (docs/live.md quotes its output):
  cost     `edgecv smile` on smile.mp4 looped (unpaced, as fast as the CPU goes), alternately without
           --serve and with --serve plus one MJPEG viewer (a Python client on 127.0.0.1 that reads
           every part, as a browser on another machine would); the stream's fps from the summary.
  latency  `edgecv smile --max-fps 25` (a camera's pace) with --serve, and Debian's chromium as the
           viewer: JavaScript in the page reads the MJPEG with fetch(), and for every part takes the
           wall-clock time it arrived and the time it finished decoding (createImageBitmap) minus the
           frame's capture time (the X-Capture-Time header).

    .venv/bin/python scripts/live_cost.py --out docs/measurements/live-cost.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("EDGECV_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

JS = r"""
const done = arguments[arguments.length - 1];
const [url, secs] = arguments;
(async () => {
  const lat = [], dec = [];
  const r = await fetch(url, {cache: "no-store"});
  const reader = r.body.getReader();
  const te = new TextDecoder();
  let buf = new Uint8Array(0);
  const end = performance.now() + secs * 1000;
  const find = (b) => {  // the blank line after a part's headers
    for (let i = 0; i + 3 < b.length; i++)
      if (b[i] === 13 && b[i+1] === 10 && b[i+2] === 13 && b[i+3] === 10) return i;
    return -1;
  };
  while (performance.now() < end) {
    const {value, done: d} = await reader.read();
    if (d) break;
    const c = new Uint8Array(buf.length + value.length); c.set(buf); c.set(value, buf.length); buf = c;
    for (;;) {
      const h = find(buf); if (h < 0) break;
      const head = te.decode(buf.subarray(0, h));
      const len = parseInt(/Content-Length: (\d+)/.exec(head)[1]);
      if (buf.length < h + 4 + len + 2) break;
      const tcap = parseFloat(/X-Capture-Time: ([\d.]+)/.exec(head)[1]);
      const trecv = (performance.timeOrigin + performance.now()) / 1000;
      const bmp = await createImageBitmap(new Blob([buf.slice(h + 4, h + 4 + len)], {type: "image/jpeg"}));
      const tdec = (performance.timeOrigin + performance.now()) / 1000;
      bmp.close();
      lat.push(trecv - tcap); dec.push(tdec - tcap);
      buf = buf.slice(h + 4 + len + 2);
    }
  }
  reader.cancel();
  done({lat, dec});
})().catch(e => done({error: String(e)}));
"""


def start(args: list[str], tmp: Path, tag: str) -> tuple[subprocess.Popen, Path, Path]:
    out, err = tmp / f"{tag}.out", tmp / f"{tag}.err"
    proc = subprocess.Popen([sys.executable, "-m", "edgecv", "smile", "--no-display", "--metrics-interval", "0",
                             *args], stdout=open(out, "wb"), stderr=open(err, "wb"))
    return proc, out, err


def server_url(proc: subprocess.Popen, err: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        m = re.search(rb"serving the live view on (http://127\.0\.0\.1:\d+/)", err.read_bytes())
        if m:
            return m.group(1).decode()
        time.sleep(0.05)
    raise SystemExit(f"no server address: {err.read_text()[-2000:]}")


class MjpegClient(threading.Thread):
    """Reads every part of an MJPEG stream; latency = receipt - X-Capture-Monotonic (same machine)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.lat, self.parts = url, [], 0

    def run(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=30) as r:
                while True:
                    line = r.readline()
                    if not line:
                        return
                    if not line.startswith(b"--"):
                        continue
                    headers = {}
                    while (h := r.readline().strip()):
                        k, _, v = h.decode().partition(":")
                        headers[k.strip().lower()] = v.strip()
                    r.read(int(headers["content-length"]))
                    self.lat.append(time.monotonic() - float(headers["x-capture-monotonic"]))
                    self.parts += 1
        except OSError:
            return


def cpu_children() -> float:
    """User + system CPU seconds of the children waited for so far (each run is waited for alone)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def fps_of(out: Path) -> tuple[float, dict]:
    s = json.loads(out.read_text())
    return s["sources"]["s0"]["fps"], s


def pct(values: list[float]) -> dict:
    a = np.asarray(values) * 1000
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loops", type=int, default=6, help="smile.mp4 played this many times per cost run")
    ap.add_argument("--pairs", type=int, default=3, help="cost runs without/with --serve, alternated")
    ap.add_argument("--latency-seconds", type=float, default=20.0)
    ap.add_argument("--out", help="write the results as JSON here")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="live-cost-"))
    clip = tmp / "loop.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-stream_loop", str(a.loops - 1), "-i",
                    str(DATA / "videos/smile.mp4"), "-c", "copy", str(clip)], check=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").exists() else \
        platform.machine()
    result: dict = {"machine": {"cpu": cpu, "cpus": os.cpu_count(),
                                "load_before": os.getloadavg()},
                    "command": " ".join(sys.argv), "clip": f"smile.mp4 x {a.loops} (1920x1080, "
                                                          f"{55 * a.loops} frames)"}
    try:
        # -- cost --------------------------------------------------------------------------------
        # Start-up CPU (imports, model, server) of each configuration, subtracted below so the CPU per
        # frame is the steady state's: `--max-frames 1`, twice each.
        startup = {}
        for tag, extra in (("plain", []), ("served", ["--serve", "127.0.0.1:0"])):
            runs = []
            for k in range(2):
                c0 = cpu_children()
                proc, out, err = start(["--source", str(clip), "--max-frames", "1", *extra], tmp, f"start-{tag}{k}")
                proc.wait(600)
                runs.append(cpu_children() - c0)
            startup[tag] = float(np.mean(runs))
        print(f"start-up CPU: without {startup['plain']:.2f} s, with --serve {startup['served']:.2f} s", flush=True)
        plain, served, lat, cpu_plain, cpu_served = [], [], [], [], []
        for i in range(a.pairs):
            c0 = cpu_children()
            proc, out, err = start(["--source", str(clip)], tmp, f"plain{i}")
            proc.wait(600)
            fps, summary = fps_of(out)
            plain.append(fps)
            cpu_plain.append((cpu_children() - c0 - startup["plain"]) * 1000 / summary["frames"])
            c0 = cpu_children()
            proc, out, err = start(["--source", str(clip), "--serve", "127.0.0.1:0"], tmp, f"served{i}")
            url = server_url(proc, err)
            client = MjpegClient(url + "stream/s0.mjpg")
            client.start()
            proc.wait(600)
            client.join(10)
            fps, summary = fps_of(out)
            served.append(fps)
            cpu_served.append((cpu_children() - c0 - startup["served"]) * 1000 / summary["frames"])
            lat += client.lat
            print(f"pair {i}: without {plain[-1]:.2f} fps {cpu_plain[-1]:.2f} CPU ms/frame, with --serve + 1 "
                  f"viewer {fps:.2f} fps {cpu_served[-1]:.2f} CPU ms/frame ({client.parts} parts received)",
                  flush=True)
        cost = 1 - np.mean(served) / np.mean(plain)
        result["cost"] = {"fps_without": plain, "fps_with_serve_and_viewer": served,
                          "mean_without": round(float(np.mean(plain)), 2),
                          "mean_with": round(float(np.mean(served)), 2), "cost_pct": round(100 * float(cost), 1),
                          "startup_cpu_s": {k: round(v, 3) for k, v in startup.items()},
                          "cpu_ms_per_frame_without": [round(x, 3) for x in cpu_plain],
                          "cpu_ms_per_frame_with": [round(x, 3) for x in cpu_served],
                          "cpu_cost_pct": round(100 * float(np.mean(cpu_served) / np.mean(cpu_plain) - 1), 1),
                          "python_viewer_latency_unpaced": pct(lat) if lat else None}
        print(json.dumps(result["cost"]), flush=True)

        # -- latency in a real browser ---------------------------------------------------------------
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        proc, out, err = start(["--source", str(clip), "--max-fps", "25", "--serve", "127.0.0.1:0"], tmp, "latency")
        try:
            url = server_url(proc, err)
            opts = webdriver.ChromeOptions()
            opts.binary_location = shutil.which("chromium")
            for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
                opts.add_argument(arg)
            driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=opts)
            try:
                driver.set_script_timeout(a.latency_seconds + 30)
                driver.get(url + "stats.json")  # a page of the same origin with no stream on it
                got = driver.execute_async_script(JS, url + "stream/s0.mjpg", a.latency_seconds)
            finally:
                driver.quit()
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(60)
        if "error" in got:
            raise SystemExit(f"browser: {got['error']}")
        fps, summary = fps_of(out)
        result["latency"] = {"source_pace_fps": 25, "serve_fps": 10, "pipeline_fps": fps,
                             "capture_to_browser_receipt": pct(got["lat"]),
                             "capture_to_browser_decoded": pct(got["dec"]),
                             "frame_age_at_sink_p50_ms": summary["stages_ms"]["age"]["p50"],
                             "frame_age_at_sink_p99_ms": summary["stages_ms"]["age"]["p99"]}
        print(json.dumps(result["latency"]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["machine"]["load_after"] = os.getloadavg()
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
