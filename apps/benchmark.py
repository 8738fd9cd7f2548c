"""`edgecv benchmark`: which artefact, precision, backend, device and batch size to ship on this box.

For every artefact x backend x device x batch, each measured in a fresh process: file size, load
time, first-inference time, latency p50/p90/p99 per batch and per image, throughput, peak RSS,
accuracy on a data set and its drop against the source model (from the ModelSpec metrics), the
execution provider actually used, and the harness's overhead against a bare engine loop; with a
fingerprint of the machine. Prints a table; writes JSON, CSV, Markdown and a PNG plot on request.

    edgecv benchmark MODEL_OR_DIR... [--backend ...] [--device ...] [--batch 1,8,32] ...
    edgecv benchmark MODEL.keras --export-all [--out DIR]     export every variant, then benchmark them
    edgecv benchmark pipeline MODEL.tflite --video V ...       the end-to-end video pipeline benchmark
    edgecv benchmark streams MODEL.onnx --video V [--streams 1,4,16,64] [--device cuda]   many streams, one batcher
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from edgecv.errors import ConfigError, DataError, ModelError, unknown

log = logging.getLogger("edgecv.benchmark")

BACKENDS = ("litert", "onnxruntime", "keras")
DEVICES = ("cpu", "cuda", "tensorrt")
SUFFIX_BACKENDS = {".tflite": ("litert",), ".onnx": ("onnxruntime",), ".keras": ("keras",)}
ARTEFACT_SUFFIXES = (".tflite", ".onnx")   # what a folder is scanned for
SPLITS = ("train", "val", "test", "all")
PLOT_SUFFIXES = (".png", ".svg", ".pdf")
ORT_PROVIDER = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}

EXAMPLES = """examples:
  edgecv benchmark out/lenet/ --batch 1,8,32 --duration 3 --data mnist --md out/bench.md
  edgecv benchmark smile --backend litert,onnxruntime --device cpu,cuda --json out/smile-bench.json
  edgecv benchmark a.int8.tflite b.onnx --batch 1,32 --threads 1 --csv out/b.csv --plot out/b.png
  edgecv benchmark runs/mnist-lenet --export-all --out out/lenet/ --batch 1,32
  edgecv benchmark pipeline smile.tflite --video video:smile.mp4 --onnx smile.onnx --max-frames 300
  edgecv benchmark streams lenet.onnx --video video:vtest_pets2009_480x360_h264.avi --streams 1,4,16,64

