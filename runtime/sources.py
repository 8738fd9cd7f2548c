"""Frame sources: camera index, video file, network URL, image file/folder/glob, synthetic.

Each Source reads in its own thread into a bounded queue with an explicit policy: `latest` (live:
when the consumer falls behind the oldest queued frame is dropped and counted) or `every` (files:
nothing is dropped, the reader waits instead). Live sources that break reconnect with capped
exponential backoff. `stop()` works from every state, also while a source is still connecting.

Source strings (`parse_source`):
  0, 1, ...                 camera index
  path/to/video.mp4         video file (anything OpenCV's FFmpeg backend decodes)
  video:smile.mp4           a video of the `videos` data set (EDGECV_DATA mirror or cache)
  rtsp://.. http://.. ...   network stream
  image.jpg | folder/ | 'frames/*.png'   still images, in sorted order (a pattern only when no
                            file has that name: an existing 'img[1].jpg' is that file)
  synthetic://640x480?frames=100&fps=30  a generated test pattern (frames=0: endless)
"""
from __future__ import annotations

import glob as globmod
import logging
import math
import os
import queue
import stat
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np

from edgecv.errors import ConfigError, DataError, EdgecvError, SourceError, unknown
from edgecv.images import is_image_path, list_images, read_image
from edgecv.safeio import link_problem, redact_url

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
POLICIES = ("latest", "every")
# How long a network open or read may block: bounds how long stop() can wait on a dead stream.
NETWORK_TIMEOUT_MS = 5000
# Decoded frames larger than this are refused (a small file can hold 16000x16000 frames: 768 MB each).
DEFAULT_MAX_FRAME_PIXELS = 40_000_000
_max_frame_pixels: int | None = None


def max_frame_pixels() -> int:
    """The frame pixel limit: set_max_frame_pixels(), else EDGECV_MAX_FRAME_PIXELS, else 40 M."""
    if _max_frame_pixels is not None:
        return _max_frame_pixels
    try:
        return int(os.environ.get("EDGECV_MAX_FRAME_PIXELS", DEFAULT_MAX_FRAME_PIXELS))
    except ValueError:
        return DEFAULT_MAX_FRAME_PIXELS


def set_max_frame_pixels(n: int | None) -> None:
    """Raise (or lower) the frame pixel limit for this process (`--max-frame-pixels`)."""
    global _max_frame_pixels
    if n is not None and n < 1:
        raise ConfigError(f"--max-frame-pixels must be a positive integer; got {n}")
    _max_frame_pixels = n


class SourceState(str, Enum):
    CREATED = "created"
    CONNECTING = "connecting"
    RUNNING = "running"
    RECONNECTING = "reconnecting"
    ENDED = "ended"        # the stream finished (end of file, last image)
    STOPPED = "stopped"    # stop() was asked for
    FAILED = "failed"      # could not open, and not a source that retries


TERMINAL = (SourceState.ENDED, SourceState.STOPPED, SourceState.FAILED)


class Policy(str, Enum):
    LATEST = "latest"
    EVERY = "every"


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame: image is HxWx3 uint8 BGR; index counts decoded frames of its source from 0;
    t_capture is time.monotonic() when it was read; decode_s the time the read took."""

    source_id: str
    index: int
    t_capture: float
    image: np.ndarray = field(repr=False)
    decode_s: float = 0.0


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: initial, doubled after each failure, capped; reset after a good frame."""

    initial_s: float = 0.5
    max_s: float = 10.0
    factor: float = 2.0

    def delays(self) -> Iterator[float]:
        d = self.initial_s
        while True:
            yield d
            d = min(self.max_s, d * self.factor)


# --- readers: the blocking I/O a Source thread drives ----------------------------------------------
class Reader:
    """open() raises SourceError; read() returns HxWx3 uint8 BGR or None at the end or on a broken stream."""

    live = False        # a live stream reconnects when it breaks; a file ends
    decoder = "cpu"     # where frames are decoded: cpu | nvdec (runtime.nvdec)
    retry_first_open = False
    last_error: str | None = None  # the last thing skipped, shown when nothing at all was read
    fps: float = 0.0
    expected_frames: int | None = None

    def open(self) -> None: ...

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...

    def interrupt(self) -> None:
        """Called by stop() from another thread (or a signal handler) while open() may block: make it
        return soon where the reader can. Must not block."""


