"""Pipeline benchmark: on one video, each mode in a fresh process, measure
  1. decode only (the ceiling),
  2. the books' sequential loop: read -> resize to width 300 -> gray -> Haar -> per face a Keras
     `predict` call, and the same loop with a per-face LiteRT call,
  3. our pipeline (one or more configurations),
plus batched vs unbatched classifier throughput on face crops and peak RSS.

`bench_pipeline(...)` returns a JSON-ready dict; `format_table` renders it. Keras is imported only
by the Keras loop's own process; every other mode is TensorFlow-free, and its peak RSS shows it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import cv2
import numpy as np

from edgecv.preprocess import apply_chain

from .backends import open_backend
from .detect import HaarFaceDetector, make_detector
from .pipeline import Pipeline, peak_rss_mb

BOOK_WIDTH = 300
DEFAULT_PIPELINES: dict[str, dict[str, Any]] = {
    "pipeline haar@300": {"detector": "haar", "detector_options": {"width": 300}},
    "pipeline yunet@320": {"detector": "yunet", "detector_options": {"width": 320}},
    "pipeline yunet@320 every 2nd": {"detector": "yunet", "detector_options": {"width": 320}, "detect_every": 2},
    "pipeline yunet@320 every 3rd": {"detector": "yunet", "detector_options": {"width": 320}, "detect_every": 3},
}


def _frames(video: str, max_frames: int | None):
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


def decode_only(video: str, max_frames: int | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    n = sum(1 for _ in _frames(video, max_frames))
    dt = time.perf_counter() - t0
    return {"frames": n, "seconds": round(dt, 3), "fps": round(n / dt, 2), "faces": None, "faces_per_frame": None}


def book_loop(video: str, classify: Callable[[np.ndarray], np.ndarray], max_frames: int | None = None,
              width: int = BOOK_WIDTH) -> dict[str, Any]:
    """The books' smile loop, as written there: everything in sequence, one classifier call per face.
    classify takes a 1x28x28x1 float32 array scaled to [0, 1]."""
    cascade = HaarFaceDetector(width=None)  # the loop resizes the frame itself, as the book does
    n = faces = 0
    t0 = time.perf_counter()
    for frame in _frames(video, max_frames):
        h, w = frame.shape[:2]  # imutils.resize(frame, width=300): INTER_AREA, as in the book
        small = cv2.resize(frame, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        for box in cascade.detect(gray):
            roi = cv2.resize(box.crop(gray), (28, 28)).astype("float32") / 255.0
            classify(roi[None, :, :, None])
            faces += 1
        n += 1
    dt = time.perf_counter() - t0
    return {"frames": n, "seconds": round(dt, 3), "fps": round(n / dt, 2), "faces": faces,
            "faces_per_frame": round(faces / max(n, 1), 3)}


def litert_per_face(model: str) -> Callable[[np.ndarray], np.ndarray]:
    """A plain LiteRT interpreter called once per face (the straightforward port of the book's loop)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]

    def classify(x: np.ndarray) -> np.ndarray:
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            x = np.clip(np.round(x / scale + zero), -128, 127).astype(inp["dtype"])
        it.set_tensor(inp["index"], x)
        it.invoke()
        return it.get_tensor(out["index"])

    return classify


def keras_per_face(model: str) -> Callable[[np.ndarray], np.ndarray]:
    import keras  # only here: the rest of the runtime never loads Keras

    m = keras.saving.load_model(str(model), compile=False)
    return lambda x: m.predict(x, verbose=0)


def run_pipeline(video: str, model: str, options: Mapping[str, Any], max_frames: int | None = None) -> dict[str, Any]:
    """The pipeline on the video, timed like the book loops: from opening the video to the last
    result, with the classifier and the detector loaded beforehand (the loops get theirs loaded too)."""
    options = dict(options)
    name = options.pop("detector", "haar")
    det_options = options.pop("detector_options", {})
    detector = None
    if name not in (None, "none"):
        # One detector per worker (they are not thread-safe), each built before the clock starts.
        built = [make_detector(name, **det_options) for _ in range(options.get("detect_workers", 1))]

        def detector():
            return built.pop() if built else make_detector(name, **det_options)
    backend = open_backend(model, backend=options.pop("backend", None), threads=options.pop("threads", None))
    try:
        t0 = time.perf_counter()
        summary = Pipeline(backend, [str(video)], detector=detector, max_frames=max_frames, **options).run()
        dt = time.perf_counter() - t0
    finally:
        backend.close()
    n = summary["frames"]
    faces = summary["sources"]["s0"]["faces"]
    return {"frames": n, "seconds": round(dt, 3), "fps": round(n / dt, 2), "faces": faces,
            "faces_per_frame": round(faces / max(n, 1), 3), "mean_batch": summary["batches"]["mean_size"],
            "stages_ms_p50": {k: v["p50"] for k, v in summary["stages_ms"].items()}}


def crop_throughput(video: str, model: str, n_crops: int = 256, batch: int = 32, backend: str | None = None,
                    max_frames: int = 60) -> dict[str, Any]:
    """Images/s for the classifier on real face crops (YuNet faces from the video, else centre crops),
    one call per crop vs batches of `batch`."""
    from .detect import YuNetFaceDetector

    det = YuNetFaceDetector()
    crops = []
    for frame in _frames(video, max_frames):
        boxes = det.detect(frame)
        h, w = frame.shape[:2]
        crops += [b.crop(frame) for b in boxes] or [frame[h // 4:3 * h // 4, w // 4:3 * w // 4]]
    crops = (crops * (n_crops // max(len(crops), 1) + 1))[:n_crops]
    with open_backend(model, backend=backend, threads=1) as b:
        x = apply_chain(crops, b.spec.preprocess, b.spec.input_shape)
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


def run_mode(mode: str, video: str, model: str, options: Mapping[str, Any] | None = None,
             max_frames: int | None = None) -> dict[str, Any]:
    """One measurement by name: decode | book-litert | book-keras | pipeline | crops."""
    if mode == "decode":
        return decode_only(video, max_frames)
    if mode == "book-litert":
        return book_loop(video, litert_per_face(model), max_frames)
    if mode == "book-keras":
        return book_loop(video, keras_per_face(model), max_frames)
    if mode == "pipeline":
        return run_pipeline(video, model, options or {}, max_frames)
    if mode == "crops":
        return crop_throughput(video, model, **(options or {}))
    raise ValueError(f"unknown benchmark mode {mode!r}")


def run_isolated(mode: str, video: str, model: str, options: Mapping[str, Any] | None = None,
                 max_frames: int | None = None) -> dict[str, Any]:
    """run_mode in a fresh Python process, so each mode's peak RSS is its own and no mode inherits
    another's imports (TensorFlow above all), warm caches or threads."""
    args = json.dumps({"mode": mode, "video": video, "model": model, "options": dict(options or {}),
                       "max_frames": max_frames})
    proc = subprocess.Popen([sys.executable, "-m", "edgecv.runtime.bench_pipeline", "--child", args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    # The child prints its own peak RSS: RUSAGE_CHILDREN would give the largest of all children.
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark mode {mode} failed:\n{err.decode(errors='replace')[-3000:]}")
    return json.loads(out.decode().strip().splitlines()[-1])


def looped(video: str, times: int, folder: str | os.PathLike) -> str:
    """The video played `times` times in a row, as one file in `folder`: the same H.264 packets
    copied (`ffmpeg -stream_loop`, no re-encoding), so decode cost per frame is unchanged and a
    55-frame clip gives steady numbers instead of start-up ones."""
    import shutil

    if times <= 1:
        return video
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        from edgecv.errors import ConfigError
        raise ConfigError("--loop needs ffmpeg on PATH (Debian: apt install ffmpeg)")
    out = Path(folder) / f"{Path(video).stem}-x{times}{Path(video).suffix}"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-stream_loop", str(times - 1), "-i", str(video), "-c", "copy",
                    str(out)], check=True, stdin=subprocess.DEVNULL, timeout=300)
    return str(out)


def bench_pipeline(video: str | os.PathLike, model: str | os.PathLike, keras_model: str | os.PathLike | None = None,
                   onnx_model: str | os.PathLike | None = None, max_frames: int | None = None,
                   keras_max_frames: int | None = None,
                   pipelines: Mapping[str, Mapping[str, Any]] | None = None,
                   isolate: bool = True, loop: int = 1) -> dict[str, Any]:
    """Run every mode on the same video and return {"modes": {name: {fps, faces_per_frame,
    peak_rss_mb, ...}}, "ratios": ..., "crops": ...}.

    model: the .tflite classifier (per-face LiteRT loop and pipelines); keras_model: its .keras
    (the Keras-predict loop; skipped when None); onnx_model adds an ORT crop-throughput row.
    keras_max_frames caps the slow Keras loop (its fps is per frame, so a prefix is a fair sample).
    isolate runs each mode in its own process (the default; peak RSS is then per mode).
    loop plays the video that many times in a row (see `looped`).
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgecv-bench-") as tmp:
        played = looped(str(video), loop, tmp)
        result = _bench(played, str(model), keras_model, onnx_model, max_frames, keras_max_frames, pipelines, isolate)
    result["video"] = Path(video).name + (f" x{loop}" if loop > 1 else "")
    return result


def _bench(video: str, model: str, keras_model, onnx_model, max_frames, keras_max_frames, pipelines,
           isolate: bool) -> dict[str, Any]:
    run = run_isolated if isolate else lambda *a: dict(run_mode(*a), peak_rss_mb=peak_rss_mb())
    modes: dict[str, Any] = {}
    modes["decode only"] = run("decode", video, model, None, max_frames)
    modes["book loop, LiteRT per face"] = run("book-litert", video, model, None, max_frames)
    if keras_model:
        n = keras_max_frames if keras_max_frames is not None else max_frames
        modes["book loop, Keras predict per face"] = run("book-keras", video, str(keras_model), None, n)
    for name, options in (pipelines or DEFAULT_PIPELINES).items():
        modes[name] = run("pipeline", video, model, options, max_frames)
    crops = [run("crops", video, model, None, None)]
    if onnx_model:
        crops.append(run("crops", video, str(onnx_model), None, None))
    ratios = {}
    for name, m in modes.items():
        if name.startswith("pipeline"):
            r = {"vs decode": round(m["fps"] / modes["decode only"]["fps"], 3),
                 "vs LiteRT loop": round(m["fps"] / modes["book loop, LiteRT per face"]["fps"], 2)}
            if "book loop, Keras predict per face" in modes:
                r["vs Keras loop"] = round(m["fps"] / modes["book loop, Keras predict per face"]["fps"], 2)
            ratios[name] = r
    return {"video": Path(video).name, "model": Path(model).name, "cpu_count": os.cpu_count(),
            "modes": modes, "ratios": ratios, "crops": crops}


def format_table(result: Mapping[str, Any]) -> str:
    """A Markdown table of one bench_pipeline result."""
    lines = [f"{result['video']} ({result['model']}, {result['cpu_count']} CPUs)", "",
             "| mode | frames | fps | faces (per frame) | x decode | x LiteRT loop | x Keras loop | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in result["modes"].items():
        r = result["ratios"].get(name, {})
        fpf = "-" if m["faces"] is None else f"{m['faces']} ({m['faces_per_frame']:.3f})"
        lines.append(f"| {name} | {m['frames']} | {m['fps']:.1f} | {fpf} | {r.get('vs decode', '')} | "
                     f"{r.get('vs LiteRT loop', '')} | {r.get('vs Keras loop', '')} | {m.get('peak_rss_mb', '')} |")
    lines.append("")
    for c in result["crops"]:
        lines.append(f"classifier on {c['crops']} crops ({c['backend']}): {c['unbatched_ips']:.0f} img/s one by one, "
                     f"{c['batched_ips']:.0f} img/s at batch {c['batch']} ({c['speedup']}x)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:  # one isolated mode (run_isolated): result and own peak RSS as JSON
        c = json.loads(argv[1])
        r = run_mode(c["mode"], c["video"], c["model"], c["options"], c["max_frames"])
        print(json.dumps(dict(r, peak_rss_mb=peak_rss_mb())))
        return 0
    ap = argparse.ArgumentParser(description="edgecv pipeline benchmark")
    ap.add_argument("--video", action="append", required=True)
    ap.add_argument("--model", required=True, help=".tflite classifier")
    ap.add_argument("--keras", help=".keras model for the Keras-predict loop")
    ap.add_argument("--onnx", help=".onnx model for the crop-throughput row")
    ap.add_argument("--max-frames", type=int)
    ap.add_argument("--keras-max-frames", type=int)
    ap.add_argument("--loop", type=int, default=1, help="play each video N times in a row (needs ffmpeg)")
    ap.add_argument("--json-out")
    a = ap.parse_args(argv)
    results = []
    for v in a.video:
        r = bench_pipeline(v, a.model, a.keras, a.onnx, a.max_frames, a.keras_max_frames, loop=a.loop)
        results.append(r)
        print(format_table(r), "\n", flush=True)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