Each configuration runs in its own process: --warmup calls, then about 2 x --duration seconds (the
timed loop and, alternating with it, the bare engine loop). Use `nice` on a shared box.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("benchmark", help="measure exported models: latency, throughput, memory, accuracy",
                       description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", metavar="MODEL_OR_DIR",
                   help="model files (.tflite, .onnx, .keras), folders of them, or shipped model names; "
                        "'pipeline MODEL' runs the video pipeline benchmark instead, 'streams MODEL' the "
                        "many-streams one")
    p.add_argument("--backend", metavar="LIST", help="comma list of litert,onnxruntime,keras "
                   "(default: every backend that runs each file)")
    p.add_argument("--device", metavar="LIST", default="cpu",
                   help="comma list of cpu,cuda,tensorrt (default cpu); an unavailable one is measured on the "
                        "fallback, with a warning, and its rows say so")
    p.add_argument("--batch", metavar="LIST", default="1,8,32", help="comma list of batch sizes (default 1,8,32)")
    p.add_argument("--threads", metavar="N", help="inference threads (default: the library's default)")
    p.add_argument("--data", metavar="D", help="data set for accuracy: registry name or path; 'none' skips "
                   "accuracy (default: the data set named in each model's ModelSpec)")
    p.add_argument("--split", default="test", choices=SPLITS, help="split of --data to score (default test)")
    p.add_argument("--data-limit", metavar="N", help="score N images of the split, evenly spaced (captchas: the first N)")
    p.add_argument("--duration", metavar="S", default="2", help="timed seconds per configuration (default 2)")
    p.add_argument("--warmup", metavar="N", default="10", help="untimed calls before timing (default 10)")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON (one row per configuration)")
    p.add_argument("--csv", metavar="OUT", help="write the rows as CSV")
    p.add_argument("--md", metavar="OUT", help="write the table as Markdown, with the command and machine")
    p.add_argument("--plot", metavar="OUT.png", help="latency vs batch and throughput bars (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    g = p.add_argument_group("export, then benchmark (needs the [export] extra)")
    g.add_argument("--export-all", action="store_true",
                   help="MODEL is a .keras file or run directory: export every format x precision, then "
                        "benchmark each artefact that passed its accuracy gate")
    g.add_argument("--out", metavar="DIR", help="keep the exported artefacts here (default: a temporary folder, "
                   "removed afterwards)")
    g = p.add_argument_group("edgecv benchmark pipeline MODEL.tflite --video V (end-to-end, see runtime)")
    g.add_argument("--video", action="append", default=[], metavar="V",
                   help="video file or video:NAME; repeat for several")
    g.add_argument("--keras", metavar="K", help=".keras model for the books' Keras-predict loop")
    g.add_argument("--onnx", metavar="O", help=".onnx model for the ONNX Runtime crop-throughput row")
    g.add_argument("--max-frames", metavar="N", help="frames per mode (default: the whole video)")
    g.add_argument("--keras-max-frames", metavar="N", help="frames for the slow Keras loop")
    g.add_argument("--streams", metavar="LIST", help="streams: comma list of concurrent stream counts "
                   "(default 1,4,16,64)")
    g.add_argument("--cuda-graph", action="store_true", help="streams: capture CUDA graphs (onnxruntime, cuda)")
    g.add_argument("--loop", metavar="N", help="play each video N times in a row, so a short clip gives steady "
                   "numbers (ffmpeg copies the stream, nothing is re-encoded; default 1)")
    p.set_defaults(func=cmd_benchmark)
    return p


# -- argument checks ------------------------------------------------------------------------------

def parse_names(text: str | None, what: str, allowed: Sequence[str]) -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise ConfigError(f"--{what} needs at least one of: {', '.join(allowed)}")
    for n in names:
        if n not in allowed:
            raise ConfigError(f"--{what}: " + unknown(what, n, allowed))
    return list(dict.fromkeys(names))


def parse_int(text: str | None, what: str, minimum: int = 1) -> int | None:
    if text is None:
        return None
    try:
        v = int(str(text).strip())
    except ValueError:
        raise ConfigError(f"--{what} takes an integer >= {minimum}; got {text!r}") from None
    if v < minimum:
        raise ConfigError(f"--{what} takes an integer >= {minimum}; got {v}")
    return v


def parse_batches(text: str) -> list[int]:
    out = []
    for t in str(text).split(","):
        t = t.strip()
        try:
            b = int(t)
        except ValueError:
            b = 0
        if b < 1:
            raise ConfigError(f"--batch takes positive integers separated by commas, e.g. 1,8,32; got {t!r} "
                              f"in {text!r}")
        out.append(b)
    return sorted(set(out))


def parse_duration(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"--duration takes seconds (a number > 0); got {text!r}") from None
    if not 0 < v <= 3600:
        raise ConfigError(f"--duration takes seconds, more than 0 and at most 3600; got {text}")
    return v


# -- what to measure ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Artefact:
    path: Path
    spec: Any            # ModelSpec

    @property
    def format(self) -> str:
        return self.path.suffix.lstrip(".")


def discover(arg: str) -> list[Path]:
    """Model files named by one argument: a file, a folder (its .tflite/.onnx files) or a shipped name."""
    from edgecv import zoo

    p = Path(arg).expanduser()
    if not p.exists() and zoo.is_shipped(arg):
        return zoo.artefacts(arg)
    if p.is_dir():
        found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in ARTEFACT_SUFFIXES)
        if found:
            return found
        if (p / "model.keras").is_file():
            raise ConfigError(f"{p}: a run directory with no exported artefacts; to export every variant "
                              f"and benchmark them: edgecv benchmark {p} --export-all --out DIR")
        raise ModelError(f"{p}: no .tflite or .onnx files in this folder")
    if not p.exists():
        raise ModelError(f"{arg}: no such model file or folder, and "
                         + unknown("shipped model", arg, zoo.names() or ["(none shipped)"]))
    if p.suffix not in SUFFIX_BACKENDS:
        raise ModelError(f"{p}: not a model file (expected .tflite, .onnx or .keras; got "
                         f"{p.suffix or 'no suffix'})")
    return [p]


