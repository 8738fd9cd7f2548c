"""The `edgecv benchmark` parsers: one subparser per subcommand, options parsed into values by
argparse (`type=`), each command a small function that calls models / pipeline / streams."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from edgecv.errors import ConfigError, ModelError, unknown

BACKENDS = ("litert", "onnxruntime", "openvino", "keras")
DEVICES = ("cpu", "cuda", "tensorrt")
SPLITS = ("train", "val", "test", "all")
PLOT_SUFFIXES = (".png", ".svg", ".pdf")

DESCRIPTION = "measure models on this box: latency, throughput, memory, accuracy; the video pipeline; many streams"
EXAMPLES = """examples:
  edgecv benchmark models out/lenet/ --batch 1,8,32 --duration 3 --data mnist --md out/bench.md
  edgecv benchmark models smile --backend litert,onnxruntime --device cpu,cuda --json out/smile-bench.json
  edgecv benchmark models smile --batch 1,32 --plot out/smile.png   # accuracy vs latency, LiteRT/ORT/OpenVINO
  edgecv benchmark models runs/mnist-lenet --export-all --out out/lenet/ --batch 1,32
  edgecv benchmark pipeline edgecv/zoo/smile.fp16.tflite --video video:smile.mp4 --loop 6
  edgecv benchmark streams smile.onnx --video video:vtest_pets2009_480x360_h264.avi --streams 1,4,16,64

