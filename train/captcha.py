"""Training the two CAPTCHA models.

- `edgecv train captcha --data ezpass --out RUN`: the Starter Bundle's case study, LeNet on
  28x28 digit crops (padded to square). Digit crops cut from the captchas held out for evaluation
  are left out of training (see `ezpass_holdout`), so the whole-captcha check is honest.
- `edgecv train captcha-ctc --data captcha-v2 --out RUN`: a CRNN (train/nets/crnn.py) with CTC
  loss through `keras.ops.ctc_loss`, so it trains on any Keras 3 backend.

Both write RUN/{model.keras, spec.json, config.yaml, history.json, eval.json} like `train classify`.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecv.data import dataset_root, load, split
from edgecv.errors import ConfigError, DataError
from edgecv.preprocess import apply_chain
from edgecv.spec import ModelSpec, atomic_write_text, file_sha256

log = logging.getLogger("edgecv.train.captcha")

DIGIT_LABELS = tuple("123456789")
CTC_INPUT = (50, 200)

EXAMPLES = """examples:
  edgecv train captcha --data ezpass --out runs/captcha-ezpass
  nice edgecv train captcha-ctc --data captcha-v2 --out runs/captcha-v2
"""


# -- shared --------------------------------------------------------------------------------------

def _prepare_run(out: str | None, args: argparse.Namespace) -> Path:
    if not out:
        raise ConfigError("--out RUN_DIR is required")
    run = Path(out)
    if (run / "model.keras").exists():
        raise ConfigError(f"{run} already holds a trained model; use another --out")
    run.mkdir(parents=True, exist_ok=True)
    import yaml
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
           if k not in ("func",) and not callable(v)}
    atomic_write_text(run / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    return run


def _save_model(model, path: Path) -> None:
    from .callbacks import save_model_atomic
    save_model_atomic(model, path)


def _write_history(run: Path, history: list[dict]) -> None:
    atomic_write_text(run / "history.json", json.dumps(history, indent=1))


# -- digits (ezpass) -----------------------------------------------------------------------------

def digits_chain(size: int = 28) -> list[dict[str, Any]]:
    # "pad" fits the long side and edge-replicates to square, as the book's preprocess() does.
    return [{"op": "gray"}, {"op": "resize", "size": [size, size], "mode": "pad", "interp": "area"},
            {"op": "scale", "factor": 1 / 255.0}]


def train_digits(args: argparse.Namespace) -> Path:
    """LeNet on ezpass digit crops, evaluated on whole held-out captchas. Returns the run dir."""
    import keras

    from .augment import Augment
    from .callbacks import BestCheckpoint, TrainingMonitor
    from .nets import create_model
    from .trainer import ArraySequence

    if str(args.data) != "ezpass" and not (Path(str(args.data)) / "digits").is_dir():
        raise DataError(f"{args.data}: `train captcha` needs the ezpass layout (digits/1..9 and raw/)")
    root = dataset_root("ezpass") if str(args.data) == "ezpass" else Path(str(args.data))
    run = _prepare_run(args.out, args)
    keras.utils.set_random_seed(args.seed)
    from edgecv.data.captchas import EZPASS_LABELS, ezpass_holdout, read_labels_csv
    rows = read_labels_csv(EZPASS_LABELS)
    held = ezpass_holdout(rows)
    excluded = {c for r in rows if r["file"] in held for c in r["crops"].split()}
    ds = load(root)
    keep = [i for i, p in enumerate(ds.images) if f"{p.parent.name}/{p.name}" not in excluded]
    if not keep:
        raise DataError(f"{root}: no digit crops left for training")
    ds = ds.subset(keep)
    chain = digits_chain()
    shape = (28, 28, 1)
    tr, va = split(ds, "train", {"method": "hash", "val": 0.15, "test": 0.0}), \
        split(ds, "val", {"method": "hash", "val": 0.15, "test": 0.0})
    xtr, ytr = tr.load_arrays(lambda ims: apply_chain(ims, chain, shape))
    xva, yva = va.load_arrays(lambda ims: apply_chain(ims, chain, shape))
    log.info("ezpass digits: %d train, %d val crops; %d crops of %d held-out captchas left out",
             len(xtr), len(xva), len(excluded), len(held))

    # The book's LeNet with a narrower dense layer: 500 units make a 1.3 MB int8 file for no gain
    # on these clean glyphs; 128 keep it near 350 KB.
    model = create_model("lenet", shape, len(DIGIT_LABELS), dense=args.dense)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=args.lr, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history: list[dict] = []
    best = BestCheckpoint(run / "model.keras", "val_accuracy", "max")
    # Small shifts, rotations and zooms stand in for the segmenter's box jitter on new captchas.
    aug = Augment(rotation=5, shift=0.08, shear=0.05, zoom=0.08, hflip=False)
    seq = ArraySequence(xtr, ytr, args.batch_size, aug, seed=args.seed)
    t0 = time.monotonic()
    model.fit(seq, validation_data=(xva, yva), epochs=args.epochs,
              callbacks=[TrainingMonitor(run, history), best], verbose=1 if sys.stdout.isatty() else 2)
    fit_s = time.monotonic() - t0
    if not (run / "model.keras").exists():
        _save_model(model, run / "model.keras")
    # Calibration data for int8 export (`edgecv export RUN --calib RUN/calib.npy`): training crops
    # only, since the data set's own split would hand the exporter digits of held-out captchas.
    np.save(run / "calib.npy", xtr[np.random.default_rng(args.seed).permutation(len(xtr))[:200]])
    spec = ModelSpec(name=args.name or "captcha-ezpass", task="captcha-digits", input_shape=shape, colour="gray",
                     preprocess=chain, labels=DIGIT_LABELS, arch="lenet",
                     source_hash=file_sha256(run / "model.keras"),
                     data={"dataset": "ezpass", "train_crops": len(xtr), "val_crops": len(xva),
                           "held_out_captchas": sorted(held)},
                     extra={"digits": 4, "segmenter": "threshold-contours", "dense": args.dense})
    spec.save(run / "spec.json")

    # Whole-captcha check on the held-out raw captchas, through the same solver users run.
    from edgecv.apps.captcha import Solver
    from edgecv.textscore import score_texts
    solver = Solver.open(run / "model.keras")
    truth = {r["file"]: r["label"] for r in rows}
    files = sorted(held)
    results = [solver.solve_file(root / "raw" / f) for f in files]
    report = score_texts([r.text for r in results], [truth[f] for f in files],
                         [r.confidence for r in results])
    report["wrong"] = [{"file": f, "label": truth[f], "text": r.text, "error": r.error}
                       for f, r in zip(files, results) if r.text != truth[f]]
    report.update({"fit_seconds": round(fit_s, 1), "epochs": args.epochs, "best_epoch": best.best_epoch,
                   "val_digit_accuracy": best.best, "held_out": "labels.csv 50 + hash-test share of raw/"})
    metrics = {"val_digit_accuracy": best.best, "heldout_sequence_accuracy": report["sequence_accuracy"],
               "heldout_char_accuracy": report["char_accuracy"], "heldout_cer": report["cer"],
               "heldout_n": report["n"]}
    spec.replace(metrics=metrics).save(run / "spec.json")
    atomic_write_text(run / "eval.json", json.dumps(report, indent=1))
    print(json.dumps({"run": str(run), "fit_seconds": round(fit_s, 1), **metrics}))
    return run


# -- CTC (captcha-v2) ----------------------------------------------------------------------------

def ctc_chain(h: int, w: int) -> list[dict[str, Any]]:
    return [{"op": "gray"}, {"op": "resize", "size": [h, w], "mode": "stretch", "interp": "area"},
            {"op": "scale", "factor": 1 / 255.0}]


def make_ctc_loss(blank: int):
    """A Keras loss: y_true is N x L class indices padded with -1, y_pred N x T x K logits."""
    from keras import ops

    def ctc(y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        valid = ops.cast(y_true >= 0, "int32")
        target_len = ops.sum(valid, axis=1)
        target = y_true * valid     # padding -> class 0; ignored past target_len
        out_len = ops.ones_like(target_len) * y_pred.shape[1]
        return ops.ctc_loss(target, y_pred, target_len, out_len, mask_index=blank)

    return ctc


class _CTCValidation:
    """Per-epoch greedy decoding of the validation split; saves the inference model (softmax
    output) whenever sequence accuracy improves (ties: lower val loss), or with select="last"
    after every epoch, never stopping early, so that the validation split chooses nothing and
    stays as unseen as the test split."""

    def __new__(cls, *a, **kw):
        import keras

        class Impl(keras.callbacks.Callback):
            def __init__(self, infer, x, texts, charset, path, history, run, patience, select="best"):
                super().__init__()
                self.select = select
                self.infer, self.x, self.texts, self.charset = infer, x, texts, charset
                self.path, self.history, self.run, self.patience = path, history, run, patience
                self.best = (-1.0, float("inf"))
                self.best_epoch = None
                self.wait = 0

            def on_epoch_end(self, epoch, logs=None):
                from edgecv.ctc import greedy_decode
                probs = self.infer.predict(self.x, batch_size=64, verbose=0)
                pred = [d.text for d in greedy_decode(probs, self.charset)]
                acc = float(np.mean([p == t for p, t in zip(pred, self.texts)]))
                logs = dict(logs or {})
                logs["val_seq_accuracy"] = acc
                self.history.append({"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}})
                _write_history(self.run, self.history)
                key = (acc, -float(logs.get("val_loss", 0.0)))
                if self.select == "last":
                    self.best = (acc, float(logs.get("val_loss", 0.0)))
                    self.best_epoch = epoch + 1
                    _save_model(self.infer, self.path)
                elif key > (self.best[0], -self.best[1]):
                    self.best = (acc, float(logs.get("val_loss", 0.0)))
                    self.best_epoch = epoch + 1
                    self.wait = 0
                    _save_model(self.infer, self.path)
                else:
                    self.wait += 1
                print(f"epoch {epoch + 1}: loss {logs.get('loss', float('nan')):.4f} "
                      f"val_loss {logs.get('val_loss', float('nan')):.4f} val_seq_acc {acc:.4f}", flush=True)
                # Patience counts only once learning has started: the loss sits flat for a dozen
                # epochs first, and stopping there would keep a model that reads nothing.
                if self.select == "best" and self.best[0] > 0 and self.wait >= self.patience:
                    self.model.stop_training = True

        return Impl(*a, **kw)


def ctc_augment(kind: str = "affine"):
    from .augment import Augment, CaptchaAugment
    if kind == "captcha":
        return CaptchaAugment()
    # Small shifts/zooms/rotations; never flips (text reads left to right).
    return Augment(rotation=2, shift=0.03, shear=0.05, zoom=0.04, hflip=False)


def train_ctc(args: argparse.Namespace) -> Path:
    """CRNN + CTC on labelled captchas (file name = text). Returns the run directory."""
    import keras

    from edgecv.ctc import encode_labels
    from .nets import create_model
    from .nets import crnn as _crnn  # noqa: F401  (registers "crnn")
    from .trainer import ArraySequence

    ds = load(args.data)
    if ds.kind != "captcha":
        raise DataError(f"{args.data} is a {ds.kind} data set; `train captcha-ctc` needs captchas "
                        "labelled by file name (e.g. captcha-v2 or a folder of 2b827.png files)")
    run = _prepare_run(args.out, args)
    keras.utils.set_random_seed(args.seed)
    h, w = args.input_size
    shape = (h, w, 1)
    chain = ctc_chain(h, w)
    charset = args.charset or "".join(sorted(set("".join(ds.labels))))
    tr, va, te = (split(ds, s) for s in ("train", "val", "test"))
    if args.max_train:
        tr = tr.subset(np.arange(min(args.max_train, len(tr))))
    transform = lambda ims: apply_chain(ims, chain, shape)  # noqa: E731
    xtr, ttr = tr.load_arrays(transform)
    xva, tva = va.load_arrays(transform)
    ytr, yva = encode_labels(list(ttr), charset), encode_labels(list(tva), charset)
    log.info("%s: %d train, %d val, %d test captchas; charset %r", args.data, len(xtr), len(xva), len(te), charset)

    kw = dict(args.model_kw or {})
    model = create_model("crnn", shape, len(charset) + 1, **kw)
    t_steps = model.output_shape[1]
    longest = max(len(t) for t in list(ttr) + list(tva))
    if t_steps < 2 * longest:
        raise ConfigError(f"the model has {t_steps} time steps, too few for {longest}-character labels")
    trainer = keras.Model(model.input, model.get_layer("logits").output)
    seq = ArraySequence(xtr, ytr, args.batch_size, None if args.no_aug else ctc_augment(args.aug), seed=args.seed)
    lr = args.lr
    if args.schedule == "cosine":
        # Ends at 2 % of the start, so the last epoch's weights are settled enough to keep.
        lr = keras.optimizers.schedules.CosineDecay(args.lr, args.epochs * len(seq), alpha=0.02)
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=make_ctc_loss(len(charset)))
    history: list[dict] = []
    val = _CTCValidation(model, xva, list(tva), charset, run / "model.keras", history, run, args.patience,
                         args.select)
    t0 = time.monotonic()
    try:
        trainer.fit(seq, validation_data=(xva, yva), epochs=args.epochs, callbacks=[val], verbose=0)
        stopped = "max epochs" if len(history) >= args.epochs or args.select == "last" else f"no better val accuracy for {args.patience} epochs"
    except KeyboardInterrupt:
        # Ctrl+C ends a long run early but keeps what it learnt: the best checkpoint is complete.
        if not (run / "model.keras").exists():
            raise
        log.warning("interrupted at epoch %d: finishing with the best model so far (epoch %s)",
                    len(history), val.best_epoch)
        stopped = "interrupted (Ctrl+C)"
    fit_s = time.monotonic() - t0
    return finish_ctc(run, args, charset, shape, chain, int(t_steps), fit_s, history, val.best_epoch,
                      val.best[0], len(xtr), len(xva), te, stopped)


def finish_ctc(run: Path, args: argparse.Namespace, charset: str, shape: tuple[int, int, int],
               chain: list[dict[str, Any]], t_steps: int, fit_s: float, history: list[dict],
               best_epoch: int | None, best_val: float, n_train: int, n_val: int, te, stopped: str = "") -> Path:
    """Write spec.json and eval.json (test split) for a CTC run whose best model.keras is saved."""
    import keras

    from edgecv.ctc import greedy_decode
    from edgecv.textscore import score_texts

    transform = lambda ims: apply_chain(ims, chain, shape)  # noqa: E731
    best = keras.saving.load_model(run / "model.keras", safe_mode=True)
    spec = ModelSpec(name=args.name or "captcha-v2", task="captcha-ctc", input_shape=shape, colour="gray",
                     preprocess=chain, charset=charset, arch="crnn", source_hash=file_sha256(run / "model.keras"),
                     data={"dataset": str(args.data), "split": {"method": "hash", "val": 0.1, "test": 0.2},
                           "train": n_train, "val": n_val, "test": len(te)},
                     extra={"blank": len(charset), "time_steps": t_steps, "decoder": "greedy"})
    report: dict[str, Any] = {"fit_seconds": round(fit_s, 1), "epochs_run": len(history), "stopped": stopped,
                              "best_epoch": best_epoch, "val_seq_accuracy": best_val,
                              "select": getattr(args, "select", "best"), "aug": getattr(args, "aug", "affine"),
                              "schedule": getattr(args, "schedule", "constant")}
    if len(te):
        xte, tte = te.load_arrays(transform)
        dec = greedy_decode(best.predict(xte, batch_size=64, verbose=0), charset)
        report["test"] = score_texts([d.text for d in dec], list(tte), [d.confidence for d in dec])
        report["test"]["wrong"] = [{"label": t, "text": d.text, "confidence": d.confidence}
                                   for d, t in zip(dec, tte) if d.text != t]
    metrics = {"val_seq_accuracy": best_val, "best_epoch": best_epoch}
    if "test" in report:
        metrics.update({f"test_{k}": report["test"][k] for k in ("sequence_accuracy", "char_accuracy", "cer", "n")})
    spec.replace(metrics=metrics).save(run / "spec.json")
    atomic_write_text(run / "eval.json", json.dumps(report, indent=1))
    print(json.dumps({"run": str(run), "fit_seconds": round(fit_s, 1), **metrics}))
    return run


# -- CLI -----------------------------------------------------------------------------------------

def _kv(text: str):
    import yaml
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    v = yaml.safe_load(v)
    return k, tuple(v) if isinstance(v, list) else v


def _run_digits(args: argparse.Namespace) -> int:
    train_digits(args)
    return 0


def _run_ctc(args: argparse.Namespace) -> int:
    if args.model_kw:
        args.model_kw = dict(args.model_kw)
    train_ctc(args)
    return 0


def add_train_parsers(train_subparsers: argparse._SubParsersAction) -> None:
    """Register `edgecv train captcha` and `edgecv train captcha-ctc`."""
    fmt = argparse.RawDescriptionHelpFormatter
    d = train_subparsers.add_parser("captcha", help="LeNet digit classifier for the ezpass captchas",
                                    description=train_digits.__doc__, epilog=EXAMPLES, formatter_class=fmt)
    d.add_argument("--data", default="ezpass", help="ezpass, or a folder with its layout (raw/, digits/1..9)")
    d.add_argument("--out", required=True, help="run directory to create")
    d.add_argument("--epochs", type=int, default=15)
    d.add_argument("--batch-size", type=int, default=32)
    d.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (momentum 0.9)")
    d.add_argument("--dense", type=int, default=128, help="units of LeNet's dense layer (the book: 500)")
    d.add_argument("--seed", type=int, default=42)
    d.add_argument("--name", help="model name recorded in the ModelSpec (default captcha-ezpass)")
    d.set_defaults(func=_run_digits)

    c = train_subparsers.add_parser("captcha-ctc", help="CRNN + CTC for text captchas of any length",
                                    description=train_ctc.__doc__, epilog=EXAMPLES, formatter_class=fmt)
    c.add_argument("--data", default="captcha-v2", help="captcha-v2, or a folder of images named by their text")
    c.add_argument("--out", required=True, help="run directory to create")
    c.add_argument("--epochs", type=int, default=150, help="at most this many (early stop on val accuracy)")
    c.add_argument("--patience", type=int, default=25, help="epochs without a better val accuracy before stopping")
    c.add_argument("--batch-size", type=int, default=16)
    c.add_argument("--lr", type=float, default=0.001, help="Adam learning rate")
    c.add_argument("--input-size", type=int, nargs=2, default=list(CTC_INPUT), metavar=("H", "W"))
    c.add_argument("--charset", help="characters the model reads (default: those in the labels)")
    c.add_argument("--model-kw", type=_kv, action="append", metavar="KEY=VALUE",
                   help="CRNN option, e.g. --model-kw rnn=gru --model-kw rnn_units=[64]")
    c.add_argument("--no-aug", action="store_true", help="no augmentation at all")
    c.add_argument("--aug", choices=("affine", "captcha"), default="affine",
                   help="affine: small shifts/zooms/rotations; captcha: those plus an extra noise "
                        "stroke, blur and contrast (train/augment.py CaptchaAugment)")
    c.add_argument("--select", choices=("best", "last"), default="best",
                   help="best: keep the epoch with the best val accuracy (early stop by --patience); "
                        "last: run all --epochs and keep the last weights, so val stays unseen")
    c.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                   help="Adam learning rate: constant --lr, or cosine decay from --lr over --epochs")
    c.add_argument("--max-train", type=int, help="use at most N training captchas (quick runs)")
    c.add_argument("--seed", type=int, default=42)
    c.add_argument("--name", help="model name recorded in the ModelSpec (default captcha-v2)")
    c.set_defaults(func=_run_ctc)
