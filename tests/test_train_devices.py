"""`edgecv train --devices`: data parallel on the JAX backend, tested on CPU with two forced host
devices (XLA_FLAGS=--xla_force_host_platform_device_count=2) and with two processes on 127.0.0.1 of
one CPU device each, as two "hosts". Real MNIST images from EDGECV_DATA, LeNet, two epochs.

Plain SGD with momentum, so a wrong gradient scale would show (Adam normalises it away).

Tolerance: each epoch's training and validation loss within 1e-3 (relative) of the one-device run's,
and the correct validation and test images within one image. Data parallel sums the two devices'
gradients in another order than one device sums the whole batch, so float32 rounding differs in the
last bits and grows a little with every step: here the loss differed by 1e-7 after 22 steps, and
one Adam epoch of 94 steps on 6,000 images by 1e-5 in training loss, 2e-4 in validation loss and
one test image of 10,000 (docs/scale.md). A wrong split of the data or of the gradients moves the loss by
far more. The same model evaluated with and without padding must give exactly the same accuracy
(test_the_two_device_model_evaluates_the_same_on_tensorflow).
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_clean_error

pytestmark = pytest.mark.timeout(300)

JAX = {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
# 330 training images in batches of 32: ten full batches and a ragged last one of 10 (a multiple of
# the two devices); 111 validation and 201 test images: odd, so evaluation pads and cuts.
N_TRAIN, N_VAL, N_TEST = 330, 111, 201


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory, data_dir):
    with np.load(data_dir / "mnist" / "mnist.npz") as z:
        # Official split: val is a seeded 10% of x_train (round(1113 * 0.1) = 111 images); training
        # takes --max-train 330 of the other 1002.
        n = 1113
        arrays = {"x_train": z["x_train"][:n], "y_train": z["y_train"][:n],
                  "x_test": z["x_test"][:N_TEST], "y_test": z["y_test"][:N_TEST]}
    path = tmp_path_factory.mktemp("mnist") / "mnist-small.npz"
    np.savez(path, **arrays)
    return path


def _args(data, out, *extra):
    return [sys.executable, "-m", "edgecv", "train", "classify", "--arch", "lenet", "--data", str(data),
            "--input-size", "28", "28", "--colour", "gray", "--epochs", "2", "--batch-size", "32",
            "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9", "--seed", "7", "--max-train", str(N_TRAIN),
            "--out", str(out), *extra]


def _start(argv, env):
    e = dict(os.environ)
    e.pop("XLA_FLAGS", None)
    e.update(env)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)


def _finish(procs, timeout=240):
    """Waits for every process; on a timeout kills the rest (by their own PIDs) and fails."""
    out = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=timeout)
            out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(small_mnist, tmp_path_factory):
    """One device, two forced devices, and two processes of one device each: all at once."""
    root = tmp_path_factory.mktemp("dp")
    port = _free_port()
    host = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--devices", "1"]
    names = ["one", "two", "host0", "host1"]
    procs = [_start(_args(small_mnist, root / "one", "--devices", "1"), JAX),
             _start(_args(small_mnist, root / "two", "--devices", "2"), JAX),
             _start(_args(small_mnist, root / "host0", *host, "--process-id", "0"), {"KERAS_BACKEND": "jax"}),
             _start(_args(small_mnist, root / "host1", *host, "--process-id", "1"), {"KERAS_BACKEND": "jax"})]
    done = dict(zip(names, _finish(procs)))
    for name, proc in done.items():
        assert proc.returncode == 0, f"{name}: {proc.stderr.decode()[-3000:]}"
    return {name: (root / name, json.loads(proc.stdout.decode().strip().splitlines()[-1]))
            for name, proc in done.items()}


def _history(run):
    return json.loads((run / "history.json").read_text())


def _assert_same_training(a_hist, b_hist):
    for a, b in zip(a_hist, b_hist, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3), (a, b)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-3), (a, b)
        assert abs(round(b["val_accuracy"] * N_VAL) - round(a["val_accuracy"] * N_VAL)) <= 1, (a, b)


@pytest.mark.slow
def test_two_devices_match_one_device(runs):
    one, two = runs["one"], runs["two"]
    assert one[1]["devices"] == {"backend": "jax", "count": 1}
    assert two[1]["devices"]["count"] == 2 and two[1]["devices"]["devices"] == ["cpu:0", "cpu:1"]
    assert two[1]["devices"]["per_device_batch"] == 16 and two[1]["devices"]["dropped_per_epoch"] == 0
    hist = _history(one[0])
    assert hist[-1]["loss"] < 0.7 * hist[0]["loss"]  # it trains: a comparison of two broken runs proves nothing
    _assert_same_training(hist, _history(two[0]))
    r1, r2 = (json.loads((r / "eval.json").read_text()) for r in (one[0], two[0]))
    assert r2["val"]["n"] == N_VAL and r2["test"]["n"] == N_TEST  # every image once: padding cut off
    assert abs(round(r2["test"]["accuracy"] * N_TEST) - round(r1["test"]["accuracy"] * N_TEST)) <= 1
    cfg = (two[0] / "config.yaml").read_text()
    assert cfg.startswith("# devices used: cpu:0, cpu:1") and "\ndevices: 2\n" in cfg


@pytest.mark.slow
def test_two_processes_as_two_hosts_match_two_devices(runs):
    two = runs["two"]
    for name in ("host0", "host1"):
        run, summary = runs[name]
        assert summary["devices"]["count"] == 2 and summary["devices"]["processes"] == 2
        assert summary["devices"]["process_id"] == int(name[-1])
        _assert_same_training(_history(two[0]), _history(run))
        assert abs(summary["test_accuracy"] - two[1]["test_accuracy"]) <= 1.5 / N_TEST


def test_the_two_device_model_evaluates_the_same_on_tensorflow(runs, small_mnist):
    """The saved model is a plain .keras file: on the TensorFlow backend of this test process, one
    device, no padding, it gets the test accuracy training recorded."""
    import keras

    from edgecv.preprocess import apply_chain
    from edgecv.spec import ModelSpec
    run = runs["two"][0]
    spec = ModelSpec.load(run / "spec.json")
    with np.load(small_mnist) as z:
        x = apply_chain(list(z["x_test"]), spec.preprocess, tuple(spec.input_shape))
        y = z["y_test"]
    probs = keras.saving.load_model(run / "model.keras", safe_mode=True).predict(x, batch_size=64, verbose=0)
    report = json.loads((run / "eval.json").read_text())["test"]
    assert len(probs) == report["n"] == N_TEST
    assert float(np.mean(probs.argmax(1) == y)) == pytest.approx(report["accuracy"], abs=1e-9)


def test_bad_device_options_are_one_line_errors(small_mnist, tmp_path):
    cases = [
        ({"KERAS_BACKEND": "tensorflow"}, ["--devices", "2"],
         r"--devices 2 needs the JAX backend: set KERAS_BACKEND=jax"),
        (JAX, ["--devices", "3"],
         r"--devices 3: this process has 2 device\(s\) \(cpu:0, cpu:1\); use --devices all or a number up to 2"),
        (JAX, ["--devices", "2", "--batch-size", "33"],
         r"--batch-size 33 does not divide across 2 devices; use a multiple of 2 \(32 or 34\)"),
        ({}, ["--devices", "0"], r"expected all or a number of devices >= 1"),
    ]
    procs = [_start(_args(small_mnist, tmp_path / f"r{i}", *extra), env) for i, (env, extra, _) in enumerate(cases)]
    for (env, extra, match), proc in zip(cases, _finish(procs)):
        err = assert_clean_error(proc)
        assert re.search(match, err.strip().splitlines()[-1]), err  # the message is the last line, alone
    assert not any(tmp_path.iterdir())  # refused before any run folder was made


@pytest.mark.parametrize("options, env, match", [
    ({"coordinator": "10.0.0.1:1234"}, {}, "needs --num-processes N and --process-id I"),
    ({"coordinator": "10.0.0.1:1234", "num_processes": 2, "process_id": 2}, {}, "must be from 0 to 1"),
    ({}, {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2"},
     "needs --num-processes N and --process-id I"),
])
def test_multi_process_options_are_checked(monkeypatch, options, env, match):
    from edgecv.train.config import TrainConfig
    from edgecv.train.devices import multi_process_args

    from edgecv.errors import ConfigError
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=match):
        multi_process_args(TrainConfig(**options))


def test_multi_process_options_from_keras_variables(monkeypatch):
    from edgecv.train.config import TrainConfig
    from edgecv.train.devices import multi_process_args
    monkeypatch.setenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", "10.0.0.1:1234,10.0.0.2:1234")
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "1")
    assert multi_process_args(TrainConfig()) == ("10.0.0.1:1234", 2, 1)
    assert multi_process_args(TrainConfig(coordinator="h:9", num_processes=3, process_id=0)) == ("h:9", 3, 0)


def test_batches_are_a_multiple_of_the_devices(small_mnist):
    """ArraySequence with shard=(devices, process, processes): every batch divides across the
    devices; a ragged epoch leaves out fewer than the device count; two processes' slices make up
    the one-process batch."""
    from edgecv.train.trainer import ArraySequence
    with np.load(small_mnist) as z:
        x, y = z["x_train"][:301, :, :, None].astype(np.float32) / 255, z["y_train"][:301].astype(np.int64)
    one = ArraySequence(x, y, 32, seed=3, shard=(2, 0, 1))
    sizes = [len(one[i][1]) for i in range(len(one))]
    assert sizes == [32] * 9 + [12] and sum(sizes) == 300
    seen = np.concatenate([one[i][1] for i in range(len(one))])
    plain = ArraySequence(x, y, 32, seed=3)
    assert len(plain[len(plain) - 1][1]) == 13  # without devices: the whole ragged batch
    np.testing.assert_array_equal(seen, np.concatenate([plain[i][1] for i in range(len(plain))])[:300])
    p0, p1 = (ArraySequence(x, y, 32, seed=3, shard=(2, pid, 2)) for pid in (0, 1))
    for i in range(len(one)):
        np.testing.assert_array_equal(np.concatenate([p0[i][0], p1[i][0]]), one[i][0])
    left_out = set(range(301)) - set(one.order[:one.used].tolist())
    one.on_epoch_end()
    left_out_next = set(range(301)) - set(one.order[:one.used].tolist())
    assert len(left_out) == len(left_out_next) == 1 and left_out != left_out_next  # reshuffled each epoch


def test_devices_in_a_yaml_config(tmp_path):
    from edgecv.train.config import TrainConfig

    from edgecv.errors import ConfigError
    good = tmp_path / "dp.yaml"
    good.write_text("arch: lenet\ndevices: all\ncoordinator: 10.0.0.1:8476\nnum_processes: 2\nprocess_id: 1\n")
    cfg = TrainConfig(**TrainConfig.from_yaml(good))
    assert (cfg.devices, cfg.coordinator, cfg.num_processes, cfg.process_id) == ("all", "10.0.0.1:8476", 2, 1)
    with pytest.raises(ConfigError, match=r"devices: expected all or an integer from 1; got 'two'"):
        TrainConfig(devices="two")
    with pytest.raises(ConfigError, match=r"coordinator: expected HOST:PORT or null; got '10.0.0.1'"):
        TrainConfig(coordinator="10.0.0.1")
