"""Inference backends behind one protocol: LiteRT (.tflite), ONNX Runtime (.onnx) and Keras (.keras,
reference only). Each takes an NxHxWxC float32 batch preprocessed by the model's ModelSpec and
returns the model's first output as float32 (quantized models are (de)quantized inside).

Nothing here imports TensorFlow or Keras at module level: an edge box has neither.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import cv2
import numpy as np

from edgecv.errors import BackendError, ConfigError, ModelError, ModelSpecError, unknown
from edgecv.modelfile import first_line, load_spec
from edgecv.spec import ModelSpec

log = logging.getLogger(__name__)

BACKENDS = ("litert", "onnxruntime", "keras")
DEVICES = ("cpu", "cuda", "tensorrt")
SUFFIX_BACKEND = {".tflite": "litert", ".onnx": "onnxruntime", ".keras": "keras"}
# Which backends can run which files; a mismatch is a user error, not a silent conversion.
BACKEND_SUFFIXES = {"litert": (".tflite",), "onnxruntime": (".onnx",), "keras": (".keras",)}
# TFLite batch buckets: one interpreter per size, allocated once; a batch is padded up to its bucket.
DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class InputSpec:
    """The model's input tensor: name, shape (batch dimension None when dynamic), dtype and,
    for quantized inputs, (scale, zero_point)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    quantization: tuple[float, int] | None = None


@runtime_checkable
class Backend(Protocol):
    """What the pipeline needs from an inference engine."""

    spec: ModelSpec
    input_spec: InputSpec
    name: str

    def run(self, batch: np.ndarray) -> np.ndarray:
        """NxHxWxC float32 (preprocessed per spec) -> NxK float32 (the model's first output)."""
        ...

    def close(self) -> None: ...


class BackendBase:
    """Shared checks and the context-manager protocol."""

    name = "base"
    spec: ModelSpec
    input_spec: InputSpec

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        pass

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        want = self.spec.input_shape
        if (type(batch) is np.ndarray and batch.dtype == np.float32 and batch.shape[1:] == want
                and batch.flags.c_contiguous):
            return batch  # the usual case, checked with as little work as possible
        batch = np.asarray(batch)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != want:
            raise BackendError(f"{self.name}: batch must be Nx{want[0]}x{want[1]}x{want[2]} float32; "
                               f"got shape {batch.shape}")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def _check_model_shape(self, shape: tuple[int | None, ...], path: Path) -> None:
        want = tuple(self.spec.input_shape)
        got = tuple(shape[1:])
        if len(shape) != 4 or any(g is not None and g != w for g, w in zip(got, want)):
            raise ModelSpecError(f"{path}: model input shape {list(shape)} does not match the ModelSpec "
                                 f"input_shape {list(want)}")


def quantize(x: np.ndarray, q: tuple[float, int], dtype: np.dtype) -> np.ndarray:
    scale, zero = q
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


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
        if n < self.size:
            y = y[:n]
        if self.out_lut is None:
            return y if y.dtype == np.float32 else y.astype(np.float32)
        return self.out_lut.take(y.view(np.uint8))

    def close(self) -> None:
        self.in_buf = self.out_buf = None
        self._in_2d = []


def dequantize(x: np.ndarray, q: tuple[float, int]) -> np.ndarray:
    scale, zero = q
    return ((x.astype(np.float32) - zero) * scale).astype(np.float32)


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


ORT_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class OrtBackend(BackendBase):
    """ONNX Runtime on CPU, CUDA or TensorRT.

    A requested provider that this onnxruntime build lacks (or that fails to load its libraries)
    is logged as a WARNING naming it, and the session runs on what is left (CPU last): never a
    silent fallback. On a GPU provider, inputs and outputs go through IO binding (runtime.ort_io:
    fixed per-bucket device buffers, a page-locked staging buffer, one copy each way per batch);
    `io_binding=True` forces that path on the CPU too (how it is tested without a GPU), and
    `cuda_graph=True` captures one CUDA graph per batch bucket (CUDA provider only; otherwise a
    warning and plain runs).
    """

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, spec: ModelSpec, device: str = "cpu",
                 threads: int | None = None, io_binding: bool | None = None, cuda_graph: bool = False,
                 buckets: tuple[int, ...] = DEFAULT_BUCKETS + (128, 256)) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.spec = spec
        if device not in ORT_PROVIDERS:
            raise ConfigError(unknown("device", device, DEVICES))
        self.requested = device
        available = set(ort.get_available_providers())
        wanted = ORT_PROVIDERS[device]
        missing = [p for p in wanted if p not in available]
        providers = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        for p in missing:
            log.warning("onnxruntime provider %s was requested (--device %s) but this onnxruntime build lacks it "
                        "(available: %s); falling back to %s", p, device, ", ".join(sorted(available)),
                        providers[0])
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # Idle intra-op threads spin by default; in a pipeline that takes CPU from the detector
        # threads running beside inference, for nothing.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        use_graph = cuda_graph and providers[0] == "CUDAExecutionProvider"
        if cuda_graph and not use_graph:
            log.warning("CUDA graphs were requested but the session runs on %s, not CUDA; running without them",
                        providers[0])
        session_providers: list[Any] = list(providers)
        if use_graph:
            session_providers[0] = ("CUDAExecutionProvider", {"enable_cuda_graph": "1"})
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=session_providers)
        except Exception as e:  # ORT raises its own Fail/InvalidProtobuf/NoSuchFile types
            raise ModelError(f"{self.path}: onnxruntime cannot load this model ({first_line(e)})") from None
        active = self.session.get_providers()
        for p in providers:
            if p not in active and p not in missing:
                log.warning("onnxruntime provider %s is installed but failed to start (missing CUDA/cuDNN/"
                            "TensorRT libraries?); running on %s", p, ", ".join(active))
        self.providers = tuple(active)
        self.device = "cpu" if active == ["CPUExecutionProvider"] else ("cuda" if "CUDAExecutionProvider" in active[:1]
                                                                       else active[0])
        i = self.session.get_inputs()[0]
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in i.shape)
        self._check_model_shape(shape, self.path)
        self.input_spec = InputSpec(i.name, (None,) + shape[1:], _ort_dtype(i.type))
        self._output = self.session.get_outputs()[0].name
        self._fixed_batch = shape[0]
        self.cuda_graph = use_graph and self.device == "cuda"
        self._bound = None
        if io_binding or (io_binding is None and self.device != "cpu") or self.cuda_graph:
            from .ort_io import BoundRunner

            sizes = (self._fixed_batch,) if self._fixed_batch else tuple(buckets)
            try:
                self._bound = BoundRunner(self.session, self.input_spec.name, self._output, self.spec.input_shape,
                                          "cpu" if self.device == "cpu" else "cuda", sizes, self.cuda_graph)
            except ValueError as e:
                raise ModelError(f"{self.path}: {e}") from None

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = self._check_batch(batch)
        n = len(batch)
        if n == 0:
            return np.zeros((0, len(self.spec.labels) or 1), np.float32)
        if self._bound is not None:
            return self._bound.run(batch)  # pads to its buckets (a fixed-batch model: one bucket)
        if self._fixed_batch is not None and n != self._fixed_batch:
            # A model exported with a fixed batch: run it image group by image group.
            return np.concatenate([self.run(batch[i:i + self._fixed_batch]) for i in range(0, n, self._fixed_batch)])
        y = self.session.run([self._output], {self.input_spec.name: batch})[0]
        return np.asarray(y, np.float32)

    @property
    def io_binding(self) -> bool:
        return self._bound is not None

    def close(self) -> None:
        if self._bound is not None:
            self._bound.close()
            self._bound = None


