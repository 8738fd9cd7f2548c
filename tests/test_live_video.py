"""--save OUT.mp4 is H.264 (browsers play it) where ffmpeg has libx264, and mp4v with a warning where
it does not; the file is the whole run either way."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import count_frames, run_cli

SMILE = ["smile", "--source", "video:smile.mp4", "--no-display", "--metrics-interval", "0"]


def codec(path) -> str:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
    finally:
        cap.release()
    return "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)).lower()


@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs ffmpeg")
def test_save_mp4_is_h264_with_every_frame(tmp_path):
    out = tmp_path / "a.mp4"
    proc = run_cli(*SMILE, "--save", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert codec(out) in ("avc1", "h264"), codec(out)
    assert count_frames(out) == 55 == json.loads(proc.stdout)["outputs"]["s0"]["frames"]
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
                            "stream=codec_name,pix_fmt", "-of", "csv=p=0", str(out)], capture_output=True, text=True)
    assert probe.stdout.strip() == "h264,yuv420p"  # what browsers decode
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_without_an_h264_encoder_mp4v_with_a_warning(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    out = tmp_path / "a.mp4"
    proc = run_cli(*SMILE, "--save", str(out), env={"PATH": str(empty)}, timeout=300)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err[-2000:]
    assert "no H.264 encoder (ffmpeg with libx264) found" in err and "Traceback" not in err
    assert codec(out) in ("mp4v", "fmp4") and count_frames(out) == 55  # FFmpeg names MPEG-4 part 2 FMP4
