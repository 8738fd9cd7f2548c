"""Where processed frames go: a window, a video file, JSON lines, or a Python callback.

A sink that raises is reported once and switched off; the other sinks keep running (SinkSet).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

import cv2

from edgecv.errors import ConfigError
from edgecv.safeio import (OutputError, check_output, clean_stale_temps, commit, discard, is_special, output_target,
                           temp_path, write_all)

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


class _Output:
    """One output file, written under a hidden temporary name beside it and renamed into place at a
    successful close: a run that fails, writes nothing, or is killed leaves what was at the path
    (a FIFO or device is written in place). The temporary of a killed run is removed by the next one."""

    def __init__(self, path: Path) -> None:
        self.path = output_target(path)  # through a symbolic link to the file it names
        self.special = False
        self.tmp: Path | None = None

    def open(self) -> Path:
        """The path to write to now (the folder is made here, at the first frame, not before)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from None
        if is_special(self.path):
            self.special = True
            return self.path
        clean_stale_temps(self.path)
        self.tmp = temp_path(self.path)
        return self.tmp

    @property
    def written(self) -> Path:
        return self.tmp if self.tmp is not None else self.path

    def finish(self, keep: bool) -> None:
        tmp, self.tmp = self.tmp, None
        if tmp is None:
            return
        if keep:
            try:
                commit(tmp, self.path)
            except BaseException:
                discard(tmp)
                raise
        else:
            discard(tmp)


def _keep(sink) -> bool:
    fn = getattr(sink, "commit_if", None)
    return True if fn is None else bool(fn())


class VideoSink:
    """Writes annotated frames to a video file (MJPG .avi or mp4v .mp4), one file per source: with
    several sources `out.mp4` becomes `out.s0.mp4`, `out.s1.mp4`, .... Frames go to a hidden
    temporary file beside the output; close() finalises it, reads it back (OpenCV's writer reports
    no write error, so a full disk shows only there) and renames it into place. A drained Ctrl+C
    leaves a playable file; a failure or a kill leaves the earlier file (or none).

    commit_if: an optional callable asked at close; False discards the output (a failed run)."""

    name = "video"
    # Every this many frames the output's filesystem is checked for free space (a full disk ends the
    # sink early instead of at close).
    SPACE_CHECK_EVERY = 32

    def __init__(self, path: str | os.PathLike, per_source: bool = False, fps: float | None = None,
                 annotate: bool = True) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_CODECS:
            raise ConfigError(f"video output must end in {' or '.join(VIDEO_CODECS)}; got {self.path.name!r}")
        # The writer opens at the first frame (its size is not known before); a folder that cannot
        # hold the file is a user error now, not a sink that dies mid-run. Nothing is created yet.
        check_output(self.path, "--save")
        if is_special(self.path):  # both containers seek back to write their index at the end
            raise OutputError(f"cannot write {self.path}: a video is written to a regular file, not a pipe or device")
        self.fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[suffix])
        # (path, fourcc, fps, (w, h)) -> an object with isOpened/write/release; runtime.h264 puts
        # ffmpeg's H.264 encoder here for .mp4 (browsers do not play mp4v).
        self.writer_factory: Callable[..., Any] = cv2.VideoWriter
        self.per_source = per_source
        self.fps = fps
        self.annotate = annotate
        self.commit_if: Callable[[], bool] | None = None
        self.writers: dict[str, tuple[cv2.VideoWriter, tuple[int, int]]] = {}
        self.outputs: dict[str, _Output] = {}
        self.paths: dict[str, Path] = {}
        self.frames: dict[str, int] = {}
        self.failed = False

    def _path_for(self, source_id: str) -> Path:
        if not self.per_source:
            return self.path
        return self.path.with_name(f"{self.path.stem}.{source_id}{self.path.suffix}")

    def write(self, result: FrameResult) -> None:
        try:
            self._write(result)
        except BaseException:
            self.failed = True
            raise

    def _write(self, result: FrameResult) -> None:
        sid = result.source_id
        image = result.annotated() if self.annotate else result.frame.image
        entry = self.writers.get(sid)
        if entry is None:
            path = self._path_for(sid)
            out = self.outputs[sid] = _Output(path)
            target = out.open()
            h, w = image.shape[:2]
            fps = self.fps or (result.fps if 0 < result.fps <= 240 else 25.0)
            writer = self.writer_factory(str(target), self.fourcc, fps, (w, h))
            if not writer.isOpened():
                raise OutputError(f"cannot open {path} for writing")
            entry = self.writers[sid] = (writer, (w, h))
            self.paths[sid] = path
            self.frames[sid] = 0
        writer, size = entry
        if (image.shape[1], image.shape[0]) != size:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        writer.write(image)
        self.frames[sid] += 1
        if self.frames[sid] % self.SPACE_CHECK_EVERY == 0 and not self.outputs[sid].special:
            _check_space(self.paths[sid])

    def close(self) -> None:
        for writer, _ in self.writers.values():
            writer.release()
        self.writers.clear()
        keep = not self.failed and _keep(self)
        problems = []
        for sid, out in self.outputs.items():
            ok = keep and self.frames.get(sid, 0) > 0
            if ok and not out.special:
                problem = verify_video(out.written, self.frames[sid])
                if problem:
                    problems.append(f"{out.path}: {problem}")
                    ok = False
            out.finish(ok)
            if not ok:  # `paths` names the files written: the summary must not list one that was not
                self.paths.pop(sid, None)
        self.outputs.clear()
        if problems:
            raise OutputError("; ".join(problems) + " (not written; an earlier file there is kept)")


