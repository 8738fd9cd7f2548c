"""`edgecv batch`: a model over an archive of videos and images on Ray, one results file per input.

Each input is decoded, detected and cropped in a CPU task (runtime.archive), its crops classified by
a pool of classifier actors, and its events (the fields of `edgecv run --json-out`, one row per
frame) come back to this process, which commits them exactly once: written to a hidden temporary
file, renamed into place, then recorded `done` in DIR/manifest.jsonl (one JSON object a line,
appended and fsynced). A rerun skips the inputs recorded done whose file is unchanged and redoes
the rest; a killed worker is retried by Ray and writes nothing itself; a killed command leaves at
most a temporary file (removed by the next run) and an input without its `done` record (redone).
"""
from __future__ import annotations

import argparse
import fcntl
import glob as globmod
import hashlib
import json
import logging
import os
import re
import signal
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from edgecv.errors import ConfigError, EdgecvError

log = logging.getLogger("edgecv.batch")

SCHEMA = "edgecv.batch/1"
FORMATS = ("jsonl", "parquet")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv",
                  ".mjpeg", ".mjpg", ".3gp", ".ogv")
IMAGES_PER_TASK = 64    # still images travel in groups: a task per image would cost more than the image
MANIFEST = "manifest.jsonl"
RESULTS = "results"

EXAMPLES = """examples:
  edgecv batch recordings/ --model smile --detector yunet --out out/labels
  edgecv batch 'cams/**/*.mp4' photos/ --model smile --detector yunet --out out/labels --workers 8
  edgecv batch --inputs-file list.txt --model m.onnx --detector none --format parquet --out out/p
  edgecv batch recordings/ --model smile --detector yunet --out out/labels --address head:6379
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from edgecv.safeio import int_at_least

    from edgecv.runtime.backends import BACKENDS, DEVICES

    p = sub.add_parser("batch", help="run a model over an archive of videos and images on Ray",
                       description=__doc__.split("\n")[0], epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="video or image files, folders (searched recursively), globs, or URLs")
    p.add_argument("--inputs-file", metavar="F", help="a file listing inputs, one per line (# comments)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="results/<input>.<hash>.jsonl per input, manifest.jsonl and summary.json go here")
    p.add_argument("--model", required=True, help="shipped model name or a .tflite/.onnx/.keras file")
    p.add_argument("--detector", default="haar", choices=["haar", "yunet", "yunet-opencv", "none"],
                   help="face detector whose boxes are classified: yunet runs on ONNX Runtime, yunet-opencv on "
                        "cv2.FaceDetectorYN (same boxes); none classifies whole frames (default haar)")
    p.add_argument("--detect-width", type=int_at_least(64), metavar="PX",
                   help="detect on frames downscaled to this width (default 300 for haar, 320 for yunet)")
    p.add_argument("--detect-every", type=int_at_least(1), default=1, metavar="K",
                   help="detect on every K-th frame and predict the boxes in between (default 1)")
    p.add_argument("--backend", choices=BACKENDS, help="default: from the model file's suffix")
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="where the classifier actors run (cuda: each actor takes --gpus-per-classifier GPUs)")
    p.add_argument("--batch", type=int_at_least(1), default=32, metavar="N",
                   help="largest batch the classifier runs at once (default 32)")
    p.add_argument("--format", choices=FORMATS, default="jsonl",
                   help="results file format: JSON lines (the events of edgecv run --json-out) or Parquet "
                        "(the same fields; needs pyarrow, which the [cluster] extra installs)")
    p.add_argument("--workers", type=int_at_least(1), metavar="N",
                   help="decode+detect tasks at once, one CPU each (default: the cluster's CPUs)")
    p.add_argument("--classifiers", type=int_at_least(1), default=1, metavar="N",
                   help="classifier actors (default 1; they take no CPU slot on --device cpu)")
    p.add_argument("--gpus-per-classifier", type=float, default=1.0, metavar="G",
                   help="GPUs each classifier actor reserves with --device cuda (default 1; 0.5 shares one)")
    p.add_argument("--address", metavar="ADDR",
                   help="a running Ray cluster (HOST:PORT, ray://HOST:PORT or auto; default RAY_ADDRESS, "
                        "else a local Ray started by this command)")
    p.add_argument("--max-frame-pixels", type=int_at_least(1), metavar="N",
                   help="refuse decoded frames larger than N pixels (default 40,000,000)")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.set_defaults(func=cmd_batch)
    return p


# --- inputs ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Planned:
    """An input as the command line named it: `key` (absolute path, or the URL / video:NAME as given)
    and `error` when it cannot be an input at all (no such file, a glob that matches nothing)."""

    key: str
    source: str
    image: bool = False
    error: str | None = None


def _is_media(p: Path) -> bool:
    from edgecv.images import is_image_path

    return is_image_path(p) or p.suffix.lower() in VIDEO_SUFFIXES


def expand_inputs(texts: Iterable[str]) -> list[Planned]:
    """Files, folders (recursively: videos and images, hidden files skipped), globs and URLs ->
    inputs in a stable order, each named once."""
    from edgecv.images import is_image_path
    from edgecv.safeio import redact_url

    out: "OrderedDict[str, Planned]" = OrderedDict()

    def add(path: Path) -> None:
        key = str(path.resolve())
        out.setdefault(key, Planned(key, key, image=is_image_path(path)))

    for raw in texts:
        text = raw.strip()
        if not text:
            continue
        if "://" in text or text.startswith("video:"):
            source = text
            if text.startswith("video:"):
                from edgecv.errors import SourceError
                from edgecv.runtime.sources import make_reader

                try:
                    source = make_reader(text).target  # the data set's file: its key is its path
                    out.setdefault(str(source), Planned(str(source), str(source)))
                except SourceError as e:
                    out.setdefault(text, Planned(text, text, error=str(e)))
                continue
            key = redact_url(text)  # the manifest, the events and the summary never hold a password
            out.setdefault(key, Planned(key, source))
            continue
        path = Path(text).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _is_media(p)
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                out.setdefault(str(path.resolve()), Planned(str(path.resolve()), text,
                                                            error=f"{text}: folder holds no videos or images"))
            for p in found:
                add(p)
        elif path.exists():
            add(path)
        elif os.path.lexists(text):
            out.setdefault(text, Planned(text, text, error=f"{text}: a broken symbolic link"))
        elif any(c in text for c in "*?["):
            matches = sorted(Path(m) for m in globmod.glob(text, recursive=True) if os.path.isfile(m))
            if not matches:
                out.setdefault(text, Planned(text, text, error=f"no files match {text!r}"))
            for p in matches:
                add(p)
        else:
            out.setdefault(text, Planned(text, text, error=f"no such file: {text}"))
    return list(out.values())


def read_inputs_file(path: str) -> list[str]:
    from edgecv.safeio import read_text_limited

    return [line.strip() for line in read_text_limited(path, "--inputs-file").splitlines()
            if line.strip() and not line.strip().startswith("#")]


def results_name(key: str, fmt: str) -> str:
    """The results file of an input: its file name (made safe) and a hash of its full key, so two
    `clip.mp4` in different folders get two files."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(key.rstrip("/")) or "input")[:120].lstrip(".")
    return f"{base or 'input'}.{hashlib.sha1(key.encode()).hexdigest()[:10]}.{fmt}"


