"""`edgecv export` misuse: each mistake is one clear line on stderr, a non-zero exit, no traceback,
and nothing written under --out."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_clean_error, run_cli

from edgecv.preprocess import default_chain
from edgecv.spec import ModelSpec

SHAPE = (28, 28, 1)


def spec(name: str = "tiny") -> ModelSpec:
    return ModelSpec(name=name, task="classify", input_shape=SHAPE, colour="gray",
                     preprocess=tuple(default_chain(SHAPE)), labels=tuple("0123456789"),
                     data={"dataset": "mnist"})


def tiny_run(parent: Path) -> Path:
    """parent/run: a valid run directory holding an untrained 28x28 -> 10 classifier and its spec."""
    import keras

    run = parent / "run"
    run.mkdir()
    tiny = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    tiny.save(run / "model.keras")
    spec().save(run / "spec.json")
    return run


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny valid run directory and a .keras holding a Lambda layer (untrained: only loading matters)."""
    import keras

    root = tmp_path_factory.mktemp("models")
    run = tiny_run(root)
    lam = keras.Sequential([keras.Input(SHAPE), keras.layers.Lambda(lambda t: t * 2.0), keras.layers.Flatten(),
                            keras.layers.Dense(10, activation="softmax")])
    lam_path = root / "lambda.keras"
    lam.save(lam_path)
    spec("lambda").save(str(lam_path) + ".spec.json")
    return {"run": run, "lambda": lam_path, "root": root}


def export(*args: str):
    return run_cli("export", *args, timeout=300)


def test_missing_model(tmp_path):
    proc = export(str(tmp_path / "nope.keras"), "--format", "onnx", "--out", str(tmp_path / "x.onnx"))
    assert_clean_error(proc, r"nope\.keras: no such model file or run directory")
    assert proc.returncode == 2


@pytest.mark.parametrize("name,content,match", [
    ("model.onnx", b"\x08\x07", r"not a Keras model; export takes a run directory or a \.keras file"),
    ("notes.txt", b"hello", r"not a Keras model"),
    ("model.keras", b"this is not a zip", r"not a Keras \.keras archive"),
])
def test_non_keras_file(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    proc = export(str(path), "--format", "tflite", "--out", str(tmp_path / "x.tflite"))
    assert_clean_error(proc, match)
    assert not (tmp_path / "x.tflite").exists()


def test_folder_that_is_not_a_run(tmp_path):
    proc = export(str(tmp_path), "--format", "tflite", "--out", str(tmp_path / "x.tflite"))
    assert_clean_error(proc, r"not a run directory \(no model\.keras in it\)")


@pytest.mark.parametrize("fmt,quant,match", [
    ("onnx", "int4", r"onnx export does not support precision 'int4'; choose from: fp32, fp16, dynamic, int8"),
    ("tflite", "uint8", r"tflite export does not support precision 'uint8'"),
    ("tfjs", "fp32", r"unknown export format 'tfjs'.*Choose from: onnx, tflite"),
    ("onnxx", "fp32", r"Did you mean 'onnx'"),
])
def test_unsupported_format_or_precision(models, tmp_path, fmt, quant, match):
    proc = export(str(models["run"]), "--format", fmt, "--quant", quant, "--out", str(tmp_path / "x.out"))
    assert_clean_error(proc, match)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag,value,match", [
    ("--max-drop", "-1", r"max_drop is in accuracy points, 0 to 100; got -1"),
    ("--calib-size", "0", r"calib_size must be a positive integer; got 0"),
])
def test_bad_numbers(models, tmp_path, flag, value, match):
    proc = export(str(models["run"]), "--format", "onnx", flag, value, "--out", str(tmp_path / "x.onnx"))
    assert_clean_error(proc, match)


def test_format_or_all_is_required(models, tmp_path):
    proc = export(str(models["run"]), "--out", str(tmp_path / "x.onnx"))
    assert_clean_error(proc, r"one of the arguments --format --all is required")


def test_keras_file_without_spec(models, tmp_path):
    lone = tmp_path / "lone.keras"
    lone.write_bytes((models["run"] / "model.keras").read_bytes())
    proc = export(str(lone), "--format", "onnx", "--out", str(tmp_path / "x.onnx"))
    assert_clean_error(proc, r"no ModelSpec embedded and no lone\.keras\.spec\.json beside it")


def test_calibration_data_of_wrong_shape(models, tmp_path):
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).random((16, 32, 32, 3), dtype=np.float32))
    out = tmp_path / "x.tflite"
    proc = export(str(models["run"]), "--format", "tflite", "--quant", "int8", "--calib", str(calib),
                  "--check-size", "20", "--out", str(out))
    assert_clean_error(proc, r"calibration data .*calib\.npy has samples of shape \(32, 32, 3\); "
                             r"the model expects \(28, 28, 1\)")
    assert not out.exists()


def test_calibration_array_of_integers(models, tmp_path):
    calib = tmp_path / "raw.npy"
    np.save(calib, np.zeros((4, 28, 28, 1), np.uint8))
    proc = export(str(models["run"]), "--format", "onnx", "--quant", "int8", "--calib", str(calib),
                  "--check-size", "20", "--out", str(tmp_path / "x.onnx"))
    assert_clean_error(proc, r"must be preprocessed float data \(NxHxWxC\); got dtype uint8")


def test_missing_calibration_data(models, tmp_path):
    proc = export(str(models["run"]), "--format", "onnx", "--quant", "int8", "--calib", str(tmp_path / "nothing"),
                  "--check-size", "20", "--out", str(tmp_path / "x.onnx"))
    assert_clean_error(proc, r"nothing: no such file or folder")


def test_lambda_layer_is_refused(models, tmp_path):
    proc = export(str(models["lambda"]), "--format", "onnx", "--check-size", "20", "--out", str(tmp_path / "x.onnx"))
    assert_clean_error(proc, r"lambda\.keras: the model contains a Lambda layer .* refuses to load")
    assert not (tmp_path / "x.onnx").exists()


def test_zip_that_is_not_a_keras_model(models, tmp_path):
    # In-process: the CLI path is the same ModelError as the Lambda case above, and a second
    # TensorFlow start-up in a subprocess would cost ~10 s.
    from edgecv.errors import ModelError
    from edgecv.export.api import load_keras

    bogus = tmp_path / "bogus.keras"
    with zipfile.ZipFile(bogus, "w") as z:
        z.writestr("hello.txt", "not a model")
    with pytest.raises(ModelError, match=r"bogus\.keras: Keras cannot load this model"):
        load_keras(bogus)
