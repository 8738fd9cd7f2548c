"""Faults while running, beyond those tested with their layers (a stream killed and restarted and
one that never connects: test_runtime_network / test_runtime_sources; SIGINT/SIGTERM during
`edgecv run --save`: test_runtime_cli; SIGKILL during training then --resume: test_train; a sink
that raises: test_runtime_pipeline; a download cut halfway: test_download).

Here: SIGINT during `edgecv smile --save`, a second signal, SIGTERM while no stream ever connected,
SIGKILL mid-run (nothing at the output path, only whole JSON lines in its temporary), a disk that fills up under one sink, a video file that
shrinks while it is read, and checkpoints left half-written by a crash.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import count_frames, free_port, run_cli
from models import smile_model_files  # noqa: F401  (fixture)

FAST = ["--no-display", "--metrics-interval", "0"]


def edgecv(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgecv", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ))


def wait_for(cond, proc: subprocess.Popen, what: str, limit: float = 180.0) -> None:
    """Poll until cond(); the deadline only keeps a broken run from hanging the suite (not a speed check)."""
    deadline = time.monotonic() + limit
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"process ended (exit {proc.returncode}) before {what}: "
                                 f"{proc.stderr.read().decode(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def partial(path: Path) -> Path | None:
    """The hidden temporary file an output is written to until the run ends (edgecv.safeio)."""
    found = sorted(path.parent.glob(f".{path.name}.edgecv-*.part*"))
    return found[0] if found else None


def lines_in(path: Path) -> int:
    """Lines written so far: in the output once it is renamed into place, else in its temporary."""
    for p in (path, partial(path)):
        if p is not None and p.exists():
            try:
                return len(p.read_bytes().splitlines())
            except FileNotFoundError:  # renamed between the check and the read
                continue
    return 0


def finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return out.decode(errors="replace"), err.decode(errors="replace")


def whole_json_lines(path: Path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "last line cut in half"
    return [json.loads(x) for x in text.splitlines()]  # every line parses


def test_sigint_during_smile_save_leaves_playable_video_and_complete_json(smile_model_files, data_dir, tmp_path):
    video, events = tmp_path / "smile.avi", tmp_path / "smile.jsonl"
    proc = edgecv("smile", "--model", str(smile_model_files["onnx"]), "--detector", "haar", "--source",
                  str(data_dir / "videos" / "vtest_pets2009_480x360_h264.avi"), "--save", str(video),
                  "--json-out", str(events), *FAST)
    wait_for(lambda: lines_in(events) >= 10, proc, "10 frames")
    proc.send_signal(signal.SIGINT)
    out, err = finish(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    lines = whole_json_lines(events)
    lines = [e for e in lines if not e.get("end_of_run")]  # a smile still on gets its smile_end line
    assert 10 <= len(lines) < 795
    assert [e["frame"] for e in lines] == list(range(len(lines)))
    assert count_frames(video) == len(lines)


def test_second_signal_stops_without_draining_and_still_finalises(smile_model_files, data_dir, tmp_path):
    video, events = tmp_path / "out.avi", tmp_path / "e.jsonl"
    proc = edgecv("run", "--model", str(smile_model_files["onnx"]), "--source",
                  str(data_dir / "videos" / "vtest_pets2009_480x360_h264.avi"), "--save", str(video),
                  "--json-out", str(events), *FAST)
    wait_for(lambda: lines_in(events) >= 5, proc, "5 frames")
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGINT)
    out, err = finish(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    lines = whole_json_lines(events)
    frames = [e["frame"] for e in lines]
    # The second signal drops the frames still queued at the sources: a gap is allowed, disorder is not.
    assert frames == sorted(set(frames)) and len(frames) >= 5
    assert count_frames(video) == len(lines) == json.loads(out)["frames"]


def test_sigterm_while_the_only_stream_never_connected(smile_model_files):
    """Roboflow's bug #685 at the CLI: nothing ever arrives, and SIGTERM still ends the run cleanly."""
    proc = edgecv("run", "--model", str(smile_model_files["onnx"]), "--source",
                  f"http://127.0.0.1:{free_port()}/live", "--detector", "none", *FAST)
    err_seen = b""

    def retrying() -> bool:
        nonlocal err_seen
        os.set_blocking(proc.stderr.fileno(), False)
        chunk = proc.stderr.read()
        err_seen += chunk or b""
        return b"retrying in" in err_seen

    wait_for(retrying, proc, "a failed first connection")
    os.set_blocking(proc.stderr.fileno(), True)
    proc.send_signal(signal.SIGTERM)
    out, err = finish(proc, timeout=60)
    err = err_seen.decode(errors="replace") + err
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    summary = json.loads(out)
    assert summary["frames"] == 0 and summary["sources"]["s0"]["state"] == "stopped"


