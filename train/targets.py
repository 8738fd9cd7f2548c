"""Soft training targets: label smoothing, mixup and distillation from trained teachers.

Each replaces a training image's one-hot label with a distribution, and the model is trained toward
it with categorical cross-entropy (the exported graph is unchanged: these exist only in training).

- label smoothing: (1 - s) * one-hot + s / classes, so the model is not pushed to ever-larger logits
  on labels that may be wrong (SMILES has faces whose label is debatable);
- distillation: the targets are blended with the average class probabilities of trained teachers
  (larger nets, other seeds) on the same image; `temperature` > 1 flattens them, as in Hinton et
  al. (2015), so the student also learns which faces the teachers found ambiguous;
- mixup (Zhang et al., 2018): each batch image is blended with another of the same batch, and so
  are their targets and sample weights.

The teachers' probabilities are computed once per training image, before training, with each
teacher's own preprocessing chain (a 48x48 teacher sees 48x48 faces while a 32x32 student learns).
Augmentation then changes the student's view but not its target: a small rotation or shift does not
change whether a face smiles, and a mirror neither, so each teacher's target is the mean over the
image and its mirror when the augmentation flips."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecv.errors import ConfigError

log = logging.getLogger("edgecv.train")


def one_hot(y: np.ndarray, classes: int) -> np.ndarray:
    out = np.zeros((len(y), classes), np.float32)
    out[np.arange(len(y)), np.asarray(y, np.int64)] = 1.0
    return out


def soften(p: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T): what the teacher's softmax would give at temperature T, from its
    probabilities (its logits up to a constant per row)."""
    logp = np.log(np.clip(p.astype(np.float64), 1e-12, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    e = np.exp(logp)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def soft_targets(y: np.ndarray, classes: int, smoothing: float = 0.0, teacher: np.ndarray | None = None,
                 distill: float = 0.0, temperature: float = 1.0) -> np.ndarray:
    """N x classes float32 targets, each row summing to 1."""
    t = one_hot(y, classes) * (1.0 - smoothing) + smoothing / classes
    if teacher is not None:
        t = (1.0 - distill) * t + distill * soften(teacher, temperature)
    return t.astype(np.float32)


def mixup(x: np.ndarray, t: np.ndarray, w: np.ndarray | None, alpha: float, rng: np.random.Generator):
    """Blend each image with another of the batch: lambda ~ Beta(alpha, alpha) per image, folded to
    >= 0.5 so every mixed image still mostly shows its own face (its target says so too)."""
    n = len(x)
    lam = rng.beta(alpha, alpha, n).astype(np.float32)
    lam = np.maximum(lam, 1.0 - lam)
    j = rng.permutation(n)
    lx = lam.reshape((n,) + (1,) * (x.ndim - 1))
    xm = lx * x + (1.0 - lx) * x[j]
    tm = lam[:, None] * t + (1.0 - lam[:, None]) * t[j]
    wm = None if w is None else lam * w + (1.0 - lam) * w[j]
    return xm.astype(x.dtype, copy=False), tm, wm


def teacher_probabilities(teachers: Sequence[str], image_set, dataset: str, split_method: dict,
                          labels: Sequence[str], flip: bool) -> np.ndarray:
    """The mean class probabilities of trained run directories on `image_set`'s images, each teacher
    fed through its own ModelSpec chain. A teacher must come from the same data set and split as the
    student: one trained on another split may have seen the student's test faces."""
    import keras

    from edgecv.modelfile import load_spec
    from edgecv.preprocess import apply_chain

    want = {k: v for k, v in dict(split_method).items() if k != "parts"}
    probs = []
    for t in teachers:
        run = Path(t)
        model_file = run / "model.keras" if run.is_dir() else run
        if not model_file.exists() or model_file.suffix != ".keras":
            raise ConfigError(f"teacher {t}: not a training run directory (no model.keras)")
        spec = load_spec(run)
        if list(spec.labels) != list(labels):
            raise ConfigError(f"teacher {t}: labels {list(spec.labels)} differ from the data set's {list(labels)}")
        seen = spec.data or {}
        if Path(str(seen.get("dataset"))).name != Path(str(dataset)).name or seen.get("split") != want:
            raise ConfigError(f"teacher {t}: trained on {seen.get('dataset')!r} split {seen.get('split')!r}, not "
                              f"this run's {dataset!r} split {want!r} (it may have seen this run's test images)")
        model = keras.saving.load_model(model_file, safe_mode=True)
        x, _ = image_set.load_arrays(lambda imgs, s=spec: apply_chain(imgs, s.preprocess, s.input_shape))
        p = model.predict(x, batch_size=256, verbose=0)
        if flip:
            p = 0.5 * (p + model.predict(x[:, :, ::-1], batch_size=256, verbose=0))
        probs.append(np.asarray(p, np.float64))
    return np.mean(probs, axis=0).astype(np.float32)


def training_targets(cfg: Any, image_set, y: np.ndarray, classes: int, split_method: dict,
                     labels: Sequence[str], flip: bool) -> np.ndarray | None:
    """The soft targets a TrainConfig asks for (label_smoothing, mixup, teachers), or None when it
    asks for none and training keeps its integer labels."""
    if not (cfg.label_smoothing or cfg.mixup or cfg.teachers):
        return None
    teacher = None
    if cfg.teachers:
        teacher = teacher_probabilities(cfg.teachers, image_set, cfg.data, split_method, labels, flip)
        log.info("teachers: %d, agreeing with %.2f%% of the training labels", len(cfg.teachers),
                 100 * float(np.mean(teacher.argmax(1) == y)))
    return soft_targets(y, classes, cfg.label_smoothing, teacher,
                        0.5 if cfg.distill is None else cfg.distill,
                        1.0 if cfg.distill_temperature is None else cfg.distill_temperature)
