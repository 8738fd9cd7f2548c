"""The OpenVINO backend (`--backend openvino`): an edgecv ONNX artefact compiled by OpenVINO for the
CPU. OpenVINO reads the ONNX file itself (no conversion step, nothing written), keeps the batch
dimension dynamic, and runs a static QDQ int8 model as int8 (its low-precision transformations turn
QuantizeLinear/DequantizeLinear pairs into int8 kernels, VNNI/AMX where the CPU has them).

OpenVINO is an optional extra (`pip install "edgecv[openvino]"`); the edge install stays without it.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from edgecv.errors import BackendError, ModelError
from edgecv.modelfile import first_line
from edgecv.spec import ModelSpec

from .backend_base import BackendBase, InputSpec, check_rows

EXTRA = "openvino"


def _openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise BackendError(f"the openvino backend needs OpenVINO: pip install \"edgecv[{EXTRA}]\" "
                           "(or pip install openvino)") from None
    return openvino


def _dims(partial_shape: Any) -> tuple[int | None, ...]:
    return tuple(int(d.get_length()) if d.is_static else None for d in partial_shape)


class OpenVINOBackend(BackendBase):
    """OpenVINO Runtime on the CPU, from an .onnx file.

    `threads` sets INFERENCE_NUM_THREADS (None: OpenVINO's default, every core); the model is
    compiled once with the LATENCY hint, and one infer request serves every batch size (the batch
    dimension stays dynamic, as in the ONNX file). A uint8-input model (export --input uint8-rgb)
    gets its batch as uint8.
    """

    name = "openvino"

    def __init__(self, path: str | os.PathLike, spec: ModelSpec, threads: int | None = None) -> None:
        ov = _openvino()
        self.path = Path(path)
        self.spec = spec
        self.device = "cpu"
        core = ov.Core()
        # f32, not OpenVINO's default bf16 on CPUs with bf16 units (this AVX512_BF16 machine): an fp32
        # artefact must answer as exported (bf16 moved smile.onnx's probabilities by 0.02); int8 QDQ
        # parts still run as int8.
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            model = core.read_model(str(self.path))
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError subclasses of its own
            raise ModelError(f"{self.path}: OpenVINO cannot load this model ({first_line(e)})") from None
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        inp = self.compiled.input(0)
        shape = _dims(inp.get_partial_shape())
        self._check_model_shape(shape, self.path)
        self._check_output_shape(_dims(self.compiled.output(0).get_partial_shape()), self.path)
        dtype = inp.get_element_type().to_dtype()
        self._cast = np.dtype(dtype) if np.dtype(dtype) != np.float32 else None
        self.input_spec = InputSpec(inp.get_any_name(), (None,) + shape[1:], np.dtype(dtype).name)
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: one call at a time

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = self._check_batch(batch)
        n = len(batch)
        if n == 0:
            return np.zeros((0, len(self.spec.labels) or 1), np.float32)
        feed = batch if self._cast is None else np.clip(np.round(batch), 0, 255).astype(self._cast)
        with self._lock:
            self._request.infer({0: feed})
            y = np.array(self._request.get_output_tensor(0).data, np.float32)  # a copy: the buffer is reused
        check_rows(len(y), n, self.path)
        return y

    def close(self) -> None:
        self._request = None
        self.compiled = None


__all__ = ["OpenVINOBackend"]
