"""`edgecv run`: any model on any sources, with detector, batching, sinks and metrics.

SIGINT/SIGTERM drain the pipeline (files finalised, threads joined) and exit 0; a second signal
stops without draining the source queues, and if the run is still going 10 s later (a sink blocked
on a reader that stopped reading) the process exits 130, its outputs unwritten, earlier files kept.
"""
from __future__ import annotations

import argparse
import logging
import signal
from typing import Any, Sequence

from edgecv.errors import ConfigError

log = logging.getLogger("edgecv.run")
DETECT_MIN_WIDTH = 64  # narrower, a 30 px face would fill half the frame

EXAMPLES = """examples:
  edgecv run --model smile.tflite --source 0
  edgecv run --model smile.onnx --source video:smile.mp4 --no-display --save out/smile.mp4 --json-out out/e.jsonl
  edgecv run --model smile.onnx --source rtsp://cam1/stream --source rtsp://cam2/stream --batch 32 --max-delay-ms 10
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="run a model on video, cameras, streams or images",
                       description=__doc__.split("\n")[0], epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model file: .tflite, .onnx or .keras (with its ModelSpec)")
    add_run_options(p, detector_default="haar")
    p.set_defaults(func=run_command)
    return p


def add_run_options(p: argparse.ArgumentParser, detector_default: str = "haar") -> None:
    """The options `edgecv run` shares with the apps built on the pipeline (`edgecv smile`)."""
    from edgecv.safeio import finite_float, int_at_least, int_at_most

    from .backends import BACKENDS, DEVICES
    from .sources import POLICIES

    p.add_argument("--source", action="append", default=[], metavar="S",
                   help="camera index, video file, video:NAME, rtsp/http URL, image file/folder/glob, "
                        "synthetic://WxH; repeat for several")
    p.add_argument("--sources-file", metavar="F", help="a file listing sources, one per line (# comments); a "
                   "line may end with policy=latest|every and max_fps=N for that stream")
    p.add_argument("--detector", default=detector_default, choices=["haar", "yunet", "yunet-opencv", "yunet-ort", "none"],
                   help=f"face detector whose boxes are classified; none classifies whole frames. yunet: YuNet on "
                        f"ONNX Runtime (yunet-ort), one frame a call on the CPU and 32 with the CUDA provider; "
                        f"yunet-opencv: YuNet through OpenCV's FaceDetectorYN (docs/detection.md) "
                        f"(default {detector_default})")
    p.add_argument("--detect-batch", type=int_at_most(1024, "(frames)"), metavar="N",
                   help="frames per YuNet call: a detect worker hands it up to N frames already waiting "
                        "(default: 1 on the CPU, where batching does not pay; 32 with the CUDA provider)")
    p.add_argument("--detect-width", type=int_at_least(DETECT_MIN_WIDTH, "(the detectors' smallest face is 30 px)"),
                   default=None, metavar="PX",
                   help="detect on frames downscaled to this width (default 300 for haar, 320 for yunet)")
    p.add_argument("--detect-workers", type=int_at_most(256, "(threads)"), metavar="N",
                   help="detector threads (default: one per usable CPU, up to 8, with a detector; 1 without)")
    p.add_argument("--detect-every", type=int, default=1, metavar="K",
                   help="detect on every K-th frame of a source and predict its boxes in between (default 1)")
    p.add_argument("--backend", choices=BACKENDS, help="default: from the model file's suffix")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="onnxruntime execution provider (default cpu)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="capture and replay CUDA graphs (onnxruntime on --device cuda; a warning elsewhere)")
    p.add_argument("--threads", type=int_at_most(1024, "(threads)"), metavar="N",
                   help="inference threads (default: 1 with a detector; the usable CPUs, up to 8, without)")
    p.add_argument("--batch", type=int, default=32, metavar="N", help="largest inference batch (default 32)")
    p.add_argument("--max-delay-ms", type=finite_float(0, 60_000), default=5.0, metavar="MS",
                   help="longest a crop waits for its batch to fill (default 5)")
    p.add_argument("--decode", choices=("cpu", "nvdec", "auto"), default="cpu",
                   help="video files decoded by OpenCV/FFmpeg on the CPU, or by NVDEC on an NVIDIA GPU "
                        "(PyNvVideoCodec, edgecv[gpu]); nvdec where it cannot run decodes on the CPU with a "
                        "warning; auto: nvdec where it runs (default cpu)")
    p.add_argument("--policy", choices=POLICIES,
                   help="latest drops stale frames, every loses none (default: latest for live, every for files)")
    p.add_argument("--max-fps", type=finite_float(0, above=True), metavar="N",
                   help="process at most N frames a second per source (live: skip; files: pace)")
    p.add_argument("--no-display", action="store_true", help="never open a window")
    p.add_argument("--save", metavar="OUT", help="annotated video: .avi (MJPG) or .mp4 (H.264 when ffmpeg with "
                   "libx264 is on the PATH, else mp4v with a warning)")
    p.add_argument("--json-out", metavar="FILE", help="JSON lines, one event per frame")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--metrics-interval", type=finite_float(0), default=5.0, metavar="S",
                   help="print metrics every S seconds to stderr (0: never; default 5)")
    p.add_argument("--summary-out", metavar="FILE", help="also write the final JSON summary to FILE")
    p.add_argument("--max-frame-pixels", type=int_at_least(1), metavar="N",
                   help="refuse decoded frames larger than N pixels (default 40,000,000)")
    from .fleet import add_fleet_options

    add_fleet_options(p)  # --ray, --address, --ray-actors, --max-restarts (runtime.fleet)
    live = p.add_argument_group("live view and events (the [live] extra)")
    live.add_argument("--serve", metavar="HOST:PORT",
                      help="serve an MJPEG per stream, a page with live stats and Prometheus /metrics; "
                           "PORT alone binds 127.0.0.1 (0: any free port, printed)")
    live.add_argument("--serve-token", metavar="T",
                      help="require ?token=T or 'Authorization: Bearer T' on every request "
                           "(default: $EDGECV_SERVE_TOKEN; advised when binding beyond 127.0.0.1)")
    live.add_argument("--serve-fps", type=finite_float(0, 60, above=True), default=10.0, metavar="N",
                      help="most MJPEG frames a second per stream (default 10)")
    live.add_argument("--serve-quality", type=int_at_least(1), default=80, metavar="Q",
                      help="JPEG quality 1-100 of the MJPEG (default 80)")
    live.add_argument("--serve-width", type=int_at_least(64), default=960, metavar="PX",
                      help="MJPEG frames wider than this are scaled down (default 960)")
    live.add_argument("--mqtt", metavar="HOST[:PORT]",
                      help="publish events and stats to this MQTT broker (QoS 1; port 1883 by default)")
    live.add_argument("--mqtt-topic", default="edgecv", metavar="PREFIX",
                      help="topic prefix: PREFIX/events/EVENT, PREFIX/stats, PREFIX/status (default edgecv)")
    live.add_argument("--mqtt-interval", type=finite_float(0, above=True), default=10.0, metavar="S",
                      help="seconds between stats messages (default 10)")


def read_sources_file(path: str) -> list[tuple[str, dict[str, Any]]]:
    """Sources, one per line (blank lines and # comments skipped). A line may end with per-stream
    options, `policy=latest|every` and `max_fps=N`, overriding --policy / --max-fps for that stream:
        rtsp://10.0.0.7/stream1   policy=latest max_fps=10
        /data/recording.mp4       policy=every
    """
    from .sources import POLICIES

    from edgecv.safeio import read_text_limited

    lines = read_text_limited(path, "--sources-file").splitlines()  # bounded: /dev/zero is refused
    out = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        opts: dict[str, Any] = {}
        parts = text.split()
        while len(parts) > 1 and "=" in parts[-1] and parts[-1].split("=", 1)[0] in ("policy", "max_fps"):
            key, value = parts.pop().split("=", 1)
            where = f"--sources-file {path}, line {number}"
            if key == "policy":
                if value not in POLICIES:
                    raise ConfigError(f"{where}: policy must be one of {', '.join(POLICIES)}; got {value!r}")
                opts["policy"] = value
            else:
                try:
                    opts["max_fps"] = float(value)
                except ValueError:
                    opts["max_fps"] = -1.0
                if not opts["max_fps"] > 0:
                    raise ConfigError(f"{where}: max_fps must be a positive number; got {value!r}")
        # The source is the text before the options, spaces inside a path kept.
        source = text if not opts else text[:text.rindex(parts[-1]) + len(parts[-1])]
        out.append((source, opts))
    return out


def _positive(name: str, value: Any) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{name} must be a positive integer; got {value}")


def run_command(args: argparse.Namespace) -> int:
    from edgecv.resolve import resolve

    return run_model(args, resolve(args.model, args.backend), args.detector)


def run_model(args: argparse.Namespace, ref, detector: str, detector_options: dict[str, Any] | None = None,
              hooks: Sequence[Any] = ()) -> int:
    """Run a resolved model (edgecv.resolve.ModelRef) with the run options on `args` and print the
    summary: the body of `edgecv run` and of the apps built on the pipeline (`edgecv smile`).
    hooks: callables run on each FrameResult before the sinks, after the track ids (Pipeline.hooks).
    Returns the exit code."""
    from .build import open_pipeline
    from .live import LiveOutputs
    from .machine import choose_defaults, choose_detector, usable_cpus
    from .outputs import commit_only_if
    from .pipeline import Pipeline, PipelineOptions

    entries = _checked_entries(args, ref)
    sources = [src for src, _ in entries]
    # Defaults from the CPUs this process may use (runtime.machine); an explicit flag wins.
    chosen = choose_defaults(usable_cpus(), len(sources), detector != "none", args.detect_workers, args.threads)
    options = PipelineOptions(max_batch=args.batch, max_delay_ms=args.max_delay_ms,
                              detect_workers=chosen.detect_workers, detect_every=args.detect_every,
                              max_frames=args.max_frames, metrics_interval=args.metrics_interval)
    det_opts = dict(detector_options or {})
    if args.detect_width and detector != "none":
        det_opts["width"] = args.detect_width
    if getattr(args, "ray", False):  # the sources sharded over Ray actors (runtime.fleet)
        from .fleet import run_fleet

        return run_fleet(args, ref, detector, entries, det_opts, options)
    det_choice = None
    if detector != "none":  # the engine for this machine (runtime.machine): batched YuNet where it pays
        det_choice = choose_detector(detector, chosen.cpus, chosen.detect_workers, getattr(args, "detect_batch", None))
        detector = det_choice.name
        det_opts = {**det_choice.options, **det_opts}
    elif getattr(args, "detect_batch", None) is not None:
        raise ConfigError("--detect-batch needs a detector that batches (yunet or yunet-ort); the detector is none")

    holder: dict[str, Pipeline] = {}
    sinks = _file_and_window_sinks(args, len(sources), on_quit=lambda: holder["p"].stop())
    try:
        # Track ids whenever boxes come from a detector; --serve / --mqtt bind and connect here, so a
        # port in use or a bad host is one line before the model loads.
        live = LiveOutputs(args, track_ids=detector != "none", hooks=hooks)
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    sinks += live.sinks
    try:
        pipeline = open_pipeline(ref, sources, detector=detector, detector_options=det_opts, backend=args.backend,
                                 device=args.device, threads=chosen.threads, cuda_graph=args.cuda_graph,
                                 policy=args.policy, max_fps=args.max_fps, decode=getattr(args, "decode", "cpu"),
                                 source_options=[opts for _, opts in entries], sinks=sinks, options=options)
    except BaseException:
        for sink in sinks:
            sink.close()
        live.close()
        raise
    holder["p"] = pipeline
    live.attach(pipeline)
    commit_only_if(sinks, lambda: pipeline.error is None)  # a failed run leaves the earlier outputs
    signals = _run_draining_on_signals(pipeline, live)
    summary = pipeline.summary()
    summary["defaults"] = chosen.to_dict()
    if det_choice is not None:
        summary["detector"] = det_choice.to_dict()
    summary.update(live.summary())
    return _report(args, pipeline, summary, sinks, interrupted=signals > 0)


def _checked_entries(args: argparse.Namespace, ref) -> list[tuple[str, dict[str, Any]]]:
    """The sources (with their per-source options) once every option has been checked, before
    anything is opened or written."""
    from .outputs import check_outputs
    from .sources import set_max_frame_pixels

    entries = [(src, {}) for src in args.source]
    if args.sources_file:
        entries += read_sources_file(args.sources_file)
    sources = [src for src, _ in entries]
    if not sources:
        raise ConfigError("no source given: use --source S (repeatable) or --sources-file F")
    check_outputs(args, sources, model=getattr(ref, "path", None))
    set_max_frame_pixels(getattr(args, "max_frame_pixels", None))
    for name in ("batch", "threads", "max_frames", "detect_workers", "detect_width", "detect_every", "detect_batch"):
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    if args.max_delay_ms < 0:
        raise ConfigError(f"--max-delay-ms must be >= 0; got {args.max_delay_ms}")
    if args.max_fps is not None and args.max_fps <= 0:
        raise ConfigError(f"--max-fps must be positive; got {args.max_fps}")
    if getattr(args, "ray", False) and getattr(args, "detect_batch", None) is not None:
        raise ConfigError("--detect-batch is not available with --ray (each actor detects one frame a call)")
    if getattr(args, "ray", False) and getattr(args, "decode", "cpu") != "cpu":
        raise ConfigError("--decode nvdec/auto is not available with --ray (actors decode on the CPU)")
    if not getattr(args, "ray", False) and getattr(args, "address", None):
        raise ConfigError("--address names a Ray cluster for --ray; add --ray")
    return entries


def _file_and_window_sinks(args: argparse.Namespace, n_sources: int, on_quit) -> list:
    """The window (where a display exists), --save and --json-out."""
    from .sinks import JsonLinesSink, WindowSink, display_available

    sinks: list = []
    if not args.no_display:
        if display_available():
            sinks.append(WindowSink(on_quit=on_quit))
        else:
            log.info("no display found (DISPLAY/WAYLAND_DISPLAY unset): not showing a window "
                     "(--no-display silences this)")
    if args.save:
        from .h264 import video_sink  # .mp4 as H.264 where ffmpeg has libx264 (browsers play it)

        sinks.append(video_sink(args.save, per_source=n_sources > 1))
    if args.json_out:
        sinks.append(JsonLinesSink(args.json_out))
    return sinks


def _run_draining_on_signals(pipeline, live) -> int:
    """Start the pipeline and wait for it; the first SIGINT/SIGTERM drains it, a second drops what
    the sources queued and arms the exit timer. Returns how many signals came."""
    from .outputs import exit_if_still_running

    signals = {"n": 0}

    def on_signal(signum, _frame) -> None:
        signals["n"] += 1
        name = signal.Signals(signum).name
        if signals["n"] == 1:
            log.info("%s: draining (send it again to stop without draining the queues)", name)
            pipeline.stop()
        else:
            for src in pipeline.sources:
                while src.get() is not None:  # drop what is queued; frames in flight still finish
                    pass
            exit_if_still_running()  # a sink or read that is stuck cannot keep the process alive

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        pipeline.start()
        pipeline.wait()
    finally:
        live.close()
        for s, h in old.items():
            signal.signal(s, h)
    return signals["n"]


def _report(args: argparse.Namespace, pipeline, summary: dict[str, Any], sinks: list, interrupted: bool) -> int:
    """The videos written go into the summary; then print it and choose the exit code (outputs.report_run)."""
    from .outputs import report_run
    from .pipeline import PipelineState
    from .sinks import VideoSink

    video = next((s for s in sinks if isinstance(s, VideoSink)), None)
    if video is not None:
        summary["outputs"] = {sid: {"path": str(path), "frames": video.frames[sid]} for sid, path in video.paths.items()}
    error = pipeline.error if pipeline.state is PipelineState.FAILED else None
    return report_run(args, summary, error, interrupted)