def load_artefacts(args_models: Sequence[str]) -> list[Artefact]:
    from edgecv.modelfile import load_spec

    seen: dict[Path, Artefact] = {}
    for arg in args_models:
        for path in discover(arg):
            key = path.resolve()
            if key not in seen:
                seen[key] = Artefact(path, load_spec(path))
    return list(seen.values())


def source_accuracy(spec: Any, data: str, split: str) -> float | None:
    """The source model's accuracy on (data, split) from the spec's metrics, when it names that data."""
    if data != spec.data.get("dataset"):
        return None
    m = spec.metrics
    keys = [f"{split}_accuracy"] if not spec.task.startswith("captcha") else [f"{split}_sequence_accuracy"] + (
        ["heldout_sequence_accuracy"] if split == "test" else [])
    for k in keys:
        v = m.get(k)
        if isinstance(v, (int, float)):
            return float(v)
    return None


class DataCache:
    """Preprocessed (X, y) per data set, split and preprocessing chain, saved once as .npy for the
    measuring processes to read (memory-mapped)."""

    def __init__(self, workdir: Path, split: str, limit: int | None) -> None:
        self.workdir = workdir
        self.split = split
        self.limit = limit
        self._done: dict[str, tuple[str, str, list[str]]] = {}

    def arrays(self, data: str, spec: Any) -> tuple[str, str, list[int] | None]:
        from edgecv.data import load, split
        from edgecv.preprocess import apply_chain

        from .evaluate import label_map

        method = spec.data.get("split") if data == spec.data.get("dataset") else None
        key = json.dumps([data, self.split, method, list(spec.preprocess), list(spec.input_shape)], sort_keys=True)
        if key not in self._done:
            ds = load(data)
            part = split(ds, self.split, method or ds.split_info)
            if part.kind != "classify":
                raise DataError(f"{data}: a {part.kind} data set cannot score a {spec.task} model")
            import numpy as np
            if self.limit and self.limit < len(part):
                # Evenly spaced, not the first N: files are sorted by class, so a prefix is one class.
                part = part.subset(np.linspace(0, len(part) - 1, self.limit).round().astype(np.int64))
            x, y = part.load_arrays(lambda imgs: apply_chain(imgs, spec.preprocess, spec.input_shape))
            i = len(self._done)
            xp, yp = self.workdir / f"x{i}.npy", self.workdir / f"y{i}.npy"
            np.save(xp, x)
            np.save(yp, np.asarray(y, np.int64))
            self._done[key] = (str(xp), str(yp), list(part.label_names))
        xp, yp, names = self._done[key]
        m = label_map(names, spec.labels)
        return xp, yp, None if m is None else [int(v) for v in m]


# -- the command ----------------------------------------------------------------------------------

