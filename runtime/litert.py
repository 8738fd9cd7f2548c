"""The LiteRT backend (.tflite): one interpreter per batch bucket, and a hot path that does as little
Python per call as it can (docs/benchmark.md, "Findings for the runtime")."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from edgecv.errors import BackendError, ConfigError, ModelError
from edgecv.modelfile import first_line
from edgecv.spec import ModelSpec

from .backend_base import DEFAULT_BUCKETS, BackendBase, InputSpec, check_rows

MAX_TFLITE_BYTES = 2**31


class _Bucket:
    """One batch bucket's interpreter with everything a call needs, set up once.

    Per-call Python work is what separates `backend.run` from a bare `invoke()` loop, and right
    after an invoke every numpy call runs with cold caches (2-5 us each, measured), so the hot path
    makes as few calls as possible: inputs go straight into the interpreter's input buffer, int8/uint8
    quantization (scale, round half to even, saturate, cast) is one OpenCV `addWeighted` call, and
    dequantization is one table lookup straight from the output buffer (docs/benchmark.md).

    The input and output buffers are numpy views held for the bucket's life, and the model is run
    through the wrapper's own Invoke(). The public invoke() refuses to run while such views exist,
    because allocate_tensors() or a resize could move the buffers; this bucket never calls either
    after set-up (a new batch size gets a new bucket), so the views stay valid. A LiteRT without
    that wrapper gets views made per call and the public invoke().
    """

    def __init__(self, it: Any, size: int) -> None:
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        self.it, self.size = it, size
        self.out_index = out["index"]
        self.in_cv = None
        in_dtype = np.dtype(inp["dtype"])
        if in_dtype in (np.int8, np.uint8):
            scale, zero = inp["quantization"]
            if not scale:  # raw uint8 pixels (export --input uint8-rgb): no quantization parameters
                scale, zero = 1.0, 0
            # dst = saturate_cast<int8|uint8>(round_half_even(x / scale + zero)): the TFLite formula.
            self.in_cv = (1.0 / float(scale), float(zero), cv2.CV_8S if in_dtype == np.int8 else cv2.CV_8U)
        self.out_lut = None
        out_dtype = np.dtype(out["dtype"])
        if out_dtype in (np.int8, np.uint8):
            scale, zero = out["quantization"]
            codes = np.arange(256, dtype=np.uint8).view(out_dtype).astype(np.float32)
            self.out_lut = ((codes - np.float32(zero)) * np.float32(scale)).astype(np.float32)
        self.in_view = it.tensor(inp["index"])
        self.out_view = it.tensor(out["index"])
        self.in_buf = self.out_buf = None
        self._invoke = None
        if hasattr(getattr(it, "_interpreter", None), "Invoke"):
            # The output buffer exists only after a first invoke (LiteRT allocates it lazily); that
            # invoke must come before anything here holds the wrapper (invoke() counts references).
            view = self.in_view()
            view.fill(0)
            del view
            it.invoke()
            self._invoke = it._interpreter.Invoke
            self.in_buf, self.out_buf = self.in_view(), self.out_view()
            # 2-D views in OpenCV's layout for the quantizing write, one per possible n.
            h, w, c = self.in_buf.shape[1:]
            self._in_2d = [self.in_buf[:n].reshape(n * h, w * c) for n in range(size + 1)]

    def run(self, chunk: np.ndarray) -> np.ndarray:
        """chunk: n <= size float32 images, C-contiguous. Rows n..size keep whatever an earlier
        batch left there: each image's output depends on its own row only, and those outputs are
        dropped."""
        if self._invoke is None:
            return self._run_public(chunk)
        n = len(chunk)
        if self.in_cv is None:
            self.in_buf[:n] = chunk
        else:
            alpha, gamma, depth = self.in_cv
            dst = self._in_2d[n]
            src = chunk.reshape(dst.shape)
            cv2.addWeighted(src, alpha, src, 0.0, gamma, dst=dst, dtype=depth)
        self._invoke()
        if self.out_buf.shape[0] != self.size:
            check_rows(self.out_buf.shape[0], self.size, "the TFLite model")
        y = self.out_buf if n == self.size else self.out_buf[:n]
        if self.out_lut is None:
            return y.astype(np.float32)  # a copy: the buffer is reused by the next invoke
        return self.out_lut.take(y.view(np.uint8))

    def _run_public(self, chunk: np.ndarray) -> np.ndarray:
        n = len(chunk)
        view = self.in_view()
        if self.in_cv is None:
            view[:n] = chunk
        else:
            alpha, gamma, depth = self.in_cv
            src = chunk.reshape(-1, chunk.shape[-2] * chunk.shape[-1])
            cv2.addWeighted(src, alpha, src, 0.0, gamma, dst=view[:n].reshape(src.shape), dtype=depth)
        del view
        self.it.invoke()
        y = self.it.get_tensor(self.out_index)
        check_rows(len(y), self.size, "the TFLite model")
        if n < self.size:
            y = y[:n]
        if self.out_lut is None:
            return y if y.dtype == np.float32 else y.astype(np.float32)
        return self.out_lut.take(y.view(np.uint8))

    def close(self) -> None:
        self.in_buf = self.out_buf = None
        self._in_2d = []


class LiteRTBackend(BackendBase):
    """TFLite through ai_edge_litert (tf.lite only if LiteRT is missing).

    Resizing an interpreter's input reallocates all tensors, so each batch bucket gets its own
    interpreter, built on first use and kept; a batch is padded to the next bucket and split when
    larger than the largest one. int8/uint8 inputs and outputs are (de)quantized here with the
    tensors' own scale and zero point.
    """

    name = "litert"

    def __init__(self, path: str | os.PathLike, spec: ModelSpec, threads: int | None = None,
                 buckets: tuple[int, ...] = DEFAULT_BUCKETS) -> None:
        self.path = Path(path)
        self.spec = spec
        self.threads = threads
        self.buckets = tuple(sorted(set(int(b) for b in buckets)))
        if not self.buckets or self.buckets[0] < 1:
            raise ConfigError(f"batch buckets must be positive ints; got {buckets!r}")
        # A flatbuffer cannot exceed 2 GiB: a larger file is refused before it is read into memory.
        size = self.path.stat().st_size
        if size > MAX_TFLITE_BYTES:
            raise ModelError(f"{self.path}: {size:,} bytes is more than a TFLite flatbuffer can hold (2 GiB)")
        self._content = self.path.read_bytes()
        self._factory = _litert_factory()
        # get_input_details()/get_output_details() build dicts on every call (20-60 us each: 10-25%
        # of a LeNet invoke at batch 1), so each bucket's are read once, with its interpreter.
        self._buckets: dict[int, _Bucket] = {}
        # _by_n[n]: the bucket that runs n images, once made (a list index is cheaper than a search).
        self._by_n: list[_Bucket | None] = [None] * (self.buckets[-1] + 1)
        self._lock = threading.Lock()
        base = self._bucket(self.buckets[0]).it
        inp = base.get_input_details()[0]
        sig = tuple(int(d) for d in inp.get("shape_signature", inp["shape"]))
        shape = tuple(None if d < 0 else d for d in sig)
        self._check_model_shape(shape, self.path)
        out = base.get_output_details()[0]
        self._check_output_shape(tuple(int(d) for d in out.get("shape_signature", out["shape"])), self.path)
        q = inp.get("quantization") or (0.0, 0)
        self.input_spec = InputSpec(inp["name"], (None,) + shape[1:], np.dtype(inp["dtype"]).name,
                                    (float(q[0]), int(q[1])) if q[0] else None)

    def _bucket(self, bucket: int) -> _Bucket:
        b = self._buckets.get(bucket)
        if b is not None:
            return b
        try:
            it = self._factory(model_content=self._content, num_threads=self.threads)
            inp = it.get_input_details()[0]
            if int(inp["shape"][0]) != bucket:
                it.resize_tensor_input(inp["index"], [bucket, *[int(d) for d in inp["shape"][1:]]])
            it.allocate_tensors()
            b = _Bucket(it, bucket)
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{self.path}: LiteRT cannot load this model ({first_line(e)})") from None
        self._buckets[bucket] = b
        for n in range(1, bucket + 1):
            if self._by_n[n] is None and self.bucket_for(n) == bucket:
                self._by_n[n] = b
        return b

    def bucket_for(self, n: int) -> int:
        """The smallest bucket that holds n images (the largest bucket when none does)."""
        return next((b for b in self.buckets if b >= n), self.buckets[-1])

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = self._check_batch(batch)
        n = len(batch)
        if n == 0:
            return np.zeros((0, len(self.spec.labels) or 1), np.float32)
        top = self.buckets[-1]
        with self._lock:  # interpreters are not thread-safe
            if n <= top:
                b = self._by_n[n]
                return (b or self._bucket(self.bucket_for(n))).run(batch)
            return np.concatenate([self._bucket(self.bucket_for(len(c))).run(c)
                                   for c in (batch[i:i + top] for i in range(0, n, top))])

    def close(self) -> None:
        for b in self._buckets.values():
            b.close()
        self._buckets.clear()
        self._by_n = [None] * len(self._by_n)


def _litert_factory() -> Callable[..., Any]:
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter
    except ImportError:
        pass
    try:  # a training box may have TensorFlow but not LiteRT; never the other way round on the edge
        import tensorflow as tf  # noqa: F401
        return tf.lite.Interpreter
    except ImportError:
        raise BackendError("the litert backend needs ai-edge-litert: pip install ai-edge-litert") from None
