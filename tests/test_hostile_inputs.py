"""Hostile inputs, round 2: tracebacks where a message belongs, silent wrong answers, unbounded reads.
Typed training configs (one line per bad field, nothing written), environment errors as one line,
credentials never shown, an existing path with [ ] ? * is that file, a run that produced nothing
exits non-zero, size limits on stdin / --sources-file / --config, a pixel limit on frames."""
from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib

import cv2
import numpy as np
import pytest

from conftest import REPO, assert_clean_error, free_port, run_cli
from edgecv.errors import ConfigError, SourceError
from edgecv.runtime.sources import parse_source
from edgecv.safeio import redact_url

MODEL = REPO / "edgecv" / "zoo" / "smile.onnx"
FAST = ["--detector", "none", "--no-display", "--metrics-interval", "0"]


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return run_cli("run", "--model", str(MODEL), *args, *FAST, timeout=kw.pop("timeout", 120), **kw)


# --- training configs ---------------------------------------------------------------------------
@pytest.mark.parametrize("values, bad", [
    ({"epochs": "five"}, ["epochs: expected an integer from 1 to 100000; got 'five'"]),
    ({"input_size": [100_000, 100_000]}, ["input_size: expected [H, W], each an integer from 8 to 4096"]),
    ({"batch_size": 10**12, "workers": 10_000}, ["batch_size: expected an integer from 1 to 65536",
                                                  "workers: expected an integer from 1 to 256"]),
    ({"input_size": 28}, ["input_size: expected [H, W]"]),
    ({"input_size": [28]}, ["input_size: expected [H, W]"]),
    ({"epochs": 2.5, "batch_size": True}, ["epochs: expected an integer", "batch_size: expected an integer"]),
    ({"mean": "no"}, ["mean: expected true or false; got 'no'"]),
    ({"lr": float("nan")}, ["lr: expected a number > 0"]),
    ({"lr": "fast"}, ["lr: expected a number > 0; got 'fast'"]),
    ({"momentum": 5}, ["momentum: expected a number from 0 to below 1"]),
    ({"aug": "strng"}, ["aug: expected one of"]),
    ({"colour": "grey"}, ["colour: expected one of null, gray, bgr, rgb"]),
    ({"model_kw": ["dropout", 0.5]}, ["model_kw: expected a mapping"]),
    ({"seed": "42", "workers": 0, "keep": "worst"}, ["seed: expected an integer", "workers: expected an integer from 1",
                                                      "keep: expected one of best, last"]),
])
def test_typed_config_names_every_bad_field_on_its_own_line(values, bad):
    from edgecv.train.config import TrainConfig

    with pytest.raises(ConfigError) as e:
        TrainConfig(out="x", **values)
    lines = str(e.value).splitlines()
    for b in bad:
        assert any(b in line for line in lines), (b, lines)
    assert len([x for x in lines if ": expected" in x or "unknown" in x]) == len(bad)


@pytest.mark.parametrize("values, match", [
    ({"schedule": "step", "schedule_kw": {"drop_evry": 5}}, r"schedule 'step' takes no option 'drop_evry'"),
    ({"schedule": "step", "schedule_kw": {"factor": "half"}}, r"schedule_kw\.factor: expected a number in \(0, 1\]"),
    ({"schedule": "piecewise", "schedule_kw": {"boundaries": [5], "values": [0.1]}}, r"one more value than"),
    ({"schedule": "none", "schedule_kw": {"power": 2}}, r"schedule 'none' takes no option 'power'"),
])
def test_schedule_options_are_checked_not_ignored(values, match):
    from edgecv.train.config import TrainConfig

    with pytest.raises(ConfigError, match=match):
        TrainConfig(out="x", **values)


def test_unknown_model_option_is_refused_before_the_run_folder_exists(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train", "classify", "--arch", "lenet", "--data", "mnist", "--model-kw", "dropuot=0.5",
                   "--out", str(out), timeout=300)
    assert_clean_error(proc, r"model 'lenet' takes no option\(s\) dropuot; it takes: .*dropout")
    assert not out.exists()


def test_yaml_numbers_written_as_strings_are_numbers():
    from edgecv.train.config import TrainConfig

    assert TrainConfig(out="x", lr="1e-3").lr == pytest.approx(0.001)  # YAML reads 1e-3 as a string
    assert TrainConfig(out="x", input_size=(32, 32)).input_size == [32, 32]


