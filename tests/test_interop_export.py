"""Exports that run where users deploy, checked with the real consumers installed (`make test`
installs them: .venv/.interop): a LeNet trained here on real MNIST, exported with standard TFLite
Metadata (read back by MediaPipe's own MetadataDisplayer), as uint8 RGB input (classified by
MediaPipe's ImageClassifier), and as cleaned ONNX (onnx.checker, OpenCV DNN, OpenVINO). Export
options that do not fit a model fail in one line with nothing written."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_clean_error, run_cli
from interop import edgecv_top1, mediapipe_top1, metadata_displayer

from edgecv.preprocess import apply_chain, default_chain
from edgecv.spec import ModelSpec

pytestmark = pytest.mark.slow

LABELS = tuple("0123456789")
SHAPE = (28, 28, 1)
N = 200


@pytest.fixture(scope="module")
def mnist(data_dir):
    with np.load(data_dir / "mnist" / "mnist.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory, mnist) -> Path:
    """A small LeNet trained for 2 epochs on 5,000 real MNIST images, as a run directory."""
    import keras

    keras.utils.set_random_seed(0)
    spec = ModelSpec(name="interop-lenet", task="classify", input_shape=SHAPE, colour="gray",
                     preprocess=tuple(default_chain(SHAPE)), labels=LABELS, arch="lenet",
                     data={"dataset": "mnist", "split": {"method": "official", "val": 0.1, "seed": 0}})
    x = apply_chain(mnist["x_train"][:5000], spec.preprocess, spec.input_shape)
    L = keras.layers
    model = keras.Sequential([
        keras.Input(SHAPE), L.Conv2D(20, 5, padding="same", activation="relu"), L.MaxPooling2D(),
        L.Conv2D(50, 5, padding="same", activation="relu"), L.MaxPooling2D(), L.Flatten(),
        L.Dense(500, activation="relu"), L.BatchNormalization(), L.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, mnist["y_train"][:5000], epochs=2, batch_size=64, verbose=0)
    run = tmp_path_factory.mktemp("runs") / "interop-lenet"
    run.mkdir()
    model.save(run / "model.keras")
    spec.save(run / "spec.json")
    return run


@pytest.fixture(scope="module")
def exports(lenet_run, tmp_path_factory) -> dict[str, Path]:
    """The variants the tests read, each through the export gate (on 2,000 validation images)."""
    from edgecv.export import export

    out = tmp_path_factory.mktemp("interop")
    made = {}
    for key, fmt, quant, kind in (("tflite", "tflite", "fp32", "float"),
                                  ("tflite-rgb", "tflite", "fp32", "uint8-rgb"),
                                  ("tflite-int8-rgb", "tflite", "int8", "uint8-rgb"),
                                  ("onnx-int8", "onnx", "int8", "float"),
                                  ("onnx-rgb", "onnx", "fp32", "uint8-rgb")):
        r = export(lenet_run, fmt, quant, out=out, check_size=2000, input=kind)
        assert r.passed and r.report.agreement >= 0.98, r.report.text()
        made[key] = r.path
    return made


@pytest.fixture(scope="module")
def mnist_test(mnist) -> tuple[list[np.ndarray], np.ndarray]:
    """200 real MNIST test digits (never trained on) as BGR images, and the same as RGB."""
    import cv2

    gray = mnist["x_test"][:N]
    bgr = [cv2.cvtColor(g, cv2.COLOR_GRAY2BGR) for g in gray]
    rgb = np.stack([cv2.cvtColor(b, cv2.COLOR_BGR2RGB) for b in bgr])
    return bgr, rgb


# -- TFLite Metadata ------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["tflite", "tflite-rgb", "tflite-int8-rgb"])
def test_official_reader_lists_normalization_and_labels(exports, key):
    displayer = metadata_displayer().with_model_file(str(exports[key]))
    meta = json.loads(displayer.get_metadata_json())
    assert meta["name"] == "interop-lenet" and meta["min_parser_version"] == "1.0.0"
    inp = meta["subgraph_metadata"][0]["input_tensor_metadata"][0]
    norm = inp["process_units"][0]
    assert norm["options_type"] == "NormalizationOptions"
    if key == "tflite":   # the spec's scale 1/255 as (x - 0) / 255 on raw pixels
        assert norm["options"]["mean"] == [0.0] and norm["options"]["std"] == pytest.approx([255.0])
        assert inp["content"]["content_properties"]["color_space"] == "GRAYSCALE"
    else:                 # the graph normalizes uint8 RGB itself
        assert norm["options"]["mean"] == [0.0] and norm["options"]["std"] == [1.0]
        assert inp["content"]["content_properties"]["color_space"] == "RGB"
    out = meta["subgraph_metadata"][0]["output_tensor_metadata"][0]
    assert out["associated_files"][0] == {"name": "labels.txt", "type": "TENSOR_AXIS_LABELS",
                                          "description": "labels for the output's last axis, one per line"}
    assert set(displayer.get_packed_associated_file_list()) == {"labels.txt", "edgecv.spec.json"}
    assert displayer.get_associated_file_buffer("labels.txt").decode().split() == list(LABELS)


def test_metadata_leaves_litert_outputs_and_the_spec_alone(exports, mnist_test):
    """The metadata is a buffer the interpreter ignores, and edgecv still reads its spec."""
    from ai_edge_litert.interpreter import Interpreter
    from edgecv.export import tflite_metadata

    from edgecv.modelfile import load_spec

    path = exports["tflite"]
    data = path.read_bytes()
    bare = tflite_metadata.with_metadata(data, b"M001")  # any other buffer in that slot
    x = apply_chain(mnist_test[0][:16], load_spec(path).preprocess, SHAPE)
    outs = []
    for content in (data, bare):
        it = Interpreter(model_content=content)
        it.resize_tensor_input(0, list(x.shape))
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"]))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert load_spec(path).name == "interop-lenet"
    assert tflite_metadata.read(str(path))["subgraphMetadata"][0]["outputTensorMetadata"][0]["name"] == "probability"


def test_bn_scales_fold_into_the_layer_before_only_where_exact():
    """Before full-int8 TFLite conversion: a BN after Conv+ReLU with positive scales, and one after a
    linear Dense, lose their scale to that layer; one with a negative scale after a ReLU stays."""
    import keras
    from edgecv.export.tflite import fold_bn_scales

    L = keras.layers
    inp = keras.Input((8, 8, 3))
    x = L.BatchNormalization(name="bn_pos")(L.Conv2D(4, 3, activation="relu", name="c1")(inp))
    x = L.BatchNormalization(name="bn_neg")(L.Conv2D(4, 3, activation="relu", name="c2")(x))
    x = L.BatchNormalization(name="bn_lin")(L.Dense(5, name="d")(L.Flatten()(x)))
    model = keras.Model(inp, x)
    rng = np.random.default_rng(0)
    for name, lo in (("bn_pos", 0.5), ("bn_neg", -1.5), ("bn_lin", -1.5)):
        bn = model.get_layer(name)
        g, b, m, v = bn.get_weights()
        bn.set_weights([rng.uniform(lo, 1.5, g.shape), rng.normal(0, 0.3, b.shape), rng.normal(0, 0.3, m.shape),
                        rng.uniform(0.5, 2.0, v.shape)])
    neg = model.get_layer("bn_neg").get_weights()[0]
    neg[0] = -1.0
    model.get_layer("bn_neg").set_weights([neg, *model.get_layer("bn_neg").get_weights()[1:]])
    folded, n = fold_bn_scales(model)
    assert n == 2
    np.testing.assert_array_equal(folded.get_layer("bn_neg").get_weights()[0], neg)
    assert np.all(folded.get_layer("bn_pos").get_weights()[0] == 1.0)
    x = rng.random((16, 8, 8, 3), dtype=np.float32)
    np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), atol=1e-5)
    assert model.get_layer("bn_pos").get_weights()[0].min() != 1.0   # the source model is untouched


@pytest.mark.parametrize("colour", ["gray", "bgr", "rgb"])
def test_uint8_rgb_wrapper_equals_the_trained_chain(colour):
    """The in-graph conversion (one fixed 1x1 Conv after a Cast) on RGB pixels gives the trained
    network what the spec's own chain gives it from the BGR image, for each colour order, with
    mean/std steps folded in."""
    import keras
    from edgecv.export.inputs import check_fits, variant_spec, wrap

    c = 1 if colour == "gray" else 3
    chain = ([{"op": colour}] if colour != "bgr" else []) + [
        {"op": "resize", "size": [16, 16]}, {"op": "scale", "factor": 1 / 255},
        {"op": "mean", "values": [0.4] * c}, {"op": "std", "values": [0.2 + 0.05 * i for i in range(c)]}]
    spec = ModelSpec(name="w", task="classify", input_shape=(16, 16, c), colour=colour, preprocess=chain,
                     labels=["a", "b"])
    check_fits(spec, "uint8-rgb")
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((16, 16, c)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
                            keras.layers.Dense(2, activation="softmax")])
    images = [np.random.default_rng(i).integers(0, 256, (40, 30, 3), dtype=np.uint8) for i in range(8)]
    want = net(apply_chain(images, spec.preprocess, spec.input_shape)).numpy()
    vspec = variant_spec(spec, "uint8-rgb")
    assert vspec.colour == "rgb" and vspec.input_shape == (16, 16, 3)
    assert [s.op for s in vspec.preprocess] == ["rgb", "resize"]
    rgb = apply_chain(images, vspec.preprocess, vspec.input_shape)
    assert rgb.min() >= 0 and rgb.max() > 1 and np.array_equal(rgb, np.round(rgb))   # raw pixels
    got = wrap(net, spec, "uint8-rgb")(rgb.astype(np.uint8)).numpy()
    # gray: the chain rounds the gray image to uint8 before resizing; the graph does not
    np.testing.assert_allclose(got, want, atol=0.02 if colour == "gray" else 1e-5)


# -- uint8 RGB input: MediaPipe ImageClassifier -------------------------------------------------

@pytest.mark.parametrize("key", ["tflite-rgb", "tflite-int8-rgb"])
def test_mediapipe_image_classifier_agrees_with_edgecv(exports, mnist_test, key):
    from ai_edge_litert.interpreter import Interpreter

    path = exports[key]
    it = Interpreter(model_path=str(path))
    d = it.get_input_details()[0]
    assert d["dtype"] == np.uint8 and list(d["shape"][1:]) == [28, 28, 3]
    if key == "tflite-int8-rgb":
        assert it.get_output_details()[0]["dtype"] == np.uint8
    bgr, rgb = mnist_test
    ours = edgecv_top1(path, bgr)
    theirs = np.array(mediapipe_top1(path, rgb))
    agree = float((ours == theirs).mean())
    assert agree >= 0.99, f"MediaPipe agrees with edgecv on {agree:.1%} of {N} MNIST digits"
    # and both read digits, not noise
    assert float((ours == mnist_test_labels(key)).mean()) >= 0.85


def mnist_test_labels(_key: str) -> np.ndarray:
    from conftest import DATA

    with np.load(DATA / "mnist" / "mnist.npz") as z:
        return np.array(LABELS)[z["y_test"][:N]]


# -- ONNX that other runtimes accept --------------------------------------------------------------

def test_onnx_export_is_clean(exports):
    import onnx
    from edgecv.export.onnx_clean import check

    path = exports["onnx-int8"]
    model = onnx.load(str(path))
    check(path.read_bytes())   # onnx.checker full_check + strict shape inference
    assert [o.domain for o in model.opset_import] == [""]
    ops = {n.op_type for n in model.graph.node}
    # BatchNorm after the Dense folded away; Flatten + Dense became Convs (no Mul, MatMul, Shape).
    assert not ops & {"Mul", "MatMul", "Gemm", "Shape", "BatchNormalization", "Transpose"}, ops
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops


def test_int8_onnx_export_runs_in_opencv_dnn_and_openvino(exports, mnist_test):
    import cv2

    from edgecv.modelfile import load_spec

    path = exports["onnx-int8"]
    spec = load_spec(path)
    x = apply_chain(mnist_test[0], spec.preprocess, spec.input_shape)
    ort_top = edgecv_top1(path, mnist_test[0], backend="onnxruntime")
    net = cv2.dnn.readNetFromONNX(str(path))
    for batch in (1, 8):
        rows = []
        for s in range(0, N, batch):
            net.setInput(np.ascontiguousarray(x[s:s + batch]))
            y = net.forward()
            assert y.shape == (len(x[s:s + batch]), 10), y.shape
            rows.append(y)
        cv_top = np.array(LABELS)[np.concatenate(rows).argmax(1)]
        assert float((cv_top == ort_top).mean()) >= 0.99, batch
    ov_top = edgecv_top1(path, mnist_test[0], backend="openvino", threads=2)
    assert float((ov_top == ort_top).mean()) >= 0.99


def test_uint8_rgb_onnx_runs_in_every_onnx_backend(exports, mnist_test):
    """A uint8-input ONNX file: ORT and OpenVINO through edgecv (raw pixels cast, not rescaled) and
    OpenCV DNN fed the RGB pixels directly give the same digits."""
    import cv2
    import onnx

    path = exports["onnx-rgb"]
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    bgr, rgb = mnist_test
    ort_top = edgecv_top1(path, bgr, backend="onnxruntime")
    assert float((edgecv_top1(path, bgr, backend="openvino") == ort_top).mean()) >= 0.99
    net = cv2.dnn.readNetFromONNX(str(path))
    net.setInput(np.ascontiguousarray(rgb[:8]))
    assert list(np.array(LABELS)[net.forward().argmax(1)]) == list(ort_top[:8])
    assert float((ort_top == mnist_test_labels("")).mean()) >= 0.85


# -- bad input: one line, nothing written ----------------------------------------------------------

@pytest.fixture
def ctc_run(tmp_path) -> Path:
    """A captcha-ctc run directory (the spec is what is refused; the model is never loaded)."""
    run = tmp_path / "ctc-run"
    run.mkdir()
    ModelSpec(name="ctc", task="captcha-ctc", input_shape=(50, 200, 1), colour="gray",
              preprocess=({"op": "gray"}, {"op": "resize", "size": [50, 200], "mode": "pad"},
                          {"op": "scale", "factor": 1 / 255}),
              charset="abc").save(run / "spec.json")
    (run / "model.keras").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    return run


def test_uint8_rgb_for_a_ctc_model_is_one_line_and_writes_nothing(ctc_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("export", str(ctc_run), "--format", "tflite", "--input", "uint8-rgb",
                   "--out", str(out / "ctc.tflite"), timeout=120)
    err = assert_clean_error(proc, r"--input uint8-rgb does not fit 'ctc': a captcha-ctc model")
    assert len(err.strip().splitlines()) == 1, err
    assert list(out.iterdir()) == []


def test_unknown_input_kind_names_the_allowed_ones(ctc_run, tmp_path):
    proc = run_cli("export", str(ctc_run), "--format", "onnx", "--input", "uint8rgb",
                   "--out", str(tmp_path / "x.onnx"), timeout=120)
    assert_clean_error(proc, r"uint8-rgb")
    assert not (tmp_path / "x.onnx").exists()


def test_openvino_missing_names_the_extra(monkeypatch, exports):
    from edgecv.runtime.backends import open_backend

    from edgecv.errors import BackendError
    from edgecv.resolve import resolve

    monkeypatch.setitem(sys.modules, "openvino", None)   # import openvino -> ImportError
    ref = resolve(exports["onnx-int8"])
    with pytest.raises(BackendError, match=r'pip install "edgecv\[openvino\]"'):
        open_backend(ref.path, ref.spec, backend="openvino")
