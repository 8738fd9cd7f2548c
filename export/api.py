"""`export()` and `export_all()`: a trained Keras model (run directory or `.keras`) to checked TFLite /
ONNX artefacts, each carrying its ModelSpec (embedded and as `PATH.spec.json`) and a
`PATH.report.json` from the accuracy gate.

An artefact appears under its final name only after the gate passed: it is converted into a
temporary folder beside `out`, run from there by its own runtime, and renamed into place last.
"""
from __future__ import annotations

import logging
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import ConfigError, ExportError, ModelError, ModelSpecError
from ..modelfile import load_spec, write_sidecar
from ..safeio import temp_folder
from ..spec import ModelSpec, atomic_write_bytes, file_sha256, spec_path_for
from .calibration import DEFAULT_CALIB_SIZE, Calibration, calibration_samples, check_samples
from .check import DEFAULT_MAX_DROP, AccuracyGateError, CheckReport, compare, keras_predict
from .formats import VARIANTS, Variant, default_filename, get_variant
from .inputs import check_fits, get_input, variant_spec, wrap

log = logging.getLogger("edgecv.export")

RUN_MODEL = "model.keras"


@dataclass(frozen=True)
class Source:
    """The model to export: its .keras file and its spec (from the run directory or the sidecar)."""

    keras_path: Path
    spec: ModelSpec


@dataclass(frozen=True)
class ExportResult:
    """One export's outcome. `path` is None when it failed (gate or conversion); `error` says why."""

    variant: Variant
    path: Path | None
    spec_path: Path | None
    report_path: Path | None
    spec: ModelSpec | None
    report: CheckReport | None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.path is not None


def report_path_for(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".report.json")


def resolve_source(model: str | os.PathLike) -> Source:
    """A run directory (RUN/model.keras + RUN/spec.json) or a .keras file with a spec beside it,
    through the one resolver (edgecv.resolve), after the checks only export needs."""
    from ..resolve import resolve

    path = Path(model).expanduser()
    if not path.exists():
        raise ModelError(f"{path}: no such model file or run directory")
    if path.is_dir():
        if not (path / RUN_MODEL).is_file():
            raise ModelError(f"{path}: not a run directory (no {RUN_MODEL} in it)")
    elif path.suffix != ".keras":
        raise ModelError(f"{path}: not a Keras model; export takes a run directory or a .keras file "
                         f"(got a {path.suffix or 'suffix-less'} file)")
    elif not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: not a Keras .keras archive (a .keras file is a zip)")
    ref = resolve(path)
    return Source(ref.path, ref.spec)


