"""Video files decoded on an NVIDIA GPU (NVDEC) through PyNvVideoCodec (`--decode nvdec|auto|cpu`).

`resolve_decode` turns the request into what runs: "nvdec" only where PyNvVideoCodec imports (it
loads the NVIDIA driver's video libraries at import, so a box without the driver fails there);
otherwise "cpu" (OpenCV's FFmpeg decode), and a request for nvdec says why in one
warning. NvdecReader hands the pipeline host HxWx3 uint8 BGR frames like every reader.

The boundary: frames leave the GPU right after decode. Keeping them there through the detector's
resize and the classifier's crops needs those stages to take device arrays (CUDA array interface)
and ONNX Runtime IO binding on device pointers; that is not built, and nothing in this module has run
on a GPU yet (the development box has none: docs/detection.md says what was and was not verified).
"""
from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np

from edgecv.errors import ConfigError, SourceError, unknown

from .sources import CaptureReader, Reader, max_frame_pixels

log = logging.getLogger(__name__)

DECODES = ("cpu", "nvdec", "auto")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@functools.lru_cache(maxsize=1)
def nvdec_unavailable() -> str | None:
    """None where NVDEC decode can run; else the reason, one line. Looked up once per process."""
    try:
        import PyNvVideoCodec  # noqa: F401  (its import loads the driver's NVENC/NVDEC libraries)
    except ImportError:
        return "PyNvVideoCodec is not installed (install edgecv[gpu])"
    except Exception as e:  # the package raises RuntimeError when the driver libraries are missing
        return f"PyNvVideoCodec cannot start: {_first_line(e)} (no NVIDIA GPU or driver)"
    return None


def resolve_decode(decode: str | None) -> str:
    """The decoder that runs for a request: cpu | nvdec | auto (nvdec where available, else cpu).
    "nvdec" where it cannot run falls back to cpu with one warning (per call: build_sources calls
    this once for all its sources)."""
    decode = decode or "cpu"
    if decode not in DECODES:
        raise ConfigError(unknown("decode", decode, DECODES))
    if decode == "cpu":
        return "cpu"
    why = nvdec_unavailable()
    if why is None:
        return "nvdec"
    if decode == "nvdec":
        log.warning("NVDEC decode unavailable (%s); decoding on the CPU", why)
    return "cpu"


class NvdecReader(Reader):
    """A video file decoded by NVDEC (PyNvVideoCodec.SimpleDecoder, RGB out, host memory), handed on
    as HxWx3 uint8 BGR. Files only: NVDEC's simple decoder needs a seekable container."""

    decoder = "nvdec"

    def __init__(self, path: str, gpu_id: int = 0) -> None:
        self.path, self.gpu_id = path, gpu_id
        self._dec: Any = None
        self._i = 0

    def open(self) -> None:
        import PyNvVideoCodec as nvc

        try:
            self._dec = nvc.SimpleDecoder(self.path, gpu_id=self.gpu_id, use_device_memory=False,
                                          output_color_type=nvc.OutputColorType.RGB)
            meta = self._dec.get_stream_metadata()
        except Exception as e:  # the package raises plain Exception/RuntimeError for a bad stream
            raise SourceError(f"{self.path}: NVDEC cannot decode it ({_first_line(e)})") from None
        self.fps = float(getattr(meta, "average_fps", 0.0) or 0.0)
        self.expected_frames = len(self._dec) or None
        self._i = 0

    def read(self) -> np.ndarray | None:
        if self._dec is None or (self.expected_frames is not None and self._i >= self.expected_frames):
            return None
        try:
            frames = self._dec.get_batch_frames(1)
        except Exception as e:
            self.last_error = _first_line(e)
            return None
        if not frames:
            return None
        self._i += 1
        rgb = np.from_dlpack(frames[0]) if hasattr(frames[0], "__dlpack__") else np.asarray(frames[0])
        rgb = rgb.reshape(rgb.shape[-3:])
        if rgb.shape[0] * rgb.shape[1] > max_frame_pixels():
            raise SourceError(f"{self.path}: {rgb.shape[1]}x{rgb.shape[0]} frames exceed the "
                              f"{max_frame_pixels():,}-pixel limit (--max-frame-pixels raises it)")
        return np.ascontiguousarray(rgb[..., ::-1])

    def close(self) -> None:
        self._dec = None


def video_reader(path: str, decode: str) -> Reader:
    """The reader for a video file under a resolved decode ("cpu" or "nvdec")."""
    if decode == "nvdec":
        return NvdecReader(path)
    return CaptureReader(path, "file")
