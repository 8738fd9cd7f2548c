"""Where processed frames go: a window, a video file, JSON lines, or a Python callback.

A sink that raises is reported once and switched off; the other sinks keep running (SinkSet).
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Protocol, runtime_checkable

import cv2

from edgecv.errors import ConfigError, SourceError

from .results import FrameResult

log = logging.getLogger(__name__)

# H.264 (avc1) does not open in the pip OpenCV builds (TOOLCHAIN.md), so only these.
VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v"}


@runtime_checkable
class Sink(Protocol):
    name: str

    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...


def display_available() -> bool:
    """True where a window can open. The GUI build of OpenCV aborts the whole process (SIGABRT, not
    catchable) when imshow finds no X/Wayland display, so this is checked before any window."""
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class WindowSink:
    """Shows annotated frames, one window per source; `q` or Esc calls on_quit."""

    name = "window"

    def __init__(self, title: str = "edgecv", on_quit: Callable[[], None] | None = None) -> None:
        if not display_available():
            raise ConfigError("no display to show a window on (DISPLAY and WAYLAND_DISPLAY are unset); "
                              "use --no-display")
        self.title = title
        self.on_quit = on_quit
        self._windows: set[str] = set()

    def write(self, result: FrameResult) -> None:
        name = f"{self.title} [{result.source_id}]"
        self._windows.add(name)
        cv2.imshow(name, result.annotated())
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27) and self.on_quit is not None:
            self.on_quit()

    def close(self) -> None:
        for name in self._windows:
            try:
                cv2.destroyWindow(name)
            except cv2.error:
                pass
        self._windows.clear()


class VideoSink:
    """Writes annotated frames to a video file (MJPG .avi or mp4v .mp4), one file per source: with
    several sources `out.mp4` becomes `out.s0.mp4`, `out.s1.mp4`, .... Frames are written as they
    come, and close() finalises the container, so a drained Ctrl+C leaves a playable file."""

    name = "video"

    def __init__(self, path: str | os.PathLike, per_source: bool = False, fps: float | None = None,
                 annotate: bool = True) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_CODECS:
            raise ConfigError(f"video output must end in {' or '.join(VIDEO_CODECS)}; got {self.path.name!r}")
        # The writer opens at the first frame (its size is not known before); a folder that cannot
        # hold the file is a user error now, not a sink that dies mid-run.
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot write {self.path}: {e.strerror or e}") from None
        if not os.access(self.path.parent, os.W_OK):
            raise ConfigError(f"cannot write {self.path}: {self.path.parent} is not writable")
        self.fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[suffix])
        self.per_source = per_source
        self.fps = fps
        self.annotate = annotate
        self.writers: dict[str, tuple[cv2.VideoWriter, tuple[int, int]]] = {}
        self.paths: dict[str, Path] = {}
        self.frames: dict[str, int] = {}

    def _path_for(self, source_id: str) -> Path:
        if not self.per_source:
            return self.path
        return self.path.with_name(f"{self.path.stem}.{source_id}{self.path.suffix}")

    def write(self, result: FrameResult) -> None:
        sid = result.source_id
        image = result.annotated() if self.annotate else result.frame.image
        entry = self.writers.get(sid)
        if entry is None:
            path = self._path_for(sid)
            path.parent.mkdir(parents=True, exist_ok=True)
            h, w = image.shape[:2]
            fps = self.fps or (result.fps if 0 < result.fps <= 240 else 25.0)
            writer = cv2.VideoWriter(str(path), self.fourcc, fps, (w, h))
            if not writer.isOpened():
                raise SourceError(f"cannot open {path} for writing")
            entry = self.writers[sid] = (writer, (w, h))
            self.paths[sid] = path
            self.frames[sid] = 0
        writer, size = entry
        if (image.shape[1], image.shape[0]) != size:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        writer.write(image)
        self.frames[sid] += 1

    def close(self) -> None:
        for writer, _ in self.writers.values():
            writer.release()
        self.writers.clear()


class JsonLinesSink:
    """One JSON object per frame (FrameResult.to_event), each line written whole and flushed, so an
    interrupted run leaves only complete lines."""

    name = "json"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "w", encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot write {self.path}: {e.strerror or e}") from None
        self.lines = 0

    def write(self, result: FrameResult) -> None:
        self._f.write(json.dumps(result.to_event(), separators=(",", ":")) + "\n")
        self._f.flush()
        self.lines += 1

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


class CallbackSink:
    """Calls `fn(result)` for every frame, in the sink thread."""

    def __init__(self, fn: Callable[[FrameResult], None], name: str = "callback") -> None:
        self.fn = fn
        self.name = name

    def write(self, result: FrameResult) -> None:
        self.fn(result)

    def close(self) -> None:
        pass


class SinkSet:
    """Runs every sink on every frame; one that raises is logged once with its error and dropped."""

    def __init__(self, sinks: Iterable[Sink], on_error: Callable[[str, BaseException], None] | None = None) -> None:
        self.sinks = list(sinks)
        self._all = list(self.sinks)
        self.failed: dict[str, str] = {}
        self.on_error = on_error

    def write(self, result: FrameResult) -> None:
        for sink in list(self.sinks):
            try:
                sink.write(result)
            except Exception as e:
                self._fail(sink, e, "write")

    def _fail(self, sink: Sink, e: BaseException, what: str) -> None:
        name = getattr(sink, "name", type(sink).__name__)
        self.failed[name] = f"{type(e).__name__}: {e}"
        log.error("sink %s failed in %s (%s: %s); it is switched off, the other sinks keep running",
                  name, what, type(e).__name__, e)
        if sink in self.sinks:
            self.sinks.remove(sink)
        if self.on_error is not None:
            self.on_error(name, e)

    def close(self) -> None:
        # Failed sinks are closed too: a video sink that failed mid-run still has a file to finalise.
        for sink in self._all:
            try:
                sink.close()
            except Exception as e:
                self._fail(sink, e, "close")
