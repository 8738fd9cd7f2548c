"""YuNet one frame a call (OpenCV's FaceDetectorYN, `--detector yunet`) against YuNet batched on ONNX
Runtime (`--detector yunet-ort`, runtime.yunet_batch) on the 480x360 PETS video, in one run with the
configurations interleaved, ROUNDS rounds:

1. per-frame detect cost in this process (the frames decoded once; FaceDetectorYN vs ORT at batch 1,
   8, 32; each at 1 and at 2 threads: cv2.setNumThreads / ORT intra-op threads);
2. end-to-end `edgecv smile` fps on the whole video, each run its own process (`--detector
   yunet-opencv` is FaceDetectorYN whatever the machine would pick; detect workers from the machine;
   yunet-ort gets cores / workers ORT threads), on both cores and on one (taskset -c 0).

Prints each measurement as a JSON line and the medians at the end; load average before and after.

    EDGECV_DATA=../shared/data .venv/bin/python scripts/bench_detect.py 3
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import cv2

VIDEO = "vtest_pets2009_480x360_h264.avi"
N_FRAMES = 256
ORT = ["--detector", "yunet-ort", "--detect-batch"]
SMILE = {"FaceDetectorYN": ([], None), "yunet-ort batch 1": ([*ORT, "1"], None),
         "yunet-ort batch 8": ([*ORT, "8"], None), "yunet-ort batch 32": ([*ORT, "32"], None),
         "FaceDetectorYN, one core": ([], "0"), "yunet-ort batch 1, one core": ([*ORT, "1"], "0")}


def frames() -> list:
    from edgecv.data import resource_path

    cap = cv2.VideoCapture(str(resource_path("videos", "videos/" + VIDEO)))
    out = []
    while len(out) < N_FRAMES:
        ok, image = cap.read()
        if not ok:
            break
        out.append(image)
    return out


def detect_ms(images, threads: int, engine: str, batch: int = 1) -> float:
    """Milliseconds per frame over every image (after one warm-up call)."""
    from edgecv.runtime.detect import YuNetFaceDetector
    from edgecv.runtime.yunet_batch import YuNetBatchDetector

    if engine == "cv":
        cv2.setNumThreads(threads)
        det = YuNetFaceDetector()
        det.detect(images[0])
        t0 = time.perf_counter()
        for image in images:
            det.detect(image)
    else:
        det = YuNetBatchDetector(max_batch=batch, threads=threads)
        det.detect_batch(images[:batch])
        t0 = time.perf_counter()
        for k in range(0, len(images), batch):
            det.detect_batch(images[k:k + batch])
    return (time.perf_counter() - t0) / len(images) * 1000


def smile_fps(extra: list[str], taskset: str | None) -> tuple[float, int, dict]:
    cmd = [sys.executable, "-m", "edgecv", "smile", "--source", "video:" + VIDEO, "--no-display",
           "--metrics-interval", "0", "--detector", "yunet-opencv", *extra]
    if taskset:
        cmd = ["taskset", "-c", taskset, *cmd]
    p = subprocess.run(cmd, capture_output=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(p.stderr.decode()[-500:])
    s = json.loads(p.stdout)
    return s["fps"], s["faces"], s.get("detect_batches", {})


def main(rounds: int) -> None:
    images = frames()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(json.dumps({"cpu": cpu, "usable_cpus": len(os.sched_getaffinity(0)), "frames": len(images),
                      "load_before": os.getloadavg()}))
    detect: dict[str, list[float]] = {}
    smile: dict[str, list[float]] = {}
    for r in range(rounds):
        for threads in (1, 2):
            for engine, batch in (("cv", 1), ("ort", 1), ("ort", 8), ("ort", 32)):
                name = f"{'FaceDetectorYN' if engine == 'cv' else f'ORT batch {batch}'}, {threads} thread(s)"
                ms = detect_ms(images, threads, engine, batch)
                detect.setdefault(name, []).append(ms)
                print(json.dumps({"round": r, "detect": name, "ms_per_frame": round(ms, 3)}), flush=True)
        cv2.setNumThreads(2)
        for name, (extra, taskset) in SMILE.items():
            fps, faces, batches = smile_fps(extra, taskset)
            smile.setdefault(name, []).append(fps)
            print(json.dumps({"round": r, "smile": name, "fps": fps, "faces": faces, "detect_batches": batches}),
                  flush=True)
    print(json.dumps({"load_after": os.getloadavg()}))
    print(json.dumps({"median_detect_ms": {k: round(statistics.median(v), 3) for k, v in detect.items()},
                      "median_smile_fps": {k: round(statistics.median(v), 1) for k, v in smile.items()}}, indent=1))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
