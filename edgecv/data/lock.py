"""An inter-process lock for the cache: several trainings started at once on one machine must not
extract or download the same data set side by side (one deletes folders the other is reading)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows: no flock; the cache is then single-process, as before
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed) for the block; released on exit or crash
    (the kernel drops a dead process's flock, so a killed extraction never leaves the cache locked)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