class CaptureReader(Reader):
    """cv2.VideoCapture on a camera index, video file or network URL."""

    def __init__(self, target: int | str, kind: str) -> None:
        self.target = target
        self.kind = kind  # camera | file | network
        self.live = kind in ("camera", "network")
        self.retry_first_open = kind == "network"
        self.cap: cv2.VideoCapture | None = None
        self._first: np.ndarray | None = None

    def open(self) -> None:
        if self.kind == "network":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                      NETWORK_TIMEOUT_MS]
            cap = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG, params)
        elif self.kind == "file":
            cap = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG)
        else:
            cap = _quietly(lambda: cv2.VideoCapture(int(self.target)))
        if not cap.isOpened():
            cap.release()
            raise SourceError(self._why_not())
        # The container's size first: a frame above the limit is refused before one is decoded.
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if w * h > max_frame_pixels():
            cap.release()
            self._check_size(w, h)
        # Probe one frame now: a file that opens but decodes nothing is an error at start, not an empty run.
        ok, image = cap.read()
        if not ok or image is None:
            cap.release()
            raise SourceError(self._why_not(opened=True))
        self._check_size(image.shape[1], image.shape[0])
        self._first = image
        self.cap = cap
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if self.kind == "file":
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            self.expected_frames = n if n > 0 else None

    def _check_size(self, w: int, h: int) -> None:
        if w * h > max_frame_pixels():
            raise SourceError(f"{redact_url(self.target)}: {w}x{h} frames exceed the {max_frame_pixels():,}-pixel "
                              "limit (--max-frame-pixels or EDGECV_MAX_FRAME_PIXELS raises it)")

    def interrupt(self) -> None:
        # FFmpeg blocks in open(2) on a FIFO until a writer appears; opening the write end ourselves
        # (non-blocking, so never waiting) and closing it at once gives the reader an EOF instead.
        if self.kind != "file":
            return
        try:
            if not stat.S_ISFIFO(os.stat(self.target).st_mode):
                return
            fd = os.open(self.target, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # no reader waiting (ENXIO), or gone
            return
        os.close(fd)

    def _why_not(self, opened: bool = False) -> str:
        if self.kind == "camera":
            return f"camera {self.target} could not be opened (no such device, or it is busy)"
        if self.kind == "network":
            return f"stream {redact_url(self.target)} could not be opened (not reachable or not a video stream)"
        what = "opens but no frame decodes" if opened else "cannot be opened as a video"
        return f"{self.target}: {what} (corrupt, or a codec this OpenCV build lacks)"

    def read(self) -> np.ndarray | None:
        if self._first is not None:
            image, self._first = self._first, None
            return image
        if self.cap is None:
            return None
        ok, image = self.cap.read()
        if not ok or image is None:
            return None
        self._check_size(image.shape[1], image.shape[0])  # a stream may change size mid-way
        return image

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


def _quietly(fn):
    """Run fn with OpenCV's own logging silenced: probing a missing camera prints several
    backends' errors, and the SourceError we raise says it better."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return fn()
    finally:
        cv2.utils.logging.setLogLevel(level)


class ImageReader(Reader):
    """Still images, one frame each, in the given order."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.expected_frames = len(paths)
        self._i = 0

    def open(self) -> None:
        self._i = 0

    def read(self) -> np.ndarray | None:
        while self._i < len(self.paths):
            path = self.paths[self._i]
            self._i += 1
            try:
                return read_image(path)
            except DataError as e:
                # One bad file in a folder must not end the run: say which and go on.
                self.last_error = f"skipped {e}"
                log.warning("skipping %s", e)
        return None


class SyntheticReader(Reader):
    """A moving test pattern (HxWx3 uint8 BGR) with the frame index drawn on it; paced when fps > 0."""

    def __init__(self, width: int = 320, height: int = 240, frames: int | None = 100, fps: float = 0.0) -> None:
        self.width, self.height, self.frames, self.fps = width, height, frames, fps
        self.expected_frames = frames
        self._i = 0
        self._t0 = 0.0

    def open(self) -> None:
        self._i = 0
        self._t0 = time.monotonic()

    def read(self) -> np.ndarray | None:
        if self.frames is not None and self._i >= self.frames:
            return None
        if self.fps > 0:
            delay = self._t0 + self._i / self.fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        x = np.linspace(0, 255, self.width, dtype=np.float32)
        image = np.empty((self.height, self.width, 3), np.uint8)
        image[:, :, 0] = (x[None, :] + self._i * 4) % 256
        image[:, :, 1] = np.linspace(0, 255, self.height, dtype=np.uint8)[:, None]
        image[:, :, 2] = 128
        cv2.putText(image, str(self._i), (10, self.height // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
        self._i += 1
        return image


# --- the threaded source ---------------------------------------------------------------------------
class Source:
    """A reader in its own thread feeding a bounded queue of Frames under a Policy."""

    def __init__(self, reader: Reader, source_id: str = "s0", policy: Policy | str | None = None,
                 queue_size: int = 4, backoff: Backoff = Backoff(), uri: str = "",
                 max_fps: float | None = None) -> None:
        self.reader = reader
        if max_fps is not None and max_fps <= 0:
            raise ConfigError(f"max_fps must be positive; got {max_fps}")
        # Live sources keep reading (so the device buffer never goes stale) and emit at most max_fps;
        # files are paced instead, losing nothing.
        self.min_interval = 1.0 / max_fps if max_fps else 0.0
        self._last_emit = -1e9
        self.skipped = 0
        self.id = source_id
        self.uri = redact_url(uri or source_id)  # what is shown and stored: never a password
        if policy is None:
            policy = Policy.LATEST if reader.live else Policy.EVERY
        if isinstance(policy, str) and policy not in POLICIES:
            raise ConfigError(unknown("policy", policy, POLICIES))
        self.policy = Policy(policy)
        if queue_size < 1:
            raise ConfigError(f"queue_size must be at least 1; got {queue_size}")
        self.queue: queue.Queue[Frame] = queue.Queue(maxsize=queue_size)
        self.backoff = backoff
        self.state = SourceState.CREATED
        self.error: str | None = None
        self.decoded = 0
        self.dropped = 0
        self.reconnects = 0
        self.gaps_s: list[float] = []
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._open_error: str | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()

    # lifecycle
    def start(self) -> "Source":
        """Open (files, cameras, images: raising SourceError here) and start the reading thread.
        Network sources connect in their thread, so a stream that is down does not block start.

        The open itself always runs in the source's thread: the caller waits for it in short steps
        holding no lock, so stop() from a signal handler in the calling thread ends the wait even
        while open() blocks (a FIFO with no writer yet)."""
        with self._lock:
            if self.state is SourceState.STOPPED and self._thread is None:
                return self  # stopped before it started: nothing to open
            if self.state is not SourceState.CREATED:
                raise SourceError(f"source {self.id} starts once, from state created; it is {self.state.value}")
            sync = not self.reader.retry_first_open
            if sync:
                self.state = SourceState.CONNECTING
            self._thread = threading.Thread(target=self._run, args=(sync,), name=f"source-{self.id}", daemon=True)
            self._thread.start()
        if sync:
            while not self._opened.wait(0.1):
                if self._stop.is_set():
                    break
        if self._stop.is_set():
            # A stop() that came while this thread was inside the block above may have run before
            # the state it had to change was set: apply it again (it is idempotent).
            self.stop()
            return self
        if self._open_error is not None:
            raise SourceError(self._open_error)
        return self

    def stop(self) -> None:
        """Ask the thread to finish; safe from any state and any thread (a signal handler in the thread
        that is inside start() too), also before start(). A source still opening is stopped at once;
        a reader blocked in open() is interrupted where that is possible (a FIFO)."""
        self._stop.set()
        with self._lock:  # re-entrant: a handler that interrupts start() in the same thread gets it
            if self.state in (SourceState.CREATED, SourceState.CONNECTING, SourceState.RECONNECTING):
                self.state = SourceState.STOPPED
                interrupt = self._thread is not None
            else:
                interrupt = False
        if interrupt:
            try:
                self.reader.interrupt()
            except Exception:  # best effort: the thread is a daemon and is joined with a timeout
                pass

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has finished."""
        t = self._thread
        if t is not None:
            t.join(timeout)
            return not t.is_alive()
        return True

    @property
    def done(self) -> bool:
        """Finished and every queued frame taken."""
        return self.state in TERMINAL and self.queue.empty()

    def get(self, timeout: float = 0.0) -> Frame | None:
        try:
            return self.queue.get(timeout=timeout) if timeout > 0 else self.queue.get_nowait()
        except queue.Empty:
            return None

    # the thread
    def _set_running(self) -> bool:
        """RUNNING unless stop() came first (then False: the thread ends)."""
        with self._lock:
            if self._stop.is_set():
                return False
            self.state = SourceState.RUNNING
            return True

    def _run(self, sync: bool = False) -> None:
        delays = self.backoff.delays()
        opened = False
        last_frame_t: float | None = None
        broke = False
        try:
            if sync:
                try:
                    self.reader.open()
                except Exception as e:
                    if self._stop.is_set():  # stopped while opening (maybe interrupted): not a failure
                        return
                    msg = str(e) if isinstance(e, SourceError) else f"{self.uri}: {type(e).__name__}: {e}"
                    self._open_error = self.error = redact_url(msg)
                    with self._lock:
                        if self.state is not SourceState.STOPPED:
                            self.state = SourceState.FAILED
                    return
                finally:
                    self._opened.set()
                if not self._set_running():
                    return
                opened = True
            while not self._stop.is_set():
                if not opened:
                    with self._lock:
                        if self._stop.is_set():
                            break
                        self.state = SourceState.RECONNECTING if broke else SourceState.CONNECTING
                    try:
                        self.reader.open()
                    except SourceError as e:
                        self.error = redact_url(e)
                        delay = next(delays)
                        log.warning("source %s: %s; retrying in %.1f s", self.id, self.error, delay)
                        self._stop.wait(delay)
                        continue
                    opened = True
                    self.error = None
                    if not self._set_running():
                        break
                    continue
                t0 = time.monotonic()
                image = self.reader.read()
                t1 = time.monotonic()
                if image is None:
                    if self.reader.live and not self._stop.is_set():
                        self.reader.close()
                        opened = False
                        broke = True
                        self.reconnects += 1
                        log.warning("source %s: stream broke after frame %d; reconnecting", self.id, self.decoded)
                        continue
                    self._finish_file()
                    return
                if broke and last_frame_t is not None:
                    self.gaps_s.append(t1 - last_frame_t)  # the outage as a consumer saw it
                    log.info("source %s: reconnected after %.1f s", self.id, t1 - last_frame_t)
                broke = False
                delays = self.backoff.delays()
                last_frame_t = t1
                if self.min_interval:
                    wait = self._last_emit + self.min_interval - t1
                    if wait > 0 and self.reader.live:
                        self.decoded += 1
                        self.skipped += 1
                        continue
                    if wait > 0:
                        self._stop.wait(wait)
                    self._last_emit = time.monotonic()
                frame = Frame(self.id, self.decoded, t1, image, t1 - t0)
                self.decoded += 1
                self._put(frame)
        except Exception as e:  # a reader bug must end this source visibly, not kill the thread silently
            self.error = redact_url(f"{type(e).__name__}: {e}")
            log.error("source %s failed: %s", self.id, self.error)
            self.state = SourceState.FAILED
            return
        finally:
            self.reader.close()
            with self._lock:
                if self.state not in TERMINAL:
                    self.state = SourceState.STOPPED

    def _finish_file(self) -> None:
        expected = self.reader.expected_frames
        if self.decoded == 0 and self.reader.last_error and self.error is None:
            self.error = redact_url(self.reader.last_error)
        if expected and self.decoded < expected and not self._stop.is_set():
            log.warning("source %s: %s claims %d frames but only %d decoded; processed what decoded",
                        self.id, self.uri, expected, self.decoded)
        self.state = SourceState.ENDED

    def _put(self, frame: Frame) -> None:
        if self.policy is Policy.EVERY:
            while not self._stop.is_set():
                try:
                    self.queue.put(frame, timeout=0.1)
                    return
                except queue.Full:
                    continue
            return
        while True:
            try:
                self.queue.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def stats(self) -> dict:
        return {"uri": self.uri, "state": self.state.value, "policy": self.policy.value, "decoded": self.decoded,
                "dropped": self.dropped, "skipped_max_fps": self.skipped, "reconnects": self.reconnects,
                "max_gap_s": round(max(self.gaps_s), 3) if self.gaps_s else 0.0,
                "expected_frames": self.reader.expected_frames, "decoder": self.reader.decoder, "error": self.error}


# --- parsing source strings ------------------------------------------------------------------------
def parse_source(text: str, source_id: str = "s0", policy: str | None = None, queue_size: int = 4,
                 max_fps: float | None = None, decode: str = "cpu") -> Source:
    """A Source for one source string (see the module docstring). decode: "cpu", or "nvdec" for video
    files decoded on the GPU (runtime.nvdec.resolve_decode says which can run). Raises SourceError /
    ConfigError."""
    text = str(text).strip()
    if not text:
        raise SourceError("empty source string")
    reader = make_reader(text, decode)
    return Source(reader, source_id, policy, queue_size=queue_size, uri=text, max_fps=max_fps)


MAX_CAMERA_INDEX = 9999


def _video_file(path: str, decode: str) -> Reader:
    if decode == "nvdec":
        from .nvdec import NvdecReader

        return NvdecReader(path)
    return CaptureReader(path, "file")


def make_reader(text: str, decode: str = "cpu") -> Reader:
    """The reader for a source string; decode "nvdec" applies to video files (cameras, streams and
    images decode on the CPU)."""
    if decode not in ("cpu", "nvdec"):
        raise ConfigError(f"decode must be cpu or nvdec here (runtime.nvdec.resolve_decode resolves auto); "
                          f"got {decode!r}")
    if text.isdigit():
        if int(text) > MAX_CAMERA_INDEX:
            raise SourceError(f"camera index {text} is out of range (0-{MAX_CAMERA_INDEX})")
        return CaptureReader(int(text), "camera")
    try:
        url = urlparse(text)
    except ValueError as e:  # "http://[::1": an unclosed IPv6 bracket
        raise SourceError(f"{redact_url(text)}: not a valid URL ({e})") from None
    scheme = url.scheme.lower()
    if scheme == "synthetic":
        return _synthetic(text)
    if scheme in NETWORK_SCHEMES:
        if not url.hostname and scheme in ("rtsp", "rtsps", "rtmp", "http", "https"):  # would retry for ever
            # (udp://:1234 and the like listen on every interface: no host is right for them)
            raise SourceError(f"{redact_url(text)}: a {scheme} URL needs a host")
        return CaptureReader(text, "network")
    if text.startswith("video:"):
        from edgecv.data import resource_path

        try:
            path = resource_path("videos", "videos/" + text[len("video:"):])
        except EdgecvError as e:
            raise SourceError(f"source {text!r}: {e}") from None
        return _video_file(str(path), decode)
    if any(c in text for c in "*?[") and not os.path.lexists(text):
        # A pattern only when no file has that name: "img[1].jpg" that exists is that file.
        paths = sorted(Path(p) for p in globmod.glob(text, recursive=True) if is_image_path(p))
        if not paths:
            raise SourceError(f"no images match {text!r}")
        return ImageReader(paths)
    path = Path(text)
    if path.is_dir():
        paths = list_images(path)
        if not paths:
            raise SourceError(f"{path}: folder holds no images")
        return ImageReader(paths)
    if not path.exists() and os.path.lexists(text) and (problem := link_problem(text)):
        raise SourceError(f"{text}: {problem}")
    if not path.exists():
        raise SourceError(f"no such file: {redact_url(text)} (a source is a camera index, video file, "
                          f"image file/folder/glob, "
                          f"{'/'.join(NETWORK_SCHEMES[:5])} URL, video:NAME or synthetic://WxH)")
    if not os.access(path, os.R_OK):
        raise SourceError(f"{path}: permission denied")
    if is_image_path(path):
        return ImageReader([path])
    return _video_file(str(path), decode)


def _synthetic(text: str) -> SyntheticReader:
    u = urlparse(text)
    size = (u.netloc or u.path.lstrip("/") or "320x240").lower()
    q = {k: v[-1] for k, v in parse_qs(u.query).items()}
    try:
        w, h = (int(v) for v in size.split("x"))
        frames = int(q.get("frames", 100))
        fps = float(q.get("fps", 0))
        if w < 8 or h < 8 or not math.isfinite(fps) or fps < 0 or frames < 0:
            raise ValueError
    except ValueError:
        raise SourceError(f"bad synthetic source {text!r}; expected synthetic://WxH?frames=N&fps=F") from None
    if w * h > max_frame_pixels():
        raise SourceError(f"synthetic source {text!r}: {w}x{h} frames exceed the {max_frame_pixels():,}-pixel limit "
                          "(--max-frame-pixels or EDGECV_MAX_FRAME_PIXELS raises it)")
    return SyntheticReader(w, h, frames if frames > 0 else None, fps)
