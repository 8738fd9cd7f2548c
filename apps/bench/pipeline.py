"""`edgecv benchmark pipeline`: on one video, each mode in a fresh process (the harness), measure
  1. decode only (the ceiling),
  2. the books' sequential loop: read -> resize to width 300 -> gray -> Haar -> per face the model's
     own preprocessing (its ModelSpec: input size, colour, chain) and one classifier call, read by
     edgecv.decode; with a plain LiteRT interpreter, and with Keras `predict` when a .keras is given,
  3. edgecv's pipeline (runtime.Pipeline) in a few configurations,
plus batched vs unbatched classifier throughput on face crops, and each mode's peak RSS.

Each pipeline mode is also compared with the physical limit of this machine for its work: a short
single-threaded pass (its own process) measures what one frame's decode and one frame's detection
cost a core (CPU time of the measuring thread, FFmpeg and OpenCV held to one thread), and
limit = usable CPUs / (decode + detect / detect_every) frames/s; the row reports fps / limit.

Models and detectors are loaded before the clock starts in every mode. Keras is imported only by
the Keras loop's own process; every other mode is TensorFlow-free, and its peak RSS shows it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from edgecv import decode
from edgecv.errors import ConfigError
from edgecv.resolve import resolve
from edgecv.runtime.machine import usable_cpus
from edgecv.spec import ModelSpec

from .harness import run_child
from .report import render_table

BOOK_WIDTH = 300
# name -> detector, its options, and PipelineOptions fields (max_frames is the benchmark's own).
PIPELINES: dict[str, dict[str, Any]] = {
    "pipeline haar@300": {"detector": "haar", "detector_options": {"width": 300}},
    # FaceDetectorYN by name: `yunet` means YuNet on ONNX Runtime now; these rows keep the engine and
    # the one worker they always had, so they compare across versions.
    "pipeline yunet@320": {"detector": "yunet-opencv", "detector_options": {"width": 320}},
    "pipeline yunet@320 every 2nd": {"detector": "yunet-opencv", "detector_options": {"width": 320},
                                     "options": {"detect_every": 2}},
    "pipeline yunet@320 every 3rd": {"detector": "yunet-opencv", "detector_options": {"width": 320},
                                     "options": {"detect_every": 3}},
    # What `edgecv run --detector yunet` and `edgecv smile` choose on this machine (runtime.machine,
    # resolve_setup): detect workers, inference threads and YuNet's engine.
    "pipeline yunet@320, run defaults": {"detector": "yunet", "detector_options": {"width": 320},
                                         "machine_defaults": True},
}
DECODE, LITERT_LOOP, KERAS_LOOP = "decode only", "book loop, LiteRT per face", "book loop, Keras predict per face"
# Frames timed by the limit pass (after LIMIT_WARMUP untimed ones): the modes' own frames, up to
# LIMIT_FRAMES (decode and detect costs vary along a video; 300 frames cost a few seconds).
LIMIT_FRAMES, LIMIT_WARMUP = 300, 3


def detector_key(setup: Mapping[str, Any]) -> str | None:
    """'yunet@320' for a pipeline setup's detector and width (None: no detector)."""
    name = setup.get("detector", "none")
    if name == "none":
        return None
    width = setup.get("detector_options", {}).get("width")
    return f"{name}@{width}" if width else name


def _frames(video: str, max_frames: int | None) -> Iterator[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(video))
    n = 0
    try:
        while max_frames is None or n < max_frames:
            ok, frame = cap.read()
            if not ok:
                return
            n += 1
            yield frame
    finally:
        cap.release()


def _rate(n: int, dt: float, faces: int | None) -> dict[str, Any]:
    return {"frames": n, "seconds": round(dt, 3), "fps": round(n / dt, 2), "faces": faces,
            "faces_per_frame": None if faces is None else round(faces / max(n, 1), 3)}