def _stat(key: str) -> dict[str, int] | None:
    try:
        st = os.stat(key)
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


# --- the manifest --------------------------------------------------------------------------------------
class Manifest:
    """DIR/manifest.jsonl: a `job` record first, then one record per finished input (`done` or
    `failed`), appended in one write each and fsynced; the last record of an input wins. A record cut
    short by a kill is dropped when the manifest is next opened."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / MANIFEST
        self.records: list[dict[str, Any]] = []
        self.fd: int | None = None

    def open(self) -> None:
        from edgecv.safeio import OutputError

        if self.path.exists():
            data = self.path.read_bytes()
            end = data.rfind(b"\n") + 1
            for line in data[:end].splitlines():
                try:
                    self.records.append(json.loads(line))
                except ValueError:
                    raise OutputError(f"{self.path}: line {len(self.records) + 1} is not JSON; "
                                      "it is not a manifest edgecv batch wrote") from None
            if end < len(data):  # a record cut short by a kill: it never committed anything
                with open(self.path, "r+b") as f:
                    f.truncate(end)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        self.fd = os.open(self.path, flags, 0o644)

    @property
    def job(self) -> dict[str, Any] | None:
        return self.records[0] if self.records and self.records[0].get("kind") == "job" else None

    def latest(self) -> dict[str, dict[str, Any]]:
        last: dict[str, dict[str, Any]] = {}
        for r in self.records:
            if r.get("kind") == "input":
                last[r["input"]] = r
        return last

    def append(self, record: dict[str, Any]) -> None:
        from edgecv.safeio import write_all

        write_all(self.fd, (json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n").encode())
        os.fsync(self.fd)
        self.records.append(record)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _lock(folder: Path) -> int:
    fd = os.open(folder / ".edgecv-batch.lock", os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError(f"{folder}: another edgecv batch is writing there") from None
    return fd


def sweep_temps(folder: Path) -> int:
    """Remove the temporary files of killed runs (their process is gone) from a results folder."""
    from edgecv.safeio import TMP_TAG

    removed = 0
    for p in folder.glob(".*" + TMP_TAG + "*.part*"):
        m = re.search(re.escape(TMP_TAG) + r"(\d+)\.part", p.name)
        if m is None or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            p.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def write_results(path: Path, events: list[dict[str, Any]], fmt: str) -> int:
    """One input's rows, whole or not at all: a hidden temporary beside `path`, fsync, rename.
    Returns the bytes written."""
    from edgecv.safeio import commit, discard, temp_path, write_all

    tmp = temp_path(path)
    try:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(events), tmp)
        else:
            data = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events).encode("utf-8")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
        size = tmp.stat().st_size
        commit(tmp, path)
        return size
    except BaseException:
        discard(tmp)
        raise


# --- the job -------------------------------------------------------------------------------------------
def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def job_record(args: argparse.Namespace, ref, backend: str, detector_options: dict[str, Any]) -> dict[str, Any]:
    """What the results depend on; a rerun into the same --out must match it."""
    opts = {k: v for k, v in detector_options.items() if k != "model"}
    return {"kind": "job", "schema": SCHEMA, "model": str(ref.path), "model_sha256": _file_sha256(Path(ref.path)),
            "backend": backend, "detector": args.detector, "detector_options": opts,
            "detect_every": args.detect_every, "format": args.format}


SAME_JOB_KEYS = ("schema", "model_sha256", "backend", "detector", "detector_options", "detect_every", "format")


class Progress:
    """`batch: 3/8 inputs (1 failed), 2,385 frames, 312 fps, 7 s` on stderr: rewritten in place on a
    terminal, a line every 10 s otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.last = 0.0

    def due(self) -> bool:
        return self.enabled and time.monotonic() - self.last >= (0.5 if self.tty else 10.0)

    def show(self, done: int, failed: int, frames: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and not self.due():
            return
        self.last = now
        el = max(now - self.t0, 1e-9)
        text = (f"batch: {done + failed}/{self.total} inputs" + (f" ({failed} failed)" if failed else "")
                + f", {frames:,} frames, {frames / el:.0f} fps, {el:.0f} s")
        if self.tty:
            sys.stderr.write("\r" + text.ljust(72) + ("\n" if final else ""))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


def cmd_batch(args: argparse.Namespace) -> int:
    from edgecv.raycluster import address_from, check_reachable, require_ray
    from edgecv.resolve import resolve
    from edgecv.runtime.backends import resolve_backend
    from edgecv.runtime.build import detector_factory
    from edgecv.safeio import check_output

    texts = list(args.inputs) + (read_inputs_file(args.inputs_file) if args.inputs_file else [])
    if not texts:
        raise ConfigError("no input given: name videos, images, folders or globs, or use --inputs-file F")
    require_ray()  # without the [cluster] extra: one line naming it, before anything is written
    address = address_from(args.address)
    if address not in (None, "local", "auto"):
        check_reachable(address)  # before anything is read or written
    if args.format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ModuleNotFoundError:
            raise ConfigError("--format parquet needs pyarrow: pip install 'edgecv[cluster]'") from None
    if args.device == "cuda" and not args.gpus_per_classifier > 0:
        raise ConfigError(f"--gpus-per-classifier must be positive with --device cuda; got {args.gpus_per_classifier}")
    ref = resolve(args.model, args.backend)
    backend = resolve_backend(Path(ref.path), args.backend)
    det_opts: dict[str, Any] = {}
    if args.detect_width and args.detector != "none":
        det_opts["width"] = args.detect_width
    if args.detector in ("yunet", "yunet-opencv"):
        from edgecv.data import resource_path

        # The weights' path is resolved here once (a mirror or the cache): workers get the file.
        det_opts["model"] = str(resource_path("yunet", "models/face_detection_yunet_2023mar.onnx"))
    detector_factory(args.detector, **det_opts)  # an unknown detector fails here, not in every task
    planned = expand_inputs(texts)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: not a folder")
    for p in planned:
        if not p.error and Path(p.key).exists() and Path(p.key).resolve().is_relative_to(out.resolve()):
            raise ConfigError(f"input {p.key} is inside --out {out}: results would be read back as inputs")
    results_dir = out / RESULTS
    results_dir.mkdir(parents=True, exist_ok=True)
    check_output(out / MANIFEST, "--out")
    lock = _lock(out)
    manifest = Manifest(out)
    try:
        manifest.open()
        job = job_record(args, ref, backend, det_opts)
        if manifest.job is None:
            if manifest.records:
                raise ConfigError(f"{manifest.path}: does not start with a job record; not a manifest edgecv wrote")
            manifest.append(job)
        else:
            old = manifest.job
            diff = [k for k in SAME_JOB_KEYS if old.get(k) != job.get(k)]
            if diff:
                raise ConfigError(f"--out {out} holds results of another job ({', '.join(diff)} differ: "
                                  f"was {', '.join(f'{k}={old.get(k)!r}' for k in diff)}); use another --out")
        sweep_temps(results_dir)
        return _run_job(args, address, ref, backend, det_opts, planned, manifest, results_dir, out)
    finally:
        manifest.close()
        os.close(lock)


def _run_job(args, address, ref, backend, det_opts, planned: list[Planned], manifest: Manifest,
             results_dir: Path, out: Path) -> int:
    from edgecv.raycluster import connect, ship
    from edgecv.runtime.archive import ArchiveInput, ArchiveJob, Classifier, FrameCounter, process_inputs
    from edgecv.safeio import atomic_write_text

    t0 = time.monotonic()
    previous = manifest.latest()
    todo: list[Planned] = []
    skipped = 0
    failures: dict[str, str] = {}
    totals = {"frames": 0, "faces": 0, "done": 0}

    def record_failure(key: str, why: str) -> None:
        failures[key] = why
        manifest.append({"kind": "input", "input": key, "status": "failed", "error": why, "t": round(time.time(), 3)})

    for p in planned:
        rec = previous.get(p.key)
        if (rec is not None and rec.get("status") == "done" and (results_dir / rec["results"]).is_file()
                and (rec.get("stat") == _stat(p.key))):
            skipped += 1
            continue
        if p.error:
            record_failure(p.key, p.error)
            continue
        todo.append(p)
    progress = Progress(len(planned), not args.no_progress)
    interrupted: dict[str, Any] = {"n": 0}
    # Videos one per task; still images in groups (each is still its own input and its own file).
    chunks: list[list[Planned]] = []
    images: list[Planned] = []
    for p in todo:
        if p.image:
            images.append(p)
            if len(images) == IMAGES_PER_TASK:
                chunks.append(images)
                images = []
        else:
            chunks.append([p])
    if images:
        chunks.append(images)
    ray_info: dict[str, Any] = {}
    t_work = time.monotonic()
    if chunks:
        from edgecv.runtime.machine import usable_cpus

        env = {k: v for k, v in os.environ.items() if k.startswith("EDGECV_")}
        runtime_env = {"env_vars": env} if address not in (None, "local") and env else None
        with connect(address, num_cpus=usable_cpus(), runtime_env=runtime_env) as cluster:
            import ray

            workers = args.workers or max(1, cluster.cpus)
            ray_info = {**cluster.to_dict(), "workers": workers, "classifiers": args.classifiers}
            actor_opts: dict[str, Any] = {"max_restarts": 3, "max_task_retries": 3}
            if args.device == "cpu":
                actor_opts["num_cpus"] = 0  # light next to detection; must not starve the decode tasks
            else:
                actor_opts.update(num_cpus=0, num_gpus=args.gpus_per_classifier)
            # The model and YuNet's weights travel through the object store: a node without them (no
            # shared filesystem) gets a copy; only the inputs must be readable from every node.
            shipped = {k: ship(v) for k, v in det_opts.items() if k == "model"}
            job = ArchiveJob(ref, None if args.detector == "none" else args.detector, {**det_opts, **shipped},
                             args.detect_every, args.backend, args.device, args.batch, args.max_frame_pixels)
            model_file = ship(ref.path)
            remote_classifier = ray.remote(**actor_opts)(Classifier)
            classifiers = [remote_classifier.remote(model_file, ref.spec, args.backend, args.device, 1, args.batch)
                           for _ in range(args.classifiers)]
            try:
                ray_info["classifier"] = ray.get(classifiers[0].info.remote())
            except ray.exceptions.RayActorError as e:
                raise EdgecvError(f"the classifier could not start: {_actor_error(e)}") from None
            task = ray.remote(num_cpus=1, max_retries=3)(process_inputs)
            counter = ray.remote(num_cpus=0)(FrameCounter).remote() if progress.enabled else None
            counted = 0
            t_work = progress.t0 = time.monotonic()  # frames/s over the work, Ray's start-up apart
            pending = list(reversed(chunks))
            inflight: dict[Any, list[Planned]] = {}

            def on_signal(signum, _frame) -> None:
                interrupted["n"] += 1
                interrupted["signum"] = signum
                log.info("%s: stopping; finished inputs stay committed, a rerun does the rest",
                         signal.Signals(signum).name)

            old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                while (pending or inflight) and not interrupted["n"]:
                    while pending and len(inflight) < workers:
                        chunk = pending.pop()
                        items = [ArchiveInput(p.key, p.source) for p in chunk]
                        inflight[task.remote(job, items, classifiers, counter)] = chunk
                    ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
                    for r in ready:
                        chunk = inflight.pop(r)
                        try:
                            outcomes = ray.get(r)
                        except ray.exceptions.RayError as e:
                            why = _task_error(e)
                            for p in chunk:
                                record_failure(p.key, why)
                            continue
                        for p, o in zip(chunk, outcomes):
                            _commit(p, o, manifest, results_dir, args.format, totals, record_failure)
                    if counter is not None and progress.due():
                        try:
                            counted = ray.get(counter.get.remote(), timeout=2)
                        except ray.exceptions.RayError:
                            pass
                    progress.show(totals["done"] + skipped, len(failures), max(counted, totals["frames"]))
            finally:
                for s, h in old.items():
                    signal.signal(s, h)
                for r in inflight:
                    ray.cancel(r, force=True)
    wall = time.monotonic() - t0
    work = time.monotonic() - t_work
    progress.show(totals["done"] + skipped, len(failures), totals["frames"], final=True)
    summary = {"schema": SCHEMA, "out": str(out), "inputs": len(planned), "done": totals["done"],
               "skipped": skipped, "failed": len(failures), "failures": failures,
               "not_done": len(planned) - totals["done"] - skipped - len(failures),
               "frames": totals["frames"], "faces": totals["faces"], "wall_s": round(wall, 3),
               "work_s": round(work, 3),
               "fps": round(totals["frames"] / work, 1) if work > 0 and totals["frames"] else 0.0,
               "interrupted": bool(interrupted["n"]), "ray": ray_info}
    text = json.dumps(summary, indent=2, sort_keys=True)
    atomic_write_text(out / "summary.json", text + "\n")
    print(text)
    if interrupted["n"]:
        # The exit codes of edgecv.cli for the same signals: 143 after SIGTERM, 130 after Ctrl+C.
        print("edgecv: " + ("terminated" if interrupted.get("signum") == signal.SIGTERM else "interrupted")
              + f"; {totals['done'] + skipped} of {len(planned)} inputs are committed, a rerun does the rest",
              file=sys.stderr)
        return 143 if interrupted.get("signum") == signal.SIGTERM else 130
    if failures:
        print(f"edgecv: error: {len(failures)} of {len(planned)} inputs failed (reasons in {manifest.path}); "
              "the others are committed", file=sys.stderr)
        return 1
    return 0


def _commit(p: Planned, outcome: dict[str, Any], manifest: Manifest, results_dir: Path, fmt: str,
            totals: dict[str, int], record_failure) -> None:
    if outcome.get("status") != "done":
        record_failure(p.key, outcome.get("error") or "failed")
        return
    name = results_name(p.key, fmt)
    size = write_results(results_dir / name, outcome["events"], fmt)
    rec = {"kind": "input", "input": p.key, "status": "done", "results": name, "bytes": size,
           "frames": outcome["frames"], "faces": outcome["faces"], "seconds": outcome.get("seconds"),
           "stat": _stat(p.key), "node": outcome.get("node"), "t": round(time.time(), 3)}
    if outcome.get("warning"):
        rec["warning"] = outcome["warning"]
    manifest.append(rec)
    totals["done"] += 1
    totals["frames"] += outcome["frames"]
    totals["faces"] += outcome["faces"]


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else type(e).__name__


def _task_error(e: BaseException) -> str:
    import ray

    if isinstance(e, ray.exceptions.WorkerCrashedError):
        return "the worker process died on every retry (a crash in a decoder, or out of memory)"
    if isinstance(e, ray.exceptions.RayActorError):
        return "the classifier actor died on every restart"
    if isinstance(e, ray.exceptions.RayTaskError):
        return f"the task failed: {_first_line(e)}"
    return f"{type(e).__name__}: {_first_line(e)}"


def _actor_error(e: BaseException) -> str:
    text = str(e)
    m = re.search(r"(\w+Error: .+)", text)
    return m.group(1).strip() if m else _first_line(e)
