"""Hostile inputs, data loss: an output is never an input, is never opened before the run is known to
start, and is replaced only by a run that finished (temporary file + rename), so a failing, killed
or disk-full run leaves what was there. A real full filesystem: a small tmpfs mounted by the test
(root only). docs/reliability.md lists what each test holds."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO, assert_clean_error, count_frames, run_cli

MODEL = REPO / "edgecv" / "zoo" / "smile.onnx"
FAST = ["--detector", "none", "--no-display", "--metrics-interval", "0"]


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return run_cli("run", "--model", str(MODEL), *args, *FAST, timeout=kw.pop("timeout", 120), **kw)


def temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.edgecv-*.part*"))


@pytest.fixture()
def video(tmp_path) -> Path:
    """A small real MJPG video, 24 frames of 64x48."""
    path = tmp_path / "in.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(24):
        w.write(np.full((48, 64, 3), i * 10, np.uint8))
    w.release()
    return path


@pytest.mark.parametrize("flag", ["--json-out", "--save", "--summary-out"])
@pytest.mark.parametrize("how", ["same", "symlink", "dotted"])
def test_an_output_that_is_the_input_is_refused_and_the_input_untouched(tmp_path, video, flag, how):
    before = video.read_bytes()
    target = {"same": str(video), "dotted": f"{tmp_path}/./sub/../{video.name}"}.get(how)
    if how == "symlink":
        (tmp_path / "sub").mkdir()
        (tmp_path / "link.avi").symlink_to(video)
        target = str(tmp_path / "link.avi")
    if how == "dotted":
        (tmp_path / "sub").mkdir()
    proc = run("--source", str(video), flag, target)
    assert_clean_error(proc, rf"{flag} is the same file as the input")
    assert video.read_bytes() == before
    assert not temps(tmp_path)


def test_an_output_that_is_the_model_or_another_output_is_refused(tmp_path, video):
    model = tmp_path / "m.onnx"
    shutil.copy(MODEL, model)
    before = model.read_bytes()
    proc = run_cli("run", "--model", str(model), "--source", str(video), "--json-out", str(model), *FAST, timeout=120)
    assert_clean_error(proc, r"same file as the input")
    assert model.read_bytes() == before
    proc = run("--source", str(video), "--json-out", str(tmp_path / "o.avi"), "--save", str(tmp_path / "o.avi"))
    assert_clean_error(proc, r"name the same file")


def test_a_failing_run_leaves_every_earlier_output_untouched(tmp_path, video):
    outs = {"--json-out": tmp_path / "e.jsonl", "--save": tmp_path / "o.mp4", "--summary-out": tmp_path / "s.json"}
    for p in outs.values():
        p.write_bytes(b"earlier results\n")
    args = [x for flag, p in outs.items() for x in (flag, str(p))]
    # The second source is missing: the run fails at start, after the first one opened.
    proc = run("--source", str(video), "--source", str(tmp_path / "missing.avi"), *args)
    assert_clean_error(proc, r"no such file")
    for p in outs.values():
        assert p.read_bytes() == b"earlier results\n"
    assert not temps(tmp_path)


def test_a_finished_run_replaces_the_outputs_whole(tmp_path, video):
    events, out, summary = tmp_path / "e.jsonl", tmp_path / "o.avi", tmp_path / "deeper" / "s.json"
    events.write_text("earlier\n")
    proc = run("--source", str(video), "--json-out", str(events), "--save", str(out), "--summary-out", str(summary))
    assert proc.returncode == 0, proc.stderr.decode()
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert [e["frame"] for e in lines] == list(range(24))
    assert count_frames(out) == 24
    assert json.loads(summary.read_text())["frames"] == 24
    assert not temps(tmp_path) and not temps(summary.parent)


def test_summary_out_that_cannot_be_written_is_refused_before_the_run(tmp_path, video):
    (tmp_path / "afile").write_text("x")
    events = tmp_path / "e.jsonl"
    events.write_text("earlier\n")
    proc = run("--source", str(video), "--json-out", str(events), "--summary-out", str(tmp_path / "afile" / "s.json"))
    assert_clean_error(proc, r"cannot write .*afile/s\.json: .*afile is not a folder")
    assert proc.stdout == b""  # refused before the run: no summary printed
    assert events.read_text() == "earlier\n"


def test_sigkill_leaves_the_earlier_files_and_the_next_run_removes_the_leftovers(tmp_path):
    events, out = tmp_path / "e.jsonl", tmp_path / "o.mp4"
    events.write_text("earlier\n")
    out.write_bytes(b"earlier video")
    proc = subprocess.Popen([sys.executable, "-m", "edgecv", "run", "--model", str(MODEL), "--source",
                             "synthetic://96x64?frames=100000&fps=40", "--json-out", str(events), "--save", str(out),
                             *FAST], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120  # bounds a broken run; not a speed check
        while True:
            part = [p for p in temps(tmp_path) if p.suffix == ".jsonl"]
            if part and len(part[0].read_bytes().splitlines()) >= 5:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no frames written"
            time.sleep(0.05)
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert events.read_text() == "earlier\n" and out.read_bytes() == b"earlier video"
    left = temps(tmp_path)
    assert len(left) == 2  # the killed run's temporaries, hidden; the JSON one holds whole lines only
    text = next(p for p in left if p.suffix == ".jsonl").read_text()
    assert text.endswith("\n") and all(json.loads(x) for x in text.splitlines())
    proc2 = run("--source", "synthetic://96x64?frames=3", "--json-out", str(events), "--save", str(out))
    assert proc2.returncode == 0, proc2.stderr.decode()
    assert not temps(tmp_path)  # the dead process's temporaries were removed
    assert len(events.read_text().splitlines()) == 3 and count_frames(out) == 3


# --- a real full filesystem ---------------------------------------------------------------------
@pytest.fixture()
def full_disk(tmp_path):
    """A 1 MB tmpfs (unmounted at teardown). Needs root and mount(2) (CAP_SYS_ADMIN)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_fails_the_run_and_keeps_the_earlier_outputs(full_disk, data_dir):
    events, out = full_disk / "e.jsonl", full_disk / "x.mp4"
    for p in (events, out):
        p.write_bytes(b"earlier\n")
    proc = run("--source", str(data_dir / "videos" / "crowd_topdown_1280x720_h264.avi"), "--max-frames", "80",
               "--save", str(out), "--json-out", str(events))
    err = assert_clean_error(proc, r"output failed during the run")
    assert "No space left on device" in err  # the JSON sink, at the line that did not fit
    # The video: free space is checked as it grows, and the file is read back at close.
    assert re.search(r"x\.mp4.*(No space left on device|is the disk full)", err)
    assert events.read_bytes() == b"earlier\n" and out.read_bytes() == b"earlier\n"
    assert not temps(full_disk)  # the partial files are gone: the space is given back
    assert json.loads(proc.stdout)["outputs"] == {}  # the summary lists no video that was not written


