"""Training a classifier from a TrainConfig into a run directory.

RUN/ config.yaml (resolved config), model.keras (best validation), spec.json (ModelSpec),
history.json + curves.png (every epoch), eval.json (test split), ckpt/ (per-epoch, for --resume).
Keras 3 APIs only, so the same code trains on TensorFlow here and on JAX on a GPU machine.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecv.data import load, split
from edgecv.errors import ConfigError, DataError
from edgecv.preprocess import apply_chain, default_chain
from edgecv.spec import ModelSpec, atomic_write_text, file_sha256

from .config import DATA_DEFAULTS, TrainConfig

log = logging.getLogger("edgecv.train")


def make_optimizer(cfg: TrainConfig):
    import keras
    o = cfg.optimizer
    kw: dict[str, Any] = {"learning_rate": cfg.lr}
    if cfg.weight_decay:
        kw["weight_decay"] = cfg.weight_decay
    if o == "sgd":
        return keras.optimizers.SGD(momentum=cfg.momentum, nesterov=cfg.nesterov, **kw)
    cls = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop,
           "adagrad": keras.optimizers.Adagrad, "adadelta": keras.optimizers.Adadelta,
           "nadam": keras.optimizers.Nadam}[o]
    return cls(**kw)


def _pydataset():
    import keras
    return keras.utils.PyDataset


class ArraySequence(_pydataset()):
    """In-memory batches: reshuffled every epoch, augmented on the fly, with per-sample weights.

    Each batch draws from its own generator seeded by (seed, epoch, index), so batches are the
    same whether Keras builds them in order or in `workers` threads (OpenCV's warpAffine releases
    the GIL, so threads overlap augmentation with the accelerator's step).

    Data parallel (`shard=(devices, process_id, processes)`): every batch, the last one too, holds a
    multiple of the device count, because each device takes an equal slice (a ragged last batch
    fails to shard). So each epoch leaves out `len(x) % devices` images (fewer than the device
    count), a different few every epoch since the order is reshuffled. With several processes each
    yields its own contiguous slice of every global batch; all draw the same order."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, augment=None,
                 class_weight: dict[int, float] | None = None, seed: int = 0,
                 patch: tuple[int, int] | None = None, epoch: int = 0,
                 shard: tuple[int, int, int] = (1, 0, 1), targets: np.ndarray | None = None,
                 mixup: float = 0.0, **kw):
        super().__init__(**kw)
        self.x, self.y, self.batch_size, self.augment = x, y, batch_size, augment
        # Soft targets (train/targets.py) are what a batch yields in place of the labels; the labels
        # still choose the class weights. mixup blends within each batch, after augmentation.
        self.targets, self.mixup = targets, mixup
        self.devices, self.process_id, self.processes = shard
        self.used = len(x) - len(x) % self.devices
        self.patch = patch  # (h, w): a random crop of each image, x holding larger images
        self.w = None if class_weight is None else np.array([class_weight[int(c)] for c in y], np.float32)
        # Seed sequences take non-negative ints: a negative --seed maps to its 64-bit pattern.
        self.seed, self.epoch = int(seed) & (2**64 - 1), int(epoch)
        self.order = np.random.default_rng([self.seed, self.epoch]).permutation(len(x))

    def __len__(self):
        return int(np.ceil(self.used / self.batch_size))

    def __getitem__(self, i):
        idx = self.order[i * self.batch_size:min((i + 1) * self.batch_size, self.used)]
        key = [self.seed, self.epoch, i]
        if self.processes > 1:
            k = len(idx) // self.processes
            idx = idx[self.process_id * k:(self.process_id + 1) * k]
            key.append(self.process_id)  # each process's slice gets its own augmentation draws
        xb = self.x[idx]
        rng = np.random.default_rng(key)
        if self.patch is not None:
            xb = random_patches(xb, self.patch, rng)
        if self.augment is not None:
            xb = self.augment(xb, rng)
        yb = self.y[idx] if self.targets is None else self.targets[idx]
        wb = None if self.w is None else self.w[idx]
        if self.mixup:
            from .targets import mixup
            xb, yb, wb = mixup(xb, yb, wb, self.mixup, rng)
        return (xb, yb) if wb is None else (xb, yb, wb)

    def on_epoch_end(self):
        self.epoch += 1
        self.order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))