def _check_space(path: Path) -> None:
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return
    if st.f_bavail == 0:
        raise OutputError(f"cannot write {path}: {os.strerror(errno.ENOSPC)}")


def verify_video(path: Path, frames: int) -> str | None:
    """Why the video file just written is not what was written (None when it is): it must open, claim
    the frames written, and its last frame must decode. OpenCV's writer reports no I/O error, so a
    full disk shows only here."""
    try:
        size = path.stat().st_size
    except OSError as e:
        return f"the file written is gone ({e.strerror or e})"
    if size == 0:
        return "nothing reached the file (is the disk full?)"
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            return "the file written does not open as a video (is the disk full?)"
        claimed = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if claimed < frames:
            return f"only {claimed} of {frames} frames written can be read back (is the disk full?)"
        if frames > 1:
            cap.set(cv2.CAP_PROP_POS_FRAMES, frames - 1)
        ok, image = cap.read()
        if not ok or image is None:
            return f"its last frame ({frames}) cannot be read back (is the disk full?)"
    finally:
        cap.release()
    return None


class JsonLinesSink:
    """One JSON object per frame (FrameResult.to_event). Each line goes to the file in one write of
    its whole bytes; a short write (a full disk) is cut back and fails the sink, so the file never
    holds half a line. The lines go to a hidden temporary file beside the output, renamed into place
    at a successful close: a failed or killed run leaves the earlier file (or none). A FIFO or a
    device (/dev/stdout) is written in place, line by line.

    commit_if: an optional callable asked at close; False discards the output (a failed run)."""

    name = "json"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = check_output(path, "--json-out")
        self._out = _Output(self.path)
        self._fd: int | None = None
        self.commit_if: Callable[[], bool] | None = None
        self.failed = False
        self.lines = 0

    def write(self, result: FrameResult) -> None:
        self._line(result.to_event())

    def write_events(self, events: list[dict[str, Any]]) -> None:
        """The run's closing events, one line per stream: {"source", "end_of_run": true, "events"}, no
        "detections" key (it is not a frame)."""
        by_stream: dict[str, list[dict[str, Any]]] = {}
        for ev in events:
            by_stream.setdefault(str(ev.get("stream", "")), []).append(ev)
        for sid, evs in by_stream.items():
            self._line({"source": sid, "end_of_run": True, "events": evs})

    def _line(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        try:
            if self._fd is None:
                target = self._out.open()
                if self._out.special:
                    self._fd = _open_special(target)
                else:
                    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
                    self._fd = os.open(target, flags, 0o644)
            write_all(self._fd, data)
        except OSError as e:
            self.failed = True
            why = "a FIFO with no reader" if e.errno == errno.ENXIO else (e.strerror or str(e))
            raise OutputError(f"cannot write {self.path}: {why} (after {self.lines} complete lines)") from None
        self.lines += 1

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        self._out.finish(not self.failed and self.lines > 0 and _keep(self))


def _open_special(path: Path) -> int:
    """Open a FIFO or device for writing. A FIFO with no reader is an error now (ENXIO from a
    non-blocking open) instead of a sink thread blocked forever in open(2)."""
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    os.set_blocking(fd, True)
    return fd


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

    def write_events(self, events: list[dict[str, Any]]) -> None:
        """Events that belong to no frame (hooks' end_of_run) to the sinks that carry events."""
        for sink in list(self.sinks):
            put = getattr(sink, "write_events", None)
            if put is None:
                continue
            try:
                put(events)
            except Exception as e:
                self._fail(sink, e, "write_events")

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