`models` is a required word: `edgecv benchmark FILE...` (edgecv 0.1) is `edgecv benchmark models FILE...`.
"""


# -- option types: text -> value, or argparse's one usage error --------------------------------------

def positive_int(minimum: int = 1) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text.strip())
        except ValueError:
            v = None
        if v is None or v < minimum:
            raise argparse.ArgumentTypeError(f"takes an integer >= {minimum}; got {text!r}")
        return v
    return parse


def int_list(text: str) -> list[int]:
    """'32, 1,8,8' -> [1, 8, 32]."""
    out = set()
    for t in text.split(","):
        try:
            v = int(t.strip())
        except ValueError:
            v = 0
        if v < 1:
            raise argparse.ArgumentTypeError(f"takes positive integers separated by commas, e.g. 1,8,32; got "
                                             f"{t.strip()!r} in {text!r}")
        out.add(v)
    return sorted(out)


def name_list(what: str, allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
        if not names:
            raise argparse.ArgumentTypeError(f"needs at least one of: {', '.join(allowed)}")
        for n in names:
            if n not in allowed:
                raise argparse.ArgumentTypeError(unknown(what, n, allowed))
        return names
    return parse


def seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 < v <= 3600:
        raise argparse.ArgumentTypeError(f"takes seconds, more than 0 and at most 3600; got {text!r}")
    return v


def video_path(text: str) -> str:
    """A video file, or video:NAME from the data registry (fetched if needed)."""
    if text.startswith("video:"):
        from edgecv.data import resource_path
        return str(resource_path("videos", "videos/" + text[len("video:"):]))
    if not Path(text).is_file():
        raise ConfigError(f"--video {text}: no such file (a video file or video:NAME)")
    return text


def tflite_model(text: str) -> str:
    """The pipeline benchmark's classifier: a .tflite file, or a shipped name's .tflite artefact."""
    from edgecv.resolve import model_path

    path = model_path(text, "litert")
    if path.suffix != ".tflite":
        raise ModelError(f"{path}: the pipeline benchmark takes a .tflite classifier (its book loop calls a "
                         "LiteRT interpreter per face)")
    return str(path)


# -- the parsers ----------------------------------------------------------------------------------

def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("benchmark", help="measure models, the video pipeline, many streams",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="kind", metavar="{models,pipeline,streams}", required=True)
    _add_models(kinds)
    _add_pipeline(kinds)
    _add_streams(kinds)
    return p


def _outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="OUT", help="write the results as JSON")
    p.add_argument("--md", metavar="OUT", help="write the table as Markdown")


def _add_models(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser("models", help="artefact x backend x device x batch: latency, memory, accuracy",
                         description="Each configuration in a fresh process: --warmup calls, then about\n"
                         "2 x --duration seconds (the timed loop and, alternating with it, the bare engine loop).\n"
                         "Use `nice` on a shared box.", epilog=EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="MODEL_OR_DIR",
                   help="model files (.tflite, .onnx, .keras), folders of them, or shipped model names")
    p.add_argument("--backend", metavar="LIST", type=name_list("backend", BACKENDS),
                   help="comma list of litert,onnxruntime,openvino,keras (default: every backend that runs each "
                        "file: .tflite litert; .onnx onnxruntime, and openvino when the [openvino] extra is installed)")
    p.add_argument("--device", metavar="LIST", type=name_list("device", DEVICES), default=["cpu"],
                   help="comma list of cpu,cuda,tensorrt (default cpu); an unavailable one is measured on the "
                        "fallback, with a warning, and its rows say so")
    p.add_argument("--batch", metavar="LIST", type=int_list, default=[1, 8, 32],
                   help="comma list of batch sizes (default 1,8,32)")
    p.add_argument("--threads", metavar="N", type=positive_int(),
                   help="inference threads (default: one per usable CPU for LiteRT, the library's own for ONNX "
                        "Runtime and OpenVINO; every row says what it ran with)")
    p.add_argument("--data", metavar="D", help="data set for accuracy: registry name or path; 'none' skips "
                   "accuracy (default: the data set named in each model's ModelSpec)")
    p.add_argument("--split", default="test", choices=SPLITS, help="split of --data to score (default test)")
    p.add_argument("--data-limit", metavar="N", type=positive_int(),
                   help="score N images of the split, evenly spaced (captchas: the first N)")
    p.add_argument("--duration", metavar="S", type=seconds, default=2.0, help="timed seconds per configuration (default 2)")
    p.add_argument("--warmup", metavar="N", type=positive_int(0), default=10, help="untimed calls before timing (default 10)")
    _outputs(p)
    p.add_argument("--csv", metavar="OUT", help="write the rows as CSV")
    p.add_argument("--plot", metavar="OUT.png", help="accuracy against latency per image, one point per artefact and "
                   "backend (size and threads in its label), with latency vs batch and throughput panels; .png, .svg "
                   "or .pdf (needs matplotlib)")
    p.add_argument("--plot-batch", metavar="N", type=positive_int(),
                   help="the batch size of the accuracy-vs-latency points (default: the largest --batch)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    g = p.add_argument_group("export, then benchmark (needs the [export] extra)")
    g.add_argument("--export-all", action="store_true",
                   help="MODEL is a .keras file or run directory: export every format x precision, then "
                        "benchmark each artefact that passed its accuracy gate")
    g.add_argument("--out", metavar="DIR", help="keep the exported artefacts here (default: a temporary folder, "
                   "removed afterwards)")
    p.set_defaults(func=cmd_models)


def _add_pipeline(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser("pipeline", help="the video pipeline vs the books' sequential loop",
                         description="decode only vs the books' sequential loop (LiteRT or Keras per face) vs\n"
                         "edgecv's pipeline, each mode in its own process.", epilog=EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help=".tflite classifier, or a shipped model name")
    p.add_argument("--video", action="append", required=True, metavar="V",
                   help="video file or video:NAME; repeat for several")
    p.add_argument("--keras", metavar="K", help=".keras model for the books' Keras-predict loop")
    p.add_argument("--onnx", metavar="O", help=".onnx model for the ONNX Runtime crop-throughput row")
    p.add_argument("--max-frames", metavar="N", type=positive_int(), help="frames per mode (default: the whole video)")
    p.add_argument("--keras-max-frames", metavar="N", type=positive_int(), help="frames for the slow Keras loop")
    p.add_argument("--loop", metavar="N", type=positive_int(), default=1,
                   help="play each video N times in a row, so a short clip gives steady numbers (ffmpeg copies "
                        "the stream, nothing is re-encoded; default 1)")
    _outputs(p)
    p.set_defaults(func=cmd_pipeline)


def _add_streams(kinds: argparse._SubParsersAction) -> None:
    from .streams import DEFAULT_STREAMS

    p = kinds.add_parser("streams", help="many streams into one batcher: decode vs batched vs batch 1",
                         description="N copies of one video into one pipeline and one batcher, whole frames "
                         "classified (no detector).", epilog=EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help=".onnx or .tflite classifier, or a shipped model name")
    p.add_argument("--video", required=True, metavar="V", help="video file or video:NAME (every stream plays it)")
    p.add_argument("--streams", metavar="LIST", type=int_list, default=list(DEFAULT_STREAMS),
                   help="comma list of concurrent stream counts (default 1,4,16,64)")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="default cpu")
    p.add_argument("--batch", metavar="N", type=positive_int(), default=64, help="largest batch (default 64)")
    p.add_argument("--max-frames", metavar="N", type=positive_int(), default=100, help="frames per stream (default 100)")
    p.add_argument("--cuda-graph", action="store_true", help="capture CUDA graphs (onnxruntime, cuda)")
    _outputs(p)
    p.set_defaults(func=cmd_streams)


# -- the commands ---------------------------------------------------------------------------------

def cmd_models(args: argparse.Namespace) -> int:
    from .models import export_variants, resolve_all, run_benchmark

    if args.out and not args.export_all:
        raise ConfigError("--out is for --export-all (where the exported artefacts go); use --json/--csv/--md/--plot "
                          "for results")
    if args.export_all and len(args.models) != 1:
        raise ConfigError("--export-all takes exactly one MODEL (.keras file or run directory)")
    if args.plot_batch is not None and args.plot_batch not in args.batch:
        raise ConfigError(f"--plot-batch {args.plot_batch}: not one of the measured --batch sizes "
                          f"({','.join(map(str, args.batch))})")
    if args.plot:
        from .report import check_plot_available
        if Path(args.plot).suffix.lower() not in PLOT_SUFFIXES:
            raise ConfigError(f"--plot {args.plot}: must end in {', '.join(PLOT_SUFFIXES)}")
        check_plot_available()
    with tempfile.TemporaryDirectory(prefix="edgecv-bench-") as tmp:
        work = Path(tmp)
        models = args.models
        if args.export_all:
            models = [str(p) for p in export_variants(args.models[0], Path(args.out) if args.out else work / "export",
                                                      quiet=args.quiet)]
        rows, env, settings = run_benchmark(resolve_all(models), args.backend, args.device, args.batch, args.threads,
                                            args.warmup, args.duration, args.data, args.split, args.data_limit, work,
                                            quiet=args.quiet)
        if args.export_all and not args.out:
            print("note: the exported artefacts were in a temporary folder, now removed; keep them with --out DIR",
                  file=sys.stderr)
    return report_models(rows, env, settings, args)


def report_models(rows: list[dict], env: dict, settings: dict, args: argparse.Namespace) -> int:
    from .env import summary_line
    from .report import notes_for, plot, rows_table, to_csv, to_json, to_markdown, write_text

    print(summary_line(env))
    print(rows_table(rows))
    warned = list(dict.fromkeys(w for r in rows for w in r.get("warnings") or []))
    for w in warned:
        print(f"warning: {w}", file=sys.stderr)
    for n in notes_for(rows):
        print(f"note: {n}", file=sys.stderr)
    if args.json:
        write_text(args.json, to_json(rows, env, settings))
    if args.csv:
        write_text(args.csv, to_csv(rows))
    if args.md:
        command = settings.get("command") or "edgecv benchmark models " + " ".join(args.models)
        write_text(args.md, to_markdown(rows, command, summary_line(env)))
    ok = [r for r in rows if r.get("status") == "ok"]
    if args.plot and ok:
        plot(rows, args.plot, batch=args.plot_batch)
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed and not ok:
        raise ModelError(failed[0]["error"])
    if failed:
        print(f"edgecv: {len(failed)} of {len(rows)} configuration(s) could not be measured (see the table)",
              file=sys.stderr)
        return 1
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from .pipeline import bench_pipeline, pipeline_table
    from .report import write_text

    model = tflite_model(args.model)
    for extra, suffix in ((args.keras, ".keras"), (args.onnx, ".onnx")):
        if extra and (Path(extra).suffix != suffix or not Path(extra).is_file()):
            raise ModelError(f"{extra}: expected an existing {suffix} file")
    videos = [video_path(v) for v in args.video]
    results, tables = [], []
    for v in videos:
        results.append(bench_pipeline(v, model, args.keras, args.onnx, args.max_frames, args.keras_max_frames,
                                      loop=args.loop))
        tables.append(pipeline_table(results[-1]))
        print(tables[-1], "\n", flush=True)
    if args.json:
        write_text(args.json, json.dumps(results, indent=2) + "\n")
    if args.md:
        write_text(args.md, "\n\n".join(tables) + "\n")
    return 0


def cmd_streams(args: argparse.Namespace) -> int:
    from .report import write_text
    from .streams import bench_streams, streams_table

    result = bench_streams(args.model, video_path(args.video), args.streams, frames=args.max_frames,
                           max_batch=args.batch, device=args.device, cuda_graph=args.cuda_graph)
    table = streams_table(result)
    print(table, flush=True)
    if args.json:
        write_text(args.json, json.dumps(result, indent=2) + "\n")
    if args.md:
        write_text(args.md, table + "\n")
    return 0
