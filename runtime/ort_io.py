"""ONNX Runtime through IO binding: the GPU path of OrtBackend.

Per batch bucket (1, 2, 4, ... like the LiteRT backend), allocated once:
  - a host staging buffer, page-locked (cudaHostAlloc) when the session runs on CUDA and the CUDA
    runtime can be loaded, so the host-to-device copy is one DMA transfer; a plain array otherwise;
  - a device input and a device output OrtValue with fixed addresses, bound once to an IOBinding;
  - with CUDA graphs, its own graph (run option gpu_graph_id = the bucket's index): a graph replays
    fixed shapes at fixed addresses, which is why the buffers never move and batches are padded.
A call copies the batch into the staging buffer, `update_inplace` moves it to the device, the
session runs, and the output comes back in one copy per batch (`copy_outputs_to_cpu`).

The same code runs with device "cpu" (OrtValues in host memory, no pinning, no graphs): that is how
it is tested on machines without a GPU.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from typing import Any, Sequence

import numpy as np

from .backend_base import check_rows

log = logging.getLogger(__name__)


def _cudart() -> Any | None:
    """The CUDA runtime library, or None. onnxruntime-gpu's preload_dlls() (or the system) provides it."""
    names = [ctypes.util.find_library("cudart"), "libcudart.so.13", "libcudart.so.12", "libcudart.so"]
    for name in filter(None, names):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


class HostBuffer:
    """A float32 host array, page-locked when `pinned` and the CUDA runtime is there."""

    def __init__(self, shape: Sequence[int], pinned: bool) -> None:
        self.pinned = False
        self._ptr = None
        self._lib = None
        nbytes = int(np.prod(shape)) * 4
        if pinned:
            lib = _cudart()
            ptr = ctypes.c_void_p()
            if lib is not None and lib.cudaHostAlloc(ctypes.byref(ptr), ctypes.c_size_t(nbytes), 0) == 0:
                self._lib, self._ptr, self.pinned = lib, ptr, True
                buf = (ctypes.c_float * (nbytes // 4)).from_address(ptr.value)
                self.array = np.frombuffer(buf, np.float32).reshape(shape)
                return
            log.warning("could not page-lock a %d-byte staging buffer (CUDA runtime %s); using pageable memory",
                        nbytes, "missing" if lib is None else "refused")
        self.array = np.empty(shape, np.float32)

    def close(self) -> None:
        if self._ptr is not None:
            self.array = None
            self._lib.cudaFreeHost(self._ptr)
            self._ptr = None


class BoundRunner:
    """Run one ONNX Runtime session through IO binding with per-bucket fixed buffers."""

    def __init__(self, session: Any, input_name: str, output_name: str, image_shape: Sequence[int],
                 device: str, buckets: Sequence[int], cuda_graph: bool = False) -> None:
        import onnxruntime as ort

        self._ort = ort
        self.session, self.input_name, self.output_name = session, input_name, output_name
        self.image_shape = tuple(int(d) for d in image_shape)
        self.device = device  # "cuda" or "cpu": where the OrtValues live
        self.buckets = tuple(sorted(set(int(b) for b in buckets)))
        self.cuda_graph = cuda_graph
        out = session.get_outputs()[0]
        tail = out.shape[1:]
        # A fixed output shape lets the output buffer be allocated once (graphs need it); otherwise
        # ORT allocates the output on the device on each run.
        self._out_tail = tuple(tail) if all(isinstance(d, int) and d > 0 for d in tail) else None
        if cuda_graph and self._out_tail is None:
            raise ValueError(f"CUDA graphs need a fixed output shape; this model's is {out.shape}")
        self._slots: dict[int, tuple[Any, Any, Any, HostBuffer, Any]] = {}
        # The buffers are shared by every call of a bucket: one call at a time (session.run alone
        # would be thread-safe; these fixed buffers are not).
        self._lock = threading.Lock()

    def bucket_for(self, n: int) -> int:
        return next((b for b in self.buckets if b >= n), self.buckets[-1])

    def _slot(self, bucket: int):
        slot = self._slots.get(bucket)
        if slot is not None:
            return slot
        ort = self._ort
        shape = (bucket, *self.image_shape)
        x_dev = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, self.device, 0)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, x_dev)
        if self._out_tail is not None:
            y_dev = ort.OrtValue.ortvalue_from_shape_and_type((bucket, *self._out_tail), np.float32, self.device, 0)
            binding.bind_ortvalue_output(self.output_name, y_dev)
        else:
            y_dev = None
            binding.bind_output(self.output_name, self.device)
        staging = HostBuffer(shape, pinned=self.device == "cuda")
        staging.array.fill(0)
        opts = None
        if self.cuda_graph:
            opts = ort.RunOptions()
            opts.add_run_config_entry("gpu_graph_id", str(self.buckets.index(bucket) + 1))
        slot = (binding, x_dev, y_dev, staging, opts)
        self._slots[bucket] = slot
        return slot

    def run(self, batch: np.ndarray) -> np.ndarray:
        """NxHxWxC float32 -> the first output for the N images (float32)."""
        top = self.buckets[-1]
        if len(batch) > top:
            return np.concatenate([self.run(batch[i:i + top]) for i in range(0, len(batch), top)])
        n = len(batch)
        with self._lock:
            binding, x_dev, _, staging, opts = self._slot(self.bucket_for(n))
            # Rows n.. keep an earlier batch's images: each output row depends on its own input only.
            staging.array[:n] = batch
            x_dev.update_inplace(staging.array)
            self.session.run_with_iobinding(binding, opts)
            y = binding.copy_outputs_to_cpu()[0]
        check_rows(len(y), self.bucket_for(n), "the ONNX model")
        return np.asarray(y[:n], np.float32)

    def warmup(self) -> None:
        """Run every bucket once: a bucket's first run on a GPU pays cuDNN's algorithm search and,
        with graphs, the capture (hundreds of ms on the H100), which must not land on live frames."""
        for b in self.buckets:
            self.run(np.zeros((b, *self.image_shape), np.float32))

    @property
    def pinned(self) -> bool:
        return any(s[3].pinned for s in self._slots.values())

    def close(self) -> None:
        for _, _, _, staging, _ in self._slots.values():
            staging.close()
        self._slots.clear()
