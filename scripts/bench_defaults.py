"""`edgecv smile` on the 480x360 PETS video with the defaults edgecv chooses (runtime.machine) against
hand-set detect workers, FaceDetectorYN, a one-core run (taskset -c 0) and four copies of the video in one
run, each in its own process, configurations interleaved, REPS rounds. Prints each run and the best fps per configuration.

    EDGECV_DATA=../shared/data .venv/bin/python scripts/bench_defaults.py 3
"""
import json
import os
import subprocess
import sys

VIDEO = "video:vtest_pets2009_480x360_h264.avi"
CONFIGS = {"default": ([], None), "workers1": (["--detect-workers", "1"], None),
           "workers2": (["--detect-workers", "2"], None), "workers3": (["--detect-workers", "3"], None),
           # FaceDetectorYN, what `yunet` ran before it meant ONNX Runtime: a hand-set choice a user has
           "opencv w1": (["--detector", "yunet-opencv", "--detect-workers", "1"], None),
           "opencv w2": (["--detector", "yunet-opencv", "--detect-workers", "2"], None),
           "one core": ([], "0"),
           "4 streams": (["--source", VIDEO] * 3, None)}  # the video four times: aggregate fps


def run(extra, taskset=None):
    cmd = [sys.executable, "-m", "edgecv", "smile", "--source", VIDEO, "--no-display", "--metrics-interval", "0",
           *extra]
    if taskset:
        cmd = ["taskset", "-c", taskset, *cmd]
    p = subprocess.run(cmd, capture_output=True)
    if p.returncode != 0:
        raise SystemExit(p.stderr.decode()[-500:])
    s = json.loads(p.stdout)
    return s["fps"], s["faces"], s["defaults"]["detect_workers"], s.get("detector", {}).get("name")


def main(reps: int) -> None:
    best = {k: 0.0 for k in CONFIGS}
    print("load", os.getloadavg())
    for rep in range(reps):
        for name, (extra, taskset) in CONFIGS.items():
            fps, faces, workers, threads = run(extra, taskset)
            best[name] = max(best[name], fps)
            print(rep, name, {"fps": fps, "faces": faces, "detect_workers": workers, "detector": threads},
                  flush=True)
    print("load", os.getloadavg())
    print(json.dumps(best))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
