"""Hostile inputs, hangs: stop() works from every state of a source, also from a signal handler in
the thread that is inside start() while open() blocks on a FIFO with no writer; `edgecv run` on such
a FIFO ends on SIGINT/SIGTERM; numbers that would overflow a timed wait are refused when parsed.
Real FIFOs (os.mkfifo) and real subprocesses, each bounded by a timeout and killed by PID in finally."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, assert_clean_error, run_cli
from edgecv.runtime.sources import SourceState, parse_source

MODEL = REPO / "edgecv" / "zoo" / "smile.onnx"
FAST = ["--detector", "none", "--no-display", "--metrics-interval", "0"]

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo (POSIX)")


@pytest.fixture()
def fifo(tmp_path):
    path = tmp_path / "live.ts"
    os.mkfifo(path)
    return path


@needs_fifo
def test_stop_from_a_signal_handler_while_start_blocks_on_a_fifo(fifo):
    """The deadlock of the issue: start() held the lock around open(); the handler's stop() took it again."""
    src = parse_source(str(fifo))
    old = signal.signal(signal.SIGALRM, lambda *_: src.stop())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        src.start()  # returns once stopped (before the fix: blocked until a writer came, forever)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert src.state is SourceState.STOPPED and src.error is None
    assert src.join(20)  # the blocked open was interrupted: the thread is gone too
    assert src.done and src.decoded == 0


@needs_fifo
def test_stop_from_another_thread_while_start_blocks_on_a_fifo(fifo):
    src = parse_source(str(fifo))
    timer = threading.Timer(0.3, src.stop)
    timer.start()
    try:
        src.start()
    finally:
        timer.cancel()
    assert src.state is SourceState.STOPPED and src.join(20)


@needs_fifo
def test_a_fifo_whose_writer_comes_is_read(fifo, data_dir):
    """The fix must not break the FIFO that does get a writer: its frames arrive."""
    video = (data_dir / "videos" / "vtest_pets2009_480x360_h264.avi").read_bytes()[:400_000]

    def writer() -> None:
        with open(fifo, "wb") as f:
            f.write(video)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    src = parse_source(str(fifo), queue_size=1000).start()
    assert src.join(60)
    assert src.decoded > 5 and src.state is SourceState.ENDED


@pytest.mark.parametrize("state", ["created", "ended", "failed", "stopped"])
def test_stop_works_from_every_state(tmp_path, state):
    if state == "failed":
        (tmp_path / "bad.mp4").write_bytes(b"\0" * 5000)
        src = parse_source(str(tmp_path / "bad.mp4"))
        with pytest.raises(Exception, match="cannot be opened|no frame decodes"):
            src.start()
    else:
        src = parse_source("synthetic://16x16?frames=2")
        if state == "ended":
            src.start()
            while src.get(1.0) is not None:
                pass
            assert src.join(10)
        elif state == "stopped":
            src.stop()
    src.stop()
    src.stop()
    expected = {"created": "stopped", "ended": "ended", "failed": "failed", "stopped": "stopped"}[state]
    assert src.state.value == expected and src.join(10)
    assert src.start() is src if state in ("created", "stopped") else True  # a stopped source starts as a no-op


@needs_fifo
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_edgecv_run_on_a_fifo_without_writer_ends_on_a_signal(fifo, tmp_path, sig):
    events = tmp_path / "e.jsonl"
    events.write_text("earlier\n")
    proc = subprocess.Popen([sys.executable, "-m", "edgecv", "run", "--model", str(MODEL), "--source", str(fifo),
                             "--json-out", str(events), "--max-frames", "5", *FAST],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_until_opening(proc, fifo)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)  # bounded; before the fix only SIGKILL ended it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = err.decode(errors="replace")
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "draining" in err
    summary = json.loads(out)
    assert summary["frames"] == 0 and summary["sources"]["s0"]["state"] == "stopped"
    assert events.read_text() == "earlier\n"  # nothing was written: the earlier file stays


