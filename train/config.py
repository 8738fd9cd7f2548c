"""TrainConfig: the dataclass is the truth; `--config FILE` (YAML) sets values; flags override.
The run directory records the resolved config as config.yaml."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgecv.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "rmsprop", "adagrad", "adadelta", "nadam")


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
    split: dict[str, Any] | None = None       # None: the data set's own (official or hash)
    model_kw: dict[str, Any] = field(default_factory=dict)
    seed: int = 42
    monitor: str = "val_accuracy"
    keep: str = "best"                        # best (validation) | last (the books' recipes)
    resume: bool = False
    max_train: int | None = None              # cap on training images (quick runs and tests)
    workers: int = 1                          # threads building batches (>1 overlaps augmentation with a GPU step)

    @classmethod
    def from_yaml(cls, path: str | Path) -> dict[str, Any]:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of option: value")
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(data) - known)
        if bad:
            raise ConfigError(f"config file {path}: unknown option(s) {', '.join(bad)}")
        return data

    def validate(self) -> "TrainConfig":
        if self.optimizer not in OPTIMIZERS:
            from edgecv.errors import unknown
            raise ConfigError(unknown("optimizer", self.optimizer, OPTIMIZERS))
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs and batch size must be >= 1 and lr > 0")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1; got {self.workers}")
        if self.keep not in ("best", "last"):
            raise ConfigError(f"keep must be 'best' or 'last'; got {self.keep!r}")
        if self.input_size is not None and (len(self.input_size) != 2 or min(self.input_size) < 8):
            raise ConfigError(f"input size must be H W >= 8; got {self.input_size}")
        if self.patch_from is not None:
            if len(self.patch_from) != 2 or (self.input_size is not None and
                                             any(p < i for p, i in zip(self.patch_from, self.input_size))):
                raise ConfigError(f"--patch-from H W must be at least the input size {self.input_size}; "
                                  f"got {self.patch_from}")
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
