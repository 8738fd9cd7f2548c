"""edgecv.runtime: run exported models on live and recorded video (sources, detector, batcher,
backends, sinks, metrics, pipeline). Never imports TensorFlow or Keras at module level.

Names are imported on first use, so `edgecv --help` stays fast.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Pipeline": "pipeline", "PipelineState": "pipeline",
    "open_backend": "backends", "Backend": "backends", "InputSpec": "backends",
    "LiteRTBackend": "backends", "OrtBackend": "backends", "KerasBackend": "backends",
    "Source": "sources", "SourceState": "sources", "Policy": "sources", "Frame": "sources",
    "parse_source": "sources", "Backoff": "sources",
    "Box": "detect", "Detector": "detect", "HaarFaceDetector": "detect", "YuNetFaceDetector": "detect",
    "make_detector": "detect", "register_detector": "detect",
    "Batcher": "batcher", "Metrics": "metrics",
    "FrameResult": "results", "Detection": "results",
    "VideoSink": "sinks", "JsonLinesSink": "sinks", "WindowSink": "sinks", "CallbackSink": "sinks",
    "annotate": "annotate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgecv.runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
