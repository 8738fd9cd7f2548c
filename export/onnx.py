"""ONNX conversion (fp32, fp16, dynamic, static QDQ int8) and a minimal ONNX Runtime runner.

fp32 comes from tf2onnx `from_function` over a (None, H, W, C) signature: `from_keras` fails on
Keras 3 models (TOOLCHAIN.md). int8 is static QDQ with per-channel weights calibrated through the
training preprocessors; `dynamic` is ORT's dynamic quantization, offered but never the int8 default
because it is slow for CNNs and its outputs depend on batch composition. fp16 uses the converter
bundled with onnxruntime (onnxruntime.transformers.float16), keeping float32 input and output so
callers feed the same arrays as for fp32.

Every variant starts from the fp32 graph after export.onnx_clean's exact rewrites (Flatten + Dense
as Convs, BatchNorm folded into the Convs, unused nodes and opset domains dropped), so the int8 QDQ
artefact has no quantized BatchNorm for OpenCV DNN to trip on; each result passes onnx.checker
(full_check) and strict shape inference before the accuracy gate runs it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError, ModelError
from ..modelfile import ONNX_KEY, first_line
from ..spec import ModelSpec
from . import onnx_clean
from .calibration import Calibration
from .inputs import kind_of

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"


def _quiet() -> None:
    # tf2onnx and the quantizer log every rewrite at INFO; the CLI's INFO logging would drown the report.
    for name in ("tf2onnx", "onnxruntime", "root"):
        logging.getLogger(name).setLevel(logging.WARNING)


def to_fp32(model: Any, spec: ModelSpec) -> bytes:
    import tensorflow as tf
    import tf2onnx

    _quiet()
    dtype = tf.uint8 if kind_of(spec) == "uint8-rgb" else tf.float32
    sig = [tf.TensorSpec((None, *spec.input_shape), dtype, name=INPUT_NAME)]

    @tf.function
    def serve(x):
        y = model(x, training=False)
        return {OUTPUT_NAME: y} if not isinstance(y, (list, tuple, dict)) else y

    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=sig, opset=OPSET)
    except Exception as e:
        raise ExportError(f"tf2onnx conversion failed: {first_line(e)}") from None
    # tf2onnx names the free batch dimension "unk__NN"; a stable name reads better in tools.
    for value in (*proto.graph.input, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    return proto.SerializeToString()


def convert(model: Any, spec: ModelSpec, quant: str, calib: Calibration | None, workdir: Path) -> bytes:
    """ONNX model bytes for a Keras model at precision `quant`."""
    import onnx

    fp32 = onnx_clean.clean(to_fp32(model, spec))
    if quant == "fp32":
        return fp32
    workdir = Path(workdir)
    src = workdir / "fp32.onnx"
    src.write_bytes(fp32)
    if quant == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        try:
            half = convert_float_to_float16(onnx.load_from_string(fp32), keep_io_types=True)
        except Exception as e:
            raise ExportError(f"ONNX fp16 conversion failed: {first_line(e)}") from None
        # The converter appends its input Casts at the end of the node list: ORT sorts the graph
        # itself, but the ONNX checker and other runtimes require topological order.
        _sort_nodes(half.graph)
        return onnx_clean.tidy(half.SerializeToString())

    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    _quiet()
    pre = workdir / "pre.onnx"
    dst = workdir / f"{quant}.onnx"
    try:
        # Shape inference + graph optimisation first, as ORT's quantization docs advise: the quantizer
        # then sees fused Conv/Gemm nodes and quantizes each once.
        quant_pre_process(str(src), str(pre))
        if quant == "dynamic":
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, per_channel=True)
        elif quant == "int8":
            if calib is None or len(calib) == 0:
                raise ExportError("int8 ONNX export needs calibration data")
            # reduce_range (7-bit weights): on x86 CPUs without VNNI, ORT's u8s8 kernels can
            # saturate 8-bit products; measured on the MNIST LeNet here, top-1 agreement with
            # Keras rose from 98.9% to 99.8% with it.
            raw = kind_of(spec) == "uint8-rgb"
            quantize_static(str(pre), str(dst), calib.onnx_reader(INPUT_NAME, np.uint8 if raw else np.float32),
                            quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=True, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=_head(pre))
        else:
            raise ExportError(f"no ONNX converter for {quant!r}")
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"ONNX {quant} quantization failed: {first_line(e)}") from None
    return onnx_clean.tidy(dst.read_bytes())


def _head(path: Path) -> list[str]:
    """The last weighted node (the classifier head), left in float by the int8 quantizer: a few
    thousand weights, and OpenCV DNN 5.0's engine answered 28% of the smile model's faces like ORT
    with a per-channel int8 head (100% with a float one; OpenCV 4.x: 100% either way)."""
    import onnx

    weighted = [n.name for n in onnx.load(str(path), load_external_data=False).graph.node
                if n.op_type in ("Conv", "Gemm", "MatMul") and n.name]
    return weighted[-1:]


def _sort_nodes(graph: Any) -> None:
    """Reorder graph.node topologically (stable: nodes keep their order where it is already valid)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = [n for n in pending if not set(n.input) <= ready]
        done = [n for n in pending if set(n.input) <= ready]
        if not done:
            raise ExportError("ONNX fp16 conversion produced a graph with a cycle or a missing input")
        for n in done:
            ordered.append(n)
            ready.update(n.output)
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def embed(blob: bytes, spec: ModelSpec) -> bytes:
    """The model with the spec in `metadata_props[ONNX_KEY]` (replacing any earlier one)."""
    import onnx

    proto = onnx.load_from_string(blob)
    keep = [p for p in proto.metadata_props if p.key != ONNX_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    proto.metadata_props.add(key=ONNX_KEY, value=spec.to_json())
    return proto.SerializeToString()


def session(path: str | os.PathLike):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = min(2, os.cpu_count() or 1)
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelError(f"{path}: ONNX Runtime cannot load it ({first_line(e)})") from None


def run(path: str | os.PathLike, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """The first output (float32) for NxHxWxC float32 inputs."""
    sess = session(path)
    inp = sess.get_inputs()[0]
    # A uint8-rgb model takes raw pixels (whole numbers already): cast, never rescale.
    dtype = np.uint8 if inp.type == "tensor(uint8)" else np.float32
    out = [sess.run(None, {inp.name: np.ascontiguousarray(x[s:s + batch]).astype(dtype, copy=False)})[0]
           for s in range(0, len(x), batch)]
    return np.concatenate(out).astype(np.float32)


def op_types(path: str | os.PathLike) -> dict[str, int]:
    """Node count per operator type (for tests and the report)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
