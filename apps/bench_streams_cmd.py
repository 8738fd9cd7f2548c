"""`edgecv benchmark streams MODEL.onnx --video V [--streams 1,4,16,64] [--device cuda] [--batch 64]`:
many concurrent streams through one batcher (edgecv.runtime.bench_streams)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgecv.errors import ConfigError, ModelError


def cmd_streams(args: argparse.Namespace) -> int:
    from edgecv.runtime.backends import DEVICES
    from edgecv.runtime.bench_streams import DEFAULT_STREAMS, bench_streams, format_table

    from .bench_report import write_text
    from .benchmark import _video_path, parse_int, parse_names

    rest = args.models[1:]
    if len(rest) != 1:
        raise ConfigError("usage: edgecv benchmark streams MODEL --video V [--streams 1,4,16,64] [--device cpu] "
                          "[--batch 64] [--max-frames N] [--cuda-graph] [--json OUT] [--md OUT]")
    model = Path(rest[0])
    if model.suffix not in (".onnx", ".tflite") or not model.is_file():
        raise ModelError(f"{model}: the streams benchmark takes an existing .onnx or .tflite classifier")
    if len(args.video) != 1:
        raise ConfigError("edgecv benchmark streams needs exactly one --video V (every stream plays it)")
    streams = [parse_int(s, "streams") for s in (args.streams or ",".join(map(str, DEFAULT_STREAMS))).split(",")]
    devices = parse_names(args.device, "device", DEVICES) or ["cpu"]
    if len(devices) != 1:
        raise ConfigError("edgecv benchmark streams takes one --device")
    batch = parse_int(args.batch if args.batch != "1,8,32" else "64", "batch")
    frames = parse_int(args.max_frames, "max-frames") or 100
    result = bench_streams(model, _video_path(args.video[0]), streams, frames=frames, max_batch=batch,
                           device=devices[0], cuda_graph=args.cuda_graph)
    table = format_table(result)
    print(table, flush=True)
    if args.json:
        write_text(args.json, json.dumps(result, indent=2) + "\n")
    if args.md:
        write_text(args.md, table + "\n")
    return 0
