"""`edgecv export`: the command-line face of edgecv.export. TensorFlow is imported only when an
export runs, so registering the command costs nothing."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shutil
from pathlib import Path

from ..errors import ConfigError, unknown
from .calibration import DEFAULT_CALIB_SIZE
from .check import DEFAULT_MAX_DROP
from .formats import FORMATS, QUANTS_ALL, table

log = logging.getLogger("edgecv.export")

DESCRIPTION = ("Export a trained model (run directory or .keras) to TFLite or ONNX, optionally quantized, "
               "with its ModelSpec embedded, and check it against the source model.")

EXAMPLES = f"""variants:
{table()}

examples:
  edgecv export runs/mnist-lenet --format tflite --quant int8 --out out/lenet-int8.tflite
  edgecv export runs/mnist-lenet --format onnx --quant int8 --calib mnist --calib-size 512 --out out/
  edgecv export model.keras --format onnx --check data/holdout --max-drop 0.5 --out model.onnx
  edgecv export runs/mnist-lenet --all --out out/lenet
  edgecv export runs/smile --format tflite --quant fp16 --input uint8-rgb --out out/smile-rgb.tflite

--calib defaults to the training split recorded in the model's spec, --check to its validation
split; any other data set is used whole. Each artefact gets PATH.spec.json and PATH.report.json;
one that loses more than --max-drop accuracy points is not written (exit 1).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained model to TFLite / ONNX (fp32, fp16, dynamic, int8)",
                       description=DESCRIPTION, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a run directory (RUN/model.keras + spec.json) or a .keras file")
    what = p.add_mutually_exclusive_group(required=True)
    # Choices are checked against the format table (not argparse `choices`), so a typo gets the
    # allowed set for that format and the close matches.
    what.add_argument("--format", dest="fmt", metavar="FMT", help=f"one of: {', '.join(FORMATS)}")
    what.add_argument("--all", action="store_true", help="every supported format x precision into the --out folder")
    p.add_argument("--quant", default=None, metavar="Q",
                   help=f"one of: {', '.join(QUANTS_ALL)} (default fp32; with --all, only this precision)")
    p.add_argument("--calib", metavar="DATA", help="calibration data: data set name, path, or a preprocessed .npy")
    p.add_argument("--calib-size", type=int, default=DEFAULT_CALIB_SIZE, metavar="N",
                   help=f"calibration samples (default {DEFAULT_CALIB_SIZE})")
    p.add_argument("--check", metavar="DATA", help="labelled held-out data for the accuracy gate")
    p.add_argument("--check-size", type=int, default=None, metavar="N", help="check on N random samples (default all)")
    p.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP, metavar="PTS",
                   help=f"largest allowed accuracy drop in points (default {DEFAULT_MAX_DROP:g})")
    p.add_argument("--input", default="float", metavar="KIND",
                   help="float (default: as trained) or uint8-rgb (HxWx3 uint8 RGB pixels; colour conversion, "
                        "scaling and int8 quantization inside the graph, for MediaPipe / Android / NPU delegates)")
    p.add_argument("--out", required=True, metavar="PATH", help="output file (or folder; a folder with --all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_out(args.out, args.model)
    out = Path(args.out)
    with sweeping_leftovers(out if args.all or out.is_dir() else out.parent):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from .api import export, export_all
    from .check import AccuracyGateError, summary_table
    from .formats import get_variant, variants
    from .inputs import get_input

    if args.all:
        chosen = variants()
        if args.quant is not None:
            if args.quant not in QUANTS_ALL:
                raise ConfigError(unknown("precision", args.quant, QUANTS_ALL))
            chosen = [v for v in chosen if v.quant == args.quant]
        results = export_all(args.model, args.out, variants=chosen, calib=args.calib, calib_size=args.calib_size,
                             check=args.check, check_size=args.check_size, max_drop=args.max_drop,
                             input=args.input)
        print(summary_table([r.report for r in results if r.report is not None]))
        failed = [r for r in results if not r.passed]
        for r in failed:
            print(f"{r.variant.key}: {r.error}")
        print(f"{len(results) - len(failed)} of {len(results)} variants written to {Path(args.out)}")
        return 1 if failed else 0
    quant = args.quant or "fp32"
    get_variant(args.fmt, quant)      # a bad pair fails here, before TensorFlow loads
    get_input(args.input)
    try:
        result = export(args.model, args.fmt, quant, out=args.out, calib=args.calib,
                        calib_size=args.calib_size, check=args.check, check_size=args.check_size,
                        max_drop=args.max_drop, input=args.input)
    except AccuracyGateError as e:
        print(e.report.text())
        raise
    print(result.report.text())
    print(f"wrote {result.path}, {result.spec_path.name}, {result.report_path.name}")
    return 0


def check_out(out: str, model: str) -> None:
    """--out before TensorFlow loads: not empty (that was the current folder), not under a file, not
    the model or its spec. An existing folder is the export's to check (it names the files in it)."""
    from ..safeio import check_output

    if not out.strip():
        raise ConfigError("--out is empty: name a file or a folder")
    p = Path(out)
    if p.is_dir():
        return
    m = Path(model)
    inputs = [m, m / "model.keras", m / "spec.json"] if m.is_dir() else [m, Path(f"{m}.spec.json")]
    check_output(p, "--out", [str(i) for i in inputs if i.exists()])


# The export's working folders: .NAME.SUFFIX.XXXXXXXX beside the output (tempfile's eight characters).
_WORK_DIR = re.compile(r"^\.[^/]+\.(tflite|onnx)\.[a-z0-9_]{8}$")


@contextlib.contextmanager
def sweeping_leftovers(folder: Path):
    """Hold a shared flock on the folder an export writes into while it runs; before that, when no
    other `edgecv export` holds one (an exclusive lock is granted), remove the working folders a
    killed export left there (SIGKILL gives no chance to clean up; the kernel drops a dead process's
    lock, so a folder with no lock holder has no export running in it)."""
    try:
        import fcntl
        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):  # no flock here, or the folder does not exist yet (nothing to sweep)
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # another export is writing here: its working folder is not a leftover
        else:
            for entry in os.scandir(folder):
                if entry.is_dir(follow_symlinks=False) and _WORK_DIR.match(entry.name):
                    log.info("removing %s, left by an export that was killed", entry.path)
                    shutil.rmtree(entry.path, ignore_errors=True)
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)
