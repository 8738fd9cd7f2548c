"""Dynamic batching: crops from every frame of every source are run together, up to `max_batch`
images or until the oldest waiting crop has waited `max_delay_ms`, whichever comes first.

Callers submit a frame's crops as one request with a callback; the callback receives exactly that
request's rows of the output, in the order submitted.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgecv.errors import ConfigError

log = logging.getLogger(__name__)

Callback = Callable[[np.ndarray | None, BaseException | None], None]


@dataclass
class _Request:
    batch: np.ndarray
    callback: Callback
    t_submit: float = field(default_factory=time.monotonic)


class Batcher:
    """Runs `infer(NxHxWxC float32) -> NxK float32` on batches formed across requests, in one thread."""

    def __init__(self, infer: Callable[[np.ndarray], np.ndarray], max_batch: int = 32, max_delay_ms: float = 5.0,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        if int(max_batch) < 1:
            raise ConfigError(f"max_batch must be at least 1; got {max_batch}")
        if not max_delay_ms >= 0:
            raise ConfigError(f"max_delay_ms must be >= 0; got {max_delay_ms}")
        self.infer = infer
        self.max_batch = int(max_batch)
        self.max_delay = float(max_delay_ms) / 1000.0
        self.on_batch = on_batch
        self.batches = 0
        self.images = 0
        self._pending: deque[_Request] = deque()
        self._n_queued = 0  # images in _pending
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def submit(self, batch: np.ndarray, callback: Callback) -> None:
        """Queue a request (kxHxWxC float32, k >= 1); `callback(outputs, error)` runs in the batcher thread."""
        with self._cv:
            if self._closed:
                raise RuntimeError("batcher is closed")
            self._pending.append(_Request(batch, callback))
            self._n_queued += len(batch)
            # Wake the batcher only when it has something to do: the first request starts its
            # delay clock, a full batch ends the wait. Waking it on every request cost a thread
            # switch per frame for nothing.
            if len(self._pending) == 1 or self._n_queued >= self.max_batch:
                self._cv.notify()

    def close(self, timeout: float | None = None) -> None:
        """Run what is queued, then stop the thread."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout)

    def _take(self) -> list[_Request] | None:
        """Wait for a full batch, an expired delay, or close; None when closed and empty."""
        with self._cv:
            while True:
                if self._pending:
                    waited = time.monotonic() - self._pending[0].t_submit
                    if self._closed or self._n_queued >= self.max_batch or waited >= self.max_delay:
                        break
                    self._cv.wait(self.max_delay - waited)
                elif self._closed:
                    return None
                else:
                    self._cv.wait()
            taken, n = [], 0
            while self._pending and (not taken or n + len(self._pending[0].batch) <= self.max_batch):
                r = self._pending.popleft()
                taken.append(r)
                n += len(r.batch)
            self._n_queued -= n
            return taken

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            batch = taken[0].batch if len(taken) == 1 else np.concatenate([r.batch for r in taken])
            t0 = time.monotonic()
            try:
                # A single request larger than max_batch (a crowded frame) runs in max_batch chunks.
                if len(batch) > self.max_batch:
                    out = np.concatenate([self.infer(batch[i:i + self.max_batch])
                                          for i in range(0, len(batch), self.max_batch)])
                else:
                    out = self.infer(batch)
                err = None
            except Exception as e:  # reported to every waiting request; the pipeline decides what is fatal
                out, err = None, e
            dt = time.monotonic() - t0
            self.batches += 1
            self.images += len(batch)
            if self.on_batch is not None:
                self.on_batch(len(batch), dt)
            start = 0
            for r in taken:
                k = len(r.batch)
                try:
                    r.callback(None if out is None else out[start:start + k], err)
                except Exception:
                    log.exception("batcher callback failed")
                start += k
