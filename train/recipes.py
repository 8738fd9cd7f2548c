"""Named training recipes: `edgecv train smile` is `train classify` with these defaults.

Each value here was chosen by the ablations in docs/results.md; flags still override them."""
from __future__ import annotations

from typing import Any

RECIPES: dict[str, dict[str, Any]] = {
    # The Starter Bundle's smile case study trains LeNet on 28x28 faces (89.3 +- 1.3% on unseen
    # faces here). The ablations (docs/results.md, 3 seeds each) moved to MiniVGGNet with light
    # augmentation, class weights, Adam with polynomial decay over 50 epochs and the best-validation
    # weights: 93.24 +- 0.36% at 32x32 (93.96 +- 0.48% at 48x48, but 2.3x the compute and a 4.8M
    # parameter model, too big for the shipped zoo).
    "smile": {"task": "smile", "arch": "minivggnet", "data": "smiles", "epochs": 50, "batch_size": 64,
              "optimizer": "adam", "lr": 0.001, "schedule": "poly", "aug": "light", "class_weight": True,
              "input_size": [32, 32], "colour": "gray", "monitor": "val_accuracy", "name": "smile"},
}
