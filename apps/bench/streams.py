"""`edgecv benchmark streams`: many streams into one batcher. For 1, 4, 16, 64 concurrent copies of
a video, measure in one run
  - decode only (one thread per stream, the ceiling on this machine's cores),
  - the pipeline with cross-stream batching (max_batch, max_delay_ms),
  - the same pipeline with batch 1 (one inference per frame),
and report aggregate fps, p50/p99 frame age (capture to sink), and the batch actually formed.
Whole frames are classified (no face detector), so decoding, preprocessing, batching and
inference are what is measured. Each run is compared with this machine's limit for that work:
usable CPUs / (decode + preprocess + inference per frame), each measured on one thread in a short
pass before the runs (inference per image at the largest batch for the batched runs, at batch 1
for the batch-1 runs).
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Sequence

from edgecv.errors import ConfigError
from edgecv.runtime.machine import usable_cpus

from .report import render_table

DEFAULT_STREAMS = (1, 4, 16, 64)


def decode_only(video: str, streams: int, frames: int) -> float:
    """Aggregate fps of `streams` threads each decoding `frames` frames (cv2 releases the GIL)."""
    import cv2

    def read() -> None:
        cap = cv2.VideoCapture(video)
        k = 0
        while k < frames and cap.read()[0]:
            k += 1
        cap.release()

    threads = [threading.Thread(target=read) for _ in range(streams)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return streams * frames / (time.perf_counter() - t0)


def frame_costs(ref: Any, video: str, batch: int, frames: int = 64, keep: int = 32) -> dict[str, Any]:
    """What one frame costs one core, as CPU time of this thread: decode (FFmpeg on one thread),
    preprocessing by the ModelSpec's chain, and inference per image at `batch` (up to `keep`
    frames, tiled) and at batch 1, on a backend opened with one thread."""
    import cv2
    import numpy as np

    from edgecv.preprocess import apply_chain
    from edgecv.runtime.backends import open_backend

    clock = time.thread_time_ns
    cap = cv2.VideoCapture(video, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    kept, dec, n = [], 0, 0
    try:
        cap.read()  # the codec's start-up is not a frame's cost
        while n < frames:
            t0 = clock()
            ok, frame = cap.read()
            if not ok:
                break
            dec += clock() - t0
            n += 1
            if len(kept) < keep:
                kept.append(frame)
    finally:
        cap.release()
    if not n:
        raise ConfigError(f"{video}: no frames to measure the limit on")
    t0 = clock()
    x = apply_chain(kept, ref.spec.preprocess, ref.spec.input_shape)
    pre = (clock() - t0) / len(kept)
    xb = np.ascontiguousarray(x[np.arange(batch) % len(x)])
    with open_backend(ref.path, ref.spec, threads=1) as b:
        b.run(xb)
        b.run(xb[:1])
        reps = max(3, 256 // batch)
        t0 = clock()
        for _ in range(reps):
            b.run(xb)
        inf_b = (clock() - t0) / (reps * batch)
        t0 = clock()
        for i in range(32):
            b.run(xb[i % batch:i % batch + 1])
        inf_1 = (clock() - t0) / 32
    return {"frames": n, "decode_ms": round(dec / n / 1e6, 4), "preprocess_ms": round(pre / 1e6, 4),
            "infer_ms_per_image": {"batched": round(inf_b / 1e6, 4), "batch1": round(inf_1 / 1e6, 4)},
            "infer_batch": batch}


def run_streams(backend: Any, video: str, streams: int, frames: int, max_batch: int, max_delay_ms: float,
                workers: int) -> dict[str, Any]:
    """One pipeline run on an open backend (its loading and GPU warm-up stay off the clock)."""
    from edgecv.runtime.build import build_sources
    from edgecv.runtime.pipeline import Pipeline, PipelineOptions

    options = PipelineOptions(max_batch=max_batch, max_delay_ms=max_delay_ms, detect_workers=workers,
                              max_inflight=max(8, 2 * max_batch, 2 * streams), max_frames=streams * frames)
    t0 = time.perf_counter()
    s = Pipeline(backend, build_sources([video] * streams, policy="every"), None, (), options).run()
    dt = time.perf_counter() - t0
    age = s["stages_ms"].get("age", {})
    return {"fps": round(s["frames"] / dt, 1), "frames": s["frames"], "mean_batch": s["batches"]["mean_size"],
            "max_batch": s["batches"]["max_size"], "age_ms_p50": age.get("p50"), "age_ms_p99": age.get("p99"),
            "infer_ms_p50": s["stages_ms"].get("infer", {}).get("p50"),
            "providers": (s.get("backend") or {}).get("providers")}


def bench_streams(model: str | os.PathLike, video: str | os.PathLike, streams: Sequence[int] = DEFAULT_STREAMS,
                  frames: int = 100, max_batch: int = 64, device: str = "cpu", max_delay_ms: float = 10.0,
                  workers: int | None = None, cuda_graph: bool = False) -> dict[str, Any]:
    """Rows of decode-only, batched and batch-1 fps per stream count (JSON-ready)."""
    from edgecv.resolve import resolve
    from edgecv.runtime.backends import open_backend

    ref, video = resolve(model), str(video)
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    rows = []
    cores = usable_cpus()
    costs = frame_costs(ref, video, max_batch)
    base = costs["decode_ms"] + costs["preprocess_ms"]
    limits = {k: round(cores * 1000.0 / (base + v), 2) for k, v in costs["infer_ms_per_image"].items()}
    # Opened (and on a GPU warmed, every bucket) once, before any clock, shared by every run.
    backend = open_backend(ref.path, ref.spec, device=device, cuda_graph=cuda_graph)
    try:
        for n in streams:
            row: dict[str, Any] = {"streams": n, "frames_per_stream": frames,
                                   "decode_fps": round(decode_only(video, n, frames), 1)}
            row["batched"] = run_streams(backend, video, n, frames, max_batch, max_delay_ms, workers)
            row["batch1"] = run_streams(backend, video, n, frames, 1, max_delay_ms, workers)
            for k in ("batched", "batch1"):
                row[k]["limit_fps"] = limits[k]
                row[k]["fraction_of_limit"] = round(row[k]["fps"] / limits[k], 4)
            row["batched_vs_batch1"] = round(row["batched"]["fps"] / row["batch1"]["fps"], 2)
            row["batched_vs_decode"] = round(row["batched"]["fps"] / row["decode_fps"], 3)
            rows.append(row)
    finally:
        backend.close()
    return {"model": ref.path.name, "video": os.path.basename(video), "device": device,
            "max_batch": max_batch, "max_delay_ms": max_delay_ms, "workers": workers, "cuda_graph": cuda_graph,
            "cpu_count": os.cpu_count(), "usable_cpus": cores,
            "limit": {"cores": cores, **costs, "limit_fps": limits}, "rows": rows}


def streams_table(result: dict[str, Any]) -> str:
    """One bench_streams result as a titled Markdown table."""
    head = ["streams", "decode only fps", "batched fps (mean batch)", "x limit", "age p50 / p99 ms", "batch 1 fps",
            "x limit", "age p50 / p99 ms", "batched / batch 1", "batched / decode"]
    body = [[str(r["streams"]), f"{r['decode_fps']:,.0f}", f"{r['batched']['fps']:,.0f} ({r['batched']['mean_batch']})",
             f"{r['batched']['fraction_of_limit']:.2f}", f"{r['batched']['age_ms_p50']} / {r['batched']['age_ms_p99']}",
             f"{r['batch1']['fps']:,.0f}", f"{r['batch1']['fraction_of_limit']:.2f}",
             f"{r['batch1']['age_ms_p50']} / {r['batch1']['age_ms_p99']}", f"{r['batched_vs_batch1']}x",
             str(r["batched_vs_decode"])] for r in result["rows"]]
    title = (f"{result['video']} x N streams, {result['model']} on {result['device']} (max_batch "
             f"{result['max_batch']}, max_delay_ms {result['max_delay_ms']}, {result['workers']} workers, "
             f"{result['cpu_count']} CPUs, {result['usable_cpus']} usable)")
    lim = result["limit"]
    inf = lim["infer_ms_per_image"]
    note = (f"limit = {lim['cores']} usable CPUs / (decode + preprocess + inference) per frame, each on one thread "
            f"(CPU time): decode {lim['decode_ms']:.3f} ms, preprocess {lim['preprocess_ms']:.3f} ms, inference "
            f"{inf['batched']:.3f} ms/image at batch {lim['infer_batch']} (limit {lim['limit_fps']['batched']:,.0f} "
            f"fps), {inf['batch1']:.3f} ms at batch 1 (limit {lim['limit_fps']['batch1']:,.0f} fps)")
    return "\n".join([title, "", render_table(head, body, markdown=True), "", note])
