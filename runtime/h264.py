"""`--save OUT.mp4` as H.264, which browsers play (mp4v, all the pip OpenCV builds can write, they do
not: TOOLCHAIN.md), through an ffmpeg process with libx264 when one is on the PATH; otherwise mp4v
with a warning.

The writer has cv2.VideoWriter's shape (isOpened / write / release), so runtime.sinks.VideoSink keeps
its temporary file, read-back check and rename. ffmpeg runs in its own session: a Ctrl+C at the
terminal drains the pipeline and then ends the file, instead of killing the encoder mid-stream.
Preset ultrafast: transcoding smile.mp4 on the 2-core dev box took 15 ms of CPU a 1080p frame, decode
included (veryfast 35 ms), for files about 2.5x larger.
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgecv.safeio import TMP_TAG, OutputError

log = logging.getLogger("edgecv.video")


@functools.lru_cache(maxsize=1)
def h264_encoder() -> str | None:
    """The ffmpeg executable when it has libx264, else None (asked once per process)."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return exe if b"libx264" in out else None


class FfmpegH264Writer:
    """cv2.VideoWriter's interface over `ffmpeg -f rawvideo -i - -c:v libx264`. Frames: HxWx3 uint8
    BGR of the size given (odd sizes are padded by a pixel: yuv420p needs even ones)."""

    def __init__(self, path: str, fourcc: Any, fps: float, size: tuple[int, int]) -> None:
        exe = h264_encoder()
        if exe is None:
            raise OutputError("ffmpeg with libx264 is not available")
        w, h = size
        self.path, self.size = path, (w, h)
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [exe, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
             "-s", f"{w}x{h}", "-r", f"{fps:.6g}", "-i", "-", "-an", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
             "-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", "-pix_fmt", "yuv420p",
             "-movflags", "+faststart", "-f", "mp4", path],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._err, start_new_session=True)
        self.failed: str | None = None

    def isOpened(self) -> bool:  # noqa: N802 (cv2's name)
        return self.proc.poll() is None

    def _why(self) -> str:
        self._err.seek(0)
        text = self._err.read().decode(errors="replace").strip().splitlines()
        return text[-1] if text else f"ffmpeg exited with {self.proc.returncode}"

    def write(self, image: np.ndarray) -> None:
        if self.failed:
            return
        try:
            self.proc.stdin.write(np.ascontiguousarray(image).data)
        except (BrokenPipeError, OSError, ValueError):
            self.proc.wait(10)
            self.failed = self._why()
            raise OutputError(f"cannot write {_shown(self.path)}: the H.264 encoder stopped ({self.failed})") \
                from None

    def release(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.returncode != 0 and not self.failed:
            self.failed = self._why()
            log.error("H.264 encoder failed on %s: %s", self.path, self.failed)
        self._err.close()


def _shown(path: str) -> str:
    """The output's own path for a message, not the hidden temporary written (safeio.temp_path)."""
    p = Path(path)
    name = p.name
    if name.startswith(".") and TMP_TAG in name:
        return str(p.with_name(name[1:name.index(TMP_TAG)]))
    return str(p)


def video_sink(path: str | os.PathLike, per_source: bool = False):
    """A VideoSink for --save: .mp4 in H.264 when ffmpeg with libx264 is there, else mp4v with a
    warning; .avi in MJPG as before."""
    from .sinks import VideoSink

    sink = VideoSink(path, per_source=per_source)
    if Path(path).suffix.lower() == ".mp4":
        if h264_encoder() is not None:
            sink.writer_factory = FfmpegH264Writer
        else:
            log.warning("no H.264 encoder (ffmpeg with libx264) found: %s is written as mp4v, which browsers "
                        "do not play (install ffmpeg, or save as .avi)", path)
    return sink