def decode_only(video: str, max_frames: int | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    n = sum(1 for _ in _frames(video, max_frames))
    return _rate(n, time.perf_counter() - t0, None)


def book_loop(video: str, spec: ModelSpec, classify: Callable[[np.ndarray], np.ndarray],
              max_frames: int | None = None, width: int = BOOK_WIDTH) -> dict[str, Any]:
    """The books' smile loop, as written there: everything in sequence, one classifier call per
    face. Each face is fed as the model was trained: the ModelSpec's chain to its input size
    (the book hard-codes its own 28x28 model's), and its output read by edgecv.decode."""
    import cv2

    from edgecv.preprocess import apply_chain
    from edgecv.runtime.detect import HaarFaceDetector

    cascade = HaarFaceDetector(width=None)  # the loop resizes the frame itself, as the book does
    gray_model = spec.input_shape[2] == 1
    labels: Counter[str] = Counter()
    n = faces = 0
    t0 = time.perf_counter()
    for frame in _frames(video, max_frames):
        h, w = frame.shape[:2]  # imutils.resize(frame, width=300): INTER_AREA, as in the book
        small = cv2.resize(frame, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        for box in cascade.detect(gray):
            x = apply_chain([box.crop(gray if gray_model else small)], spec.preprocess, spec.input_shape)
            labels[decode.predictions(spec, classify(x), 1)[0].label] += 1
            faces += 1
        n += 1
    return dict(_rate(n, time.perf_counter() - t0, faces), labels=dict(labels))


def litert_per_face(path: str | os.PathLike) -> Callable[[np.ndarray], np.ndarray]:
    """A plain LiteRT interpreter called once per face (the straightforward port of the book's loop)."""
    from edgecv.runtime.backends import _litert_factory, dequantize, quantize

    it = _litert_factory()(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    dtype = np.dtype(inp["dtype"])

    def classify(x: np.ndarray) -> np.ndarray:
        if dtype != np.float32:
            x = quantize(x, inp["quantization"], dtype)
        it.set_tensor(inp["index"], x)
        it.invoke()
        y = it.get_tensor(out["index"])
        return y if out["dtype"] == np.float32 else dequantize(y, out["quantization"])

    return classify


def keras_per_face(path: str | os.PathLike) -> Callable[[np.ndarray], np.ndarray]:
    import keras  # only here: the rest of the benchmark never loads Keras

    m = keras.saving.load_model(str(path), compile=False)
    return lambda x: m.predict(x, verbose=0)


def resolve_setup(setup: Mapping[str, Any]) -> dict[str, Any]:
    """A pipeline setup as it will run. With "machine_defaults": what `edgecv run` and `edgecv smile`
    choose on this machine (runtime.machine.choose_defaults: detect workers and inference threads;
    choose_detector: the detector's engine and its options), resolved once so that the run and its
    limit use the same detector. Without: the setup as given."""
    if not setup.get("machine_defaults"):
        return dict(setup)
    from edgecv.runtime.machine import choose_defaults, choose_detector

    name = setup.get("detector", "none")
    chosen = choose_defaults(usable_cpus(), 1, name != "none")
    out = {"detector": name, "detector_options": dict(setup.get("detector_options", {})),
           "options": {**setup.get("options", {}), "detect_workers": chosen.detect_workers},
           "threads": chosen.threads}
    if name != "none":
        det = choose_detector(name, chosen.cpus, chosen.detect_workers)
        out["detector"], out["detector_options"] = det.name, {**det.options, **out["detector_options"]}
    return out


def run_pipeline(video: str, model: str, setup: Mapping[str, Any], max_frames: int | None = None) -> dict[str, Any]:
    """The pipeline on the video, timed like the book loops: from opening the video to the last
    result, with the classifier and the detectors loaded beforehand (the loops get theirs loaded too)."""
    from edgecv.runtime.backends import open_backend
    from edgecv.runtime.build import build_sources
    from edgecv.runtime.detect import make_detector
    from edgecv.runtime.pipeline import Pipeline, PipelineOptions

    ref = resolve(model)
    setup = resolve_setup(setup)
    name, det_options = setup.get("detector", "none"), setup.get("detector_options", {})
    fields, threads = {**setup.get("options", {}), "max_frames": max_frames}, setup.get("threads")
    options = PipelineOptions(**fields)
    factory = None
    if name != "none":
        # One detector per worker (they are not thread-safe) and one for the check at start,
        # each built before the clock starts.
        built = [make_detector(name, **det_options) for _ in range(options.detect_workers + 1)]

        def factory():
            return built.pop() if built else make_detector(name, **det_options)
    backend = open_backend(ref.path, ref.spec, threads=threads)
    try:
        t0 = time.perf_counter()
        summary = Pipeline(backend, build_sources([video]), factory, (), options).run()
        dt = time.perf_counter() - t0
    finally:
        backend.close()
    return dict(_rate(summary["frames"], dt, summary["sources"]["s0"]["faces"]), detector=name,
                detector_options=det_options, detect_workers=options.detect_workers, threads=threads, mean_batch=summary["batches"]["mean_size"],
                stages_ms_p50={k: v["p50"] for k, v in summary["stages_ms"].items()})


def crop_throughput(video: str, model: str, n_crops: int = 256, batch: int = 32,
                    max_frames: int = 60) -> dict[str, Any]:
    """Images/s for the classifier on real face crops (YuNet faces from the video, else centre crops),
    one call per crop vs batches of `batch`."""
    from edgecv.preprocess import apply_chain
    from edgecv.runtime.backends import open_backend
    from edgecv.runtime.detect import YuNetFaceDetector

    det = YuNetFaceDetector()
    crops = []
    for frame in _frames(video, max_frames):
        h, w = frame.shape[:2]
        crops += [b.crop(frame) for b in det.detect(frame)] or [frame[h // 4:3 * h // 4, w // 4:3 * w // 4]]
    crops = (crops * (n_crops // max(len(crops), 1) + 1))[:n_crops]
    ref = resolve(model)
    with open_backend(ref.path, ref.spec, threads=1) as b:
        x = apply_chain(crops, ref.spec.preprocess, ref.spec.input_shape)
        b.run(x[:batch])  # warm up every path once
        b.run(x[:1])
        t0 = time.perf_counter()
        for i in range(len(x)):
            b.run(x[i:i + 1])
        t1 = time.perf_counter()
        for i in range(0, len(x), batch):
            b.run(x[i:i + batch])
        t2 = time.perf_counter()
        name = b.name
    return {"backend": name, "crops": len(x), "batch": batch, "unbatched_ips": round(len(x) / (t1 - t0), 1),
            "batched_ips": round(len(x) / (t2 - t1), 1), "speedup": round((t1 - t0) / (t2 - t1), 2)}


def frame_costs(video: str, detectors: Mapping[str, Mapping[str, Any]], frames: int = LIMIT_FRAMES,
                warmup: int = LIMIT_WARMUP) -> dict[str, Any]:
    """What one frame costs one core: decode (FFmpeg held to one thread) and each detector (OpenCV
    held to one thread) on the same frames, as the mean CPU time of this thread per frame (a busy
    neighbour stretches wall time, not this), with the wall-clock means beside them.
    detectors: key -> {"detector": name, "detector_options": {...}}."""
    import cv2

    from edgecv.runtime.detect import make_detector

    cv2.setNumThreads(1)
    built = {k: make_detector(d["detector"], **d.get("detector_options", {})) for k, d in detectors.items()}
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    if not cap.isOpened():
        raise ConfigError(f"{video}: cannot be opened for the limit pass")
    cpu, wall = time.thread_time_ns, time.perf_counter_ns
    dec_cpu = dec_wall = 0
    det_cpu, det_wall = dict.fromkeys(built, 0), dict.fromkeys(built, 0)
    n = 0
    try:
        for i in range(warmup + frames):
            c0, w0 = cpu(), wall()
            ok, frame = cap.read()
            c1, w1 = cpu(), wall()
            if not ok:
                break
            timed = i >= warmup
            if timed:
                dec_cpu, dec_wall, n = dec_cpu + c1 - c0, dec_wall + w1 - w0, n + 1
            for k, det in built.items():
                c0, w0 = cpu(), wall()
                det.detect(frame)
                c1, w1 = cpu(), wall()
                if timed:
                    det_cpu[k] += c1 - c0
                    det_wall[k] += w1 - w0
    finally:
        cap.release()
    if n == 0:
        raise ConfigError(f"{video}: fewer than {warmup + 1} frames; too short for the limit pass")
    return {"frames": n, "decode_ms": round(dec_cpu / n / 1e6, 4), "decode_wall_ms": round(dec_wall / n / 1e6, 4),
            "detect_ms": {k: round(v / n / 1e6, 4) for k, v in det_cpu.items()},
            "detect_wall_ms": {k: round(v / n / 1e6, 4) for k, v in det_wall.items()}}


def limit_fps(costs: Mapping[str, Any], setup: Mapping[str, Any], cores: int) -> float:
    """Frames/s this machine could reach for a pipeline setup if every core did nothing but decode
    and detect: cores / (decode + detect / detect_every) per frame. Classification, resizing and
    Python per-frame work are left out: the limit is the floor of what a frame must cost."""
    key = detector_key(setup)
    every = int(setup.get("options", {}).get("detect_every", 1))
    per_frame = costs["decode_ms"] + (costs["detect_ms"][key] / every if key else 0.0)
    return cores * 1000.0 / per_frame


def run_mode(mode: str, video: str, model: str, setup: Mapping[str, Any] | None = None,
             max_frames: int | None = None) -> dict[str, Any]:
    """One measurement by name (a harness job): decode | book-litert | book-keras | pipeline | crops |
    costs (setup: {"detectors": {key: detector setup}})."""
    if mode == "decode":
        return decode_only(video, max_frames)
    if mode == "costs":
        return frame_costs(video, (setup or {})["detectors"], min(max_frames or LIMIT_FRAMES, LIMIT_FRAMES))
    if mode in ("book-litert", "book-keras"):
        ref = resolve(model)
        classify = (litert_per_face if mode == "book-litert" else keras_per_face)(ref.path)
        return book_loop(video, ref.spec, classify, max_frames)
    if mode == "pipeline":
        return run_pipeline(video, model, setup or {}, max_frames)
    if mode == "crops":
        return crop_throughput(video, model)
    raise ConfigError(f"unknown pipeline benchmark mode {mode!r}")


def looped(video: str, times: int, folder: str | os.PathLike) -> str:
    """The video played `times` times in a row, as one file in `folder`: the same H.264 packets
    copied (`ffmpeg -stream_loop`, no re-encoding), so decode cost per frame is unchanged and a
    55-frame clip gives steady numbers instead of start-up ones."""
    if times <= 1:
        return video
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise ConfigError("--loop needs ffmpeg on PATH (Debian: apt install ffmpeg)")
    out = Path(folder) / f"{Path(video).stem}-x{times}{Path(video).suffix}"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-stream_loop", str(times - 1), "-i", str(video), "-c", "copy",
                    str(out)], check=True, stdin=subprocess.DEVNULL, timeout=300)
    return str(out)


def bench_pipeline(video: str | os.PathLike, model: str | os.PathLike, keras_model: str | os.PathLike | None = None,
                   onnx_model: str | os.PathLike | None = None, max_frames: int | None = None,
                   keras_max_frames: int | None = None, pipelines: Mapping[str, Mapping[str, Any]] | None = None,
                   loop: int = 1) -> dict[str, Any]:
    """Every mode on the same video, each in its own process: {"modes": {name: {fps, faces,
    peak_rss_mb, ...}}, "ratios": {pipeline: {"vs decode", "vs LiteRT loop"[, "vs Keras loop"]}},
    "crops": [...]}.

    model: the .tflite classifier (LiteRT loop, pipelines); keras_model: its .keras (the Keras loop,
    capped at keras_max_frames: its fps is per frame, so a prefix is a fair sample); onnx_model adds
    an ONNX Runtime crop-throughput row; loop plays the video that many times in a row (`looped`).
    """
    model = str(model)

    def run(mode: str, path: str, setup: Mapping[str, Any] | None = None, frames: int | None = max_frames):
        return run_child("pipeline-mode", {"mode": mode, "video": played, "model": path, "setup": dict(setup or {}),
                                           "max_frames": frames}, label=f"pipeline benchmark {mode} on {video}")

    with tempfile.TemporaryDirectory(prefix="edgecv-bench-") as tmp:
        played = looped(str(video), loop, tmp)
        modes = {DECODE: run("decode", model), LITERT_LOOP: run("book-litert", model)}
        if keras_model:
            modes[KERAS_LOOP] = run("book-keras", str(keras_model),
                                    frames=keras_max_frames if keras_max_frames is not None else max_frames)
        setups = {k: resolve_setup(v) for k, v in (pipelines or PIPELINES).items()}
        for name, setup in setups.items():
            modes[name] = run("pipeline", model, setup)
        crops = [run("crops", str(path), frames=None) for path in (model, onnx_model) if path]
        # One thread each: an ONNX Runtime detector (yunet-ort) is held to one by its options,
        # OpenCV's by cv2.setNumThreads in the pass.
        detectors = {detector_key(st): {"detector": st["detector"], "detector_options": {
                     **st.get("detector_options", {}), **({"threads": 1} if "threads" in st.get("detector_options", {})
                                                         else {})}} for st in setups.values() if detector_key(st)}
        costs = run("costs", model, {"detectors": detectors})
    cores = usable_cpus()
    limit = {"cores": cores, **{k: v for k, v in costs.items() if k != "peak_rss_mb"}}
    ratios = {}
    for name, m in modes.items():
        if name.startswith("pipeline"):
            ratios[name] = {"vs decode": round(m["fps"] / modes[DECODE]["fps"], 3),
                            "vs LiteRT loop": round(m["fps"] / modes[LITERT_LOOP]["fps"], 2)}
            if KERAS_LOOP in modes:
                ratios[name]["vs Keras loop"] = round(m["fps"] / modes[KERAS_LOOP]["fps"], 2)
            m["limit_fps"] = round(limit_fps(costs, setups[name], cores), 2)
            m["fraction_of_limit"] = round(m["fps"] / m["limit_fps"], 4)
    return {"video": Path(video).name + (f" x{loop}" if loop > 1 else ""), "model": Path(model).name,
            "cpu_count": os.cpu_count(), "usable_cpus": cores, "limit": limit, "modes": modes, "ratios": ratios,
            "crops": crops}


def pipeline_table(result: Mapping[str, Any]) -> str:
    """One bench_pipeline result as a titled Markdown table with the crop-throughput lines."""
    body = []
    for name, m in result["modes"].items():
        r = result["ratios"].get(name, {})
        faces = "-" if m["faces"] is None else f"{m['faces']} ({m['faces_per_frame']:.3f})"
        limit = "-" if m.get("limit_fps") is None else f"{m['limit_fps']:.1f}"
        frac = "-" if m.get("fraction_of_limit") is None else f"{m['fraction_of_limit']:.2f}"
        body.append([name, str(m["frames"]), f"{m['fps']:.1f}", limit, frac, faces, str(r.get("vs decode", "")),
                     str(r.get("vs LiteRT loop", "")), str(r.get("vs Keras loop", "")), str(m.get("peak_rss_mb", ""))])
    head = ["mode", "frames", "fps", "limit fps", "x limit", "faces (per frame)", "x decode", "x LiteRT loop",
            "x Keras loop", "peak RSS MB"]
    lim = result["limit"]
    per = ", ".join(f"{k} {v:.3f} ms" for k, v in lim["detect_ms"].items())
    lines = [f"{result['video']} ({result['model']}, {result['cpu_count']} CPUs, {result['usable_cpus']} usable)", "",
             render_table(head, body, markdown=True), "",
             f"limit = {lim['cores']} usable CPUs / (decode + detect / detect_every) per frame, each on one thread "
             f"(CPU time, mean of {lim['frames']} frames): decode {lim['decode_ms']:.3f} ms; {per}"]
    lines += [f"classifier on {c['crops']} crops ({c['backend']}): {c['unbatched_ips']:.0f} img/s one by one, "
              f"{c['batched_ips']:.0f} img/s at batch {c['batch']} ({c['speedup']}x)" for c in result["crops"]]
    return "\n".join(lines)
