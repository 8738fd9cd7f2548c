"""Inference backends behind one protocol: LiteRT (.tflite), ONNX Runtime (.onnx), OpenVINO (.onnx,
CPU, the optional [openvino] extra: runtime/openvino.py) and Keras (.keras, reference only). Each
takes an NxHxWxC float32 batch preprocessed by the model's ModelSpec and returns the model's first
output as float32 (quantized models are (de)quantized inside).

Nothing here imports TensorFlow or Keras at module level: an edge box has neither.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgecv.errors import ConfigError, ModelError, unknown
from edgecv.modelfile import first_line
from edgecv.spec import ModelSpec

from .backend_base import DEFAULT_BUCKETS, BackendBase, InputSpec, check_rows, dequantize, quantize  # noqa: F401
from .litert import LiteRTBackend, _litert_factory  # noqa: F401

log = logging.getLogger(__name__)

BACKENDS = ("litert", "onnxruntime", "openvino", "keras")
DEVICES = ("cpu", "cuda", "tensorrt")
SUFFIX_BACKEND = {".tflite": "litert", ".onnx": "onnxruntime", ".keras": "keras"}
# Which backends can run which files; a mismatch is a user error, not a silent conversion.
BACKEND_SUFFIXES = {"litert": (".tflite",), "onnxruntime": (".onnx",), "openvino": (".onnx",),
                    "keras": (".keras",)}


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
            if not use_graph:
                raise ModelError(f"{self.path}: onnxruntime cannot load this model ({first_line(e)})") from None
            # Graph capture needs every node on the CUDA provider; a QDQ int8 model keeps some on
            # the CPU and ORT refuses the session (seen on the H100 with onnxruntime-gpu 1.31).
            log.warning("CUDA graphs cannot be used with %s (%s); running without them", self.path.name,
                        first_line(e))
            use_graph = False
            try:
                self.session = ort.InferenceSession(str(self.path), opts, providers=list(providers))
            except Exception as e2:
                raise ModelError(f"{self.path}: onnxruntime cannot load this model ({first_line(e2)})") from None
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
        o = self.session.get_outputs()[0]
        self._check_output_shape(tuple(d if isinstance(d, int) and d > 0 else None for d in (o.shape or ())),
                                 self.path)
        self.input_spec = InputSpec(i.name, (None,) + shape[1:], _ort_dtype(i.type))
        self._output = o.name
        self._fixed_batch = shape[0]
        self.cuda_graph = use_graph and self.device == "cuda"
        self._bound = None
        # A uint8-input model (export --input uint8-rgb) takes raw pixels: cast per batch, no binding.
        self._raw = self.input_spec.dtype == "uint8"
        if not self._raw and (io_binding or (io_binding is None and self.device != "cpu") or self.cuda_graph):
            from .ort_io import BoundRunner

            sizes = (self._fixed_batch,) if self._fixed_batch else tuple(buckets)
            try:
                self._bound = BoundRunner(self.session, self.input_spec.name, self._output, self.spec.input_shape,
                                          "cpu" if self.device == "cpu" else "cuda", sizes, self.cuda_graph)
            except ValueError as e:
                raise ModelError(f"{self.path}: {e}") from None
            if self.device != "cpu":
                self._bound.warmup()

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
        if self._raw:
            batch = np.clip(np.round(batch), 0, 255).astype(np.uint8)
        y = self.session.run([self._output], {self.input_spec.name: batch})[0]
        check_rows(len(y), n, self.path)
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
        from edgecv.kerasload import load_keras_model

        self.path = Path(path)
        self.spec = spec
        self.model = load_keras_model(self.path)
        shape = tuple(self.model.inputs[0].shape)
        self._check_model_shape(shape, self.path)
        out = self.model.outputs[0].shape
        self._check_output_shape(tuple(out), self.path)
        self.input_spec = InputSpec(self.model.inputs[0].name, (None,) + shape[1:], "float32")

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = self._check_batch(batch)
        if len(batch) == 0:
            return np.zeros((0, len(self.spec.labels) or 1), np.float32)
        # A direct call, not predict(): predict costs ~60 ms of set-up per call (TOOLCHAIN.md).
        y = self.model(batch, training=False)
        if isinstance(y, (list, tuple)):
            y = y[0]
        check_rows(len(y), len(batch), self.path)
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


def open_backend(path: str | os.PathLike, spec: ModelSpec, backend: str | None = None, device: str = "cpu",
                 threads: int | None = None, cuda_graph: bool = False) -> BackendBase:
    """Open a model file for inference with the ModelSpec already read for it
    (edgecv.resolve.resolve gives both); the backend follows the suffix unless `backend` names one.

    device is cpu|cuda|tensorrt (onnxruntime only; the others run on the CPU and say so);
    cuda_graph asks onnxruntime's CUDA provider to capture and replay CUDA graphs.
    Raises ConfigError, ModelError, ModelSpecError or BackendError.
    """
    path = Path(path)
    if not isinstance(spec, ModelSpec):
        raise TypeError("open_backend needs the model's ModelSpec (edgecv.resolve.resolve(model) reads it once)")
    if device not in DEVICES:
        raise ConfigError(unknown("device", device, DEVICES))
    if threads is not None and int(threads) < 1:
        raise ConfigError(f"threads must be a positive int; got {threads!r}")
    name = resolve_backend(path, backend)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    if name != "onnxruntime" and device != "cpu":
        log.warning("device %r was requested but the %s backend runs on the CPU only; running on cpu", device, name)
    if cuda_graph and name != "onnxruntime":
        log.warning("CUDA graphs were requested but the %s backend has none; running without them", name)
    if name == "litert":
        return LiteRTBackend(path, spec, threads=threads)
    if name == "onnxruntime":
        return OrtBackend(path, spec, device=device, threads=threads, cuda_graph=cuda_graph)
    if name == "openvino":  # an optional extra: imported only when asked for
        from .openvino import OpenVINOBackend

        return OpenVINOBackend(path, spec, threads=threads)
    return KerasBackend(path, spec, threads=threads)
