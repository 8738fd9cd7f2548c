"""Transfer learning from our own trained nets (no ImageNet weights can be fetched here).

- Feature extraction (Practitioner ch. 3): a trained net's body turns images into vectors, stored
  in HDF5; logistic regression with a grid search over C classifies them (rank-1 / rank-5).
- Fine-tuning with network surgery (ch. 5): cut the head, attach FCHeadNet, warm up the head with
  the body frozen, then unfreeze the top blocks at a lower learning rate.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecv.data import load, split
from edgecv.errors import ConfigError, DataError
from edgecv.modelfile import load_spec
from edgecv.preprocess import apply_chain
from edgecv.scores import classification_report
from edgecv.spec import ModelSpec, atomic_write_text, file_sha256

log = logging.getLogger("edgecv.train.transfer")


def body_output(model, cut: str | int | None = None):
    """The layer whose output is the body's features: `cut` by name or index, else the last layer
    before the first Flatten / GlobalAveragePooling2D (the books' "include_top=False")."""
    import keras
    if cut is not None:
        try:
            return model.get_layer(cut) if isinstance(cut, str) else model.layers[cut]
        except (ValueError, IndexError):
            raise ConfigError(f"no layer {cut!r} in {model.name}; layers: "
                              + ", ".join(l.name for l in model.layers)) from None
    for i, layer in enumerate(model.layers):
        if isinstance(layer, (keras.layers.Flatten, keras.layers.GlobalAveragePooling2D)):
            return model.layers[i - 1]
    raise ConfigError(f"{model.name}: no Flatten/GlobalAveragePooling2D to cut at; pass cut=LAYER")


def feature_extractor(model, cut: str | int | None = None, pool: bool = True):
    """A Keras model image -> feature vector (global average pooled when the body ends in a map)."""
    import keras
    layer = body_output(model, cut)
    out = layer.output
    if pool and len(out.shape) == 4:
        out = keras.layers.GlobalAveragePooling2D()(out)
    return keras.Model(model.inputs, out, name=f"{model.name}_features")


def _load_source(run: str | Path):
    import keras
    run = Path(run)
    path = run / "model.keras" if run.is_dir() else run
    model = keras.saving.load_model(path, safe_mode=True)
    return model, load_spec(run if run.is_dir() else path)


def _arrays(data: str, which: str, spec: ModelSpec, method=None):
    ds = load(data)
    part = split(ds, which, method or ds.split_info)
    x, y = part.load_arrays(lambda imgs: apply_chain(imgs, spec.preprocess, spec.input_shape))
    return x, np.asarray(y), ds.label_names


def extract_features(source: str | Path, data: str, out: str | Path, cut: str | int | None = None,
                     batch_size: int = 256, overwrite: bool = False) -> dict[str, Path]:
    """Write OUT/{train,val,test}.h5 with the body's features of each split (edgecv HDF5 layout,
    dataset "features")."""
    from .hdf5 import HDF5DatasetWriter
    model, spec = _load_source(source)
    fx = feature_extractor(model, cut)
    out = Path(out)
    paths = {}
    for which in ("train", "val", "test"):
        x, y, names = _arrays(data, which, spec)
        if len(x) == 0:
            continue
        feats = fx.predict(x, batch_size=batch_size, verbose=0)
        with HDF5DatasetWriter(out / f"{which}.h5", feats.shape, data_key="features", dtype="float32",
                               overwrite=overwrite) as w:
            w.store_class_labels(names)
            w.add(feats, y)
        paths[which] = out / f"{which}.h5"
    return paths


def logistic_regression(features_dir: str | Path, cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0, 100.0),
                        jobs: int = 1) -> dict[str, Any]:
    """Grid-search C on train (3-fold CV), refit, report rank-1/rank-5 on test (else val)."""
    import h5py
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    d = Path(features_dir)

    def read(which):
        with h5py.File(d / f"{which}.h5", "r") as db:
            return db["features"][:], db["labels"][:], json.loads(db.attrs["label_names"])

    xtr, ytr, names = read("train")
    which = "test" if (d / "test.h5").exists() else "val"
    xte, yte, _ = read(which)
    t0 = time.monotonic()
    grid = GridSearchCV(LogisticRegression(max_iter=2000), {"C": list(cs)}, cv=3, n_jobs=jobs)
    grid.fit(xtr, ytr)
    probs = grid.best_estimator_.predict_proba(xte)
    report = classification_report(probs, yte, names)
    report.update({"best_C": grid.best_params_["C"], "split": which, "fit_seconds": round(time.monotonic() - t0, 1)})
    return report


