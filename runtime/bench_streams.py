"""Many streams into one batcher: for 1, 4, 16, 64 concurrent copies of a video, measure in one run
  - decode only (one thread per stream, the ceiling on this machine's cores),
  - the pipeline with cross-stream batching (max_batch, max_delay_ms),
  - the same pipeline with batch 1 (one inference per frame),
and report aggregate fps, p50/p99 frame age (capture to sink), and the batch size actually formed.

Whole frames are classified (no face detector), so decoding, preprocessing, batching and inference
are what is measured. `edgecv benchmark streams MODEL --video V` runs it; `bench_streams(...)`
returns JSON-ready rows and `format_table` renders them.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Sequence

import cv2

from .backends import BackendBase, open_backend
from .pipeline import Pipeline

DEFAULT_STREAMS = (1, 4, 16, 64)


def decode_only(video: str, streams: int, frames: int) -> float:
    """Aggregate fps of `streams` threads each decoding `frames` frames (cv2 releases the GIL)."""
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


def run_streams(model: "str | BackendBase", video: str, streams: int, frames: int, max_batch: int, device: str,
                max_delay_ms: float, workers: int, cuda_graph: bool = False) -> dict[str, Any]:
    """One pipeline run; `model` is best an open backend, so its loading and GPU warm-up stay off the clock."""
    p = Pipeline(model, [video] * streams, detector=None, device=device, max_batch=max_batch,
                 max_delay_ms=max_delay_ms, policy="every", max_frames=streams * frames,
                 detect_workers=workers, max_inflight=max(8, 2 * max_batch, 2 * streams), cuda_graph=cuda_graph)
    t0 = time.perf_counter()
    s = p.run()
    dt = time.perf_counter() - t0
    age = s["stages_ms"].get("age", {})
    return {"fps": round(s["frames"] / dt, 1), "frames": s["frames"], "mean_batch": s["batches"]["mean_size"],
            "max_batch": s["batches"]["max_size"], "age_ms_p50": age.get("p50"), "age_ms_p99": age.get("p99"),
            "infer_ms_p50": s["stages_ms"].get("infer", {}).get("p50"),
            "providers": (s.get("backend") or {}).get("providers")}


def bench_streams(model: str | os.PathLike, video: str | os.PathLike, streams: Sequence[int] = DEFAULT_STREAMS,
                  frames: int = 100, max_batch: int = 64, device: str = "cpu", max_delay_ms: float = 10.0,
                  workers: int | None = None, cuda_graph: bool = False) -> dict[str, Any]:
    model, video = str(model), str(video)
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    rows = []
    # Opened (and on a GPU warmed, every bucket) once, before any clock, shared by every run.
    backend = open_backend(model, device=device, cuda_graph=cuda_graph)
    try:
        for n in streams:
            rows.append(_row(backend, video, n, frames, max_batch, device, max_delay_ms, workers, cuda_graph))
    finally:
        backend.close()
    return {"model": os.path.basename(model), "video": os.path.basename(video), "device": device,
            "max_batch": max_batch, "max_delay_ms": max_delay_ms, "workers": workers, "cuda_graph": cuda_graph,
            "cpu_count": os.cpu_count(), "rows": rows}


def _row(model, video, n, frames, max_batch, device, max_delay_ms, workers, cuda_graph) -> dict[str, Any]:
    row: dict[str, Any] = {"streams": n, "frames_per_stream": frames,
                           "decode_fps": round(decode_only(video, n, frames), 1)}
    row["batched"] = run_streams(model, video, n, frames, max_batch, device, max_delay_ms, workers, cuda_graph)
    row["batch1"] = run_streams(model, video, n, frames, 1, device, max_delay_ms, workers, cuda_graph)
    row["batched_vs_batch1"] = round(row["batched"]["fps"] / row["batch1"]["fps"], 2)
    row["batched_vs_decode"] = round(row["batched"]["fps"] / row["decode_fps"], 3)
    return row


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{result['video']} x N streams, {result['model']} on {result['device']} "
             f"(max_batch {result['max_batch']}, max_delay_ms {result['max_delay_ms']}, "
             f"{result['workers']} workers, {result['cpu_count']} CPUs)", "",
             "| streams | decode only fps | batched fps (mean batch) | age p50 / p99 ms | batch 1 fps | "
             "age p50 / p99 ms | batched / batch 1 | batched / decode |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        b, one = r["batched"], r["batch1"]
        lines.append(f"| {r['streams']} | {r['decode_fps']:,.0f} | {b['fps']:,.0f} ({b['mean_batch']}) | "
                     f"{b['age_ms_p50']} / {b['age_ms_p99']} | {one['fps']:,.0f} | {one['age_ms_p50']} / "
                     f"{one['age_ms_p99']} | {r['batched_vs_batch1']}x | {r['batched_vs_decode']} |")
    return "\n".join(lines)
