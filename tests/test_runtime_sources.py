"""Sources on real files: `every` loses nothing, `latest` drops and counts, lying headers, images,
bad inputs with clear messages, and stop() from every state."""
from __future__ import annotations

import logging
import shutil
import socket
import time

import cv2
import pytest

from conftest import free_port
from edgecv.errors import ConfigError, SourceError
from edgecv.runtime.sources import Backoff, Policy, SourceState, parse_source


def drain(src, limit: float = 120.0) -> list:
    """Every frame a started source yields until it finishes (deadline only to avoid a hung test)."""
    frames, deadline = [], time.monotonic() + limit
    while not src.done and time.monotonic() < deadline:
        f = src.get(timeout=0.1)
        if f is not None:
            frames.append(f)
    return frames


def decoder_count(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_file_with_every_loses_no_frame(data_dir):
    path = data_dir / "videos" / "vtest_pets2009_480x360_h264.avi"
    src = parse_source(str(path), "cam", queue_size=2).start()
    assert src.policy is Policy.EVERY  # the default for files
    frames = drain(src)
    assert src.state is SourceState.ENDED
    assert len(frames) == decoder_count(path) == 795
    assert [f.index for f in frames] == list(range(795))
    assert all(f.source_id == "cam" and f.image.shape == (360, 480, 3) for f in frames)
    t = [f.t_capture for f in frames]
    assert t == sorted(t)
    assert src.dropped == 0


def test_latest_drops_stale_frames_and_counts_them(data_dir):
    src = parse_source(str(data_dir / "videos" / "smile.mp4"), policy="latest", queue_size=1).start()
    assert src.join(60)  # nobody consumes: the reader runs to the end, keeping only the newest frame
    left = drain(src)
    assert len(left) == 1 and left[0].index == 54
    assert src.decoded == 55 and src.dropped == 54


def test_header_that_lies_processes_what_decodes_and_warns(data_dir, caplog):
    path = data_dir / "videos" / "crowd_topdown_1280x720_h264.avi"
    with caplog.at_level(logging.WARNING, logger="edgecv.runtime.sources"):
        src = parse_source(str(path)).start()
        frames = drain(src)
    assert src.state is SourceState.ENDED
    assert len(frames) == 341 and src.reader.expected_frames == 682
    assert "claims 682 frames but only 341 decoded" in caplog.text


def test_image_folder_glob_and_single_image(data_dir, tmp_path):
    files = sorted((data_dir / "ezpass" / "raw").glob("0000*.jpg"))[:5]
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert len(drain(parse_source(str(tmp_path)).start())) == 5  # broken.jpg skipped with a warning
    assert len(drain(parse_source(str(tmp_path / "0000[0-2].jpg")).start())) == 3
    one = drain(parse_source(str(tmp_path / files[0].name)).start())
    assert len(one) == 1 and one[0].image.ndim == 3


def test_synthetic_source(tmp_path):
    frames = drain(parse_source("synthetic://64x48?frames=7").start())
    assert [f.index for f in frames] == list(range(7))
    assert frames[0].image.shape == (48, 64, 3)


def test_data_set_video_scheme():
    src = parse_source("video:smile.mp4").start()
    assert len(drain(src)) == 55


@pytest.mark.parametrize("make, match", [
    (lambda d: str(d / "missing.mp4"), r"no such file: .*missing\.mp4 \(a source is a camera index"),
    (lambda d: _random_mp4(d), r"random\.mp4: cannot be opened as a video|random\.mp4: opens but no frame decodes"),
    (lambda d: "97", r"camera 97 could not be opened"),
    (lambda d: str(d / "*.png"), r"no images match"),
    (lambda d: str(d), r"folder holds no images"),
    (lambda d: "synthetic://axb", r"bad synthetic source"),
    (lambda d: "video:nope.mp4", r"no file 'videos/nope\.mp4'"),
])
def test_bad_sources_raise_clear_source_errors(tmp_path, make, match):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match=match):
        parse_source(make(empty)).start()


def _random_mp4(d):
    p = d.parent / "random.mp4"
    p.write_bytes(bytes(range(256)) * 400)
    return str(p)


def test_bad_policy_is_a_config_error(data_dir):
    with pytest.raises(ConfigError, match=r"unknown policy 'lates'.*Did you mean 'latest'"):
        parse_source(str(data_dir / "videos" / "smile.mp4"), policy="lates")


def test_stop_before_start_and_twice():
    src = parse_source("synthetic://32x32?frames=3")
    src.stop()
    assert src.state is SourceState.STOPPED and src.join(1)
    src.stop()
    assert src.state is SourceState.STOPPED


def test_stop_while_running_with_a_full_every_queue(data_dir):
    src = parse_source(str(data_dir / "videos" / "vtest_pets2009_480x360_h264.avi"), queue_size=1).start()
    while src.decoded < 2:  # the reader is now blocked on the full queue
        time.sleep(0.01)
    src.stop()
    assert src.join(10)
    assert src.state is SourceState.STOPPED


def test_stop_a_network_source_that_never_connected():
    """Roboflow's bug #685: a source that never connected must still stop."""
    src = parse_source(f"http://127.0.0.1:{free_port()}/live", queue_size=2)
    src.backoff = Backoff(initial_s=0.05, max_s=0.2)
    src.start()  # returns at once: network sources connect in their thread
    deadline = time.monotonic() + 30
    while src.state is not SourceState.CONNECTING and time.monotonic() < deadline:
        time.sleep(0.01)
    assert src.state is SourceState.CONNECTING
    while src.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "could not be opened" in src.error
    src.stop()
    assert src.join(15)
    assert src.state is SourceState.STOPPED and src.decoded == 0


def test_backoff_is_capped_exponential():
    d = Backoff(initial_s=0.5, max_s=4.0).delays()
    assert [next(d) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