def test_sigkill_mid_run_leaves_only_whole_json_lines(smile_model_files, data_dir, tmp_path):
    events = tmp_path / "e.jsonl"
    proc = edgecv("run", "--model", str(smile_model_files["tflite"]), "--source",
                  str(data_dir / "videos" / "vtest_pets2009_480x360_h264.avi"), "--detector", "none",
                  "--json-out", str(events), *FAST)
    wait_for(lambda: lines_in(events) >= 50, proc, "50 frames")
    proc.kill()
    proc.wait(30)
    # Nothing at the output path (a kill is not a finished run); its temporary holds whole lines only.
    assert not events.exists()
    lines = whole_json_lines(partial(events))
    assert len(lines) >= 50
    assert [e["frame"] for e in lines] == list(range(len(lines)))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux) to fill a disk")
def test_disk_full_under_one_sink_is_reported_and_the_other_sink_completes(smile_model_files, tmp_path):
    video = tmp_path / "out.avi"
    proc = run_cli("run", "--model", str(smile_model_files["onnx"]), "--source", "synthetic://96x64?frames=40",
                   "--detector", "none", "--json-out", "/dev/full", "--save", str(video), *FAST, timeout=120)
    err = proc.stderr.decode()
    assert "Traceback" not in err
    assert "sink json failed" in err and "No space left on device" in err
    assert proc.returncode == 1 and "output failed during the run" in err  # an asked-for output is incomplete
    summary = json.loads(proc.stdout)
    assert "json" in summary["sinks_failed"] and summary["frames"] == 40
    assert count_frames(video) == 40


def test_video_that_shrinks_while_read_ends_with_what_decoded(smile_model_files, data_dir, tmp_path):
    """The file is truncated under the reader (a camera's recording rotated away, a copy still running):
    the run ends with the frames it got, warns, exits 0."""
    video = tmp_path / "growing.avi"
    video.write_bytes((data_dir / "videos" / "vtest_pets2009_480x360_h264.avi").read_bytes())
    events = tmp_path / "e.jsonl"
    proc = edgecv("run", "--model", str(smile_model_files["onnx"]), "--source", str(video), "--detector", "none",
                  "--json-out", str(events), *FAST)
    wait_for(lambda: lines_in(events) >= 20, proc, "20 frames")
    os.truncate(video, video.stat().st_size // 5)
    out, err = finish(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    lines = whole_json_lines(events)
    assert 20 <= len(lines) < 795
    assert f"claims 795 frames but only {len(lines)} decoded" in err
    assert json.loads(out)["frames"] == len(lines)


def test_checkpoints_left_by_a_crash_are_never_the_latest(tmp_path):
    """What a kill (or a disk fault) can leave in ckpt/: the state written but not the model, a temporary
    file, a state file cut short. The latest is the newest checkpoint that is whole."""
    pytest.importorskip("keras")
    from edgecv.train.callbacks import latest_checkpoint

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for n in (1, 2):
        (ckpt / f"epoch-{n:04d}.json").write_text(json.dumps({"epoch": n, "history": []}))
        (ckpt / f"epoch-{n:04d}.keras").write_bytes(b"model")
    (ckpt / "epoch-0003.json").write_text(json.dumps({"epoch": 3, "history": []}))  # killed before the model
    (ckpt / ".epoch-0003.4242.tmp.keras").write_bytes(b"half a mod")               # the model being written
    path, state = latest_checkpoint(ckpt)
    assert path.name == "epoch-0002.keras" and state["epoch"] == 2

    (ckpt / "epoch-0004.keras").write_bytes(b"model")
    (ckpt / "epoch-0004.json").write_text('{"epoch": 4, "hist')                     # state cut short
    path, state = latest_checkpoint(ckpt)
    assert path.name == "epoch-0002.keras" and state["epoch"] == 2