def cmd_benchmark(args: argparse.Namespace) -> int:
    if args.models[:1] == ["pipeline"]:
        return cmd_pipeline(args)
    if args.models[:1] == ["streams"]:
        from .bench_streams_cmd import cmd_streams
        return cmd_streams(args)
    pipeline_only = [f"--{n.replace('_', '-')}" for n in ("video", "keras", "onnx", "max_frames", "keras_max_frames",
                                                          "loop", "streams", "cuda_graph")
                     if getattr(args, n)]
    if pipeline_only:
        raise ConfigError(f"{', '.join(pipeline_only)} belong to 'edgecv benchmark pipeline MODEL --video V'")
    if not args.models:
        raise ConfigError("name at least one model file, folder or shipped model (see edgecv benchmark --help)")
    backends = parse_names(args.backend, "backend", BACKENDS)
    devices = parse_names(args.device, "device", DEVICES) or ["cpu"]
    batches = parse_batches(args.batch)
    threads = parse_int(args.threads, "threads")
    warmup = parse_int(args.warmup, "warmup", minimum=0)
    duration = parse_duration(args.duration)
    limit = parse_int(args.data_limit, "data-limit")
    if args.out and not args.export_all:
        raise ConfigError("--out is for --export-all (where the exported artefacts go); use --json/--csv/--md/--plot "
                          "for results")
    if args.plot:
        from .bench_report import check_plot_available
        if Path(args.plot).suffix.lower() not in PLOT_SUFFIXES:
            raise ConfigError(f"--plot {args.plot}: must end in {', '.join(PLOT_SUFFIXES)}")
        check_plot_available()

    with tempfile.TemporaryDirectory(prefix="edgecv-bench-") as tmp:
        work = Path(tmp)
        export_dir: Path | None = None
        if args.export_all:
            if len(args.models) != 1:
                raise ConfigError("--export-all takes exactly one MODEL (.keras file or run directory)")
            export_dir = Path(args.out) if args.out else work / "export"
            paths = export_variants(args.models[0], export_dir, quiet=args.quiet)
            artefacts = load_artefacts([str(p) for p in paths])
        else:
            artefacts = load_artefacts(args.models)
        rows, env, settings = run_benchmark(artefacts, backends, devices, batches, threads, warmup, duration,
                                            args.data, args.split, limit, work, quiet=args.quiet)
        if args.export_all and not args.out:
            print(f"note: the exported artefacts were in a temporary folder, now removed; keep them with --out DIR",
                  file=sys.stderr)
    return report(rows, env, settings, args)


def export_variants(model: str, out_dir: Path, quiet: bool = False) -> list[Path]:
    """Every export variant of `model` into out_dir; the paths of those that passed their gate."""
    try:
        from edgecv.export.api import export_all
    except ImportError as e:
        raise ConfigError(f"--export-all needs the [export] extra ({e.name} is not installed): "
                          "pip install 'edgecv[export]'") from None
    results = export_all(model, out_dir)
    passed = [r.path for r in results if r.passed]
    for r in results:
        if not quiet:
            state = f"-> {r.path}" if r.passed else f"FAILED: {r.error}"
            print(f"export {r.variant.key}: {state}", file=sys.stderr)
    if not passed:
        raise ModelError(f"{model}: no export variant passed; nothing to benchmark")
    return passed


def _preflight(configs: list[tuple[Artefact, str, str]]) -> list[str]:
    """Warnings for devices that cannot be honoured, said before the long run starts."""
    warnings = []
    ort_devices = {d for _, b, d in configs if b == "onnxruntime" and d != "cpu"}
    if ort_devices:
        import onnxruntime as ort
        available = ort.get_available_providers()
        for d in sorted(ort_devices):
            if ORT_PROVIDER[d] not in available:
                warnings.append(f"--device {d} requested but this onnxruntime has no {ORT_PROVIDER[d]} (available: "
                                f"{', '.join(available)}); those rows run on the fallback and are marked {d}->cpu")
    for b in ("litert", "keras"):
        odd = sorted({d for _, bb, d in configs if bb == b and d != "cpu"})
        if odd:
            warnings.append(f"--device {','.join(odd)} requested but the {b} backend runs on the CPU only; "
                            f"those rows run on cpu and are marked {odd[0]}->cpu")
    return warnings


