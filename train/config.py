"""TrainConfig: the dataclass is the truth; `--config FILE` (YAML) sets values; flags override.
The run directory records the resolved config as config.yaml."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from edgecv.errors import ConfigError, unknown
from edgecv.safeio import read_text_limited

OPTIMIZERS = ("sgd", "adam", "rmsprop", "adagrad", "adadelta", "nadam")
CONFIG_LIMIT = 1024 * 1024  # a training config is a few hundred bytes
MAX_SIDE = 4096  # input_size / patch_from: larger is a typo (an HxWxC float batch would not fit memory)


@dataclass
class TrainConfig:
    arch: str = "lenet"
    data: str = "mnist"
    out: str = "runs/run"
    task: str = "classify"
    name: str | None = None
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.001
    optimizer: str = "adam"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "none"
    schedule_kw: dict[str, Any] = field(default_factory=dict)
    aug: str = "none"
    input_size: list[int] | None = None       # [H, W]; default from the data set
    colour: str | None = None                 # gray | bgr | rgb; default from the data set
    resize: str = "stretch"                   # stretch | aspect | pad
    # [H, W] larger than input_size: images are resized to it, training takes a random input-size
    # patch of each (per batch), evaluation the centre crop, plus the 10-crop average in eval.json
    # (Practitioner Bundle: random patches against overfitting, 10-crop test-time evaluation).
    patch_from: list[int] | None = None
    mean: bool = False                        # subtract training-split channel means
    class_weight: bool = False
    # Soft targets (train/targets.py): label smoothing, mixup's Beta alpha (0 = off), and
    # distillation from trained run directories: the weight of their averaged probabilities in the
    # target and the temperature that flattens them.
    label_smoothing: float = 0.0
    mixup: float = 0.0
    teachers: list[str] = field(default_factory=list)
    distill: float | None = None              # with teachers: 0.5 when not set
    distill_temperature: float | None = None  # with teachers: 1 when not set
    split: dict[str, Any] | None = None       # None: the data set's own (official or hash)
    model_kw: dict[str, Any] = field(default_factory=dict)
    seed: int = 42
    monitor: str = "val_accuracy"
    keep: str = "best"                        # best (validation) | last (the books' recipes)
    resume: bool = False
    max_train: int | None = None              # cap on training images (quick runs and tests)
    workers: int = 1                          # threads building batches (>1 overlaps augmentation with a GPU step)
    # Data parallel (train/devices.py, docs/scale.md): devices per process, "all" or N (JAX backend
    # when not 1); several processes (hosts) join through the coordinator of process 0.
    devices: int | str = 1
    coordinator: str | None = None            # HOST:PORT of process 0
    num_processes: int | None = None
    process_id: int | None = None

    def __post_init__(self) -> None:
        check_types(self)

    @classmethod
    def from_yaml(cls, path: str | Path) -> dict[str, Any]:
        if not Path(path).exists():
            raise ConfigError(f"config file {path} does not exist")
        text = read_text_limited(path, "config file", CONFIG_LIMIT)
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of option: value")
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(str(k) for k in set(data) - known)
        if bad:
            raise ConfigError(f"config file {path}: unknown option(s) {', '.join(bad)}")
        return data

    def validate(self) -> "TrainConfig":
        """Types (check_types) and the values that only make sense together; the architecture's name
        too, so a typo fails before the run directory is made."""
        check_types(self)
        if not self.teachers and (self.distill is not None or self.distill_temperature is not None):
            raise ConfigError("distill / distill_temperature need at least one teacher (--teacher RUN)")
        if self.patch_from is not None and self.input_size is not None and \
                any(p < i for p, i in zip(self.patch_from, self.input_size)):
            raise ConfigError(f"--patch-from H W must be at least the input size {self.input_size}; "
                              f"got {self.patch_from}")
        import inspect

        from .nets import get_builder
        params = inspect.signature(get_builder(self.arch)).parameters
        bad = [k for k in self.model_kw if k not in params or k in ("input_shape", "classes")]
        if bad:  # create_model says the same, but only after the run folder exists
            allowed = [p for p in params if p not in ("input_shape", "classes")]
            raise ConfigError(f"model_kw: model {self.arch!r} takes no option(s) {', '.join(map(str, bad))}; "
                              f"it takes: {', '.join(allowed) or 'none'}")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)


# Sensible per-data-set defaults: input size, colour, resize mode, augmentation preset.
DATA_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist": {"input_size": [28, 28], "colour": "gray"},
    "smiles": {"input_size": [28, 28], "colour": "gray"},
    "ezpass": {"input_size": [28, 28], "colour": "gray", "resize": "pad"},
    "cifar10": {"input_size": [32, 32], "colour": "bgr"},
    "animals": {"input_size": [32, 32], "colour": "bgr", "resize": "aspect"},
}


# --- typed checks: one line per bad field, before anything is written ------------------------------
def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _host_port(v: Any) -> bool:
    if not isinstance(v, str) or ":" not in v:
        return False
    host, port = v.rsplit(":", 1)
    return host != "" and port.isdigit() and 1 <= int(port) <= 65_535


def _size(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_int(x) and 8 <= x <= MAX_SIDE for x in v)


# field -> (test, what a good value is). Enumerations name their allowed set.
def _choice(*allowed: str | None):
    return (lambda v: v in allowed, "one of " + ", ".join("null" if a is None else a for a in allowed))


def _rules() -> dict[str, tuple[Callable[[Any], bool], str]]:
    from .augment import PRESETS
    from .schedules import SCHEDULES

    return {
        "arch": (lambda v: isinstance(v, str) and v != "", "a model name (see `edgecv train list`)"),
        "data": (lambda v: isinstance(v, str) and v != "", "a data set name or path"),
        "out": (lambda v: isinstance(v, str) and v != "", "a folder path"),
        "task": (lambda v: isinstance(v, str), "a string"),
        "name": (lambda v: v is None or isinstance(v, str), "a string"),
        "epochs": (lambda v: _int(v) and 1 <= v <= 100_000, "an integer from 1 to 100000"),
        "batch_size": (lambda v: _int(v) and 1 <= v <= 65_536, "an integer from 1 to 65536"),
        "lr": (lambda v: _num(v) and v > 0, "a number > 0"),
        "optimizer": _choice(*OPTIMIZERS),
        "momentum": (lambda v: _num(v) and 0 <= v < 1, "a number from 0 to below 1"),
        "nesterov": (lambda v: isinstance(v, bool), "true or false"),
        "weight_decay": (lambda v: _num(v) and v >= 0, "a number >= 0"),
        "schedule": _choice(*SCHEDULES),
        "schedule_kw": (lambda v: isinstance(v, dict), "a mapping of option: value"),
        "aug": _choice(*PRESETS),
        "input_size": (lambda v: v is None or _size(v), f"[H, W], each an integer from 8 to {MAX_SIDE}"),
        "colour": _choice(None, "gray", "bgr", "rgb"),
        "resize": _choice("stretch", "aspect", "pad"),
        "patch_from": (lambda v: v is None or _size(v), f"[H, W], each an integer from 8 to {MAX_SIDE}"),
        "mean": (lambda v: isinstance(v, bool), "true or false"),
        "class_weight": (lambda v: isinstance(v, bool), "true or false"),
        "label_smoothing": (lambda v: _num(v) and 0 <= v < 1, "a number from 0 to below 1"),
        "mixup": (lambda v: _num(v) and 0 <= v <= 100, "a number from 0 (off) to 100"),
        "teachers": (lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
                     "a list of training run directories"),
        "distill": (lambda v: v is None or (_num(v) and 0 < v <= 1), "a number in (0, 1]"),
        "distill_temperature": (lambda v: v is None or (_num(v) and 0 < v <= 100), "a number in (0, 100]"),
        "split": (lambda v: v is None or isinstance(v, dict), "a mapping or null"),
        "model_kw": (lambda v: isinstance(v, dict), "a mapping of option: value"),
        "seed": (lambda v: _int(v), "an integer"),
        "monitor": (lambda v: isinstance(v, str) and v != "", "a metric name"),
        "keep": _choice("best", "last"),
        "resume": (lambda v: isinstance(v, bool), "true or false"),
        "max_train": (lambda v: v is None or (_int(v) and v >= 1), "an integer >= 1 or null"),
        "workers": (lambda v: _int(v) and 1 <= v <= 256, "an integer from 1 to 256"),
        "devices": (lambda v: v == "all" or (_int(v) and 1 <= v <= 65_536), "all or an integer from 1"),
        "coordinator": (lambda v: v is None or _host_port(v), "HOST:PORT or null"),
        "num_processes": (lambda v: v is None or (_int(v) and 1 <= v <= 65_536), "an integer >= 1 or null"),
        "process_id": (lambda v: v is None or (_int(v) and v >= 0), "an integer >= 0 or null"),
    }


def check_types(cfg: TrainConfig) -> None:
    """Every field against its rule; ConfigError listing each bad field on its own line. A tuple of
    two integers is taken as the list it stands for, and a number written as a string (YAML reads
    `lr: 1e-3` as one) as that number; nothing else is converted."""
    bad = []
    rules = _rules()
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, tuple):
            v = list(v)
            setattr(cfg, f.name, v)
        if f.name in ("lr", "momentum", "weight_decay", "label_smoothing", "mixup", "distill",
                      "distill_temperature") and isinstance(v, str):
            try:
                setattr(cfg, f.name, float(v))
                v = getattr(cfg, f.name)
            except ValueError:
                pass
        test, what = rules[f.name]
        try:
            ok = bool(test(v))
        except TypeError:
            ok = False
        if not ok:
            if f.name == "optimizer" and isinstance(v, str):
                bad.append(f"optimizer: {unknown('optimizer', v, OPTIMIZERS)}")
            else:
                bad.append(f"{f.name}: expected {what}; got {v!r}")
    if bad:
        many = f"{len(bad)} bad options:\n  " if len(bad) > 1 else ""
        raise ConfigError(many + "\n  ".join(bad))
    check_schedule_kw(cfg.schedule, cfg.schedule_kw)


# schedule -> its options and what each must be (train.schedules.make_schedule reads these).
SCHEDULE_OPTIONS: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "none": {},
    "step": {"factor": (lambda v: _num(v) and 0 < v <= 1, "a number in (0, 1]"),
             "drop_every": (lambda v: _int(v) and v >= 1, "an integer >= 1")},
    "poly": {"power": (lambda v: _num(v) and v > 0, "a number > 0")},
    "cosine": {"warmup": (lambda v: _int(v) and v >= 0, "an integer >= 0 (epochs)"),
               "floor": (lambda v: _num(v) and 0 <= v < 1, "a number from 0 to below 1 (of lr)")},
    "piecewise": {"boundaries": (lambda v: isinstance(v, list) and all(_int(x) and x >= 0 for x in v),
                                 "a list of epoch numbers"),
                  "values": (lambda v: isinstance(v, list) and len(v) > 0 and all(_num(x) and x > 0 for x in v),
                             "a list of learning rates > 0")},
}


def check_schedule_kw(schedule: str, kw: dict[str, Any]) -> None:
    """schedule_kw against its schedule: unknown keys and bad values are errors, never ignored."""
    allowed = SCHEDULE_OPTIONS.get(schedule, {})
    bad = []
    for k, v in kw.items():
        if k not in allowed:
            bad.append(f"schedule_kw: schedule {schedule!r} takes no option {k!r}; it takes: "
                       f"{', '.join(allowed) or 'none'}")
            continue
        test, what = allowed[k]
        if not test(v):
            bad.append(f"schedule_kw.{k}: expected {what}; got {v!r}")
    if schedule == "piecewise" and not bad and "boundaries" in kw and "values" in kw \
            and len(kw["values"]) != len(kw["boundaries"]) + 1:
        bad.append("schedule_kw: piecewise needs one more value than boundaries")
    if bad:
        raise ConfigError("\n  ".join(bad) if len(bad) == 1 else f"{len(bad)} bad options:\n  " + "\n  ".join(bad))
