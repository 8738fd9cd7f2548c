"""A real network stream: ffmpeg serves MPEG-TS over HTTP on 127.0.0.1 (`-listen 1`, which OpenCV's
FFmpeg backend reads as http://...), is killed mid-stream and started again on the same port: the
pipeline reconnects, keeps going, and its metrics show the gap."""
from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from conftest import free_port
from edgecv.runtime.pipeline import Pipeline, PipelineState
from edgecv.runtime.sinks import CallbackSink
from edgecv.runtime.sources import Backoff, SourceState, parse_source
from models import open_model, smile_model_files  # noqa: F401  (fixture)

pytestmark = [pytest.mark.network, pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs ffmpeg")]


def serve(video, port: int) -> subprocess.Popen:
    """Loop the video forever at 3x its rate (vtest: 30 fps). The AVI's H.264 has no timestamps for
    MPEG-TS, hence +genpts; -c copy keeps the server's CPU cost near zero."""
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-readrate", "3", "-fflags", "+genpts",
         "-stream_loop", "-1", "-i", str(video), "-c", "copy", "-f", "mpegts", "-listen", "1",
         f"http://127.0.0.1:{port}/"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(cond, what: str, limit: float = 60.0) -> None:
    """Poll until cond() is true; the deadline only keeps a broken run from hanging (not a speed check)."""
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_stream_killed_and_restarted_reconnects_and_keeps_going(smile_model_files, data_dir):
    video = data_dir / "videos" / "vtest_pets2009_480x360_h264.avi"
    port = free_port()
    server = serve(video, port)
    seen: list = []
    src = parse_source(f"http://127.0.0.1:{port}/", "cam", policy="latest", queue_size=2)
    src.backoff = Backoff(initial_s=0.1, max_s=0.5)
    p = Pipeline(open_model(smile_model_files["onnx"]), [src], sinks=[CallbackSink(seen.append)], owns_backend=True)
    try:
        p.start()
        wait_for(lambda: len(seen) >= 15, "15 frames before the kill")
        server.kill()
        server.wait(10)
        wait_for(lambda: src.state is SourceState.RECONNECTING, "the source to notice the dead stream")
        assert p.state is PipelineState.RUNNING
        before = len(seen)
        server = serve(video, port)
        wait_for(lambda: len(seen) >= before + 15, "15 frames after the restart")
    finally:
        p.stop()
        server.kill()
        server.wait(10)
    assert p.wait(30) and p.state is PipelineState.STOPPED
    summary = p.summary()
    s = summary["sources"]["cam"]
    assert s["reconnects"] >= 1 and s["max_gap_s"] > 0
    assert s["frames"] == len(seen) >= 30
    idx = [r.frame.index for r in seen]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)  # decode order kept; drops allowed under latest
    # The gap is visible in the frames' own capture times too.
    times = [r.frame.t_capture for r in seen]
    assert max(b - a for a, b in zip(times, times[1:])) >= s["max_gap_s"] * 0.9


def test_pipeline_with_a_stream_that_never_connects_can_be_stopped(smile_model_files):
    src = parse_source(f"rtsp://127.0.0.1:{free_port()}/nothing", "cam")
    src.backoff = Backoff(initial_s=0.05, max_s=0.2)
    p = Pipeline(open_model(smile_model_files["onnx"]), [src], owns_backend=True)
    p.start()
    wait_for(lambda: src.error is not None, "a first failed connection")
    assert src.state in (SourceState.CONNECTING, SourceState.RECONNECTING)
    p.stop()
    assert p.wait(30)
    assert p.state is PipelineState.STOPPED and src.state is SourceState.STOPPED
    assert p.summary()["frames"] == 0
