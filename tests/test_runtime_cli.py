"""`edgecv run` as a user runs it: no TensorFlow on import, clean errors for bad sources, the lying
header, Ctrl+C / SIGTERM leaving a playable video and complete JSON lines, no display."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, assert_clean_error, count_frames, run_cli
from models import smile_model_files  # noqa: F401  (fixture)


def test_runtime_import_and_help_load_no_tensorflow():
    # Every module of the runtime, the apps and the core, found by walking the packages (a new
    # module is checked without anyone adding it here).
    code = ("import sys, contextlib, io, importlib, pkgutil\n"
            "import edgecv, edgecv.runtime, edgecv.apps, edgecv.data, edgecv.zoo\n"
            "for pkg in (edgecv, edgecv.runtime, edgecv.apps, edgecv.data, edgecv.zoo):\n"
            "    for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + '.'):\n"
            "        if m.name.split('.')[1] not in ('train', 'export', '__main__'):\n"
            "            importlib.import_module(m.name)\n"
            "from edgecv.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n"
            "        main(['run', '--help'])\n"
            "    except SystemExit:\n"
            "        pass\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))\n"
            "print(bad)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip().splitlines()[-1] == "[]"


def test_help_shows_an_example():
    proc = run_cli("run", "--help")
    out = proc.stdout.decode()
    assert proc.returncode == 0 and "examples:" in out and "--max-delay-ms" in out and "--sources-file" in out


@pytest.mark.parametrize("source, match", [
    ("missing.mp4", r"edgecv: error: no such file: .*missing\.mp4"),
    ("random.mp4", r"edgecv: error: .*random\.mp4: (cannot be opened as a video|opens but no frame decodes)"),
    ("93", r"edgecv: error: camera 93 could not be opened"),
])
def test_bad_sources_give_one_line_and_exit_2(smile_model_files, tmp_path, source, match):
    (tmp_path / "random.mp4").write_bytes(os.urandom(200_000))
    proc = run_cli("run", "--model", str(smile_model_files["onnx"]), "--source", source, "--no-display",
                   cwd=tmp_path, timeout=120)
    assert_clean_error(proc, match)
    assert proc.returncode == 2


def test_bad_options_are_clean_errors(smile_model_files, tmp_path):
    model = str(smile_model_files["onnx"])
    assert_clean_error(run_cli("run", "--model", model, "--no-display"), r"no source given")
    assert_clean_error(run_cli("run", "--model", model, "--source", "synthetic://8x8", "--batch", "0"),
                       r"--batch must be a positive integer; got 0")
    assert_clean_error(run_cli("run", "--model", model, "--source", "x", "--detector", "hog"),
                       r"invalid choice: 'hog'")
    assert_clean_error(run_cli("run", "--model", model, "--source", "synthetic://8x8", "--save", str(tmp_path / "o.mkv"),
                               "--no-display"), r"video output must end in \.avi or \.mp4; got 'o\.mkv'")
    assert_clean_error(run_cli("run", "--model", str(tmp_path / "none.onnx"), "--source", "synthetic://8x8",
                               "--no-display"), r"no such model file")


def test_header_that_lies_exits_0_with_a_warning(smile_model_files, data_dir, tmp_path):
    events = tmp_path / "e.jsonl"
    proc = run_cli("run", "--model", str(smile_model_files["tflite"]), "--source",
                   str(data_dir / "videos" / "crowd_topdown_1280x720_h264.avi"), "--detector", "none",
                   "--no-display", "--json-out", str(events), "--metrics-interval", "0", timeout=300)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "claims 682 frames but only 341 decoded" in err and "Traceback" not in err
    assert len(events.read_text().splitlines()) == 341
    summary = json.loads(proc.stdout)
    assert summary["frames"] == 341 and summary["state"] == "stopped"


def test_sources_file_and_two_outputs(smile_model_files, data_dir, tmp_path):
    listing = tmp_path / "sources.txt"
    listing.write_text(f"# two streams\n{data_dir / 'videos' / 'smile.mp4'}\n\nsynthetic://96x64?frames=20\n")
    proc = run_cli("run", "--model", str(smile_model_files["onnx"]), "--sources-file", str(listing),
                   "--detector", "none", "--no-display", "--save", str(tmp_path / "out.avi"), timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    summary = json.loads(proc.stdout)
    assert summary["outputs"]["s0"]["frames"] == 55 and summary["outputs"]["s1"]["frames"] == 20
    for sid, n in (("s0", 55), ("s1", 20)):
        assert count_frames(tmp_path / f"out.{sid}.avi") == n


def test_no_display_means_no_window_and_no_crash(smile_model_files, tmp_path):
    env = {"DISPLAY": "", "WAYLAND_DISPLAY": ""}
    proc = run_cli("run", "--model", str(smile_model_files["onnx"]), "--source", "synthetic://64x64?frames=5",
                   "--detector", "none", env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "no display found" in proc.stderr.decode()


@pytest.mark.display
@pytest.mark.skipif(not shutil.which("Xvfb"), reason="needs Xvfb")
def test_window_under_xvfb(smile_model_files, tmp_path):
    display = f":{90 + os.getpid() % 100}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        proc = run_cli("run", "--model", str(smile_model_files["onnx"]), "--source", "synthetic://64x64?frames=10",
                       "--detector", "none", env={"DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        assert json.loads(proc.stdout)["frames"] == 10
    finally:
        xvfb.terminate()
        xvfb.wait(10)


@pytest.mark.parametrize("sig, suffix", [(signal.SIGINT, ".avi"), (signal.SIGTERM, ".mp4")])
def test_signal_drains_and_leaves_playable_video_and_complete_json(smile_model_files, data_dir, tmp_path, sig, suffix):
    video, events = tmp_path / f"out{suffix}", tmp_path / "e.jsonl"
    cmd = [sys.executable, "-m", "edgecv", "run", "--model", str(smile_model_files["onnx"]),
           "--source", str(data_dir / "videos" / "vtest_pets2009_480x360_h264.avi"), "--no-display",
           "--save", str(video), "--json-out", str(events), "--metrics-interval", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            # Until the run ends the lines go to a hidden temporary beside the output (edgecv.safeio).
            part = sorted(tmp_path.glob(".e.jsonl.edgecv-*.part*"))
            if part and part[0].exists() and len(part[0].read_bytes().splitlines()) >= 10:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err.decode()
    assert proc.returncode == 0, err
    assert "draining" in err and "Traceback" not in err
    text = events.read_text()
    assert text.endswith("\n")
    lines = [json.loads(x) for x in text.splitlines()]  # every line parses: none cut in half
    assert 10 <= len(lines) < 795
    assert [e["frame"] for e in lines] == list(range(len(lines)))
    assert count_frames(video) == len(lines)
    assert json.loads(out)["frames"] == len(lines)


def test_sources_file_lines_carry_their_own_policy(smile_model_files, data_dir, tmp_path):
    """Per-stream options at the end of a line override --policy / --max-fps for that stream;
    a path with spaces stays whole."""
    import shutil

    folder = tmp_path / "my videos"
    folder.mkdir()
    shutil.copy(data_dir / "videos" / "smile.mp4", folder / "a clip.mp4")
    listing = tmp_path / "sources.txt"
    listing.write_text(f"{folder / 'a clip.mp4'}   policy=every\n"
                       "synthetic://96x64?frames=30 policy=latest max_fps=200\n")
    proc = run_cli("run", "--model", str(smile_model_files["onnx"]), "--sources-file", str(listing),
                   "--detector", "none", "--no-display", "--policy", "latest", timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    sources = json.loads(proc.stdout)["sources"]
    assert sources["s0"]["uri"] == str(folder / "a clip.mp4") and sources["s0"]["policy"] == "every"
    assert sources["s0"]["frames"] == 55  # `every` on this stream despite --policy latest: nothing dropped
    assert sources["s1"]["policy"] == "latest"
    listing.write_text("synthetic://8x8 max_fps=fast\n")
    assert_clean_error(run_cli("run", "--model", str(smile_model_files["onnx"]), "--sources-file", str(listing)),
                       r"line 1: max_fps must be a positive number; got 'fast'")
