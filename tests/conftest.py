"""Shared fixtures: real data from EDGECV_DATA (../shared/data beside the checkout by default),
a private cache per session, and helpers to run the CLI as a user does."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("EDGECV_DATA", str(DEFAULT_DATA))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
DATA = Path(os.environ["EDGECV_DATA"])


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Nothing a test does touches the user's ~/.cache/edgecv."""
    cache = tmp_path_factory.mktemp("edgecv-cache")
    old = os.environ.get("EDGECV_CACHE")
    os.environ["EDGECV_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("EDGECV_CACHE", None)
    else:
        os.environ["EDGECV_CACHE"] = old


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"EDGECV_DATA={DATA} does not exist: the tests need the shared real data")
    return DATA


def run_cli(*args: str, timeout: float = 600, env: dict | None = None, input: bytes | None = None,
            cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run `python -m edgecv ARGS` as a user would; returns the completed process (text output)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "edgecv", *args], capture_output=True, timeout=timeout,
                          env=e, input=input, cwd=cwd)


def assert_clean_error(proc: subprocess.CompletedProcess, match: str | None = None) -> str:
    """A user error: non-zero exit, a message on stderr, and no Python traceback."""
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0, f"expected failure, got exit 0; stderr: {err}"
    assert "Traceback" not in err, err
    if match is not None:
        import re
        assert re.search(match, err), f"{match!r} not in: {err}"
    return err


def count_frames(path: str | os.PathLike) -> int:
    """Frames OpenCV decodes from a video file (a playable file opens and yields them all)."""
    import cv2
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (a server the test starts, or none at all)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(fn, timeout: float, what: str, interval: float = 0.1):
    """fn() until it returns something truthy (returned), at most `timeout` seconds: the deadline
    only keeps a broken run from hanging the suite, it is not a speed check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