def test_full_disk_json_lines_are_whole_and_the_summary_is_all_or_nothing(full_disk):
    from edgecv.safeio import atomic_write_text, write_all

    summary = full_disk / "s.json"
    summary.write_text("earlier\n")
    path = full_disk / "lines.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    line = (json.dumps({"frame": 0, "pad": "x" * 3000}) + "\n").encode()
    written = 0
    try:
        with pytest.raises(OSError, match="No space left"):
            for _ in range(10_000):
                write_all(fd, line)
                written += 1
    finally:
        os.close(fd)
    assert written > 0 and path.read_bytes() == line * written  # no half line at the end
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(summary, "y" * 2_000_000)
    assert summary.read_text() == "earlier\n"
    assert not temps(full_disk)


def test_full_disk_at_the_top_level_is_one_line(full_disk, tmp_path):
    filler = full_disk / "filler"
    with open(filler, "wb") as f:
        try:
            f.write(b"\0" * 2_000_000)
        except OSError:
            pass
    summary = full_disk / "s.json"
    proc = run("--source", "synthetic://64x48?frames=3", "--summary-out", str(summary))
    assert_clean_error(proc, r"cannot write --summary-out .*s\.json: No space left on device")
    assert not summary.exists() and not temps(full_disk)


def test_extraction_larger_than_the_free_space_is_refused_before_writing(full_disk, tmp_path):
    import zipfile

    from edgecv.data.download import extract_zip
    from edgecv.errors import DataError

    z = tmp_path / "big.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as f:
        f.writestr("data/zeros.bin", b"\0" * 3_000_000)  # 3 MB that compress to a few KB
    with pytest.raises(DataError, match=r"extracting needs 3 MB and .* has 1 MB free"):
        extract_zip(z, full_disk / "cache" / "big")
    assert [p for p in full_disk.rglob("*") if p.is_file()] == []  # nothing written


