"""Standard TFLite Metadata for edgecv's TFLite exports: the `TFLITE_METADATA` flatbuffer (schema
`metadata_schema.fbs`, identifier "M001") that MediaPipe Tasks, the TFLite Support library and
Android Studio read, written from the ModelSpec, beside (not instead of) the spec itself.

What it says: the model's name and description; the input as an image (colour space GRAYSCALE or
RGB) with NormalizationOptions (mean, std on raw 0-255 pixel values, i.e. the spec's scale / mean /
std steps folded into one affine map) and its value range; the output as features with the label
file (`labels.txt`, TENSOR_AXIS_LABELS) attached; the ModelSpec (`edgecv.spec.json`) as a second
associated file. The associated files travel as a zip appended to the flatbuffer, exactly as the
official populator packs them; interpreters ignore the trailing bytes.

Why hand-written: no maintained writer installs beside TensorFlow 2.21 (tflite-support 0.4.4 pins
protobuf<4; MediaPipe's writer fails to import in its wheels: docs/interop.md). The schema's
generated Python (vendored as _tflite_metadata_schema) and the flatbuffers package are all it needs;
the model is re-packed with LiteRT's generated TFLite schema, as the official populator does.
"""
from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ExportError
from ..modelfile import TFLITE_MEMBER
from ..spec import ModelSpec
from .inputs import affine

METADATA_NAME = "TFLITE_METADATA"
LABEL_FILE = "labels.txt"
MIN_PARSER_VERSION = "1.0.0"     # nothing here needs a later schema feature (metadata_schema.fbs history)
BLANK = "<blank>"
_MODEL_IDENTIFIER = b"TFL3"
_METADATA_IDENTIFIER = b"M001"


def normalization(spec: ModelSpec) -> tuple[list[float], list[float]]:
    """The spec's numeric steps (scale, mean, std) as TFLite's `(x - mean) / std` on raw pixel
    values, one (mean, std) per channel."""
    a, b = affine(spec)
    if np.any(a == 0):
        raise ExportError(f"{spec.name}: the preprocessing multiplies pixels by 0; it has no TFLite normalization")
    return [float(v) + 0.0 for v in -b / a], [float(v) for v in 1.0 / a]


def label_lines(spec: ModelSpec) -> list[str]:
    """One line per output column: the labels, the CTC classes (charset, then the blank), or for a
    sigmoid output the one label its probability is of."""
    if spec.output == "ctc":
        chars = list(spec.charset or "")
        blank = int(spec.extra.get("blank", len(chars))) if isinstance(spec.extra, Mapping) else len(chars)
        return chars[:blank] + [BLANK] + chars[blank:]
    if spec.output == "sigmoid":
        return [spec.labels[1]] if len(spec.labels) > 1 else list(spec.labels)
    return list(spec.labels)


def build(spec: ModelSpec, *, raw_input: bool = False) -> bytes:
    """The metadata flatbuffer for `spec`. `raw_input`: the graph takes uint8 pixels and normalizes
    them itself (`--input uint8-rgb`), so the input's normalization is the identity."""
    import flatbuffers

    from . import _tflite_metadata_schema as fb

    h, w, c = spec.input_shape
    raw_colour = "rgb" if raw_input else spec.colour
    if raw_input:
        mean, std = [0.0], [1.0]
        lo, hi = [0.0], [255.0]
        channels = 3
    else:
        channels = c
        mean, std = normalization(spec)
        lo = [(0.0 - m) / s for m, s in zip(mean, std)]
        hi = [(255.0 - m) / s for m, s in zip(mean, std)]

    image = fb.ImagePropertiesT()
    image.colorSpace = {"gray": fb.ColorSpaceType.GRAYSCALE, "rgb": fb.ColorSpaceType.RGB}.get(
        "gray" if channels == 1 else raw_colour, fb.ColorSpaceType.UNKNOWN)
    norm = fb.NormalizationOptionsT()
    norm.mean, norm.std = mean, std
    unit = fb.ProcessUnitT()
    unit.optionsType = fb.ProcessUnitOptions.NormalizationOptions
    unit.options = norm
    in_stats = fb.StatsT()
    in_stats.min, in_stats.max = lo, hi

    steps = ", ".join(_step_text(s) for s in spec.preprocess)
    inp = fb.TensorMetadataT()
    inp.name = "image"
    if raw_input:
        inp.description = (f"{h}x{w}x3 uint8 RGB pixels; the graph converts colour and scales itself "
                           f"(trained on: {steps})")
    else:
        inp.description = (f"{h}x{w}x{c} {spec.colour} image, float32 after: {steps} "
                           f"(from an OpenCV BGR frame)")
    inp.content = fb.ContentT()
    inp.content.contentPropertiesType = fb.ContentProperties.ImageProperties
    inp.content.contentProperties = image
    inp.processUnits = [unit]
    inp.stats = in_stats

    out = fb.TensorMetadataT()
    kind = spec.output
    out.name = {"softmax": "probability", "sigmoid": "probability", "logits": "logits", "ctc": "ctc_probability"}[kind]
    out.description = {
        "softmax": "probability of each label (labels.txt, one line per column)",
        "sigmoid": f"probability of {label_lines(spec)[0]!r} (labels.txt)" if spec.labels else "probability",
        "logits": "unnormalised score of each label (labels.txt); softmax gives probabilities",
        "ctc": "per-step probability of each character (labels.txt; the last class is the CTC blank); "
               "greedy CTC decoding reads the text",
    }[kind]
    out.content = fb.ContentT()
    out.content.contentPropertiesType = fb.ContentProperties.FeatureProperties
    out.content.contentProperties = fb.FeaturePropertiesT()
    if kind != "logits":
        out_stats = fb.StatsT()
        out_stats.min, out_stats.max = [0.0], [1.0]
        out.stats = out_stats
    if label_lines(spec):
        labels = fb.AssociatedFileT()
        labels.name = LABEL_FILE
        labels.description = "labels for the output's last axis, one per line"
        labels.type = fb.AssociatedFileType.TENSOR_AXIS_LABELS
        out.associatedFiles = [labels]

    sub = fb.SubGraphMetadataT()
    sub.inputTensorMetadata = [inp]
    sub.outputTensorMetadata = [out]

    spec_file = fb.AssociatedFileT()
    spec_file.name = TFLITE_MEMBER
    spec_file.description = "the edgecv ModelSpec (JSON): preprocessing chain, labels, output and crop rules"
    spec_file.type = fb.AssociatedFileType.DESCRIPTIONS

    model = fb.ModelMetadataT()
    model.name = spec.name
    model.description = _description(spec, raw_input)
    model.version = (spec.source_hash or "")[:12] or None
    model.author = "edgecv"
    model.subgraphMetadata = [sub]
    model.associatedFiles = [spec_file]
    model.minParserVersion = MIN_PARSER_VERSION

    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), _METADATA_IDENTIFIER)
    return bytes(b.Output())