def load_keras(path: str | os.PathLike) -> Any:
    """Load a .keras file with safe_mode on: a Lambda layer (arbitrary Python) is refused."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ConfigError(f"export needs the tensorflow Keras backend (the converters are TensorFlow's); "
                          f"got KERAS_BACKEND={keras.backend.backend()!r}")
    from ..kerasload import load_keras_model

    return load_keras_model(path, compile=True)


def _check_model_matches_spec(model: Any, spec: ModelSpec, path: Path) -> None:
    shape = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    if shape is None:
        raise ModelError(f"{path}: export supports single-input models; this one has "
                         f"{len(model.input_shape)} inputs")
    if shape != tuple(spec.input_shape):
        raise ModelSpecError(f"{path}: the model takes {shape} but its ModelSpec says {tuple(spec.input_shape)}")
    out = model.output_shape
    want = 1 if spec.output == "sigmoid" else len(spec.labels)
    if isinstance(out, tuple) and len(out) == 2 and spec.labels and out[1] != want:
        raise ModelSpecError(f"{path}: the model has {out[1]} outputs but its ModelSpec ({spec.output}, "
                             f"{len(spec.labels)} labels) expects {want}")


def _validate_numbers(calib_size: int, check_size: int | None, max_drop: float) -> None:
    if not isinstance(calib_size, int) or calib_size < 1:
        raise ConfigError(f"calib_size must be a positive integer; got {calib_size!r}")
    if check_size is not None and (not isinstance(check_size, int) or check_size < 1):
        raise ConfigError(f"check_size must be a positive integer or None; got {check_size!r}")
    if not (isinstance(max_drop, (int, float)) and 0 <= max_drop <= 100):
        raise ConfigError(f"max_drop is in accuracy points, 0 to 100; got {max_drop!r}")


def _resolve_out(out: str | os.PathLike, name: str, variant: Variant, input: str = "float") -> Path:
    path = Path(out).expanduser()
    if path.is_dir() or str(out).endswith(os.sep):
        return path / default_filename(name, variant, input)
    if path.suffix != variant.suffix:
        raise ConfigError(f"--out {path} must end in {variant.suffix} for a {variant.fmt} export "
                          f"(or name an existing folder); got {path.suffix or 'no suffix'!r}")
    return path


class _Session:
    """One source model with its check data, reference outputs and calibration data, loaded once
    and shared by every variant exported from it."""

    def __init__(self, source: Source, calib: str | os.PathLike | None, calib_size: int,
                 check: str | os.PathLike | None, check_size: int | None, need_calib: bool):
        self.source = source
        self.spec = source.spec
        self._calib_arg, self._calib_size = calib, calib_size
        self._calib: Calibration | None = None
        # Data problems are the user's most likely mistake: find them before the slow model load.
        self.check = check_samples(self.spec, check, check_size)
        if need_calib:
            self.calibration()
        self.model = load_keras(source.keras_path)
        _check_model_matches_spec(self.model, self.spec, source.keras_path)
        self.reference = keras_predict(self.model, self.check.x)
        self.source_hash = file_sha256(source.keras_path)
        self.source_bytes = source.keras_path.stat().st_size
        self.fp32_weight_bytes = 4 * int(self.model.count_params())
        self._check_arg, self._check_size = check, check_size
        # Per input kind (export.inputs): the wrapped model, its check and calibration samples.
        self._by_input: dict[str, dict[str, Any]] = {"float": {"model": self.model, "check": self.check}}

    def calibration(self, input_kind: str = "float") -> Calibration:
        if input_kind != "float":
            entry = self._input(input_kind)
            if "calib" not in entry:
                entry["calib"] = Calibration(calibration_samples(entry["spec"], self._calib_arg, self._calib_size))
            return entry["calib"]
        if self._calib is None:
            self._calib = Calibration(calibration_samples(self.spec, self._calib_arg, self._calib_size))
        return self._calib

    def _input(self, input_kind: str) -> dict[str, Any]:
        """The model, spec and check samples for an input kind: the same images as the float check,
        taken through the variant's own (shorter) chain, so the gate compares like with like."""
        entry = self._by_input.get(input_kind)
        if entry is None:
            vspec = variant_spec(self.spec, input_kind)
            entry = {"spec": vspec, "model": wrap(self.model, self.spec, input_kind),
                     "check": check_samples(vspec, self._check_arg, self._check_size)}
            self._by_input[input_kind] = entry
        entry.setdefault("spec", self.spec)
        return entry

    def export(self, variant: Variant, out: Path, max_drop: float, input_kind: str = "float") -> ExportResult:
        fmt = variant.format
        module = fmt.load()
        entry = self._input(input_kind)
        check = entry["check"]
        calib = self.calibration(input_kind) if variant.calibrated else None
        out.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        extra = dict(self.spec.extra)
        extra["export"] = {"format": variant.fmt, "quant": variant.quant, "runtime": fmt.runtime,
                           "calibration": ({"data": calib.samples.source, "n": len(calib)} if calib else None)}
        if input_kind != "float":
            extra["export"]["input"] = input_kind
            extra["trained_input"] = {"colour": self.spec.colour, "input_shape": list(self.spec.input_shape),
                                      "preprocess": [s.to_dict() for s in self.spec.preprocess]}
        spec = entry["spec"].replace(quantization=variant.quant, source_hash=self.source_hash, extra=extra)
        with temp_folder(out.parent, f".{out.name}.") as work:
            blob = module.convert(entry["model"], spec, variant.quant, calib, work)
            trial = work / out.name
            trial.write_bytes(module.embed(blob, spec))
            if load_spec(trial).to_json() != spec.to_json():
                raise ExportError(f"the ModelSpec embedded in the {variant.key} export does not read back")
            output = module.run(trial, check.x)
            report = compare(self.reference, output, check, spec=self.spec, fmt=variant.fmt, quant=variant.quant,
                             path=out, max_drop=max_drop, size_bytes=trial.stat().st_size,
                             source_bytes=self.source_bytes, fp32_weight_bytes=self.fp32_weight_bytes,
                             runtime=fmt.runtime,
                             extra={"seconds": round(time.monotonic() - t0, 2), "input": input_kind})
            report_path = report.save(report_path_for(out))
            if not report.passed:
                self._remove_stale(out)
                raise AccuracyGateError(
                    f"{variant.fmt} {variant.quant} export loses {report.drop_pts:.2f} accuracy points "
                    f"(allowed {max_drop:g}); {out} was not written; report: {report_path}", report)
            metrics = dict(self.spec.metrics)
            metrics["export"] = report.metrics()
            spec = spec.replace(metrics=metrics)
            final = module.embed(blob, spec)
            spec_path = write_sidecar(out, spec)
            # The artefact is renamed into place last, so its presence means all of it is done.
            atomic_write_bytes(out, final)
        log.info("wrote %s (%d bytes)", out, out.stat().st_size)
        return ExportResult(variant, out, spec_path, report_path, spec, report)

    @staticmethod
    def _remove_stale(out: Path) -> None:
        # An earlier artefact at this name would now sit beside a report that failed: the name
        # must not point at an unchecked model.
        for p in (out, spec_path_for(out)):
            if p.exists():
                p.unlink()


