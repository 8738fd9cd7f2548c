"""The outputs of `edgecv run` / `edgecv smile` (--save, --json-out, --summary-out), checked before
anything runs, and the run's outcome judged at its end.

check_outputs() refuses, before the model or any source is opened, an output that cannot be written
or that is the same file as an input (a source, --sources-file, the model) or as another output. The
sinks themselves write to temporary files renamed at a successful close (edgecv.runtime.sinks), the
summary is written atomically (write_summary), so a failed run leaves what was there.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from edgecv.safeio import OutputError, atomic_write_text, check_output, exit_later, same_file


def _input_files(args: argparse.Namespace, sources: Iterable[str]) -> list[str]:
    """Local files a run reads: the model, --sources-file, and every source that names a file."""
    files = []
    for value in (getattr(args, "model", None), getattr(args, "sources_file", None), getattr(args, "config", None)):
        if value and os.path.exists(str(value)):
            files.append(str(value))
    for src in sources:
        text = str(src).strip()
        if not text or "://" in text or text.isdigit():
            continue
        if text.startswith("video:"):  # a data set video: the file it resolves to (parse_source does the same)
            from edgecv.data import resource_path
            from edgecv.errors import EdgecvError

            try:
                files.append(str(resource_path("videos", "videos/" + text[len("video:"):], fetch=False)))
            except EdgecvError:
                pass  # parse_source reports it
            continue
        if os.path.exists(text):
            files.append(text)
        elif any(c in text for c in "*?["):
            files.extend(glob.glob(text, recursive=True))
    return files


def _model_files(model: str | os.PathLike | None) -> list[str]:
    """The model and the files its ModelSpec may come from (a sidecar, a run directory's spec.json)."""
    if not model:
        return []
    p = Path(model)
    files = [str(p), f"{p}.spec.json"]
    if p.name == "model.keras":
        files.append(str(p.parent / "spec.json"))
    return [f for f in files if os.path.exists(f)]


def video_paths(save: str, n_sources: int) -> list[Path]:
    """The files --save writes: OUT, or OUT.s0.EXT, OUT.s1.EXT, ... with several sources."""
    p = Path(save)
    if n_sources <= 1:
        return [p]
    return [p.with_name(f"{p.stem}.s{i}{p.suffix}") for i in range(n_sources)]


def check_outputs(args: argparse.Namespace, sources: list[str], model: str | os.PathLike | None = None) -> None:
    """Refuse bad output paths before the run opens anything (OutputError, one line)."""
    inputs = _input_files(args, sources) + _model_files(model)
    outputs: list[tuple[str, Path]] = []
    if getattr(args, "save", None):
        outputs += [("--save", p) for p in video_paths(args.save, len(sources))]
    for flag, attr in (("--json-out", "json_out"), ("--summary-out", "summary_out")):
        if getattr(args, attr, None):
            outputs.append((flag, Path(getattr(args, attr))))
    for i, (flag, path) in enumerate(outputs):
        check_output(path, flag, inputs)
        for other_flag, other in outputs[:i]:
            if same_file(path, other) and not _is_device(path):
                raise OutputError(f"cannot write {path}: {flag} and {other_flag} name the same file")


def _is_device(path: Path) -> bool:
    return str(path).startswith("/dev/")


def commit_only_if(sinks: Iterable[Any], condition: Callable[[], bool]) -> None:
    """Outputs of these sinks are renamed into place at close only when condition() is then true
    (e.g. the pipeline did not fail); otherwise the earlier files stay."""
    for sink in sinks:
        if hasattr(sink, "commit_if"):
            sink.commit_if = condition


def write_summary(path: str | os.PathLike, text: str) -> None:
    """--summary-out, whole or not at all."""
    try:
        atomic_write_text(path, text if text.endswith("\n") else text + "\n")
    except OSError as e:
        raise OutputError(f"cannot write --summary-out {path}: {e.strerror or e}") from None


def no_output_reason(summary: dict[str, Any], interrupted: bool = False) -> str | None:
    """Why a finished run did not do its job, or None: every source failed, or none produced a frame.
    A run the user stopped (a signal) is judged by what it was asked, not by this."""
    if interrupted:
        return None
    sources = summary.get("sources") or {}
    states = {sid: s.get("state") for sid, s in sources.items()}
    if summary.get("frames", 0) > 0 and not (states and all(v == "failed" for v in states.values())):
        return None
    parts = []
    for sid, s in sorted(sources.items()):
        why = s.get("error") or (f"{s.get('state')} with no frame" if not s.get("decoded") else s.get("state"))
        parts.append(f"{sid} ({s.get('uri', sid)}): {why}")
    what = "every source failed" if states and all(v == "failed" for v in states.values()) else \
        "no source produced a frame"
    return f"{what}: " + "; ".join(parts) if parts else what


def report_run(args: argparse.Namespace, summary: dict[str, Any], error: str | None, interrupted: bool) -> int:
    """Print the summary (and --summary-out); the exit code, with one `edgecv: error:` line when the
    run failed, an output the user asked for is incomplete, or nothing was produced. `edgecv run` and
    its --ray fleet end the same way."""
    text = json.dumps(summary, indent=2, sort_keys=True)
    print(text)
    if args.summary_out:
        write_summary(args.summary_out, text)
    if error:
        print(f"edgecv: error: {error}", file=sys.stderr)
        return 1
    if summary.get("sinks_failed"):
        # The other sinks kept running, but an output the user asked for is incomplete: say so.
        failed = "; ".join(f"{k}: {v}" for k, v in summary["sinks_failed"].items())
        print(f"edgecv: error: output failed during the run ({failed})", file=sys.stderr)
        return 1
    reason = no_output_reason(summary, interrupted=interrupted)
    if reason:
        print(f"edgecv: error: {reason}", file=sys.stderr)
        return 1
    return 0


# After a second SIGINT/SIGTERM the run is given this long to finish its outputs before the process
# ends anyway: a sink blocked on a reader that stopped reading, or a read stuck in a driver, would
# otherwise keep it alive until SIGKILL. Outputs are temporaries until they are complete, so ending
# here leaves the earlier files in place.
HARD_EXIT_AFTER_S = 10.0


def exit_if_still_running(seconds: float = HARD_EXIT_AFTER_S) -> None:
    """Arm (once) a timer that ends the process with exit 130 if it is still running `seconds` from
    now. Safe to call from a signal handler."""
    exit_later(seconds, f"the run did not end within {seconds:g} s of the second signal; exiting without "
                        "finishing its outputs (earlier files are kept)", 130)
