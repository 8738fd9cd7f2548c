"""Track ids, smile events and the smile shutter on the real video (smile.mp4: two smiling women and a
man who does not smile), the hysteresis and id rules on made-up boxes, and the live options' bad
input (a port in use, a broker that never answers, a shutter folder that cannot be written)."""
from __future__ import annotations

import dataclasses
import json
import socket
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import assert_clean_error, run_cli

from edgecv.runtime.detect import Box
from edgecv.runtime.identity import IdentityTracker
from edgecv.runtime.results import Detection, FrameResult
from edgecv.runtime.sources import Frame

SMILE = ["smile", "--source", "video:smile.mp4", "--no-display", "--metrics-interval", "0"]


def who(box: list[int], width: int = 1920) -> str:
    """People of smile.mp4 by where their face is (1920 px wide): the woman in front on the left, the
    woman at the back in the centre, the man with the cap on the right."""
    cx = (box[0] + box[2] / 2) * 1920 / width
    return "left" if cx < 700 else ("centre" if cx < 1150 else "right")


def events_of(path: Path) -> list[dict]:
    """The frame lines (not the run's closing line, see test_a_smile_still_on_at_the_end_is_closed)."""
    return [e for e in all_lines(path) if not e.get("end_of_run")]


def all_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module", params=[1, 3], ids=["detect-every-1", "detect-every-3"])
def smile_run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"ids{request.param}")
    proc = run_cli(*SMILE, "--detect-every", str(request.param), "--json-out", str(out / "e.jsonl"),
                   "--save", str(out / "a.avi"), "--shutter", str(out / "shots"), timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return events_of(out / "e.jsonl"), json.loads(proc.stdout), out


def test_three_people_keep_three_ids_over_all_55_frames(smile_run):
    lines, summary, out = smile_run
    assert len(lines) == 55 and summary["outputs"]["s0"]["frames"] == 55
    ids_of = {"left": Counter(), "centre": Counter(), "right": Counter()}
    for e in lines:
        ids = [d["track_id"] for d in e["detections"]]
        assert len(ids) == len(set(ids)), f"frame {e['frame']}: one id on two faces {ids}"
        for d in e["detections"]:
            ids_of[who(d["box"])][d["track_id"]] += 1
    for person, ids in ids_of.items():
        assert len(ids) == 1, f"{person} had ids {dict(ids)}"
        assert sum(ids.values()) >= 50, f"{person} seen in only {sum(ids.values())} frames"
    assert len({next(iter(c)) for c in ids_of.values()}) == 3


def test_smile_events_for_the_two_women_and_none_for_the_man(smile_run):
    lines, summary, _ = smile_run
    ids = {who(d["box"]): d["track_id"] for e in lines for d in e["detections"]}
    started = [ev for e in lines for ev in e.get("events", []) if ev["event"] == "smile_start"]
    assert sorted(ev["track_id"] for ev in started) == sorted([ids["left"], ids["centre"]])
    for ev in started:
        assert ev["stream"] == "s0" and ev["frame"] < 10 and "time" in ev and "t_capture" in ev
    assert not [ev for e in lines for ev in e.get("events", []) if ev.get("track_id") == ids["right"]]
    assert summary["smile_events"]["smile_start"] == 2


def test_a_smile_still_on_at_the_end_is_closed(smile_run):
    """Both women still smile on smile.mp4's last frame: the run ends their smiles with
    "reason": "ended" in one last JSON line, so no consumer keeps them smiling forever."""
    _, summary, out = smile_run
    lines = all_lines(out / "e.jsonl")
    frames = [e for e in lines if not e.get("end_of_run")]
    ids = {who(d["box"]): d["track_id"] for e in frames for d in e["detections"]}
    assert lines[:-1] == frames and lines[-1]["end_of_run"] is True and lines[-1]["source"] == "s0"
    ends = lines[-1]["events"]
    assert sorted(ev["track_id"] for ev in ends) == sorted([ids["left"], ids["centre"]])
    starts = {ev["track_id"]: ev for e in frames for ev in e.get("events", []) if ev["event"] == "smile_start"}
    for ev in ends:
        assert ev["event"] == "smile_end" and ev["reason"] == "ended" and ev["frame"] == 54
        assert ev["started_frame"] == starts[ev["track_id"]]["frame"] and ev["frames"] == 54 - ev["started_frame"]
        assert ev["duration_s"] > 0 and 0.5 <= ev["peak"] <= 1
    assert summary["smile_events"]["smile_end"] == summary["smile_events"]["smile_start"] == 2
    # the hooks (track ids, fps, smile events) are a stage of their own in the metrics, once a frame
    assert summary["stages_ms"]["hooks"]["n"] == summary["stages_ms"]["other"]["n"] == 55


def test_the_shutter_never_fires_on_smile_mp4(smile_run):
    lines, summary, out = smile_run
    assert summary["smile_events"]["shutter"] == 0
    assert (out / "shots").is_dir() and not list((out / "shots").iterdir())
    assert not [ev for e in lines for ev in e.get("events", []) if ev["event"] == "shutter"]


def test_the_shutter_fires_on_a_clip_of_only_the_two_women(data_dir, tmp_path):
    """The same video cut to its left 1150 pixels: the man is out of the picture."""
    cap = cv2.VideoCapture(str(data_dir / "videos/smile.mp4"))
    clip = tmp_path / "women.avi"
    writer = None
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        crop = np.ascontiguousarray(frame[:, :1150])
        if writer is None:
            writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25, (1150, crop.shape[0]))
        writer.write(crop)
        n += 1
    writer.release()
    assert n == 55
    shots = tmp_path / "shots"
    proc = run_cli("smile", "--source", str(clip), "--no-display", "--metrics-interval", "0",
                   "--json-out", str(tmp_path / "e.jsonl"), "--shutter", str(shots), "--shutter-interval", "1000",
                   timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    summary = json.loads(proc.stdout)
    photos = sorted(shots.glob("*.jpg"))
    assert summary["smile_events"]["shutter"] == len(photos) == 1  # one per --shutter-interval
    image = cv2.imread(str(photos[0]))
    assert image is not None and image.shape[:2] == (1080, 1150)
    fired = [ev for e in events_of(tmp_path / "e.jsonl") for ev in e.get("events", []) if ev["event"] == "shutter"]
    assert len(fired) == 1 and fired[0]["people"] == 2 and fired[0]["path"] == str(photos[0])
    assert photos[0].name == f"s0-{fired[0]['frame']:06d}.jpg"


# -- the rules on made-up boxes --------------------------------------------------------------------
def _result(index: int, dets: list[Detection], sid: str = "s0") -> FrameResult:
    return FrameResult(Frame(sid, index, float(index) / 25, np.zeros((4, 4, 3), np.uint8)), dets)


def test_ids_survive_a_few_missed_detections_and_end_after_max_missed():
    tracker = IdentityTracker(max_missed=5)
    a, b = Box(100, 100, 50, 50), Box(400, 100, 50, 50)
    assert tracker.assign("s0", 0, [a, b]) == [1, 2]
    assert tracker.assign("s0", 1, [Box(404, 102, 50, 50), Box(103, 100, 50, 50)]) == [2, 1]
    for i in range(2, 7):  # b missed for 5 frames, a still there
        assert tracker.assign("s0", i, [Box(103 + i, 100, 50, 50)]) == [1]
    assert tracker.assign("s0", 7, [Box(110, 100, 50, 50), Box(405, 101, 50, 50)]) == [1, 2]
    for i in range(8, 15):
        tracker.assign("s0", i, [Box(110, 100, 50, 50)])
    assert tracker.assign("s0", 15, [Box(110, 100, 50, 50), Box(405, 101, 50, 50)]) == [1, 3]
    assert tracker.assign("s1", 0, [a]) == [1]  # ids are per stream


def test_hysteresis_one_frame_never_flips_and_a_lost_smiler_ends():
    from edgecv.apps.smile_events import SmileEvents

    tracker, smiles = IdentityTracker(max_missed=2), SmileEvents(on_frames=3, off_frames=3)
    scores = [0.9, 0.2, 0.9, 0.9, 0.9, 0.1, 0.9, 0.1, 0.1, 0.1, 0.9]  # p(smiling), frame by frame
    seen = []
    for i, p in enumerate(scores):
        r = _result(i, [Detection(Box(10, 10, 40, 40), "smiling" if p >= 0.5 else "not_smiling",
                                  int(p >= 0.5), p if p >= 0.5 else 1 - p)])
        tracker(r)
        smiles(r)
        seen += [(i, ev["event"]) for ev in r.events]
    assert seen == [(4, "smile_start"), (9, "smile_end")]
    for i in range(11, 14):  # a smile that starts, then the face is gone for good
        r = _result(i, [Detection(Box(10, 10, 40, 40), "smiling", 1, 0.95)])
        tracker(r)
        smiles(r)
        seen += [(i, ev["event"]) for ev in r.events]
    assert seen[-1] == (12, "smile_start")  # frames 10, 11, 12 in a row
    for i in range(14, 18):
        r = _result(i, [])
        tracker(r)
        smiles(r)
        for ev in r.events:
            seen.append((i, ev["event"], ev["reason"], ev["frames"]))
    assert seen[-1] == (16, "smile_end", "lost", 4)  # last seen on 13, max_missed 2


# -- bad input ---------------------------------------------------------------------------------------
def test_a_port_in_use_is_one_line_before_the_model_loads():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        proc = run_cli(*SMILE, "--serve", f"127.0.0.1:{port}", timeout=120)
    err = assert_clean_error(proc, r"--serve 127\.0\.0\.1:\d+: cannot listen there \(the port is in use\)")
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flags, match", [
    (["--serve", "host:port"], "the port must be a number"),
    (["--serve", "127.0.0.1:70000"], "the port must be a number"),
    (["--serve", "::1:80"], r"\[ADDRESS\]:PORT"),
    (["--serve", "8080", "--serve-quality", "101"], "--serve-quality must be from 1 to 100"),
    (["--mqtt", "127.0.0.1:x"], "the port must be a number"),
    (["--mqtt", "127.0.0.1", "--mqtt-topic", "a/#"], "topic prefix"),
    (["--shutter", "{file}/shots"], "not a folder|cannot write"),
    (["--shutter", "{file}"], "not a folder"),
])
def test_bad_live_options_are_one_line(tmp_path, flags, match):
    f = tmp_path / "file.txt"
    f.write_text("x")
    proc = run_cli(*SMILE, *[x.replace("{file}", str(f)) for x in flags], timeout=120)
    err = assert_clean_error(proc, match)
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, err