def export(model: str | os.PathLike, fmt: str, quant: str = "fp32", *, out: str | os.PathLike,
           calib: str | os.PathLike | None = None, calib_size: int = DEFAULT_CALIB_SIZE,
           check: str | os.PathLike | None = None, check_size: int | None = None,
           max_drop: float = DEFAULT_MAX_DROP, input: str = "float") -> ExportResult:
    """Export `model` (run directory or .keras) as `fmt` at precision `quant` to `out` (a file with
    the format's suffix, or an existing folder). `input` is the input kind (export.inputs: `float`
    as trained, or `uint8-rgb` with colour conversion and scaling inside the graph).

    Raises ConfigError / ModelError / DataError for bad input, ExportError when conversion fails,
    AccuracyGateError (an ExportError, carrying the report) when the check fails.
    """
    variant = get_variant(fmt, quant)
    get_input(input)
    _validate_numbers(calib_size, check_size, max_drop)
    source = resolve_source(model)
    check_fits(source.spec, input)
    target = _resolve_out(out, source.spec.name, variant, input)
    session = _Session(source, calib, calib_size, check, check_size, variant.calibrated and input == "float")
    return session.export(variant, target, max_drop, input)


def export_all(model: str | os.PathLike, out_dir: str | os.PathLike, *,
               variants: Iterable[Variant] | None = None, calib: str | os.PathLike | None = None,
               calib_size: int = DEFAULT_CALIB_SIZE, check: str | os.PathLike | None = None,
               check_size: int | None = None, max_drop: float = DEFAULT_MAX_DROP,
               input: str = "float") -> list[ExportResult]:
    """Every supported (format, precision) into `out_dir` as NAME-QUANT.SUFFIX. A variant that fails
    its gate or its conversion is reported in its result and the others still run."""
    chosen: Sequence[Variant] = list(variants) if variants is not None else list(VARIANTS)
    get_input(input)
    _validate_numbers(calib_size, check_size, max_drop)
    source = resolve_source(model)
    check_fits(source.spec, input)
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} must be a folder with --all")
    session = _Session(source, calib, calib_size, check, check_size,
                       input == "float" and any(v.calibrated for v in chosen))
    results = []
    for v in chosen:
        target = out_dir / default_filename(source.spec.name, v, input)
        try:
            results.append(session.export(v, target, max_drop, input))
        except AccuracyGateError as e:
            results.append(ExportResult(v, None, None, report_path_for(target), None, e.report, str(e)))
        except ExportError as e:
            log.error("%s: %s", v.key, e)
            results.append(ExportResult(v, None, None, None, None, None, str(e)))
    return results


__all__ = ["ExportResult", "Source", "export", "export_all", "load_keras", "report_path_for",
           "resolve_source"]
