"""Export: every format x precision from a LeNet trained here on real MNIST, checked the way ONNX
Runtime's check_model_correctness does it: the same real inputs through Keras, LiteRT and ORT, run
by small runners written here (not the exporter's own), compared within a tolerance."""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_clean_error, run_cli

from edgecv.errors import ConfigError
from edgecv.modelfile import load_spec
from edgecv.preprocess import apply_chain, default_chain
from edgecv.spec import ModelSpec, file_sha256, spec_path_for

pytestmark = pytest.mark.slow

LABELS = tuple("0123456789")
SHAPE = (28, 28, 1)


def lenet_spec(name: str = "test-lenet") -> ModelSpec:
    return ModelSpec(name=name, task="classify", input_shape=SHAPE, colour="gray",
                     preprocess=tuple(default_chain(SHAPE)), labels=LABELS, arch="lenet",
                     data={"dataset": "mnist", "split": {"method": "official", "val": 0.1, "seed": 0}})


@pytest.fixture(scope="session")
def mnist(data_dir):
    with np.load(data_dir / "mnist" / "mnist.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def lenet_run(tmp_path_factory, mnist) -> Path:
    """A LeNet (Conv20-Pool-Conv50-Pool-FC500) trained for 2 epochs on 5,000 real MNIST images, laid
    out as a training run directory. ~95% accurate; big enough (1.26 M weights) that int8 size matters."""
    import keras

    keras.utils.set_random_seed(0)
    spec = lenet_spec()
    x = apply_chain(mnist["x_train"][:5000], spec.preprocess, spec.input_shape)
    y = mnist["y_train"][:5000]
    L = keras.layers
    model = keras.Sequential([
        keras.Input(SHAPE), L.Conv2D(20, 5, padding="same", activation="relu"), L.MaxPooling2D(),
        L.Conv2D(50, 5, padding="same", activation="relu"), L.MaxPooling2D(), L.Flatten(),
        L.Dense(500, activation="relu"), L.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    run = tmp_path_factory.mktemp("runs") / "test-lenet"
    run.mkdir()
    model.save(run / "model.keras")
    spec.save(run / "spec.json")
    return run


@pytest.fixture(scope="session")
def keras_model(lenet_run):
    import keras

    return keras.saving.load_model(lenet_run / "model.keras", safe_mode=True)


@pytest.fixture(scope="session")
def exported(lenet_run, tmp_path_factory):
    """export_all once for the session: variant key -> ExportResult."""
    from edgecv.export import export_all

    out = tmp_path_factory.mktemp("exported")
    results = export_all(lenet_run, out, check_size=2000)
    return {r.variant.key: r for r in results}


@pytest.fixture(scope="session")
def holdout(mnist):
    """Real MNIST test images (never seen in training or calibration), preprocessed by the spec."""
    spec = lenet_spec()
    x = apply_chain(mnist["x_test"][:2000], spec.preprocess, spec.input_shape)
    return x, mnist["y_test"][:2000]


@pytest.fixture(scope="session")
def keras_holdout(keras_model, holdout) -> np.ndarray:
    """The Keras model's probabilities on the holdout images (one predict call: ~60 ms each)."""
    return keras_model.predict(holdout[0], batch_size=500, verbose=0)


# -- small independent runners ------------------------------------------------------------------

def run_litert(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], list(x.shape))
    it.allocate_tensors()
    feed = x
    if inp["dtype"] == np.int8:
        s, z = inp["quantization"]
        feed = np.clip(np.round(x / s + z), -128, 127).astype(np.int8)
    it.set_tensor(inp["index"], feed)
    it.invoke()
    y = it.get_tensor(out["index"])
    if out["dtype"] == np.int8:
        s, z = out["quantization"]
        y = (y.astype(np.float32) - z) * s
    return y


def run_ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


RUNNERS = {"tflite": ("LiteRT", run_litert), "onnx": ("ONNX Runtime CPUExecutionProvider", run_ort)}


# -- the format table ---------------------------------------------------------------------------

def test_format_table_is_consistent():
    from edgecv.export import FORMATS, VARIANTS, get_variant
    from edgecv.spec import QUANTS

    assert {v.fmt for v in VARIANTS} == set(FORMATS)
    for v in VARIANTS:
        assert v.quant in QUANTS
        assert get_variant(v.fmt, v.quant) is v
        assert v.suffix == FORMATS[v.fmt].suffix
    assert [v.quant for v in VARIANTS if v.calibrated] == ["int8", "int8"]


@pytest.mark.parametrize("fmt,quant,match", [
    ("tflit", "fp32", r"Did you mean 'tflite'.*Choose from: onnx, tflite"),
    ("onnx", "int4", r"onnx export does not support precision 'int4'; choose from: fp32, fp16, dynamic, int8"),
    ("tflite", "bf16", r"does not support precision 'bf16'"),
])
def test_unknown_variant_names_the_allowed_set(fmt, quant, match):
    from edgecv.export import get_variant

    with pytest.raises(ConfigError, match=match):
        get_variant(fmt, quant)


# -- every variant ------------------------------------------------------------------------------

def test_every_variant_exports_with_spec_and_report(exported, lenet_run):
    from edgecv.export import VARIANTS

    assert set(exported) == {v.key for v in VARIANTS}
    keras_hash = file_sha256(lenet_run / "model.keras")
    for key, r in exported.items():
        assert r.passed, f"{key}: {r.error}"
        assert r.path.is_file() and r.path.suffix == r.variant.suffix
        embedded = load_spec(r.path)
        sidecar = ModelSpec.load(spec_path_for(r.path))
        assert embedded == sidecar == r.spec
        assert embedded.quantization == r.variant.quant
        assert embedded.source_hash == keras_hash
        assert embedded.preprocess == lenet_spec().preprocess and embedded.labels == LABELS
        metrics = embedded.metrics["export"]
        assert metrics["agreement"] == r.report.agreement and metrics["check_n"] == 2000
        report = json.loads(r.report_path.read_text())
        assert report["passed"] is True and report["format"] == r.variant.fmt
        assert report["source_accuracy"] > 0.9, "the test LeNet did not train"
        assert abs(report["drop_pts"]) <= 1.0
        # No temporary files left beside the artefacts.
        assert not [p for p in r.path.parent.iterdir() if p.name.startswith(".")]


def test_tflite_file_is_a_valid_flatbuffer_with_appended_zip(exported):
    """The spec rides as a zip appended to the flatbuffer; LiteRT must still load the file."""
    from ai_edge_litert.interpreter import Interpreter

    for key in ("tflite-fp32", "tflite-int8"):
        path = exported[key].path
        assert zipfile.is_zipfile(path)
        Interpreter(model_path=str(path)).allocate_tensors()


@pytest.mark.parametrize("quant", ["fp32", "fp16", "dynamic", "int8"])
def test_tflite_batch_stays_dynamic(exported, holdout, quant):
    from edgecv.export.tflite import describe

    info = describe(exported[f"tflite-{quant}"].path)
    assert info["input"]["shape_signature"] == [-1, *SHAPE]
    expected = "int8" if quant == "int8" else "float32"
    assert info["input"]["dtype"] == info["output"]["dtype"] == expected
    for n in (1, 7):
        assert run_litert(exported[f"tflite-{quant}"].path, holdout[0][:n]).shape == (n, 10)


def test_onnx_graph_opset_and_dynamic_batch(exported, holdout):
    import onnx

    for quant in ("fp32", "fp16", "dynamic", "int8"):
        path = exported[f"onnx-{quant}"].path
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
        assert dim0.dim_param and not dim0.HasField("dim_value"), f"onnx {quant}: batch is fixed"
        assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        for n in (1, 7):
            assert run_ort(path, holdout[0][:n]).shape == (n, 10)


def test_onnx_int8_is_static_qdq_and_dynamic_is_not(exported):
    from edgecv.export.onnx import op_types

    int8 = op_types(exported["onnx-int8"].path)
    assert int8.get("QuantizeLinear", 0) > 0 and int8.get("DequantizeLinear", 0) > 0, int8
    assert "DynamicQuantizeLinear" not in int8
    # Per-channel: the Conv weights' DequantizeLinear carries one scale per output channel.
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(exported["onnx-int8"].path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    scales = [inits[n.input[1]] for n in model.graph.node
              if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim == 4]
    assert scales and all(s.size > 1 for s in scales)
    dynamic = op_types(exported["onnx-dynamic"].path)
    assert dynamic.get("DynamicQuantizeLinear", 0) > 0 and "QuantizeLinear" not in dynamic


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_int8_is_at_most_0_3x_fp32(exported, fmt):
    fp32 = exported[f"{fmt}-fp32"].path.stat().st_size
    int8 = exported[f"{fmt}-int8"].path.stat().st_size
    assert int8 <= 0.3 * fp32, f"{fmt}: int8 {int8} bytes vs fp32 {fp32}"


# -- parity on real images ----------------------------------------------------------------------

def test_fp32_parity_keras_litert_ort(exported, keras_holdout, holdout):
    x = holdout[0][:500]
    ref = keras_holdout[:500]
    for fmt in ("tflite", "onnx"):
        name, runner = RUNNERS[fmt]
        got = runner(exported[f"{fmt}-fp32"].path, x)
        diff = float(np.abs(got - ref).max())
        assert diff <= 1e-4, f"{fmt} fp32 on {name}: max |p - p_keras| = {diff:.2e} > 1e-4"


@pytest.mark.parametrize("key", ["tflite-fp16", "tflite-dynamic", "tflite-int8",
                                 "onnx-fp16", "onnx-dynamic", "onnx-int8"])
def test_reduced_precision_agrees_on_top1(exported, keras_holdout, holdout, key):
    x, y = holdout
    ref = keras_holdout.argmax(1)
    name, runner = RUNNERS[key.split("-")[0]]
    got = np.concatenate([runner(exported[key].path, x[i:i + 500]) for i in range(0, len(x), 500)]).argmax(1)
    agreement = float((got == ref).mean())
    assert agreement >= 0.99, f"{key} on {name}: top-1 agreement {agreement:.2%} < 99% on {len(x)} MNIST test images"
    assert (got == y).mean() >= (ref == y).mean() - 0.01


# -- the gate -----------------------------------------------------------------------------------

def test_gate_failure_writes_no_artefact(lenet_run, tmp_path, monkeypatch):
    """A variant that loses accuracy: the exception carries the report, the report is saved, and
    nothing (not even an earlier file) is left under the final name."""
    from edgecv.export import AccuracyGateError, export
    from edgecv.export import tflite

    real_run = tflite.run

    def degraded(path, x, batch=256):
        y = real_run(path, x, batch)
        return np.roll(y, 1, axis=1)       # every prediction shifted to the next class

    monkeypatch.setattr(tflite, "run", degraded)
    out = tmp_path / "lenet.tflite"
    out.write_bytes(b"an older artefact")
    with pytest.raises(AccuracyGateError, match=r"loses .* accuracy points \(allowed 1\)") as info:
        export(lenet_run, "tflite", "fp32", out=out, check_size=300)
    assert not out.exists() and not spec_path_for(out).exists()
    report = json.loads(Path(str(out) + ".report.json").read_text())
    assert report["passed"] is False and report["drop_pts"] > 50
    assert info.value.report.agreement < 0.1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet.tflite.report.json"]


def test_export_bad_out_suffix(lenet_run, tmp_path):
    from edgecv.export import export

    with pytest.raises(ConfigError, match=r"must end in \.onnx"):
        export(lenet_run, "onnx", "fp32", out=tmp_path / "model.tflite")


def test_calibration_array_of_wrong_shape(lenet_run, tmp_path):
    from edgecv.errors import DataError
    from edgecv.export import export

    bad = tmp_path / "calib.npy"
    np.save(bad, np.zeros((8, 32, 32, 3), np.float32))
    with pytest.raises(DataError, match=r"shape \(32, 32, 3\); the model expects \(28, 28, 1\)"):
        export(lenet_run, "onnx", "int8", calib=bad, out=tmp_path / "m.onnx", check_size=50)
    assert not (tmp_path / "m.onnx").exists()


# -- the command, end to end --------------------------------------------------------------------

def test_cli_export_onnx_int8(lenet_run, tmp_path):
    out = tmp_path / "deploy" / "lenet-int8.onnx"
    proc = run_cli("export", str(lenet_run), "--format", "onnx", "--quant", "int8", "--calib-size", "128",
                   "--check-size", "1000", "--out", str(out))
    text = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert "verdict     PASS" in text and "agreement" in text
    assert out.is_file() and spec_path_for(out).is_file() and Path(str(out) + ".report.json").is_file()
    spec = load_spec(out)
    assert spec.quantization == "int8" and spec.extra["export"]["calibration"]["n"] == 128
    assert not [n for n in os.listdir(out.parent) if n.startswith(".")], "temporary files left behind"


def test_cli_check_data_with_other_classes(lenet_run, data_dir, tmp_path):
    proc = run_cli("export", str(lenet_run), "--format", "tflite", "--check", str(data_dir / "animals"),
                   "--check-size", "12", "--out", str(tmp_path / "m.tflite"))
    assert_clean_error(proc, r"has classes \['cats', 'dogs', 'panda'\]; the model was trained on")
    assert not (tmp_path / "m.tflite").exists()


def test_gate_compares_ctc_models_by_decoded_text():
    """For an N x T x K CTC output the gate asks whether the same text is read: a step flipping
    between a repeat and the blank moves a character's start and is not a disagreement."""
    from edgecv.export.calibration import Samples
    from edgecv.export.check import compare

    k, blank = 4, 3  # classes 0..2 and the blank last

    def probs(paths):
        out = np.full((len(paths), len(paths[0]), k), 0.01, np.float32)
        for n, path in enumerate(paths):
            for t, c in enumerate(path):
                out[n, t, c] = 0.97
        return out

    ref = probs([[0, 0, 3, 1, 3], [2, 3, 3, 2, 2], [1, 1, 1, 3, 0]])
    same_text = probs([[0, 3, 3, 1, 1], [2, 2, 3, 2, 3], [1, 3, 3, 3, 0]])   # per step: all differ
    other_text = probs([[0, 0, 3, 1, 3], [2, 3, 3, 2, 2], [1, 1, 1, 3, 1]])  # one text differs
    samples = Samples(np.zeros((3, 8, 8, 1), np.float32), None, "test")
    spec = ModelSpec(name="ctc", task="captcha-ctc", input_shape=(8, 8, 1), colour="gray",
                     preprocess=tuple(default_chain((8, 8, 1))), charset="abc")
    kw = dict(spec=spec, fmt="tflite", quant="int8", path="x.tflite", max_drop=1.0, size_bytes=1, source_bytes=1,
              fp32_weight_bytes=1, runtime="litert")
    r = compare(ref, same_text, samples, **kw)
    assert r.agreement == 1.0 and r.passed and r.extra["step_agreement"] == 0.0
    r = compare(ref, other_text, samples, **kw)
    assert abs(r.agreement - 2 / 3) < 1e-9 and not r.passed and abs(r.drop_pts - 100 / 3) < 1e-3
