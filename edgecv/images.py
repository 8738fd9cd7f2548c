"""Reading images from files and bytes safely: size limits before decoding, clear errors.

cv2.imread returns None for every kind of failure; here each failure has its own message, and an
image whose header claims more than MAX_PIXELS is refused before any pixel is decoded
(decompression bombs).
"""
from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import cv2
import numpy as np

from .errors import DataError
from .safeio import read_limited

MAX_PIXELS = int(os.environ.get("EDGECV_MAX_IMAGE_PIXELS", 40_000_000))
MAX_BYTES = 256 * 1024 * 1024
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a PNG, JPEG, GIF, BMP, WebP, TIFF or PNM header, or None if not recognised."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _tiff_size(data)
    if data[:1] == b"P" and data[1:2] in b"123456" and len(data) > 2 and data[2:3].isspace():
        return _pnm_size(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return w, h
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            length = struct.unpack(">H", data[i + 2:i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return w, h
            if length < 2:
                return None
            i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """Width and length from the first IFD (classic TIFF and BigTIFF); None when unreadable."""
    e = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    try:
        if big:
            (ifd,) = struct.unpack(e + "Q", data[8:16])
            (count,) = struct.unpack(e + "Q", data[ifd:ifd + 8])
            first, size = ifd + 8, 20
        else:
            (ifd,) = struct.unpack(e + "I", data[4:8])
            (count,) = struct.unpack(e + "H", data[ifd:ifd + 2])
            first, size = ifd + 2, 12
        dims: dict[int, int] = {}
        for k in range(min(count, 4096)):
            entry = data[first + k * size:first + (k + 1) * size]
            tag, typ = struct.unpack(e + "HH", entry[:4])
            if tag in (256, 257):
                value = entry[12:] if big else entry[8:]
                fmt = {3: "H", 4: "I", 16: "Q"}.get(typ)
                if fmt is None:
                    return None
                dims[tag] = struct.unpack(e + fmt, value[:struct.calcsize(fmt)])[0]
                if len(dims) == 2:
                    return dims[256], dims[257]
    except struct.error:
        return None
    return None


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    """PBM/PGM/PPM (P1-P6): whitespace-separated width and height after the magic, # comments allowed."""
    fields: list[int] = []
    for line in data[2:4096].splitlines():
        for tok in line.split(b"#", 1)[0].split():
            if not tok.isdigit():
                return None
            fields.append(int(tok))
            if len(fields) == 2:
                return fields[0], fields[1]
    return None


def decode_image(data: bytes, name: str = "<bytes>", gray: bool = False) -> np.ndarray:
    """Decode image bytes to HxWx3 uint8 BGR (or HxW gray). Alpha is dropped, 16-bit scaled down."""
    if not data:
        raise DataError(f"{name}: empty file")
    size = header_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise DataError(f"{name}: {size[0]}x{size[1]} image exceeds the {MAX_PIXELS:,}-pixel limit "
                        "(EDGECV_MAX_IMAGE_PIXELS)")
    buf = np.frombuffer(data, np.uint8)
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # OpenCV's own pixel limit and some corrupt streams raise
        if "CV_IO_MAX_IMAGE_PIXELS" in str(e):  # a format header_size does not read (see edgecv.cli)
            raise DataError(f"{name}: image exceeds the {MAX_PIXELS:,}-pixel limit (EDGECV_MAX_IMAGE_PIXELS)") from None
        raise DataError(f"{name}: cannot decode image ({str(e).strip().splitlines()[-1]})") from None
    if image is None or image.size == 0:
        raise DataError(f"{name}: not an image or corrupt")
    if image.dtype != np.uint8:
        image = (image / 257).astype(np.uint8) if image.dtype == np.uint16 else image.astype(np.uint8)
    if gray:
        return image
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def read_image(path: str | os.PathLike, gray: bool = False) -> np.ndarray:
    """Read an image file: HxWx3 uint8 BGR, or HxW uint8 when gray=True. Raises DataError."""
    path = Path(path)
    # A FIFO or device would block or never end: only regular files are images.
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = None  # read_limited words the reason (no such file, permission denied, ...)
    if mode is not None and not stat.S_ISREG(mode):
        raise DataError(f"{path}: {'is a directory' if stat.S_ISDIR(mode) else 'not a file'}")
    data = read_limited(path, MAX_BYTES, "", DataError)
    return decode_image(data, str(path), gray=gray)


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files below a folder, sorted, hidden files skipped."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and is_image_path(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts))
