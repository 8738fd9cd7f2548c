"""edgecv.export: Keras models to TFLite and ONNX (fp32, fp16, dynamic, int8), each artefact carrying
its ModelSpec and checked against its source model before it is written under its final name.

Importing this package does not import TensorFlow; `export()` does, when it runs.
"""
from .api import ExportResult, export, export_all, resolve_source
from .check import AccuracyGateError, CheckReport
from .formats import FORMATS, VARIANTS, Variant, get_variant, variants

__all__ = ["AccuracyGateError", "CheckReport", "ExportResult", "FORMATS", "VARIANTS", "Variant", "export",
           "export_all", "get_variant", "resolve_source", "variants"]
