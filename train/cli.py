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
"""


def _kv(text: str) -> tuple[str, Any]:
    import yaml
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k, yaml.safe_load(v)


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
    p.add_argument("--schedule", help="none | step | poly | piecewise")
    p.add_argument("--aug", help="augmentation preset: none | light | digits | cifar | strong")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--colour", choices=("gray", "bgr", "rgb"))
    p.add_argument("--resize", choices=("stretch", "aspect", "pad"))
    p.add_argument("--mean", action="store_true", default=None, help="subtract training-split channel means")
    p.add_argument("--class-weight", action="store_true", default=None, help="inverse-frequency class weights")
    p.add_argument("--model-kw", type=_kv, action="append", metavar="KEY=VALUE",
                   help="architecture option, e.g. --model-kw dropout=0.5")
    p.add_argument("--keep", choices=("best", "last"), help="keep the best-validation (default) or last weights")
    p.add_argument("--seed", type=int)
    p.add_argument("--max-train", type=int, help="use at most N training images (quick runs)")
    p.add_argument("--name", help="model name recorded in the ModelSpec")
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


def cmd_list(args: argparse.Namespace) -> int:
    from .nets import get_builder, list_models
    for name in list_models():
        doc = (get_builder(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:<16} {doc}")
    return 0
