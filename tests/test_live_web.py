"""`edgecv smile --serve` with real clients on 127.0.0.1: Debian's chromium (driven by selenium
through Debian's chromedriver, nothing downloaded) opens the page and sees the MJPEG change and the
stats appear; prometheus_client's own text parser reads /metrics; the token is enforced."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from conftest import wait_until

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver "
                       "(make system-deps)"),
    pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs ffmpeg to loop the clip"),
]
TOKEN = "s3cret-token"


def get(url: str, token: str | None = TOKEN, timeout: float = 10) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory, data_dir):
    """smile.mp4 played 20 times at 15 fps (73 s, time for a slow browser start on a loaded machine)
    with --serve on a free port; the last test stops it by PID."""
    tmp = tmp_path_factory.mktemp("web")
    clip = tmp / "loop.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-stream_loop", "19", "-i",
                    str(data_dir / "videos/smile.mp4"), "-c", "copy", str(clip)], check=True, timeout=60)
    err = tmp / "stderr.txt"
    with open(err, "wb") as ferr, open(tmp / "stdout.txt", "wb") as fout:
        proc = subprocess.Popen([sys.executable, "-m", "edgecv", "smile", "--source", str(clip), "--no-display",
                                 "--max-fps", "15", "--metrics-interval", "0", "--serve", "127.0.0.1:0",
                                 "--serve-token", TOKEN, "--json-out", str(tmp / "e.jsonl")],
                                stdout=fout, stderr=ferr, env=dict(os.environ))
    try:
        m = wait_until(lambda: proc.poll() is None and
                     re.search(rb"serving the live view on (http://127\.0\.0\.1:\d+/)", err.read_bytes()),
                     90, "the server's address on stderr")
        yield proc, m.group(1).decode(), tmp
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture(scope="module")
def browser(served):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


def test_the_token_is_needed(served):
    _, url, _ = served
    assert get(url, token=None)[0] == 401
    assert get(url + "metrics", token="wrong")[0] == 401
    assert get(url + f"stats.json?token={TOKEN}", token=None)[0] == 200
    status, body = get(url)
    assert status == 200 and b'id="img-s0"' in body


@pytest.fixture(scope="module")
def stalled_viewer(served):
    """A viewer that asks for the MJPEG and never reads a byte: its socket fills up and blocks the
    server's thread for it, never the pipeline (the last test checks every frame was processed)."""
    _, url, _ = served
    host, port = url.split("//")[1].rstrip("/").split(":")
    s = socket.create_connection((host, int(port)), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(f"GET /stream/s0.mjpg?token={TOKEN} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    try:
        yield s
    finally:
        s.close()


def test_a_real_browser_sees_the_mjpeg_change_and_the_stats_appear(served, stalled_viewer, browser):
    from selenium.webdriver.common.by import By

    proc, url, _ = served
    browser.get(url + f"?token={TOKEN}")
    img = browser.find_element(By.ID, "img-s0")
    wait_until(lambda: browser.execute_script("return arguments[0].naturalWidth", img), 30, "the first MJPEG frame")
    assert browser.execute_script("return arguments[0].naturalWidth", img) == 960  # scaled from 1920
    shots = {hashlib.sha1(img.screenshot_as_png).hexdigest()}
    wait_until(lambda: shots.add(hashlib.sha1(img.screenshot_as_png).hexdigest()) or len(shots) >= 3, 30,
             "the image to change twice", interval=0.3)

    # The table is rebuilt every second: read it in one script call (an element found in one call and
    # read in the next may already be gone).
    def cell(field: str) -> str:
        return browser.execute_script(
            "const c = document.querySelector(arguments[0]); return c ? c.textContent : '';",
            f'#stats-s0 td[data-f="{field}"]')

    def frames() -> int:
        text = cell("frames")
        return int(text) if text.isdigit() else 0

    first = wait_until(frames, 15, "the stats table")
    wait_until(lambda: frames() > first, 15, "the frame count to go up")
    assert float(cell("fps") or 0) > 0
    assert browser.execute_script("return document.body.dataset.stats") == "ok"
    assert "smile_start" in browser.execute_script("return document.getElementById('stats-s0').textContent")
    status, body = get(url + "stats.json")
    assert json.loads(body)["streams"]["s0"]["viewers"] >= 2  # the browser and the stalled one
    assert proc.poll() is None


def test_metrics_parse_with_the_prometheus_parser_and_hold_the_documented_series(served):
    from prometheus_client.parser import text_string_to_metric_families

    _, url, _ = served
    wait_until(lambda: json.loads(get(url + "stats.json")[1])["streams"].get("s0", {}).get("frames", 0) > 30, 60,
             "30 frames")
    status, body = get(url + "metrics")
    assert status == 200
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    documented = {  # README "Live view, metrics and events"
        "edgecv_stream_fps": "gauge", "edgecv_stream_frames": "counter", "edgecv_stream_frames_dropped": "counter",
        "edgecv_stream_frames_skipped": "counter", "edgecv_stream_reconnects": "counter",
        "edgecv_stream_up": "gauge", "edgecv_frame_age_seconds": "histogram",
        "edgecv_stage_latency_seconds": "histogram", "edgecv_batch_size_mean": "gauge",
        "edgecv_batches": "counter", "edgecv_faces": "gauge", "edgecv_faces_detected": "counter",
        "edgecv_smiling": "gauge", "edgecv_tracks": "gauge",
        "edgecv_events": "counter", "edgecv_web_viewers": "gauge", "edgecv_web_frames_sent": "counter"}
    for name, kind in documented.items():
        assert name in fams, f"{name} missing from /metrics"
        assert fams[name].type == kind, (name, fams[name].type)

    def value(name: str, sample: str | None = None, **labels) -> float:
        found = [s.value for s in fams[name].samples
                 if s.name == (sample or name) and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) == 1, (name, sample, labels, fams[name].samples[:5])
        return found[0]

    assert value("edgecv_stream_fps", stream="s0") > 0
    assert value("edgecv_stream_frames", "edgecv_stream_frames_total", stream="s0") > 30
    assert value("edgecv_stream_frames_dropped", "edgecv_stream_frames_dropped_total", stream="s0") >= 0
    assert value("edgecv_stream_reconnects", "edgecv_stream_reconnects_total", stream="s0") == 0
    assert value("edgecv_stream_up", stream="s0") == 1
    n = value("edgecv_frame_age_seconds", "edgecv_frame_age_seconds_count", stream="s0")
    total = value("edgecv_frame_age_seconds", "edgecv_frame_age_seconds_sum", stream="s0")
    assert n > 30 and total > 0
    for stage in ("decode", "detect", "preprocess", "infer"):
        assert value("edgecv_stage_latency_seconds", "edgecv_stage_latency_seconds_count", stage=stage) > 0
    assert 1 <= value("edgecv_faces", stream="s0") <= 4
    assert 1 <= value("edgecv_tracks", stream="s0") <= 8  # old ids live on for 10 frames at a scene cut
    assert 0 <= value("edgecv_smiling", stream="s0") <= value("edgecv_tracks", stream="s0")
    assert value("edgecv_events", "edgecv_events_total", stream="s0", event="smile_start") >= 2
    assert value("edgecv_batch_size_mean") >= 1 and value("edgecv_batches", "edgecv_batches_total") > 0


def test_the_run_stops_cleanly_with_every_json_line(served, browser):
    proc, url, tmp = served
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0, (tmp / "stderr.txt").read_text()[-3000:]
    assert "Traceback" not in (tmp / "stderr.txt").read_text()
    summary = json.loads((tmp / "stdout.txt").read_text())
    lines = [json.loads(x) for x in (tmp / "e.jsonl").read_text().splitlines()]
    ended = [e for e in lines if e.get("end_of_run")]  # smiles still on at Ctrl+C, closed
    assert summary["frames"] == len(lines) - len(ended) > 30 and len(ended) <= 1
    assert all(ev["event"] == "smile_end" and ev["reason"] == "ended" for e in ended for ev in e["events"])
    assert summary["serve"]["sent"]["s0"] > 2
    with pytest.raises(OSError):  # the server is gone with the run
        urllib.request.urlopen(url, timeout=5)