def test_a_broker_that_never_answers_is_a_warning_and_the_run_goes_on(tmp_path):
    """A socket that accepts and then says nothing (no CONNACK): the run warns, writes every JSON line
    and exits 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        port = s.getsockname()[1]
        proc = run_cli(*SMILE, "--mqtt", f"127.0.0.1:{port}", "--json-out", str(tmp_path / "e.jsonl"), timeout=120)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err[-2000:]
    assert "does not answer" in err and "Traceback" not in err
    assert len(events_of(tmp_path / "e.jsonl")) == 55
    assert json.loads(proc.stdout)["mqtt"]["connects"] == 0


def test_a_shutter_folder_that_goes_away_mid_run_is_a_warning(tmp_path, data_dir):
    """The shutter cannot save (its folder was replaced by a file after the start check): a warning
    per photo, the run and its other outputs go on."""
    from edgecv.apps.smile_events import SmileEvents

    shots = tmp_path / "shots"
    shots.mkdir()
    smiles = SmileEvents(shutter=shots, shutter_frames=1, on_frames=1)
    shots.rmdir()
    shots.write_text("now a file")
    tracker = IdentityTracker()
    r = _result(0, [Detection(Box(10, 10, 40, 40), "smiling", 1, 0.99)])
    tracker(r)
    smiles(r)
    assert smiles.counts["shutter_failed"] == 1 and smiles.counts["shutter"] == 0
    assert [ev["event"] for ev in r.events] == ["smile_start"]


def test_annotation_draws_the_track_id_on_a_filled_label_and_the_stream_fps():
    image = np.full((360, 640, 3), 128, np.uint8)
    det = Detection(Box(200, 150, 80, 80), "smiling", 1, 0.97)
    plain = FrameResult(Frame("s0", 0, 0.0, image), [det]).annotated()
    r = FrameResult(Frame("s0", 0, 0.0, image), [dataclasses.replace(det, track_id=7)], live={"stream_fps": 24.5})
    drawn = r.annotated()
    label = drawn[120:150, 200:300]  # above the box: the label's filled background (green, BGR)
    green = np.all(label == (0, 200, 0), axis=-1).mean()
    assert green > 0.5, green
    assert not np.array_equal(plain[120:150, 200:320], drawn[120:150, 200:320])  # "#7 " changes the text
    corner = drawn[0:20, 0:100]
    assert np.all(corner == (40, 40, 40), axis=-1).mean() > 0.5  # the "s0  24.5 fps" header
    small = r.annotated_at(320)
    assert small.shape == (180, 320, 3)


@pytest.mark.parametrize("module, flags, match", [
    ("prometheus_client", ["--serve", "0"], r"--serve needs prometheus-client.*pip install 'edgecv\[live\]'"),
    ("paho", ["--mqtt", "127.0.0.1"], r"--mqtt needs paho-mqtt.*pip install 'edgecv\[live\]'"),
])
def test_a_missing_live_extra_names_it(tmp_path, module, flags, match):
    """As on the base install: the module cannot be imported (a stand-in on PYTHONPATH that fails as a
    missing module does)."""
    stub = tmp_path / "stubs" / module
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named {module!r}\", name={module!r})\n")
    proc = run_cli(*SMILE, *flags, env={"PYTHONPATH": str(tmp_path / "stubs")}, timeout=120)
    err = assert_clean_error(proc, match)
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("text, expected", [
    ("8080", ("127.0.0.1", 8080)), (":8080", ("127.0.0.1", 8080)), ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("[::1]:9000", ("::1", 9000)), ("localhost:0", ("localhost", 0)),
])
def test_serve_addresses(text, expected):
    from edgecv.runtime.web import is_loopback, parse_hostport

    assert parse_hostport(text) == expected
    assert is_loopback(expected[0]) == (expected[0] != "0.0.0.0")


def test_a_shutter_folder_without_write_permission_is_one_line(tmp_path):
    """A real EACCES: as `nobody` through setpriv when the tests run as root (root may write anywhere)."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    prefix: list[str] = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: root can write to a read-only folder")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    public = Path(tempfile.mkdtemp(prefix="edgecv-shutter-"))
    try:
        public.chmod(0o755)
        (public / "cache").mkdir(mode=0o777)
        (public / "cache").chmod(0o777)
        shots = public / "shots"
        shots.mkdir()
        shots.chmod(0o555)
        env = dict(os.environ, HOME=str(public), EDGECV_CACHE=str(public / "cache"), PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.run([*prefix, sys.executable, "-m", "edgecv", *SMILE, "--shutter", str(shots)],
                              capture_output=True, env=env, cwd=public, timeout=120)
        err = assert_clean_error(proc, r"--shutter .*shots: cannot write there \(Permission denied\)")
        assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, err
    finally:
        shutil.rmtree(public, ignore_errors=True)
