"""Named training recipes: `edgecv train smile` is `train classify` with these defaults.

Each value here was chosen by the ablations in docs/results.md; flags still override them."""
from __future__ import annotations

from typing import Any

RECIPES: dict[str, dict[str, Any]] = {
    # The Starter Bundle's smile case study (LeNet on 28x28 gray faces) plus what the ablations
    # showed buys accuracy on unseen faces: class weights, light augmentation, best-val weights.
    "smile": {"task": "smile", "arch": "lenet", "data": "smiles", "epochs": 30, "batch_size": 64,
              "optimizer": "adam", "lr": 0.001, "schedule": "none", "aug": "light", "class_weight": True,
              "input_size": [28, 28], "colour": "gray", "monitor": "val_accuracy", "name": "smile"},
}
