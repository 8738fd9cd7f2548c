"""What every inference backend shares: the InputSpec, the base class with the batch checks the
pipeline relies on, and the int8 (de)quantization formulas."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecv.errors import BackendError, ModelError, ModelSpecError
from edgecv.spec import ModelSpec

# Batch buckets: LiteRT keeps one interpreter per size and ONNX Runtime's IO binding one set of
# buffers per size, allocated once; a batch is padded up to its bucket.
DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class InputSpec:
    """The model's input tensor: name, shape (batch dimension None when dynamic), dtype and,
    for quantized inputs, (scale, zero_point)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    quantization: tuple[float, int] | None = None


class BackendBase:
    """What the pipeline needs from an inference engine: `spec`, `input_spec`, `name`,
    `run(NxHxWxC float32 preprocessed per spec) -> N x ... float32` (the model's first output, one
    row per input), `close()`; shared checks and the context-manager protocol."""

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

    def _check_output_shape(self, shape: tuple[int | None, ...] | None, path: Path) -> None:
        """At load: a classifier output whose size is known must match the spec (edgecv.decode),
        so a spec with the wrong labels fails before the first frame. Dynamic sizes are checked
        on every batch by the decoder."""
        from edgecv.decode import expected_columns

        want = expected_columns(self.spec)
        if want is None or not shape or len(shape) < 2:
            return
        dims = [d for d in shape[1:]]
        if all(isinstance(d, int) and d > 0 for d in dims):
            cols = int(np.prod(dims))
            if cols != want:
                raise ModelSpecError(f"{path}: the model returns {cols} value(s) per input; its ModelSpec "
                                     f"({self.spec.output}, labels {list(self.spec.labels)}) expects {want}")

    def _check_model_shape(self, shape: tuple[int | None, ...], path: Path) -> None:
        want = tuple(self.spec.input_shape)
        got = tuple(shape[1:])
        if len(shape) != 4 or any(g is not None and g != w for g, w in zip(got, want)):
            raise ModelSpecError(f"{path}: model input shape {list(shape)} does not match the ModelSpec "
                                 f"input_shape {list(want)}")


def check_rows(rows: int, batch: int, path: Path | str) -> None:
    """A model's output must have one row per input row: a graph whose first output dimension does
    not follow the batch (fully dynamic, reshaped) would hand rows to the wrong inputs."""
    if rows != batch:
        raise ModelError(f"{path}: the model returned {rows} output row(s) for a batch of {batch}; "
                         "its first output must have one row per input")


def quantize(x: np.ndarray, q: tuple[float, int], dtype: np.dtype) -> np.ndarray:
    scale, zero = q
    if not scale:  # raw uint8 pixels (export --input uint8-rgb): no quantization parameters
        scale, zero = 1.0, 0
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def dequantize(x: np.ndarray, q: tuple[float, int]) -> np.ndarray:
    scale, zero = q
    return ((x.astype(np.float32) - zero) * scale).astype(np.float32)