def _wait_until_opening(proc: subprocess.Popen, fifo) -> None:
    """Until a thread of the process blocks in open(2) on the FIFO, waiting for a writer (Linux shows
    that as wchan `wait_for_partner`); where /proc has no wchan, a few seconds instead."""
    deadline = time.monotonic() + 120  # bounds a broken run; not a speed check
    tasks = f"/proc/{proc.pid}/task"
    if not os.path.exists(f"/proc/{proc.pid}/wchan"):
        time.sleep(5)
        return
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            for tid in os.listdir(tasks):
                with open(f"{tasks}/{tid}/wchan") as f:
                    if f.read().strip() == "wait_for_partner":
                        return
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.05)
    raise AssertionError("the run never blocked opening the FIFO")


@pytest.mark.parametrize("flag, value, match", [
    ("--max-delay-ms", "inf", "finite"),
    ("--max-delay-ms", "nan", "finite"),
    ("--max-delay-ms", "1e300", "must be <= 60000"),
    ("--max-delay-ms", "-1", "must be >= 0"),
    ("--max-fps", "nan", "finite"),
    ("--max-fps", "inf", "finite"),
    ("--max-fps", "0", "must be > 0"),
    ("--metrics-interval", "nan", "finite"),
    ("--metrics-interval", "-inf", "finite"),
    ("--detect-width", "1", "must be at least 64"),
    ("--max-frame-pixels", "0", "must be at least 1"),
    ("--threads", "100000", "must be at most 1024"),  # was: 100,000 ORT threads, 3.9 GB, never started
    ("--detect-workers", "100000", "must be at most 256"),  # was: "can't start new thread" traceback
])
def test_bad_numbers_are_refused_when_parsed(capsys, flag, value, match):
    from edgecv.cli import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["run", "--model", "m.onnx", "--source", "0", f"{flag}={value}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: " in err and match in err


def test_captcha_digits_below_one_is_refused_when_parsed(capsys):
    from edgecv.cli import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["captcha", "solve", "x.png", "--digits=0"])
    assert e.value.code == 2 and "argument --digits: must be at least 1; got 0" in capsys.readouterr().err


def test_max_delay_inf_at_the_command_line_is_one_line_and_exit_2():
    proc = run_cli("run", "--model", str(MODEL), "--source", "synthetic://16x16?frames=2", "--max-delay-ms", "inf",
                   *FAST, timeout=60)
    err = assert_clean_error(proc, r"argument --max-delay-ms: expected a finite number; got 'inf'")
    assert proc.returncode == 2 and err.strip().splitlines()[-1].startswith("edgecv run: error:")


@needs_fifo
def test_json_out_to_a_fifo_without_reader_fails_instead_of_blocking(tmp_path):
    out = tmp_path / "events.fifo"
    os.mkfifo(out)
    proc = run_cli("run", "--model", str(MODEL), "--source", "synthetic://32x32?frames=3", "--json-out", str(out),
                   *FAST, timeout=120)  # before: the sink thread blocked in open(2) and the run never ended
    assert_clean_error(proc, r"cannot write .*events\.fifo: a FIFO with no reader")
    assert proc.returncode == 1


@needs_fifo
@pytest.mark.skipif(not os.path.exists("/proc/self/wchan"), reason="needs /proc/PID/task/TID/wchan (Linux)")
def test_json_out_to_a_fifo_with_a_reader_streams_every_line(tmp_path):
    out = tmp_path / "events.fifo"
    os.mkfifo(out)
    got: list[bytes] = []
    tid: list[int] = []

    def reader() -> None:
        tid.append(threading.get_native_id())
        with open(out, "rb") as f:
            got.extend(f.read().splitlines())

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    deadline = time.monotonic() + 30  # bounds a broken test; not a speed check
    while time.monotonic() < deadline:  # until the reader blocks in open(2), waiting for a writer
        if tid and open(f"/proc/self/task/{tid[0]}/wchan").read().strip() == "wait_for_partner":
            break
        time.sleep(0.02)
    proc = run_cli("run", "--model", str(MODEL), "--source", "synthetic://32x32?frames=4", "--json-out", str(out),
                   *FAST, timeout=120)
    t.join(30)
    assert proc.returncode == 0, proc.stderr.decode()
    assert [json.loads(x)["frame"] for x in got] == [0, 1, 2, 3]


@needs_fifo
def test_save_to_a_fifo_is_refused(tmp_path):
    out = tmp_path / "v.avi"
    os.mkfifo(out)
    proc = run_cli("run", "--model", str(MODEL), "--source", "synthetic://32x32?frames=3", "--save", str(out),
                   *FAST, timeout=120)
    assert_clean_error(proc, r"a video is written to a regular file, not a pipe or device")