def test_output_names_at_the_file_name_limit(tmp_path):
    near = tmp_path / ("e" * 240 + ".jsonl")  # 246 bytes: fits, but not with a temporary tag added
    proc = run("--source", "synthetic://32x32?frames=2", "--json-out", str(near))
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(near.read_text().splitlines()) == 2 and not temps(tmp_path)
    proc = run("--source", "synthetic://32x32?frames=2", "--json-out", str(tmp_path / ("e" * 300)))
    assert_clean_error(proc, r"--json-out: file name longer than 255 bytes")


def test_an_output_through_a_symlink_replaces_its_target_and_loops_are_refused(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "t.jsonl"
    target.write_text("earlier\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    proc = run("--source", "synthetic://32x32?frames=2", "--json-out", str(link))
    assert proc.returncode == 0, proc.stderr.decode()
    assert link.is_symlink() and len(target.read_text().splitlines()) == 2
    (tmp_path / "a.json").symlink_to(tmp_path / "b.json")
    (tmp_path / "b.json").symlink_to(tmp_path / "a.json")
    (tmp_path / "dangling.json").symlink_to(tmp_path / "nowhere" / "x.json")
    proc = run("--source", "synthetic://32x32?frames=2", "--json-out", str(tmp_path / "a.json"))
    assert_clean_error(proc, r"a\.json: a symbolic link loop")
    proc = run("--source", "synthetic://32x32?frames=2", "--summary-out", str(tmp_path / "dangling.json"))
    assert_clean_error(proc, r"dangling\.json: a broken symbolic link")
    assert (tmp_path / "a.json").is_symlink() and (tmp_path / "dangling.json").is_symlink()


def test_export_onto_a_full_disk_is_one_line_and_leaves_nothing(full_disk, tmp_path):
    pytest.importorskip("keras")
    from test_export_cli import tiny_run  # the export tests' tiny model and its spec

    run_dir = tiny_run(tmp_path)
    with open(full_disk / "filler", "wb") as f:
        try:
            f.write(b"\0" * 1_000_000)
        except OSError:
            pass
    proc = run_cli("export", str(run_dir), "--format", "tflite", "--out", str(full_disk / "x.tflite"), timeout=300)
    err = assert_clean_error(proc, r"cannot write the export in .*small: No space left on device")
    assert err.strip().splitlines()[-1].startswith("edgecv: error:")
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]  # no output, no temporary folder


def test_a_server_that_never_stops_sending_is_cut_at_the_expected_size(tmp_path):
    """No Content-Length and an endless body: the download stops at twice the registry's size, removes
    its partial file and says why (it used to write until the disk was full)."""
    import http.server
    import threading

    from edgecv.data.download import download
    from edgecv.errors import DownloadError

    class Endless(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # no Content-Length: the body ends when the connection does

        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        dest = tmp_path / "d" / "data.bin"
        with pytest.raises(DownloadError, match=r"sent more than the 2,000,000 bytes expected"):
            download(f"http://127.0.0.1:{srv.server_address[1]}/x", dest, size=1_000_000, progress=False)
        assert list(dest.parent.iterdir()) == []
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_full_disk_during_a_download_is_not_retried_and_keeps_the_part(full_disk, data_dir):
    import functools
    import http.server
    import threading

    from edgecv.data.download import download
    from edgecv.errors import DownloadError

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(data_dir)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        dest = full_disk / "smile.mp4"
        with pytest.raises(DownloadError, match=r"cannot write .*smile\.mp4\.part: No space left on device"):
            download(f"http://127.0.0.1:{srv.server_address[1]}/videos/smile.mp4", dest, progress=False)
        assert not dest.exists() and (full_disk / "smile.mp4.part").exists()  # resumable once there is room
    finally:
        srv.shutdown()
        srv.server_close()


def test_outputs_onto_the_model_spec_or_a_data_set_video_are_refused(tmp_path, data_dir):
    model = tmp_path / "m.onnx"
    shutil.copy(MODEL, model)
    sidecar = tmp_path / "m.onnx.spec.json"
    shutil.copy(Path(str(MODEL) + ".spec.json"), sidecar)
    before = sidecar.read_bytes()
    proc = run_cli("run", "--model", str(model), "--source", "synthetic://16x16?frames=1", "--json-out", str(sidecar),
                   *FAST, timeout=120)
    assert_clean_error(proc, r"--json-out is the same file as the input .*m\.onnx\.spec\.json")
    assert sidecar.read_bytes() == before
    video = data_dir / "videos" / "smile.mp4"
    size = video.stat().st_size
    proc = run("--source", "video:smile.mp4", "--save", str(video))
    assert_clean_error(proc, r"--save is the same file as the input .*videos/smile\.mp4")
    assert video.stat().st_size == size


@pytest.mark.parametrize("out, match", [
    ("", r"--out is empty"),  # was: the export written into the current folder
    ("/dev/full/x.tflite", r"cannot write /dev/full/x\.tflite: /dev/full is not a folder"),  # was "File exists"
    ("{run}/model.keras", r"--out is the same file as the input"),
])
def test_export_out_is_checked_before_tensorflow_loads(tmp_path, out, match):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(b"PK placeholder")
    proc = run_cli("export", str(tmp_path / "run"), "--format", "tflite", "--out",
                   out.replace("{run}", str(tmp_path / "run")), timeout=120)
    assert_clean_error(proc, match)
    assert (tmp_path / "run" / "model.keras").read_bytes() == b"PK placeholder"


def test_a_killed_exports_working_folder_is_removed_by_the_next_export(tmp_path):
    """SIGKILL mid-conversion leaves .x.tflite.XXXXXXXX beside --out; the next export into that folder
    removes it, unless another export holds the folder (then it may be that one's)."""
    pytest.importorskip("keras")
    import fcntl

    from test_export_cli import tiny_run

    run_dir = tiny_run(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    argv = [sys.executable, "-m", "edgecv", "export", str(run_dir), "--format", "tflite", "--out", str(out / "x.tflite")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240  # bounds a broken run; not a speed check
        while not list(out.glob(".x.tflite.*/*")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    left = [p.name for p in out.iterdir()]
    assert len(left) == 1 and left[0].startswith(".x.tflite.")  # what SIGKILL leaves
    fd = os.open(out, os.O_RDONLY)
    try:  # another export "running" in the folder: its working folder is not touched
        fcntl.flock(fd, fcntl.LOCK_SH)
        proc = run_cli("export", str(run_dir), "--format", "tflite", "--out", str(out / "y.tflite"), timeout=300)
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
        assert left[0] in [p.name for p in out.iterdir()]
    finally:
        os.close(fd)
    proc = run_cli("export", str(run_dir), "--format", "tflite", "--out", str(out / "x.tflite"), timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the leftover is gone
    assert (out / "x.tflite").exists()
