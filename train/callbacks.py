"""Training callbacks: a monitor (history.json + curves.png every epoch), a best-model checkpoint,
per-epoch checkpoints for exact resume, and the learning-rate schedule.

Every file is written to a temporary name, fsync'ed and renamed, so a SIGKILL at any moment leaves
the previous complete file in place: no corrupt checkpoint is ever the latest.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Callable

import keras

from edgecv.spec import atomic_write_text

log = logging.getLogger(__name__)

CKPT_RE = re.compile(r"^epoch-(\d{4})\.keras$")


def save_model_atomic(model: keras.Model, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
    try:
        model.save(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _jsonable(logs: dict) -> dict:
    return {k: (float(v) if v is not None else None) for k, v in (logs or {}).items()}


class TrainingMonitor(keras.callbacks.Callback):
    """Appends each epoch's logs to history.json and redraws curves.png (Starter Bundle ch. 18)."""

    def __init__(self, run_dir: Path, history: list[dict] | None = None):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.history = list(history or [])

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **_jsonable(logs)}
        row["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.history = [h for h in self.history if h["epoch"] < epoch + 1] + [row]
        atomic_write_text(self.run_dir / "history.json", json.dumps(self.history, indent=1))
        plot_curves(self.history, self.run_dir / "curves.png")


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        vals = [h.get(key) for h in history]
        if any(v is not None and math.isfinite(v) for v in vals):
            ax.plot(epochs, vals, label=key, marker="." if len(epochs) < 30 else None)
    ax.set_xlabel("epoch")
    ax.set_title("training loss and accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model whenever the monitored metric improves (model.keras in the run dir)."""

    def __init__(self, path: Path, monitor: str = "val_accuracy", mode: str = "max", best: float | None = None):
        super().__init__()
        self.path, self.monitor, self.mode = Path(path), monitor, mode
        self.best = best if best is not None else (-math.inf if mode == "max" else math.inf)
        self.best_epoch: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        value = float(value)
        if (value > self.best) if self.mode == "max" else (value < self.best):
            self.best, self.best_epoch = value, epoch + 1
            save_model_atomic(self.model, self.path)


class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch: ckpt/epoch-NNNN.json (state) then ckpt/epoch-NNNN.keras (model + optimizer).

    The latest checkpoint is the highest N for which both files exist; older ones are pruned.
    """

    def __init__(self, ckpt_dir: Path, best: BestCheckpoint, monitor: TrainingMonitor, keep: int = 2):
        super().__init__()
        self.dir, self.best, self.monitor, self.keep = Path(ckpt_dir), best, monitor, keep
        self.dir.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        n = epoch + 1
        state = {"epoch": n, "best": self.best.best, "best_epoch": self.best.best_epoch,
                 "history": self.monitor.history}
        atomic_write_text(self.dir / f"epoch-{n:04d}.json", json.dumps(state))
        save_model_atomic(self.model, self.dir / f"epoch-{n:04d}.keras")
        for old in sorted(self.dir.glob("epoch-*.keras"))[:-self.keep]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)


def latest_checkpoint(ckpt_dir: Path) -> tuple[Path, dict] | None:
    """The newest complete checkpoint (model and state both present) and its state."""
    found = []
    for p in Path(ckpt_dir).glob("epoch-*.keras"):
        m = CKPT_RE.match(p.name)
        if m and p.with_suffix(".json").exists():
            found.append((int(m.group(1)), p))
    # Newest first; a state file that does not parse (a disk fault: atomic writes never leave one)
    # is passed over for the checkpoint before it rather than ending --resume with a traceback.
    for _, path in sorted(found, reverse=True):
        try:
            return path, json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError) as e:
            log.warning("checkpoint %s: unreadable state (%s); trying the one before", path.name, e)
    return None


class LRSchedule(keras.callbacks.Callback):
    """Sets the optimizer's learning rate from `schedule(epoch)` at each epoch's start."""

    def __init__(self, schedule: Callable[[int], float]):
        super().__init__()
        self.schedule = schedule

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate.assign(self.schedule(epoch))