def run_benchmark(artefacts: Sequence[Artefact], backends: list[str] | None, devices: list[str], batches: list[int],
                  threads: int | None, warmup: int, duration: float, data: str | None, split: str,
                  limit: int | None, work: Path, quiet: bool = False) -> tuple[list[dict], dict, dict]:
    """Measure every configuration; returns (rows, environment, settings)."""
    from .bench_core import AccuracyJob, BenchChildError, BenchConfig, run_isolated
    from .bench_env import fingerprint
    from .bench_report import OVERHEAD_LIMIT_PCT, Progress

    plan: list[tuple[Artefact, str, str]] = []
    for a in artefacts:
        fits = SUFFIX_BACKENDS[a.path.suffix]
        chosen = [b for b in (backends or fits) if b in fits]
        if not chosen:
            print(f"warning: {a.path.name}: skipped; --backend {','.join(backends or [])} cannot run "
                  f"{a.path.suffix} files (that takes {', '.join(fits)})", file=sys.stderr)
        plan += [(a, b, d) for b in chosen for d in devices]
    if not plan:
        raise ConfigError(f"nothing to measure: --backend {','.join(backends or [])} runs none of the given files")
    for w in _preflight(plan):
        print(f"warning: {w}", file=sys.stderr)

    cache = DataCache(work, split, limit)
    jobs: dict[Path, tuple[AccuracyJob | None, str | None, float | None, str | None]] = {}
    for a in artefacts:
        d = data or a.spec.data.get("dataset")
        if not d or d == "none":
            if not quiet and not d:
                print(f"note: {a.path.name}: its ModelSpec names no data set; accuracy skipped (pass --data)",
                      file=sys.stderr)
            jobs[a.path] = (None, None, None, None)
            continue
        if a.spec.task.startswith("captcha"):
            job = AccuracyJob("captcha", str(d), split, limit=limit)
            inputs = None
        else:
            xp, yp, m = cache.arrays(str(d), a.spec)
            job = AccuracyJob("arrays", str(d), split, xp, yp, m, limit)
            inputs = xp
        jobs[a.path] = (job, inputs, source_accuracy(a.spec, str(d), split), f"{d}[{split}]")

    env = fingerprint(threads)
    total = len(plan) * len(batches)
    progress = Progress(total, enabled=not quiet)
    rows: list[dict] = []
    for a, backend, device in plan:
        job, inputs, src_acc, acc_label = jobs[a.path]
        group = []
        for batch in batches:
            # Accuracy once per artefact x backend x device, in the largest batch's process.
            cfg = BenchConfig(str(a.path), backend, device, batch, threads, duration, warmup,
                              accuracy=job if batch == batches[-1] else None, inputs_path=inputs)
            label = f"{a.path.name} {backend}/{device} b{batch}"
            progress.start(label)
            row: dict[str, Any] = {
                "artefact": a.path.name, "path": str(a.path), "model": a.spec.name, "task": a.spec.task,
                "format": a.format, "quant": a.spec.quantization, "size_bytes": a.path.stat().st_size,
                "backend": backend, "device": device, "batch": batch, "threads": threads,
                "warmup": warmup, "duration_s": duration, "accuracy_data": acc_label, "source_accuracy": src_acc}
            try:
                row.update(run_isolated(cfg))
                row["status"], row["error"] = "ok", None
                row["overhead_ok"] = row["overhead_pct"] <= OVERHEAD_LIMIT_PCT
            except BenchChildError as e:
                row.update(status="error", error=str(e), warnings=[])
            progress.finish(label, row)
            group.append(row)
        scored = next((r for r in group if r.get("accuracy") is not None), None)
        for r in group:
            if scored is not None:
                r["accuracy"], r["accuracy_n"] = scored["accuracy"], scored["accuracy_n"]
                if src_acc is not None:
                    r["drop_pts"] = round(100 * (src_acc - scored["accuracy"]), 3)
        rows += group
    progress.close()
    settings = {"command": "edgecv benchmark " + " ".join(shlex.quote(a) for a in sys.argv[2:])
                if len(sys.argv) > 1 and sys.argv[1] == "benchmark" else None,
                "backends": backends, "devices": devices, "batches": batches, "threads": threads,
                "warmup": warmup, "duration_s": duration, "data": data, "split": split, "data_limit": limit}
    return rows, env, settings