def fine_tune(source: str | Path, data: str, out: str | Path, classes: int | None = None,
              cut: str | int | None = None, head_epochs: int = 15, tune_epochs: int = 30,
              unfreeze_from: str | int | None = None, lr_head: float = 1e-3, lr_tune: float = 1e-4,
              batch_size: int = 32, aug: str = "light", seed: int = 42) -> dict[str, Any]:
    """Network surgery: body of `source` + FCHeadNet; head warm-up (body frozen), then the top of
    the body unfrozen (`unfreeze_from`: first layer to train; default: the last conv block)."""
    import keras

    from .augment import PRESETS
    from .callbacks import save_model_atomic
    from .nets import create_model
    from .trainer import ArraySequence

    keras.utils.set_random_seed(seed)
    model, spec = _load_source(source)
    xtr, ytr, names = _arrays(data, "train", spec)
    xva, yva, _ = _arrays(data, "val", spec)
    xte, yte, _ = _arrays(data, "test", spec)
    if len(xtr) == 0 or len(xva) == 0:
        raise DataError(f"{data}: empty train or val split")
    n_cls = classes or len(names)
    body_layer = body_output(model, cut)
    body = keras.Model(model.inputs, body_layer.output)
    head = create_model("fchead", tuple(body_layer.output.shape[1:]), n_cls)
    net = keras.Model(body.inputs, head(body.outputs[0]), name=f"{model.name}_surgery")
    for layer in body.layers:
        layer.trainable = False
    seq = ArraySequence(xtr, ytr, batch_size, PRESETS[aug], seed=seed)
    net.compile(optimizer=keras.optimizers.RMSprop(lr_head), loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
    t0 = time.monotonic()
    h1 = net.fit(seq, validation_data=(xva, yva), epochs=head_epochs, verbose=2)
    # Unfreeze the top of the body: from `unfreeze_from`, else from the last Conv2D's block.
    layers = body.layers
    if unfreeze_from is None:
        convs = [i for i, l in enumerate(layers) if isinstance(l, keras.layers.Conv2D)]
        start = convs[-2] if len(convs) >= 2 else 0
    else:
        start = layers.index(body.get_layer(unfreeze_from)) if isinstance(unfreeze_from, str) else unfreeze_from
    for layer in layers[start:]:
        if not isinstance(layer, keras.layers.BatchNormalization):  # keep BN statistics frozen
            layer.trainable = True
    net.compile(optimizer=keras.optimizers.SGD(lr_tune, momentum=0.9), loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
    h2 = net.fit(seq, validation_data=(xva, yva), epochs=head_epochs + tune_epochs, initial_epoch=head_epochs,
                 verbose=2)
    seconds = time.monotonic() - t0
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_model_atomic(net, out / "model.keras")
    report = {"source": str(source), "data": data, "fit_seconds": round(seconds, 1),
              "head_val_accuracy": float(h1.history["val_accuracy"][-1]),
              "tuned_val_accuracy": float(h2.history["val_accuracy"][-1])}
    if len(xte):
        report["test"] = classification_report(net.predict(xte, verbose=0), yte, names)
    new_spec = spec.replace(name=out.name, labels=tuple(names), arch=f"{spec.arch}+fchead",
                            source_hash=file_sha256(out / "model.keras"),
                            data={"dataset": data, "split": load(data).split_info},
                            metrics={"test_accuracy": report.get("test", {}).get("accuracy")})
    new_spec.save(out / "spec.json")
    atomic_write_text(out / "eval.json", json.dumps(report, indent=1))
    return report
