"""The accuracy gate: an exported file, run by its own runtime, against the Keras model it came from.

Measures top-1 agreement, the accuracy of both on labelled held-out data, the drop in points and
the size. Past the allowed drop the export fails. When the data has no class labels (captcha
texts), the gate judges disagreement instead: accuracy cannot drop by more than the share of
inputs whose top-1 changed (for a CTC sequence model: whose decoded text changed).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import decode
from ..errors import ExportError, ModelError
from ..spec import ModelSpec, atomic_write_text
from .calibration import Samples

DEFAULT_MAX_DROP = 1.0


class AccuracyGateError(ExportError):
    """The export ran but lost more accuracy than allowed (exit 1: not a usage error)."""

    exit_code = 1

    def __init__(self, message: str, report: "CheckReport"):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class CheckReport:
    """What the gate measured. Accuracies are fractions; `drop_pts` is in percentage points
    (source minus export, so negative means the export did better)."""

    format: str
    quant: str
    path: str
    check_data: str
    n: int
    agreement: float
    source_accuracy: float | None
    accuracy: float | None
    drop_pts: float
    max_drop: float
    passed: bool
    size_bytes: int
    source_bytes: int
    fp32_weight_bytes: int
    size_ratio: float               # size / (4 bytes x parameters): 1.0 is an fp32 copy of the weights
    max_abs_diff: float             # largest |probability difference| against Keras
    runtime: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    def metrics(self) -> dict[str, Any]:
        """The subset embedded in the exported ModelSpec."""
        return {"accuracy": self.accuracy, "source_accuracy": self.source_accuracy,
                "agreement": self.agreement, "drop_pts": self.drop_pts, "check_data": self.check_data,
                "check_n": self.n, "size_bytes": self.size_bytes}

    def text(self) -> str:
        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{100 * v:.2f}%"

        verdict = "PASS" if self.passed else f"FAIL (drop > {self.max_drop:g} pts)"
        return "\n".join([
            f"export check  {self.format} {self.quant}  ->  {self.path}",
            f"  data        {self.check_data}, {self.n} images, run with {self.runtime}",
            f"  accuracy    source {pct(self.source_accuracy)}   export {pct(self.accuracy)}   "
            f"drop {self.drop_pts:+.2f} pts",
            f"  agreement   {pct(self.agreement)} top-1   max |dp| {self.max_abs_diff:.2e}",
            f"  size        {self.size_bytes:,} bytes   {self.size_ratio:.2f}x fp32 weights",
            f"  verdict     {verdict}",
        ])


def keras_predict(model: Any, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """The Keras model's first output on x, float32 (one `predict` for the whole set: it costs
    ~60 ms a call here, so never per sample)."""
    y = model.predict(x, batch_size=batch, verbose=0)
    if isinstance(y, dict):
        y = next(iter(y.values()))
    elif isinstance(y, (list, tuple)):
        y = y[0]
    return np.asarray(y, np.float32)


def compare(reference: np.ndarray, output: np.ndarray, samples: Samples, *, spec: ModelSpec, fmt: str,
            quant: str, path: str | os.PathLike, max_drop: float, size_bytes: int, source_bytes: int,
            fp32_weight_bytes: int, runtime: str, extra: dict[str, Any] | None = None) -> CheckReport:
    """Score an export's outputs against the source model's on the same preprocessed samples.
    Both are decided by edgecv.decode under the model's spec (a sigmoid output by its threshold,
    classes by their top probability), so the gate judges what the runtime will answer."""
    if reference.shape != output.shape:
        raise ExportError(f"the {fmt} {quant} export returns shape {output.shape[1:]}; the Keras "
                          f"model returns {reference.shape[1:]}")
    extra = dict(extra or {})
    if spec.output == "ctc":
        ref_top, out_top = reference.argmax(-1), output.argmax(-1)
    else:
        try:
            ref_top = decode.indices(spec, reference, len(samples.x))
        except ModelError as e:
            raise ExportError(f"the Keras model's own output does not fit its ModelSpec: {e}") from None
        try:
            out_top = decode.indices(spec, output, len(samples.x))
        except ModelError as e:
            raise ExportError(f"the {fmt} {quant} export's output does not fit the ModelSpec: {e}") from None
    if spec.output == "ctc":
        # A CTC sequence model (N x T x K, blank = the last class): what must agree is the text each
        # output spells. A step that flips between the blank and a repeat of its neighbour moves
        # where a character starts, not which text is read; per-step agreement counted those.
        from ..ctc import collapse

        blank = reference.shape[2] - 1
        same = np.array([a == b for a, b in zip(collapse(ref_top, blank), collapse(out_top, blank))])
        extra["step_agreement"] = float((ref_top == out_top).all(axis=1).mean())
    else:
        same = (ref_top == out_top).reshape(len(reference), -1).all(axis=1)
    agreement = float(same.mean())
    y = samples.y
    if y is not None and spec.output != "ctc":
        src_acc = float((ref_top == y).mean())
        acc = float((out_top == y).mean())
        drop = 100.0 * (src_acc - acc)
    else:
        src_acc = acc = None
        drop = 100.0 * (1.0 - agreement)
    drop = round(drop, 4)
    return CheckReport(
        format=fmt, quant=quant, path=str(path), check_data=samples.source, n=len(reference),
        agreement=agreement, source_accuracy=src_acc, accuracy=acc, drop_pts=drop, max_drop=max_drop,
        passed=drop <= max_drop, size_bytes=size_bytes, source_bytes=source_bytes,
        fp32_weight_bytes=fp32_weight_bytes,
        size_ratio=size_bytes / fp32_weight_bytes if fp32_weight_bytes else float("nan"),
        max_abs_diff=float(np.abs(reference - output).max()), runtime=runtime, extra=extra)


def summary_table(reports: list[CheckReport]) -> str:
    """One line per variant: format, precision, size, accuracy, drop, agreement, verdict."""
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    head = f"{'format':<7} {'quant':<8} {'size':>11} {'ratio':>6} {'accuracy':>9} {'drop':>7} {'agree':>8}  result"
    lines = [head, "-" * len(head)]
    for r in reports:
        lines.append(f"{r.format:<7} {r.quant:<8} {r.size_bytes:>11,} {r.size_ratio:>5.2f}x "
                     f"{pct(r.accuracy):>9} {r.drop_pts:>+7.2f} {pct(r.agreement):>8}  "
                     f"{'ok' if r.passed else 'FAILED'}")
    if reports and reports[0].source_accuracy is not None:
        lines.append(f"source (Keras) accuracy {pct(reports[0].source_accuracy)} on {reports[0].check_data}, "
                     f"n={reports[0].n}")
    return "\n".join(lines)