def test_bad_config_file_is_refused_before_the_run_folder_exists(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text('epochs: "five"\ninput_size: 28\nlr: 0.01\n')
    out = tmp_path / "run"
    proc = run_cli("train", "classify", "--config", str(cfg), "--out", str(out), timeout=120)
    err = assert_clean_error(proc, r"2 bad options")
    assert "epochs: expected an integer from 1 to 100000; got 'five'" in err and "input_size: expected [H, W]" in err
    assert not out.exists()


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("argv, match", [
    (["train", "classify", "--config", "/dev/zero", "--out", "{tmp}/r"], r"config file /dev/zero: more than the"),
    (["run", "--model", str(MODEL), "--sources-file", "/dev/zero", *FAST], r"--sources-file /dev/zero: more than the"),
])
def test_endless_text_inputs_are_refused_at_a_size_limit(tmp_path, argv, match):
    proc = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in argv], timeout=120)
    assert_clean_error(proc, match)
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_captcha_solve_stdin_is_bounded():
    with open("/dev/zero", "rb") as zero:
        proc = subprocess.run([sys.executable, "-m", "edgecv", "captcha", "solve", "-"], stdin=zero,
                              capture_output=True, timeout=120)
    assert proc.returncode == 1 and b"Traceback" not in proc.stderr
    assert b"stdin: more than the 268,435,456-byte limit" in proc.stdout


# --- environment errors ---------------------------------------------------------------------------
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("argv", [
    ["run", "--model", str(MODEL), "--source", "synthetic://32x32?frames=2", *FAST],
    ["captcha", "solve", "--json", "{data}/ezpass/raw/00000.jpg"],
])
def test_a_full_stdout_is_one_line_not_a_traceback(data_dir, argv):
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([sys.executable, "-m", "edgecv", *[a.replace("{data}", str(data_dir)) for a in argv]],
                              stdout=full, stderr=subprocess.PIPE, timeout=120)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err and "Exception ignored" not in err
    assert re.fullmatch(r"edgecv: error: (stdout: )?No space left on device", err.strip().splitlines()[-1])


def test_oserror_at_the_top_level_is_one_line(tmp_path, capsys, monkeypatch):
    """Any OSError a command lets through (no permission, a vanished folder) is the CLI's one line."""
    from edgecv import cli

    def boom(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x"))

    monkeypatch.setattr(cli, "build_parser", lambda: _parser_with(boom))
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["boom"]) == 1
    assert capsys.readouterr().err == f"edgecv: error: {tmp_path / 'x'}: Permission denied\n"
    assert signal.getsignal(signal.SIGTERM) == before  # main() in-process leaves its SIGTERM handler


def _parser_with(func):
    import argparse
    p = argparse.ArgumentParser(prog="edgecv")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers()
    sub.add_parser("boom").set_defaults(func=func)
    return p