def _ort_dtype(t: str) -> str:
    return {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
            "tensor(int8)": "int8"}.get(t, t)


class KerasBackend(BackendBase):
    """A `.keras` model run with Keras itself: the reference the exported models are checked
    against, never the fast path. Loaded in safe mode (no Lambda-layer code from a file)."""

    name = "keras"

    def __init__(self, path: str | os.PathLike, spec: ModelSpec, threads: int | None = None) -> None:
        try:
            import keras
        except ImportError:
            raise BackendError("the keras backend needs Keras: pip install 'edgecv[train]'") from None
        self.path = Path(path)
        self.spec = spec
        try:
            self.model = keras.saving.load_model(str(self.path), compile=False, safe_mode=True)
        except Exception as e:  # Keras raises ValueError/TypeError/OSError for bad files
            raise ModelError(f"{self.path}: Keras cannot load this model ({first_line(e)})") from None
        shape = tuple(self.model.inputs[0].shape)
        self._check_model_shape(shape, self.path)
        self.input_spec = InputSpec(self.model.inputs[0].name, (None,) + shape[1:], "float32")

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = self._check_batch(batch)
        if len(batch) == 0:
            return np.zeros((0, len(self.spec.labels) or 1), np.float32)
        # A direct call, not predict(): predict costs ~60 ms of set-up per call (TOOLCHAIN.md).
        y = self.model(batch, training=False)
        if isinstance(y, (list, tuple)):
            y = y[0]
        return np.asarray(y, np.float32)

    def close(self) -> None:
        self.model = None


def resolve_backend(path: Path, backend: str | None) -> str:
    """The backend for a model file: the one asked for (checked against the suffix), else by suffix."""
    suffix = path.suffix.lower()
    if backend is None:
        if suffix not in SUFFIX_BACKEND:
            raise ConfigError(f"{path}: cannot tell the backend from suffix {suffix!r}; "
                              f"expected one of {', '.join(SUFFIX_BACKEND)}")
        return SUFFIX_BACKEND[suffix]
    if backend not in BACKENDS:
        raise ConfigError(unknown("backend", backend, BACKENDS))
    if suffix not in BACKEND_SUFFIXES[backend]:
        raise ConfigError(f"backend {backend!r} runs {', '.join(BACKEND_SUFFIXES[backend])} files; got {path.name}")
    return backend


def open_backend(path: str | os.PathLike, backend: str | None = None, device: str = "cpu",
                 threads: int | None = None, spec: ModelSpec | None = None, cuda_graph: bool = False) -> BackendBase:
    """Open a model file for inference; the backend follows the suffix unless `backend` names one.

    device is cpu|cuda|tensorrt (onnxruntime only; the others run on the CPU and say so);
    cuda_graph asks onnxruntime's CUDA provider to capture and replay CUDA graphs.
    Raises ConfigError, ModelError, ModelSpecError or BackendError.
    """
    path = Path(path)
    if device not in DEVICES:
        raise ConfigError(unknown("device", device, DEVICES))
    if threads is not None and int(threads) < 1:
        raise ConfigError(f"threads must be a positive int; got {threads!r}")
    name = resolve_backend(path, backend)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    spec = spec or load_spec(path)
    if name != "onnxruntime" and device != "cpu":
        log.warning("device %r was requested but the %s backend runs on the CPU only; running on cpu", device, name)
    if cuda_graph and name != "onnxruntime":
        log.warning("CUDA graphs were requested but the %s backend has none; running without them", name)
    if name == "litert":
        return LiteRTBackend(path, spec, threads=threads)
    if name == "onnxruntime":
        return OrtBackend(path, spec, device=device, threads=threads, cuda_graph=cuda_graph)
    return KerasBackend(path, spec, threads=threads)
