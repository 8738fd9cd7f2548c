"""`edgecv smile`: the live smile detector on any source (camera, video, stream, images).

Finds faces (YuNet at 320 px by default: on smile.mp4 it finds all three people in every frame,
where the book's Haar cascade at width 300 finds one), batches the faces of each frame and of
several frames, labels each "smiling" / "not smiling" with its probability, draws them, shows a
window where a display exists, writes the annotated video and JSON lines, prints fps and
per-stage latency now and then and a JSON summary at the end.
"""
from __future__ import annotations

import argparse
import logging

from edgecv.errors import ConfigError, ModelError

log = logging.getLogger("edgecv.smile")

EXAMPLES = """examples:
  edgecv smile --source 0                                   # webcam, window
  edgecv smile --source video:smile.mp4 --no-display --save out/smile.mp4 --json-out out/smile.jsonl
  edgecv smile --source rtsp://camera/stream --backend onnxruntime --device cuda
  edgecv smile --source photos/ --detector haar --json-out faces.jsonl
  edgecv smile --source 0 --serve 8080 --shutter photos/ --mqtt broker.lan --mqtt-topic home/hall
                                                            # live page on http://127.0.0.1:8080/ (docs/live.md)
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from edgecv.runtime.cli import add_run_options

    p = sub.add_parser("smile", help="the live smile detector", description=__doc__.split("\n")[0],
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smile",
                   help="shipped model name (default smile) or a .tflite/.onnx/.keras file with its spec")
    add_run_options(p, detector_default="yunet")
    from edgecv.safeio import finite_float, int_at_least

    g = p.add_argument_group("smile events and the smile shutter")
    g.add_argument("--shutter", metavar="DIR",
                   help="save the frame to DIR when everyone in a stream smiles (STREAM-FRAME.jpg)")
    g.add_argument("--shutter-frames", type=int_at_least(1), default=5, metavar="N",
                   help="everyone must have been smiling for N frames (default 5)")
    g.add_argument("--shutter-interval", type=finite_float(0), default=10.0, metavar="S",
                   help="at most one photo per stream every S seconds (default 10)")
    g.add_argument("--smile-frames", type=int_at_least(1), default=3, metavar="N",
                   help="frames in a row a score must hold to start or end a smile (default 3)")
    p.set_defaults(func=cmd_smile)


def yunet_or_haar() -> str:
    """YuNet's weights come from the data registry (a mirror or a download). A box with neither
    still gets a smile detector: the Haar cascade that ships with OpenCV, with a warning."""
    from edgecv.data import resource_path
    from edgecv.errors import DataError

    try:
        resource_path("yunet", "models/face_detection_yunet_2023mar.onnx")
        return "yunet"
    except DataError as e:
        log.warning("YuNet face detector unavailable (%s); using the Haar cascade instead, which finds "
                    "fewer faces (run `edgecv data fetch yunet` when online)", e)
        return "haar"


def cmd_smile(args: argparse.Namespace) -> int:
    from edgecv.resolve import resolve
    from edgecv.runtime.cli import run_model

    ref = resolve(args.model, args.backend)
    spec = ref.spec
    if spec.task not in ("smile", "classify") or len(spec.labels) != 2:
        raise ModelError(f"{ref.path}: a smile model must have 2 labels (not smiling, smiling); "
                         f"this one is a {spec.task} model with labels {list(spec.labels)}")
    detector = yunet_or_haar() if args.detector == "yunet" else args.detector
    # The face region comes from the model's ModelSpec (crop: square for the smile model), so
    # `edgecv run --model smile.onnx --detector yunet` feeds the same crops as this app.
    from edgecv.apps.smile_events import SmileEvents, check_shutter_dir

    if args.detector == "none":  # whole frames: no people, so no per-person events
        if args.shutter:
            raise ConfigError("--shutter needs a face detector (--detector yunet or haar), not none")
        return run_model(args, ref, detector)
    shutter = check_shutter_dir(args.shutter) if args.shutter else None
    events = SmileEvents(smile_index=1, on_frames=args.smile_frames, off_frames=args.smile_frames,
                         shutter=shutter, shutter_frames=args.shutter_frames,
                         shutter_interval=args.shutter_interval)
    return run_model(args, ref, detector, hooks=[events])
