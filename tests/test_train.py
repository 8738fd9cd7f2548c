"""Training through the CLI on real MNIST: the run directory, eval on it, SIGKILL + --resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import assert_clean_error, run_cli


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "lenet"
    proc = run_cli("train", "classify", "--arch", "lenet", "--data", "mnist", "--epochs", "2",
                   "--max-train", "2000", "--out", str(run))
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return run


def test_run_directory_is_complete(tiny_run):
    for name in ("config.yaml", "model.keras", "spec.json", "history.json", "curves.png", "eval.json"):
        assert (tiny_run / name).stat().st_size > 0, name
    spec = json.loads((tiny_run / "spec.json").read_text())
    assert spec["input_shape"] == [28, 28, 1] and spec["labels"] == list("0123456789")
    assert spec["data"]["dataset"] == "mnist"
    hist = json.loads((tiny_run / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    report = json.loads((tiny_run / "eval.json").read_text())
    assert report["test"]["n"] == 10000 and report["test"]["accuracy"] > 0.8


def test_eval_cli_json(tiny_run, tmp_path):
    proc = run_cli("eval", str(tiny_run), "--data", "mnist", "--split", "test", "--json", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out = json.loads(proc.stdout)
    assert out["n"] == 10000 and 0.8 < out["accuracy"] <= 1 and "rank5" in out
    assert len(out["confusion_matrix"]) == 10
    assert (tmp_path / "confusion.png").stat().st_size > 0
    # The same number as training's own evaluation of its best model.
    train_eval = json.loads((tiny_run / "eval.json").read_text())["test"]["accuracy"]
    assert abs(out["accuracy"] - train_eval) < 1e-6


def test_refuses_to_overwrite_a_run(tiny_run):
    proc = run_cli("train", "classify", "--arch", "lenet", "--data", "mnist", "--epochs", "1", "--out", str(tiny_run))
    assert_clean_error(proc, "already holds a trained model")


def test_sigkill_then_resume_continues_with_the_schedule(tmp_path):
    run = tmp_path / "killed"
    args = ["train", "classify", "--arch", "lenet", "--data", "mnist", "--epochs", "6", "--max-train", "3000",
            "--optimizer", "sgd", "--lr", "0.02", "--schedule", "step", "--out", str(run)]
    proc = subprocess.Popen([sys.executable, "-m", "edgecv", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (run / "ckpt" / "epoch-0002.keras").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from edgecv.train.callbacks import latest_checkpoint
    path, state = latest_checkpoint(run / "ckpt")
    assert 2 <= state["epoch"] < 6
    # No temporary file ever carries a checkpoint's final name.
    assert all(not p.name.startswith(".") for p in (run / "ckpt").iterdir() if p.suffix == ".keras"
               and p.name.startswith("epoch-"))
    done = run_cli(*args, "--resume")
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    hist = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4, 5, 6]
    from edgecv.train.schedules import step_decay
    sched = step_decay(0.02, 0.5, max(1, 6 // 4))
    for h in hist:
        assert h["lr"] == pytest.approx(sched(h["epoch"] - 1), rel=1e-5)


@pytest.mark.parametrize("argv, match", [
    (["train", "classify", "--epochs", "many", "--out", "x"], "invalid int value"),
    (["train", "classify", "--bogus"], "unrecognized arguments"),
    (["train", "classify", "--arch", "lenett", "--data", "mnist", "--out", "{tmp}/r"], "Did you mean 'lenet'"),
    (["train", "classify", "--arch", "lenet", "--data", "{tmp}/nope", "--out", "{tmp}/r"], "no such file"),
    (["train", "classify", "--config", "{tmp}/missing.yaml", "--out", "{tmp}/r"], "does not exist"),
    (["train", "classify", "--optimizer", "sgdd", "--data", "mnist", "--out", "{tmp}/r"], "Did you mean 'sgd'"),
    (["eval", "{tmp}/nope.keras", "--data", "mnist"], "no such model file"),
    (["eval", "{tmp}/garbage.keras", "--data", "mnist"], "not a loadable Keras model"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_cli_input_is_a_clean_error(tmp_path, argv, match):
    (tmp_path / "garbage.keras").write_bytes(os.urandom(2048))
    proc = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert_clean_error(proc, match)


def test_help_shows_examples():
    proc = run_cli("train", "classify", "--help")
    assert proc.returncode == 0 and b"examples:" in proc.stdout
    top = run_cli("--help")
    assert top.returncode == 0 and b"train" in top.stdout and b"eval" in top.stdout


@pytest.fixture(scope="module")
def small_animals(tmp_path_factory, data_dir):
    import shutil
    root = tmp_path_factory.mktemp("animals")
    for cls in ("cats", "dogs", "panda"):
        (root / cls).mkdir()
        for p in sorted((data_dir / "animals" / cls).glob("*.jpg"))[:60]:
            shutil.copy(p, root / cls / p.name)
    return root


def test_features_then_logistic_regression(tiny_run, small_animals, tmp_path):
    proc = run_cli("train", "features", "--source", str(tiny_run), "--data", str(small_animals),
                   "--out", str(tmp_path / "fx"))
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert out["n"] > 0 and 0.0 <= out["accuracy"] <= 1.0 and out["best_C"] > 0
    import h5py
    with h5py.File(tmp_path / "fx" / "train.h5") as db:
        assert db["features"].shape[1] == 50  # LeNet's last conv block has 50 filters (pooled)
        assert json.loads(db.attrs["label_names"]) == ["cats", "dogs", "panda"]


def test_finetune_surgery_writes_a_new_run(tiny_run, small_animals, tmp_path):
    out = tmp_path / "ft"
    proc = run_cli("train", "finetune", "--source", str(tiny_run), "--data", str(small_animals), "--out", str(out),
                   "--head-epochs", "1", "--tune-epochs", "1")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    spec = json.loads((out / "spec.json").read_text())
    assert spec["labels"] == ["cats", "dogs", "panda"] and spec["arch"] == "lenet+fchead"
    assert (out / "model.keras").stat().st_size > 0


def test_ensemble_needs_two_runs(tiny_run):
    assert_clean_error(run_cli("train", "ensemble", str(tiny_run)), "at least two")


def test_random_patch_training_and_ten_crop_evaluation(small_animals, tiny_run, tmp_path):
    """--patch-from: training on random patches of larger images; the spec deploys the centre crop,
    eval.json holds the 10-crop average too, and `edgecv eval --ten-crop` recomputes it."""
    run = tmp_path / "patch"
    proc = run_cli("train", "classify", "--arch", "shallownet", "--data", str(small_animals), "--epochs", "2",
                   "--input-size", "32", "32", "--patch-from", "40", "40", "--out", str(run))
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    spec = json.loads((run / "spec.json").read_text())
    ops = [s["op"] for s in spec["preprocess"]]
    assert ops[ops.index("resize"):ops.index("resize") + 2] == ["resize", "crop"]
    assert spec["preprocess"][ops.index("resize")]["size"] == [40, 40]
    report = json.loads((run / "eval.json").read_text())
    assert report["test_10crop"]["n"] == report["test"]["n"] > 0
    assert summary["test_accuracy_10crop"] == round(report["test_10crop"]["accuracy"], 4)
    proc = run_cli("eval", str(run), "--ten-crop", "--json")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    again = json.loads(proc.stdout.decode())
    assert again["ten_crop"] and abs(again["accuracy"] - report["test_10crop"]["accuracy"]) < 1e-6
    assert_clean_error(run_cli("train", "classify", "--arch", "shallownet", "--data", str(small_animals),
                               "--input-size", "32", "32", "--patch-from", "24", "24", "--out", str(tmp_path / "x")),
                       "must be at least the input size")
    assert_clean_error(run_cli("eval", str(tiny_run), "--ten-crop"), "needs a preprocess chain")


def _real_batch(data_dir, n=16):
    import cv2
    import numpy as np
    img = cv2.imread(str(data_dir / "videos" / "smile.jpg"))
    assert img is not None
    crops = [cv2.resize(img[y:y + 200, x:x + 200], (32, 32)) for y in (0, 100, 200) for x in range(0, 400, 100)]
    return np.stack(crops[:n]).astype(np.float32) / 255


def test_augment_presets_on_real_images(data_dir):
    import numpy as np
    from edgecv.train.augment import PRESETS, Augment
    x = _real_batch(data_dir, 12)
    # No transform at all: warpAffine with the identity returns the pixels unchanged.
    same = Augment(rotation=0, shift=0, shear=0, zoom=0, hflip=False)(x, np.random.default_rng(0))
    np.testing.assert_array_equal(same, x)
    # Flips only: every image is either itself or its mirror, and both happen.
    flipped = Augment(rotation=0, shift=0, shear=0, zoom=0, hflip=True)(np.repeat(x, 4, 0), np.random.default_rng(1))
    mirrored = [np.array_equal(f, o[:, ::-1]) for f, o in zip(flipped, np.repeat(x, 4, 0))]
    kept = [np.array_equal(f, o) for f, o in zip(flipped, np.repeat(x, 4, 0))]
    assert all(m or k for m, k in zip(mirrored, kept)) and 0 < sum(mirrored) < len(mirrored)
    # A real preset moves pixels, keeps the shape and range, and repeats under the same seed.
    a = PRESETS["shift-flip"](x, np.random.default_rng(2))
    assert a.shape == x.shape and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    assert np.abs(a - x).mean() > 0.01
    np.testing.assert_array_equal(a, PRESETS["shift-flip"](x, np.random.default_rng(2)))


def test_batches_are_the_same_in_any_order_and_with_threads(data_dir):
    import numpy as np
    from edgecv.train.augment import PRESETS
    from edgecv.train.trainer import ArraySequence
    x = np.repeat(_real_batch(data_dir, 12), 3, 0)
    y = np.arange(len(x)) % 3
    a = ArraySequence(x, y, 8, PRESETS["cifar"], seed=5)
    b = ArraySequence(x, y, 8, PRESETS["cifar"], seed=5, workers=4)
    forward = [a[i] for i in range(len(a))]
    for i in reversed(range(len(b))):  # threads ask for batches in any order
        np.testing.assert_array_equal(b[i][0], forward[i][0])
        np.testing.assert_array_equal(b[i][1], forward[i][1])
    a.on_epoch_end()
    assert not np.array_equal(a[0][1], forward[0][1]) or not np.array_equal(a[0][0], forward[0][0])
    # A run resumed at epoch 1 gets epoch 1's batches, not a reshuffled copy of epoch 0's.
    resumed = ArraySequence(x, y, 8, PRESETS["cifar"], seed=5, epoch=1)
    for i in range(len(a)):
        np.testing.assert_array_equal(resumed[i][0], a[i][0])
    assert len(ArraySequence(x, y, 8, None, seed=-3)[0][0]) == 8  # negative seeds work too