def report(rows: list[dict], env: dict, settings: dict, args: argparse.Namespace) -> int:
    from .bench_env import summary_line
    from .bench_report import format_table, notes_for, plot, to_csv, to_json, to_markdown, write_text

    command = settings.get("command") or "edgecv benchmark " + " ".join(args.models)
    print(summary_line(env))
    print(format_table(rows))
    warned: list[str] = []
    for r in rows:
        for w in r.get("warnings") or []:
            if w not in warned:
                warned.append(w)
    for w in warned:
        print(f"warning: {w}", file=sys.stderr)
    for n in notes_for(rows):
        print(f"note: {n}", file=sys.stderr)
    if args.json:
        write_text(args.json, to_json(rows, env, settings))
    if args.csv:
        write_text(args.csv, to_csv(rows))
    if args.md:
        write_text(args.md, to_markdown(rows, env, command, summary_line(env)))
    ok = [r for r in rows if r.get("status") == "ok"]
    if args.plot and ok:
        plot(rows, args.plot)
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed and not ok:
        raise ModelError(failed[0]["error"])
    if failed:
        print(f"edgecv: {len(failed)} of {len(rows)} configuration(s) could not be measured (see the table)",
              file=sys.stderr)
        return 1
    return 0


# -- edgecv benchmark pipeline --------------------------------------------------------------------

def _video_path(text: str) -> str:
    if text.startswith("video:"):
        from edgecv.data import resource_path
        return str(resource_path("videos", "videos/" + text[len("video:"):]))
    if not Path(text).is_file():
        raise ConfigError(f"--video {text}: no such file (a video file or video:NAME)")
    return text


def cmd_pipeline(args: argparse.Namespace) -> int:
    """The runtime's end-to-end benchmark (decode only, the books' loop, our pipeline) per video."""
    from edgecv.runtime.bench_pipeline import bench_pipeline, format_table

    rest = args.models[1:]
    if len(rest) != 1:
        raise ConfigError("usage: edgecv benchmark pipeline MODEL.tflite --video V [--video V2] [--keras K] "
                          "[--onnx O] [--max-frames N]")
    others = [f for f, v in (("--export-all", args.export_all), ("--out", args.out), ("--csv", args.csv),
                             ("--plot", args.plot), ("--backend", args.backend), ("--data", args.data))
              if v]
    if others:
        raise ConfigError(f"{', '.join(others)}: not options of 'edgecv benchmark pipeline' "
                          "(it takes --video, --keras, --onnx, --max-frames, --keras-max-frames, --loop, --json, --md)")
    if not args.video:
        raise ConfigError("edgecv benchmark pipeline needs --video V (a video file or video:NAME)")
    model = Path(rest[0])
    if model.suffix != ".tflite" or not model.is_file():
        raise ModelError(f"{model}: the pipeline benchmark takes an existing .tflite classifier")
    for extra, suffix in ((args.keras, ".keras"), (args.onnx, ".onnx")):
        if extra and (Path(extra).suffix != suffix or not Path(extra).is_file()):
            raise ModelError(f"{extra}: expected an existing {suffix} file")
    max_frames = parse_int(args.max_frames, "max-frames")
    keras_max = parse_int(args.keras_max_frames, "keras-max-frames")
    loop = parse_int(args.loop, "loop") or 1
    videos = [_video_path(v) for v in args.video]
    results, tables = [], []
    for v in videos:
        try:
            r = bench_pipeline(v, model, args.keras, args.onnx, max_frames, keras_max, loop=loop)
        except RuntimeError as e:  # a mode's process failed: its stderr tail is in the message
            raise ModelError(f"pipeline benchmark on {v} failed: {str(e).strip().splitlines()[-1]}") from None
        results.append(r)
        tables.append(format_table(r))
        print(tables[-1], "\n", flush=True)
    from .bench_report import write_text
    if args.json:
        write_text(args.json, json.dumps(results, indent=2) + "\n")
    if args.md:
        write_text(args.md, "\n\n".join(tables) + "\n")
    return 0


__all__ = ["add_parser", "cmd_benchmark", "run_benchmark", "discover", "parse_batches"]