@needs_fifo
def test_a_sink_stuck_on_a_reader_that_never_reads_ends_after_the_second_signal(tmp_path):
    """The reader opens the FIFO and never reads: the pipe fills and the sink blocks in write(2).
    The first signal cannot drain that; after the second the process ends anyway (exit 130)."""
    out = tmp_path / "events.fifo"
    os.mkfifo(out)
    holder = os.open(out, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads
    proc = subprocess.Popen([sys.executable, "-m", "edgecv", "run", "--model", str(MODEL), "--source",
                             "synthetic://32x32?frames=1000000", "--json-out", str(out), *FAST],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120  # bounds a broken run; not a speed check
        while _fifo_bytes(holder) < 60_000:  # the 64 KiB pipe buffer is (nearly) full
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # drain: cannot finish, the write is blocked
        seen = b""
        os.set_blocking(proc.stderr.fileno(), False)
        while b"draining" not in seen:  # the first signal was handled (two at once count as one)
            assert proc.poll() is None and time.monotonic() < deadline, seen.decode(errors="replace")
            seen += proc.stderr.read() or b""
            time.sleep(0.05)
        os.set_blocking(proc.stderr.fileno(), True)
        proc.send_signal(signal.SIGINT)
        out_, err = proc.communicate(timeout=60)
        err = seen + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(holder)
    err = err.decode(errors="replace")
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "did not end within 10 s of the second signal" in err


def _fifo_bytes(fd: int) -> int:
    """Bytes waiting in a pipe (FIONREAD)."""
    import array
    import fcntl
    import termios

    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


def test_sigterm_during_export_unwinds_and_leaves_no_temporary_folder(tmp_path):
    """A default SIGTERM killed `edgecv export` on the spot and left its hidden temporary folder
    beside --out; now SIGTERM unwinds like Ctrl+C (exit 143) and the folder goes."""
    pytest.importorskip("keras")
    from test_export_cli import tiny_run

    run_dir = tiny_run(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "edgecv", "export", str(run_dir), "--format", "tflite",
                             "--out", str(out / "x.tflite")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240  # bounds a broken run; not a speed check
        # Until the export's working folder has content: it is converting, inside the block that owns
        # the folder (a signal in the instant mkdtemp returns could precede that block: not this test)
        while not list(out.glob(".x.tflite.*/*")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = err.decode(errors="replace")
    assert proc.returncode == 143 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == "edgecv: terminated"
    assert list(out.iterdir()) == []  # unwound: no output, no temporary folder


SIGNAL_AT_MKDTEMP = r'''
import os, signal, sys, tempfile
from pathlib import Path
from edgecv.cli import _terminate_like_interrupt
from edgecv.cli import Terminated
from edgecv.safeio import temp_folder

parent, how = Path(sys.argv[1]), sys.argv[2]
_terminate_like_interrupt()
real = tempfile.mkdtemp

def mkdtemp_then_sigterm(*a, **k):
    # the folder exists and its name is not yet returned: the instant a SIGTERM used to orphan it
    path = real(*a, **k)
    os.kill(os.getpid(), signal.SIGTERM)
    return path

tempfile.mkdtemp = mkdtemp_then_sigterm
try:
    if how == "plain":   # the pattern export/api.py used before temp_folder
        with tempfile.TemporaryDirectory(dir=parent, prefix=".x."):
            pass
    else:
        with temp_folder(parent, ".x."):
            pass
    print("no signal")
except Terminated:
    print("terminated")
'''


@pytest.mark.parametrize("how, left", [("plain", 1), ("temp_folder", 0)])
def test_sigterm_the_instant_a_temporary_folder_is_made(tmp_path, how, left):
    """A real SIGTERM delivered between mkdtemp's creation of the folder and the block that owns it:
    the plain TemporaryDirectory leaves the folder behind (which shows the signal really lands in that
    instant); safeio.temp_folder, used by export and dataset extraction, holds the signal until the
    block owns the folder, so the folder goes."""
    parent = tmp_path / "out"
    parent.mkdir()
    proc = subprocess.run([sys.executable, "-c", SIGNAL_AT_MKDTEMP, str(parent), how],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "terminated", proc.stderr[-2000:]
    assert len(list(parent.iterdir())) == left
