"""`edgecv smile` end to end on the real video: the shipped model, a playable annotated video,
JSON lines with the people of smile.mp4, a real window under Xvfb closed with `q`, bad sources."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import assert_clean_error, count_frames, run_cli
from models import smile_model_files  # noqa: F401  (fixture)

from edgecv import zoo


@pytest.fixture(scope="module")
def shipped_run(tmp_path_factory):
    """The README's main job: the shipped model on smile.mp4, headless, video + JSON lines."""
    out = tmp_path_factory.mktemp("smile")
    proc = run_cli("smile", "--source", "video:smile.mp4", "--no-display", "--save", str(out / "smile.mp4"),
                   "--json-out", str(out / "smile.jsonl"), "--metrics-interval", "0")
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return out, json.loads(proc.stdout)


def test_shipped_model_exists_with_its_card():
    assert "smile" in zoo.names()
    for suffix in (".fp16.tflite", ".onnx", ".int8.onnx"):
        assert (zoo.ZOO_DIR / f"smile{suffix}").stat().st_size > 0, suffix
    card = (zoo.ZOO_DIR / "smile.md").read_text()
    assert "edgecv train smile" in card and "accuracy" in card.lower()
    total = sum(p.stat().st_size for p in zoo.ZOO_DIR.glob("smile*"))
    assert total < 16 * 2**20  # the shipped zoo stays small


def test_summary_and_playable_video(shipped_run, data_dir):
    out, summary = shipped_run
    assert summary["frames"] == count_frames(data_dir / "videos/smile.mp4") == 55
    assert summary["faces"] >= 3 * 55 * 0.9 and summary["fps"] > 0
    assert count_frames(out / "smile.mp4") == 55


def test_events_show_two_smiling_women_and_a_man_who_is_not(shipped_run):
    out, _ = shipped_run
    events = [json.loads(line) for line in (out / "smile.jsonl").read_text().splitlines()]
    events = [e for e in events if not e.get("end_of_run")]  # the women still smile at the end
    assert len(events) == 55 and [e["frame"] for e in events] == list(range(55))
    per_frame = [len(e["detections"]) for e in events]
    assert np.mean([n == 3 for n in per_frame]) >= 0.9, per_frame
    # People by horizontal position (boxes in 1920x1080): the woman in front on the left (x ~ 200-640),
    # the woman at the back in the centre (x ~ 830-950, small and blurred), the man with the cap on
    # the right (x ~ 1280-1600).
    votes = {"left": [], "centre": [], "right": []}
    for e in events:
        for d in e["detections"]:
            cx = d["box"][0] + d["box"][2] / 2
            who = "left" if cx < 700 else ("centre" if cx < 1150 else "right")
            votes[who].append(d["label"] == "smiling")
    assert np.mean(votes["left"]) > 0.8, "the woman in front smiles"
    assert np.mean(votes["centre"]) > 0.5, "the woman at the back smiles"
    assert np.mean(votes["right"]) < 0.5, "the man does not smile"


def test_eval_shipped_model_on_a_smiles_folder(data_dir, tmp_path):
    proc = run_cli("eval", "smile", "--data", str(data_dir / "smiles"), "--split", "test", "--json")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out = json.loads(proc.stdout)
    assert out["n"] > 2000 and out["accuracy"] >= 0.93


@pytest.mark.parametrize("source, match", [
    ("{tmp}/missing.mp4", "no such file|does not exist|cannot open"),
    ("{tmp}/random.mp4", "cannot be opened as a video"),
    ("7", "camera"),
])
def test_bad_sources_are_clean_errors(smile_model_files, tmp_path, source, match):
    (tmp_path / "random.mp4").write_bytes(os.urandom(50_000))
    proc = run_cli("smile", "--model", str(smile_model_files["onnx"]), "--source", source.replace("{tmp}", str(tmp_path)),
                   "--no-display",
                   "--metrics-interval", "0", timeout=120)
    assert_clean_error(proc, match)


def test_images_folder_as_source(smile_model_files, data_dir, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copy(data_dir / "videos/smile.jpg", imgs / "a.jpg")
    shutil.copy(data_dir / "videos/smile.jpg", imgs / "b.jpg")
    proc = run_cli("smile", "--model", str(smile_model_files["onnx"]), "--source", str(imgs), "--no-display",
                   "--json-out", str(tmp_path / "e.jsonl"), "--metrics-interval", "0")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    events = [json.loads(x) for x in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert len(events) == 2 and all(len(e["detections"]) == 1 for e in events)  # one woman in the still


def test_a_model_that_is_not_a_smile_model_is_refused(smile_model_files, tmp_path):
    spec = json.loads(Path(str(smile_model_files["keras"]) + ".spec.json").read_text())
    spec.update(task="classify", labels=list("0123456789"))
    shutil.copy(smile_model_files["keras"], tmp_path / "d.keras")
    (tmp_path / "d.keras.spec.json").write_text(json.dumps(spec))
    proc = run_cli("smile", "--model", str(tmp_path / "d.keras"), "--source", "video:smile.mp4", "--no-display")
    assert_clean_error(proc, "must have 2 labels")


@pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("xdotool") and shutil.which("xwd")),
                    reason="needs Xvfb, xdotool and xwd (make test installs them)")
def test_window_under_xvfb_shows_labelled_faces_and_closes_on_q(tmp_path, data_dir):
    disp_r, disp_w = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(disp_w), "-screen", "0", "1920x1080x24", "-nolisten", "tcp"],
                            pass_fds=(disp_w,), stderr=subprocess.DEVNULL)
    os.close(disp_w)
    display = ":" + os.read(disp_r, 16).decode().strip()
    env = dict(os.environ, DISPLAY=display)
    app = None
    try:
        # --max-fps 4 keeps the 55-frame video on screen for ~14 s: time to look and press q.
        app = subprocess.Popen([sys.executable, "-m", "edgecv", "smile", "--source", "video:smile.mp4",
                                "--max-fps", "4", "--metrics-interval", "0"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        win = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and win is None:
            r = subprocess.run(["xdotool", "search", "--name", "edgecv"], env=env, capture_output=True, text=True)
            win = r.stdout.split()[0] if r.stdout.split() else None
            assert app.poll() is None, app.stderr.read().decode()[-2000:]
            time.sleep(0.3)
        assert win, "the window never appeared"
        time.sleep(2.0)  # let a few annotated frames be drawn
        shot = tmp_path / "screen.xwd"
        subprocess.run(["xwd", "-root", "-silent", "-out", str(shot)], env=env, check=True)
        png = tmp_path / "screen.png"
        subprocess.run(["convert", f"xwd:{shot}", str(png)], check=True)
        img = cv2.imread(str(png))
        assert img is not None and img.std() > 20, "the screen is blank"
        # The annotation colours are on screen: green boxes (smiling) and red (not smiling).
        green = np.all(img == (0, 200, 0), axis=2).sum()
        red = np.all(img == (0, 0, 255), axis=2).sum()
        assert green > 200, f"no green (smiling) box drawn: {green} px"
        assert red > 100, f"no red (not smiling) box drawn: {red} px"
        subprocess.run(["xdotool", "windowactivate", "--sync", win], env=env, capture_output=True)
        subprocess.run(["xdotool", "key", "--window", win, "q"], env=env, check=True)
        out, err = app.communicate(timeout=60)
        assert app.returncode == 0, err.decode()[-2000:]
        assert json.loads(out)["frames"] < 55, "q should stop the app before the video ends"
    finally:
        if app is not None and app.poll() is None:
            app.kill()
        xvfb.terminate()
        xvfb.wait(10)