# --- credentials ----------------------------------------------------------------------------------
@pytest.mark.parametrize("url, shown", [
    ("rtsp://user:password@cam.local:554/stream", "rtsp://***@cam.local:554/stream"),
    ("rtsp://user:p@ss@cam/1", "rtsp://***@cam/1"),
    ("http://cam/a@b", "http://cam/a@b"),
    ("retrying http://u:x@h/ and rtmp://v:y@g/", "retrying http://***@h/ and rtmp://***@g/"),
    ("/videos/a@b.mp4", "/videos/a@b.mp4"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_credentials_never_reach_logs_summary_or_errors(tmp_path):
    secret = "s3cr3t-pw"
    url = f"http://viewer:{secret}@127.0.0.1:{free_port()}/live"
    summary = tmp_path / "s.json"
    proc = subprocess.Popen([sys.executable, "-m", "edgecv", "run", "--model", str(MODEL), "--source", url,
                             "--summary-out", str(summary), *FAST], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = b""
    try:
        os.set_blocking(proc.stderr.fileno(), False)
        deadline = time.monotonic() + 120  # bounds a broken run; not a speed check
        while b"retrying in" not in seen:
            assert proc.poll() is None and time.monotonic() < deadline, seen.decode(errors="replace")
            seen += proc.stderr.read() or b""
            time.sleep(0.05)
        os.set_blocking(proc.stderr.fileno(), True)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    everything = seen + err + out + summary.read_bytes()
    assert secret.encode() not in everything
    s = json.loads(out)["sources"]["s0"]
    assert s["uri"].startswith("http://***@127.0.0.1:") and "could not be opened" in s["error"]
    assert b"***@127.0.0.1" in seen


# --- paths that look like patterns ------------------------------------------------------------------
def test_an_existing_path_with_brackets_is_that_file_not_a_pattern(tmp_path):
    cv2.imwrite(str(tmp_path / "img[1].png"), np.zeros((20, 30, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "img1.png"), np.zeros((40, 50, 3), np.uint8))
    frames = []
    src = parse_source(str(tmp_path / "img[1].png")).start()
    while not src.done:
        if (f := src.get(0.1)) is not None:
            frames.append(f.image.shape)
    assert frames == [(20, 30, 3)]
    # With no file of that name, it is a pattern as before.
    src = parse_source(str(tmp_path / "img[0-9].png")).start()
    assert src.get(5.0).image.shape == (40, 50, 3)


def test_a_symlink_loop_says_so(tmp_path):
    (tmp_path / "a.mp4").symlink_to(tmp_path / "b.mp4")
    (tmp_path / "b.mp4").symlink_to(tmp_path / "a.mp4")
    (tmp_path / "gone.onnx").symlink_to(tmp_path / "nowhere.onnx")
    with pytest.raises(SourceError, match="symbolic link loop"):
        parse_source(str(tmp_path / "a.mp4"))
    proc = run_cli("run", "--model", str(tmp_path / "a.mp4"), "--source", "synthetic://16x16?frames=1", *FAST,
                   timeout=120)
    assert_clean_error(proc, r"a\.mp4: a symbolic link loop")
    proc = run_cli("run", "--model", str(tmp_path / "gone.onnx"), "--source", "synthetic://16x16?frames=1", *FAST,
                   timeout=120)
    assert_clean_error(proc, r"gone\.onnx: a broken symbolic link \(to .*nowhere\.onnx\)")


# --- a run that produced nothing ------------------------------------------------------------------
def _png_claiming(width: int, height: int) -> bytes:
    """A small valid PNG whose header claims width x height (a decompression bomb's header)."""
    ok, buf = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))
    data = bytearray(buf.tobytes())
    ihdr = bytearray(data[12:29])
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def test_a_run_whose_only_image_is_refused_exits_non_zero_with_the_reason(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_claiming(100_000, 100_000))
    events = tmp_path / "e.jsonl"
    proc = run("--source", str(bomb), "--json-out", str(events))
    assert_clean_error(proc, r"no source produced a frame: s0 .*bomb\.png.*pixel limit")
    assert proc.returncode == 1 and not events.exists()


def test_a_run_where_every_source_ended_empty_exits_non_zero(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not a jpeg")
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    proc = run("--source", str(folder))
    assert_clean_error(proc, r"no source produced a frame")
    assert json.loads(proc.stdout)["frames"] == 0  # the summary is still printed


# --- frames too large -----------------------------------------------------------------------------
def test_frames_above_the_pixel_limit_are_refused_and_the_flag_raises_it(tmp_path):
    video = tmp_path / "v.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(3):
        w.write(np.zeros((48, 64, 3), np.uint8))
    w.release()
    proc = run("--source", str(video), "--max-frame-pixels", "1000")
    assert_clean_error(proc, r"64x48 frames exceed the 1,000-pixel limit \(--max-frame-pixels")
    proc = run("--source", str(video), "--max-frame-pixels", "5000")
    assert proc.returncode == 0, proc.stderr.decode()
    with pytest.raises(SourceError, match="exceed the 40,000,000-pixel limit"):
        parse_source("synthetic://20000x20000?frames=1")


def test_a_tflite_larger_than_a_flatbuffer_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "big.tflite"
    with open(big, "wb") as f:
        f.truncate(3 * 2**30)  # sparse: 3 GiB claimed, nothing on disk
    (tmp_path / "big.tflite.spec.json").write_bytes((MODEL.parent / "smile.fp16.tflite.spec.json").read_bytes())
    proc = run_cli("run", "--model", str(big), "--source", "synthetic://32x32?frames=2", *FAST, timeout=120)
    assert_clean_error(proc, r"big\.tflite: 3,221,225,472 bytes is more than a TFLite flatbuffer can hold")


def test_a_training_run_that_cannot_start_leaves_no_run_folder(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train", "classify", "--arch", "lenet", "--data", str(tmp_path / "nope"), "--out", str(out),
                   timeout=300)
    assert_clean_error(proc, r"no such file")
    assert not out.exists()  # the folder used to be made before the data was found missing
    (tmp_path / "afile").write_text("x")
    proc = run_cli("train", "classify", "--arch", "lenet", "--data", "mnist", "--out", str(tmp_path / "afile"),
                   timeout=300)
    assert_clean_error(proc, r"--out .*afile: exists and is not a folder")


@pytest.mark.parametrize("text, match", [
    ("http://[::1", r"not a valid URL \(Invalid IPv6 URL\)"),  # was a ValueError traceback
    ("rtsp://", r"a rtsp URL needs a host"),  # was: retrying for ever
    ("http://user:pw@/live", r"http://\*\*\*@/live: a http URL needs a host"),
    ("99999999999999999999", r"camera index .* is out of range"),  # was OpenCV's overload listing
    ("synthetic://16x16?frames=-1", r"bad synthetic source"),  # was: an endless stream
])
def test_malformed_source_strings_are_one_line(text, match):
    with pytest.raises(SourceError, match=match):
        parse_source(text)


def test_a_udp_listen_url_needs_no_host():
    assert parse_source("udp://:12345").reader.kind == "network"
