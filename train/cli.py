"""`edgecv train classify|smile|...`: argument parsing only; TensorFlow is imported when a command runs."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

EXAMPLES = """examples:
  edgecv train classify --arch lenet --data mnist --epochs 5 --out runs/mnist-lenet
  edgecv train classify --config configs/cifar10-minivggnet.yaml --out runs/cifar-vgg
  edgecv train classify --arch lenet --data mnist --epochs 5 --out runs/mnist-lenet --resume
  edgecv train smile --data smiles --out runs/smile
  KERAS_BACKEND=jax edgecv train classify --arch lenet --data mnist --devices all --out runs/mnist-dp
"""


def _kv(text: str) -> tuple[str, Any]:
    import yaml
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k, yaml.safe_load(v)


def _devices(text: str) -> int | str:
    if text == "all":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected all or a number of devices >= 1, got {text!r}")
    return n


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML file of options (flags override it)")
    p.add_argument("--arch", help="network from the registry (see `edgecv train list`)")
    p.add_argument("--data", help="registry name or path (folder, zip, SMILES layout, .npz, .h5)")
    p.add_argument("--out", help="run directory to create")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="initial learning rate")
    p.add_argument("--optimizer", help="sgd | adam | rmsprop | adagrad | adadelta | nadam")
    p.add_argument("--momentum", type=float)
    p.add_argument("--nesterov", action="store_true", default=None)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", help="none | step | poly | piecewise | cosine")
    p.add_argument("--aug", help="augmentation preset: none | light | digits | cifar | shift-flip | strong")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--patch-from", type=int, nargs=2, metavar=("H", "W"),
                   help="resize images to H W and train on random input-size patches; evaluate the centre "
                        "crop and the 10-crop average")
    p.add_argument("--colour", choices=("gray", "bgr", "rgb"))
    p.add_argument("--resize", choices=("stretch", "aspect", "pad"))
    p.add_argument("--mean", action="store_true", default=None, help="subtract training-split channel means")
    p.add_argument("--class-weight", action="store_true", default=None, help="inverse-frequency class weights")
    p.add_argument("--label-smoothing", type=float, metavar="S", help="train toward (1 - S) * one-hot + S / classes")
    p.add_argument("--mixup", type=float, metavar="ALPHA", help="blend each batch image with another; Beta(ALPHA, "
                   "ALPHA) weights (0.2 is usual; 0 = off)")
    p.add_argument("--teacher", dest="teachers", action="append", metavar="RUN",
                   help="distil from this trained run directory (repeat for an ensemble); same data and split")
    p.add_argument("--distill", type=float, metavar="W", help="weight of the teachers' probabilities in the "
                   "target (default 0.5)")
    p.add_argument("--distill-temperature", type=float, metavar="T", help="flatten the teachers' probabilities "
                   "(softmax of logits / T; default 1)")
    p.add_argument("--model-kw", type=_kv, action="append", metavar="KEY=VALUE",
                   help="architecture option, e.g. --model-kw dropout=0.5")
    p.add_argument("--keep", choices=("best", "last"), help="keep the best-validation (default) or last weights")
    p.add_argument("--seed", type=int)
    p.add_argument("--max-train", type=int, help="use at most N training images (quick runs)")
    p.add_argument("--workers", type=int, help="threads building augmented batches (default 1; more on a GPU)")
    p.add_argument("--name", help="model name recorded in the ModelSpec")
    p.add_argument("--devices", type=_devices, metavar="all|N",
                   help="data parallel over N (or all) devices of this process; not 1 needs KERAS_BACKEND=jax")
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="several processes (hosts): process 0's address, the same for every process")
    p.add_argument("--num-processes", type=int, metavar="N", help="with --coordinator: how many processes")
    p.add_argument("--process-id", type=int, metavar="I", help="with --coordinator: this process, 0 to N-1")
    p.add_argument("--resume", action="store_true", default=None,
                   help="continue a killed run from its last epoch checkpoint")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (needs the [train] extra)",
                       description="Train models with Keras 3 into a run directory.", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s = p.add_subparsers(dest="train_command", metavar="RECIPE", required=True)
    c = s.add_parser("classify", help="an image classifier", epilog=EXAMPLES,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(c)
    c.set_defaults(func=cmd_train, recipe=None)
    sm = s.add_parser("smile", help="the smile detector (LeNet on SMILES faces)")
    _add_common(sm)
    sm.set_defaults(func=cmd_train, recipe="smile")
    fx = s.add_parser("features", help="extract a trained net's features to HDF5, then logistic regression")
    fx.add_argument("--source", required=True, help="run directory or .keras of a trained net")
    fx.add_argument("--data", required=True)
    fx.add_argument("--out", required=True, help="folder for train/val/test.h5 and report.json")
    fx.add_argument("--cut", help="layer whose output is the feature (default: before Flatten/GAP)")
    fx.add_argument("--overwrite", action="store_true")
    fx.set_defaults(func=cmd_features)
    ft = s.add_parser("finetune", help="network surgery: new FCHeadNet, warm-up, then unfreeze the top")
    ft.add_argument("--source", required=True, help="run directory or .keras of a trained net")
    ft.add_argument("--data", required=True)
    ft.add_argument("--out", required=True)
    ft.add_argument("--head-epochs", type=int, default=15)
    ft.add_argument("--tune-epochs", type=int, default=30)
    ft.add_argument("--seed", type=int, default=42)
    ft.set_defaults(func=cmd_finetune)
    en = s.add_parser("ensemble", help="evaluate the average of several trained runs")
    en.add_argument("runs", nargs="+", metavar="RUN")
    en.add_argument("--data")
    en.add_argument("--split", default="test", choices=("val", "test"))
    en.set_defaults(func=cmd_ensemble)
    ls = s.add_parser("list", help="list the registered architectures")
    ls.set_defaults(func=cmd_list)
    try:
        from edgecv.train.captcha import add_train_parsers
    except ImportError:
        pass
    else:
        add_train_parsers(s)


def config_from_args(args: argparse.Namespace):
    from .config import TrainConfig
    from .recipes import RECIPES

    values: dict[str, Any] = dict(RECIPES.get(args.recipe or "", {}))
    if args.config:
        values.update(TrainConfig.from_yaml(args.config))
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None and f.name != "model_kw":
            values[f.name] = list(v) if isinstance(v, tuple) else v
    if args.model_kw:
        values["model_kw"] = {**values.get("model_kw", {}), **dict(args.model_kw)}
    if "out" not in values:
        from edgecv.errors import ConfigError
        raise ConfigError("--out RUN_DIR is required (or `out:` in the config file)")
    return TrainConfig(**values)


def cmd_train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from .trainer import train
    train(cfg)
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    import json

    from edgecv.spec import atomic_write_text

    from .transfer import extract_features, logistic_regression
    extract_features(args.source, args.data, args.out, cut=args.cut, overwrite=args.overwrite)
    report = logistic_regression(args.out)
    atomic_write_text(f"{args.out}/report.json", json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("accuracy", "n", "best_C", "split", "fit_seconds")
                      if k in report} | ({"rank5": report["rank5"]} if "rank5" in report else {})))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    import json

    from .transfer import fine_tune
    r = fine_tune(args.source, args.data, args.out, head_epochs=args.head_epochs, tune_epochs=args.tune_epochs,
                  seed=args.seed)
    print(json.dumps({"head_val_accuracy": r["head_val_accuracy"], "tuned_val_accuracy": r["tuned_val_accuracy"],
                      "test_accuracy": r.get("test", {}).get("accuracy"), "fit_seconds": r["fit_seconds"]}))
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    import json

    from .ensemble import evaluate_ensemble
    print(json.dumps(evaluate_ensemble(args.runs, args.data, args.split)))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .nets import get_builder, list_models
    for name in list_models():
        doc = (get_builder(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:<16} {doc}")
    return 0
