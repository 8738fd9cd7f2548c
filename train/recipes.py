"""Named training recipes: `edgecv train smile` is `train classify` with these defaults.

Each value here was chosen by the ablations in docs/results.md; flags still override them."""
from __future__ import annotations

from typing import Any

RECIPES: dict[str, dict[str, Any]] = {
    # The Starter Bundle's smile case study trains LeNet on 28x28 faces (89.3 +- 1.3% on unseen
    # faces here). The ablations (docs/results.md, 3 seeds each) moved to MiniVGGNet at 48x48 with
    # light augmentation, class weights, Adam with polynomial decay over 50 epochs and the
    # best-validation weights: 93.96 +- 0.48% on the same test split.
    "smile": {"task": "smile", "arch": "minivggnet", "data": "smiles", "epochs": 50, "batch_size": 64,
              "optimizer": "adam", "lr": 0.001, "schedule": "poly", "aug": "light", "class_weight": True,
              "input_size": [48, 48], "colour": "gray", "monitor": "val_accuracy", "name": "smile"},
}