def random_patches(x: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One random (h, w) crop of each NxHxWxC image (PatchPreprocessor, per batch)."""
    h, w = size
    n, ih, iw = x.shape[:3]
    ys, xs = rng.integers(0, ih - h + 1, n), rng.integers(0, iw - w + 1, n)
    return np.stack([x[i, y:y + h, x0:x0 + w] for i, (y, x0) in enumerate(zip(ys, xs))])


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill data-set defaults (input size, colour, resize mode) the user did not set."""
    defaults = DATA_DEFAULTS.get(Path(str(cfg.data)).name if cfg.data not in DATA_DEFAULTS else cfg.data, {})
    if cfg.input_size is None:
        cfg.input_size = list(defaults.get("input_size", [32, 32]))
    if cfg.colour is None:
        cfg.colour = defaults.get("colour", "bgr")
    if cfg.resize == "stretch" and "resize" in defaults:
        cfg.resize = defaults["resize"]
    return cfg.validate()


def channel_means(x: np.ndarray) -> list[float]:
    """Per-channel means of an NxHxWxC batch, accumulated in float64: a float32 sum along the
    strided axis stops growing at 2**24 (CIFAR-10's 46M values per channel all came out 0.364)."""
    return x.reshape(-1, x.shape[-1]).mean(axis=0, dtype=np.float64).tolist()


def class_weights(y: np.ndarray, n: int) -> dict[int, float]:
    """Inverse-frequency weights, normalised so the weighted sample count is unchanged."""
    counts = np.bincount(y, minlength=n).astype(np.float64)
    if (counts == 0).any():
        raise DataError(f"class(es) {np.flatnonzero(counts == 0).tolist()} have no training images")
    w = counts.sum() / (n * counts)
    return {i: float(w[i]) for i in range(n)}


def load_splits(cfg: TrainConfig):
    """(train, val, test) ImageSets; test is None when the split has none."""
    ds = load(cfg.data)
    if ds.kind != "classify":
        raise DataError(f"{cfg.data} is a {ds.kind} data set; `train classify` needs class labels")
    method = cfg.split or ds.split_info
    tr, va = split(ds, "train", method), split(ds, "val", method)
    te = split(ds, "test", method)
    if cfg.max_train:
        rng = np.random.default_rng(cfg.seed)
        tr = tr.subset(np.sort(rng.permutation(len(tr))[:cfg.max_train]))
    for part, s in (("train", tr), ("val", va)):
        if len(s) == 0:
            raise DataError(f"{cfg.data}: the {part} split is empty")
    return ds, tr, va, (te if len(te) else None), method


def train(cfg: TrainConfig) -> Path:
    """Train per `cfg`; returns the run directory."""
    from .devices import (Predictor, needs_step_barrier, require_jax_if_chosen, set_up, step_barrier_callback,
                          validation_callback)
    require_jax_if_chosen()  # before keras is imported: KERAS_BACKEND=jax without JAX is one line
    import keras

    from .augment import PRESETS
    from .callbacks import (BestCheckpoint, EpochCheckpoint, LRSchedule, TrainingMonitor,
                            latest_checkpoint, save_model_atomic)
    from .nets import create_model
    from .schedules import make_schedule

    cfg = resolve(cfg)
    run = Path(cfg.out)
    ckpt_dir = run / "ckpt"
    resume_from = latest_checkpoint(ckpt_dir) if cfg.resume else None
    if cfg.resume and resume_from is None:
        raise ConfigError(f"--resume: no complete checkpoint in {ckpt_dir}")
    if not cfg.resume and (run / "model.keras").exists():
        raise ConfigError(f"{run} already holds a trained model; use another --out or --resume")
    if cfg.aug not in PRESETS:
        from edgecv.errors import unknown
        raise ConfigError(unknown("augmentation preset", cfg.aug, PRESETS))
    if run.exists() and not run.is_dir():
        raise ConfigError(f"--out {run}: exists and is not a folder")
    # Before any model exists and before any JAX computation (joining other processes must come
    # first): the devices, the processes joined, the distribution set.
    plan = set_up(cfg)
    if plan is not None:
        cfg.devices = plan.local  # the resolved count ("all" on this machine) goes into config.yaml
    keras.utils.set_random_seed(cfg.seed)

    t0 = time.monotonic()
    ds, tr, va, te, method = load_splits(cfg)
    h, w = cfg.input_size
    shape = (h, w, 1 if cfg.colour == "gray" else 3)
    chain = default_chain(shape, mode=cfg.resize, colour=cfg.colour)
    patch = None
    if cfg.patch_from is not None:
        # Training images at the larger size; the deployable chain resizes to it, then centre-crops.
        big = (*cfg.patch_from, shape[2])
        train_chain = default_chain(big, mode=cfg.resize, colour=cfg.colour)
        k = next(i for i, st in enumerate(train_chain) if st["op"] == "resize")
        chain = train_chain[:k + 1] + [{"op": "crop", "size": [h, w]}] + train_chain[k + 1:]
        patch = (h, w)
        xtr, ytr = tr.load_arrays(lambda imgs: apply_chain(imgs, train_chain, big))
    else:
        xtr, ytr = tr.load_arrays(lambda imgs: apply_chain(imgs, chain, shape))
    xva, yva = va.load_arrays(lambda imgs: apply_chain(imgs, chain, shape))
    if cfg.mean:
        means = channel_means(xtr)
        chain.append({"op": "mean", "values": means})
        xtr -= np.asarray(means, np.float32)
        xva -= np.asarray(means, np.float32)
    classes = len(ds.label_names)
    skipped = len(tr.skipped) + len(va.skipped)
    log.info("data %s: %d train, %d val%s (%.1fs)%s", cfg.data, len(xtr), len(xva),
             f", {len(te)} test" if te is not None else "", time.monotonic() - t0,
             f"; {skipped} unreadable image(s) skipped" if skipped else "")
    from .targets import one_hot, training_targets
    targets = training_targets(cfg, tr, ytr, classes, method, ds.label_names,
                               flip=bool(getattr(PRESETS[cfg.aug], "hflip", False)))
    soft = targets is not None

    # The run folder is made only now that the data loaded: a bad --data or --teacher leaves nothing behind.
    run.mkdir(parents=True, exist_ok=True)
    used = "" if plan is None else (f"# devices used: {', '.join(plan.devices)} (jax, {plan.processes} "
                                    f"process(es), {plan.batch_size // plan.count} images per device and step)\n")
    atomic_write_text(run / "config.yaml", used + cfg.to_yaml())

    schedule = make_schedule(cfg.schedule, cfg.lr, cfg.epochs, **cfg.schedule_kw)
    initial_epoch, history, best, best_epoch = 0, [], None, None
    if resume_from is not None:
        path, state = resume_from
        model = keras.saving.load_model(path, safe_mode=True)
        initial_epoch, history, best, best_epoch = (state["epoch"], state["history"], state["best"],
                                                    state.get("best_epoch"))
        log.info("resuming from %s (epoch %d, lr %.3g)", path.name, initial_epoch, schedule(initial_epoch))
    else:
        model = create_model(cfg.arch, shape, classes, **cfg.model_kw)
        model.compile(optimizer=make_optimizer(cfg),
                      loss="categorical_crossentropy" if soft else "sparse_categorical_crossentropy",
                      metrics=["accuracy"])

    monitor = TrainingMonitor(run, history)
    mode = "min" if "loss" in cfg.monitor else "max"
    best_ckpt = BestCheckpoint(run / "model.keras", cfg.monitor, mode, best)
    best_ckpt.best_epoch = best_epoch
    callbacks = [LRSchedule(schedule), monitor, best_ckpt, EpochCheckpoint(ckpt_dir, best_ckpt, monitor)]
    cw = class_weights(ytr, classes) if cfg.class_weight else None
    # Starting at initial_epoch, a resumed run sees exactly the batches an unbroken run would have.
    shard = (1, 0, 1) if plan is None else (plan.count, plan.process_id, plan.processes)
    seq = ArraySequence(xtr, ytr, cfg.batch_size, PRESETS[cfg.aug], cw, seed=cfg.seed, patch=patch,
                        epoch=initial_epoch, shard=shard, workers=cfg.workers, targets=targets,
                        mixup=cfg.mixup)
    validation: tuple | None = (xva, one_hot(yva, classes) if soft else yva)
    if plan is not None:
        callbacks.insert(0, validation_callback(plan, xva, yva))  # before the callbacks that read val_*
        if needs_step_barrier(plan):
            callbacks.insert(0, step_barrier_callback())
        validation = None
    t_fit = time.monotonic()
    if initial_epoch < cfg.epochs:
        model.fit(seq, validation_data=validation, epochs=cfg.epochs, initial_epoch=initial_epoch,
                  callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)
    fit_s = time.monotonic() - t_fit
    if cfg.keep == "last" or not (run / "model.keras").exists():
        # The books keep the final weights; and a metric that never improved left no best file.
        save_model_atomic(model, run / "model.keras")

    best_model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    if plan is None:
        def predict(x):
            return best_model.predict(x, batch_size=256, verbose=0)
    else:
        predict = Predictor(plan, best_model)
    name = cfg.name or run.name
    spec = ModelSpec(name=name, task=cfg.task, input_shape=shape, colour=cfg.colour, preprocess=chain,
                     labels=ds.label_names, arch=cfg.arch, source_hash=file_sha256(run / "model.keras"),
                     data={"dataset": str(cfg.data), "split": {k: v for k, v in dict(method).items() if k != "parts"}},
                     metrics={"best_epoch": best_ckpt.best_epoch, cfg.monitor: best_ckpt.best})
    devices = ({"backend": keras.backend.backend(), "count": 1} if plan is None
               else plan.record(dropped_per_epoch=len(xtr) % plan.count))
    report: dict[str, Any] = {"model": str(run / "model.keras"), "fit_seconds": round(fit_s, 1),
                              "epochs": cfg.epochs, "best_epoch": best_ckpt.best_epoch, "devices": devices}
    from edgecv.scores import classification_report
    val_probs = predict(xva)
    report["val"] = classification_report(val_probs, yva, ds.label_names)
    if te is not None:
        xte, yte = te.load_arrays(lambda imgs: apply_chain(imgs, chain, shape))
        report["test"] = classification_report(predict(xte), yte, ds.label_names)
        if patch is not None:
            from edgecv.preprocess import ten_crops
            x10, y10 = te.load_arrays(lambda imgs: ten_crops(imgs, chain, shape))
            p10 = predict(x10)
            p10 = p10.reshape(len(p10) // 10, 10, -1).mean(axis=1)
            report["test_10crop"] = classification_report(p10, y10, ds.label_names)
    metrics = dict(spec.metrics)
    metrics["val_accuracy"] = report["val"]["accuracy"]
    if "test" in report:
        metrics["test_accuracy"] = report["test"]["accuracy"]
        metrics["test_n"] = report["test"]["n"]
    if "test_10crop" in report:
        metrics["test_accuracy_10crop"] = report["test_10crop"]["accuracy"]
    spec = spec.replace(metrics=metrics)
    spec.save(run / "spec.json")
    atomic_write_text(run / "eval.json", json.dumps(report, indent=1))
    summary = {"run": str(run), "epochs": cfg.epochs, "fit_seconds": round(fit_s, 1),
               "val_accuracy": round(report["val"]["accuracy"], 4), "devices": devices}
    if "test" in report:
        summary["test_accuracy"] = round(report["test"]["accuracy"], 4)
    if "test_10crop" in report:
        summary["test_accuracy_10crop"] = round(report["test_10crop"]["accuracy"], 4)
    if skipped:
        summary["skipped_images"] = skipped
    print(json.dumps(summary))
    return run