def _step_text(step: Any) -> str:
    d = step.to_dict() if hasattr(step, "to_dict") else dict(step.__dict__)
    op = d.pop("op", step.op)
    args = " ".join(f"{k}={v}" for k, v in d.items() if v is not None)
    return f"{op}({args})" if args else op


def _description(spec: ModelSpec, raw_input: bool) -> str:
    what = {"smile": "smiling / not smiling classifier for a face crop", "classify": "image classifier",
            "captcha-digits": "captcha digit classifier", "captcha-ctc": "captcha text reader (CTC)"}.get(
        spec.task, spec.task)
    arch = f" {spec.arch}" if spec.arch else ""
    crop = spec.crop.kind if spec.crop is not None else "box"
    return (f"edgecv{arch} {what}; {spec.quantization}; input {'uint8 RGB' if raw_input else spec.colour} "
            f"{spec.input_shape[0]}x{spec.input_shape[1]}; crop rule {crop!r}; "
            f"the complete contract is the associated file {TFLITE_MEMBER}.")


def with_metadata(model: bytes, metadata: bytes) -> bytes:
    """The TFLite flatbuffer `model` (no trailing zip) with `metadata` as its TFLITE_METADATA entry,
    replacing an earlier one; re-packed through the object API like the official populator."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as tfl

    if model[4:8] != _MODEL_IDENTIFIER:
        raise ExportError("not a TFLite flatbuffer (no TFL3 identifier)")
    m = tfl.ModelT.InitFromPackedBuf(bytearray(model), 0)
    m.buffers = list(m.buffers or [])
    m.metadata = [e for e in (m.metadata or []) if _name(e.name) != METADATA_NAME]
    buf = tfl.BufferT()
    buf.data = np.frombuffer(metadata, np.uint8)
    m.buffers.append(buf)
    entry = tfl.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(m.buffers) - 1
    m.metadata.append(entry)
    b = flatbuffers.Builder(len(model) + len(metadata) + 4096)
    b.Finish(m.Pack(b), _MODEL_IDENTIFIER)
    return bytes(b.Output())


def _name(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def associated_files(spec: ModelSpec) -> dict[str, bytes]:
    """The files the metadata names: the label file (when the output has labels) and the spec."""
    files = {}
    lines = label_lines(spec)
    if lines:
        files[LABEL_FILE] = ("\n".join(lines) + "\n").encode()
    files[TFLITE_MEMBER] = spec.to_json().encode()
    return files


def pack(model: bytes, spec: ModelSpec, *, raw_input: bool = False) -> bytes:
    """Model + TFLITE_METADATA + the associated files as an appended zip: the artefact's bytes."""
    out = with_metadata(model, build(spec, raw_input=raw_input))
    buf = io.BytesIO()
    # Stored, not deflated: MediaPipe maps the associated files in place ("Expected uncompressed
    # zip archive"), as the official populator writes them.
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in associated_files(spec).items():
            z.writestr(name, data)
    return out + buf.getvalue()


def read(data: bytes | str) -> dict[str, Any] | None:
    """The TFLITE_METADATA of a TFLite file (path or bytes) as a plain dict, or None when it has
    none (edgecv's own reader, for tests and tools; the official readers are MediaPipe's)."""
    from ai_edge_litert import schema_py_generated as tfl

    from . import _tflite_metadata_schema as fb

    if isinstance(data, str):
        with open(data, "rb") as f:
            data = f.read()
    model = tfl.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        e = model.Metadata(i)
        if _name(e.Name()) == METADATA_NAME:
            raw = model.Buffers(e.Buffer()).DataAsNumpy().tobytes()
            return _plain(fb.ModelMetadataT.InitFromPackedBuf(bytearray(raw), 0))
    return None


def _plain(obj: Any) -> Any:
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, bytes):
        return obj.decode()
    if hasattr(obj, "__dict__"):
        return {k: _plain(v) for k, v in vars(obj).items() if v is not None}
    return obj


__all__: Sequence[str] = ["LABEL_FILE", "METADATA_NAME", "normalization", "associated_files", "build", "label_lines",
                          "pack", "read", "with_metadata"]
