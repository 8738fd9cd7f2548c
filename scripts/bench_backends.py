"""LiteRT / ONNX Runtime / OpenVINO x fp32 / int8 on this CPU, in one run: latency at each batch size
and top-1 accuracy on held-out data, each configuration in a fresh process, every backend with the
same thread count (reported per row). It made the fp32 / int8 table of docs/benchmark.md, written
before `edgecv benchmark models` ran OpenVINO rows; that command now measures the same set with the
bare-loop overhead, memory and the plot (`--backend litert,onnxruntime,openvino --threads 2`). Both
open each model the one way (edgecv.resolve -> open_backend) and score through edgecv.decode.

    EDGECV_DATA=../shared/data python scripts/bench_backends.py --data smiles --split test \\
        --batch 1,32 --threads 2 MODEL:BACKEND [MODEL:BACKEND ...]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def child(model: str, backend: str, batches: list[int], threads: int, x_path: str, y_path: str,
          seconds: float) -> dict:
    from edgecv.runtime.backends import open_backend

    from edgecv import decode
    from edgecv.resolve import resolve

    x = np.load(x_path)
    y = np.load(y_path)
    ref = resolve(model, backend)
    t0 = time.perf_counter()
    be = open_backend(ref.path, ref.spec, backend=backend, threads=threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    rows = []
    with be:
        pred = np.concatenate([decode.indices(ref.spec, be.run(x[i:i + 64]), len(x[i:i + 64]))
                               for i in range(0, len(x), 64)])
        acc = float((pred == y).mean())
        for b in batches:
            xb = np.ascontiguousarray(x[np.arange(b) % len(x)])
            for _ in range(20):
                be.run(xb)
            times = []
            end = time.perf_counter() + seconds
            while time.perf_counter() < end or len(times) < 50:
                t = time.perf_counter_ns()
                be.run(xb)
                times.append(time.perf_counter_ns() - t)
            ms = np.asarray(times) / 1e6
            p50 = float(np.median(ms))
            rows.append({"artefact": Path(ref.path).name, "backend": backend, "batch": b,
                         "threads": getattr(be, "threads", None) or threads, "quant": ref.spec.quantization,
                         "size_bytes": Path(ref.path).stat().st_size, "load_ms": round(load_ms, 1),
                         "latency_ms_p50": round(p50, 4), "latency_ms_p90": round(float(np.percentile(ms, 90)), 4),
                         "per_image_ms_p50": round(p50 / b, 5), "throughput_ips": round(b / p50 * 1e3, 1),
                         "accuracy": acc, "accuracy_n": int(len(y)), "iters": len(ms)})
    return {"rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="*", metavar="MODEL:BACKEND")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--batch", default="1,32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--source-accuracy", type=float, default=None,
                   help="the source (Keras) model's accuracy on the same data, for the drop column")
    p.add_argument("--json", metavar="OUT")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batch.split(",")]
    if args.child:
        model, backend, x_path, y_path = json.loads(args.child)
        print(json.dumps(child(model, backend, batches, args.threads, x_path, y_path, args.seconds)))
        return 0

    if not args.configs:
        p.error("name at least one MODEL:BACKEND")
    from edgecv.data import load, split
    from edgecv.preprocess import apply_chain
    from edgecv.resolve import resolve

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache: dict[str, tuple[str, str]] = {}
        for cfg in args.configs:
            model, backend = cfg.rsplit(":", 1)
            spec = resolve(model, backend).spec
            key = json.dumps([list(spec.input_shape), [s.to_dict() for s in spec.preprocess]])
            if key not in cache:
                ds = load(args.data)
                ds = split(ds, args.split, spec.data.get("split")) if args.split != "all" else ds
                x, y = ds.load_arrays(lambda imgs: apply_chain(imgs, spec.preprocess, spec.input_shape))
                xp, yp = os.path.join(tmp, f"x{len(cache)}.npy"), os.path.join(tmp, f"y{len(cache)}.npy")
                np.save(xp, x)
                np.save(yp, np.asarray(y))
                cache[key] = (xp, yp)
            xp, yp = cache[key]
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps([model, backend, xp, yp]),
                                  "--batch", args.batch, "--threads", str(args.threads), "--seconds",
                                  str(args.seconds), "--data", args.data], capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{cfg}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.extend(json.loads(out.stdout.strip().splitlines()[-1])["rows"])
    src = args.source_accuracy
    print(f"| artefact | backend | threads | batch | size MB | p50 ms / batch | per image ms | images/s | "
          f"accuracy % (n = {rows[0]['accuracy_n'] if rows else 0}) | drop pts |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        drop = "" if src is None else f"{100 * (src - r['accuracy']):+.2f}"
        print(f"| {r['artefact']} | {r['backend']} | {r['threads']} | {r['batch']} | {r['size_bytes'] / 1e6:.2f} | "
              f"{r['latency_ms_p50']:.3f} | {r['per_image_ms_p50']:.4f} | {r['throughput_ips']:,.0f} | "
              f"{100 * r['accuracy']:.2f} | {drop} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                               "load": os.getloadavg(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
