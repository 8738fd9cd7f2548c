"""`edgecv eval MODEL --data D [--split test|all] [--json] [--out DIR]`: accuracy, per-class
precision/recall, confusion matrix and rank-1/rank-5 for classifiers; sequence/character
accuracy and CER for captcha models. MODEL: shipped name, run directory, .keras/.tflite/.onnx."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

EXAMPLES = """examples:
  edgecv eval runs/mnist-lenet --data mnist --split test
  edgecv eval smile --data ../shared/data/smiles --split all --json
  edgecv eval smile --model out/smile.int8.onnx --data smiles --split test
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a model on a data set", description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="MODEL", help="shipped model name, run directory or model file")
    p.add_argument("--model", help="evaluate this artefact instead (MODEL then only names the task)")
    p.add_argument("--data", help="registry name or path (default: the data set in the ModelSpec)")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    p.add_argument("--backend", choices=("litert", "onnxruntime", "openvino", "keras"))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "tensorrt"))
    p.add_argument("--ten-crop", action="store_true",
                   help="average each image's 10 crops (corners, centre, mirrors); for models trained on "
                        "random patches (a crop step in the chain)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--out", metavar="DIR", help="write eval.json and confusion.png here")
    p.set_defaults(func=cmd_eval)


def label_map(data_names: list[str], model_names: tuple[str, ...]) -> np.ndarray | None:
    """Index map from the data set's classes to the model's, by name; None when identical."""
    from edgecv.errors import DataError
    if list(model_names) == list(data_names) or not model_names:
        return None
    missing = [n for n in data_names if n not in model_names]
    if missing:
        raise DataError(f"the data set's classes {missing} are not among the model's labels {list(model_names)}")
    return np.array([model_names.index(n) for n in data_names])


def evaluate_classifier(predictor, data: str, split_name: str, ten_crop: bool = False) -> dict:
    from edgecv import decode
    from edgecv.data import load, split
    from edgecv.scores import classification_report

    ds = load(data)
    method = predictor.spec.data.get("split") if data == predictor.spec.data.get("dataset") else None
    part = split(ds, split_name, method or ds.split_info)
    t0 = time.monotonic()
    if ten_crop:
        from edgecv.preprocess import ten_crops

        spec = predictor.spec
        x, y = part.load_arrays(lambda imgs: ten_crops(imgs, spec.preprocess, spec.input_shape))
        probs = decode.probabilities(spec, predictor.predict_arrays(x), len(x))
        probs = probs.reshape(len(probs) // 10, 10, -1).mean(axis=1)
    else:
        x, y = part.load_arrays(predictor.preprocess)
        probs = decode.probabilities(predictor.spec, predictor.predict_arrays(x), len(x))
    seconds = time.monotonic() - t0
    m = label_map(part.label_names, predictor.spec.labels)
    if m is not None:
        y = m[y]
    names = list(predictor.spec.labels) or part.label_names
    report = classification_report(probs, np.asarray(y), names)
    report.update({"model": str(predictor.path), "data": str(data), "split": split_name, "ten_crop": ten_crop,
                   "skipped": len(part.skipped), "seconds": round(seconds, 2)})
    return report


def cmd_eval(args: argparse.Namespace) -> int:
    from edgecv.spec import atomic_write_text

    from .predict import Predictor

    model = args.model or args.name
    with Predictor(model, backend=args.backend, device=args.device) as pred:
        data = args.data or pred.spec.data.get("dataset")
        if not data:
            from edgecv.errors import ConfigError
            raise ConfigError("--data is required: the model's spec names no data set")
        if pred.spec.task.startswith("captcha"):
            if args.ten_crop:
                from edgecv.errors import ConfigError
                raise ConfigError("--ten-crop is for image classifiers, not captcha models")
            from .captcha_eval import evaluate_captcha
            report = evaluate_captcha(pred.path, data, split=args.split)
        else:
            report = evaluate_classifier(pred, data, args.split, ten_crop=args.ten_crop)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "eval.json", json.dumps(report, indent=1))
        if "confusion_matrix" in report:
            from edgecv.scores import plot_confusion
            plot_confusion(report["confusion_matrix"], report["labels"], str(out / "confusion.png"))
    if args.json:
        print(json.dumps(report))
        return 0
    print_report(report)
    return 0


def print_report(r: dict) -> None:
    w = sys.stdout.write
    w(f"model {r.get('model')}  data {r.get('data')} [{r.get('split')}]  n={r.get('n')}\n")
    if "per_class" in r:
        w(f"accuracy {100 * r['accuracy']:.2f}%" + (f"   rank-5 {100 * r['rank5']:.2f}%" if "rank5" in r else "") + "\n")
        w(f"{'class':<14}{'precision':>10}{'recall':>10}{'f1':>8}{'support':>9}\n")
        for name, c in r["per_class"].items():
            w(f"{name:<14}{c['precision']:>10.3f}{c['recall']:>10.3f}{c['f1']:>8.3f}{c['support']:>9}\n")
        if r.get("skipped"):
            w(f"{r['skipped']} unreadable image(s) skipped\n")
    else:
        for k, v in r.items():
            if not isinstance(v, (dict, list)):
                w(f"{k}: {v}\n")
