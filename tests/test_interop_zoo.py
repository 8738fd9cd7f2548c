"""The shipped zoo where users deploy it, with the real consumers installed (`make test`): OpenCV DNN
and OpenVINO run the smile ONNX artefacts (int8 and fp32) at batch 1 and 8 and agree with ONNX
Runtime on 200 real SMILES face crops; MediaPipe's ImageClassifier loads the shipped smile TFLite
(uint8 RGB input) and agrees with edgecv; every shipped TFLite carries standard TFLite Metadata that
MediaPipe's reader lists; the environment has exactly one cv2, OpenCV 4.x."""
from __future__ import annotations

import importlib.metadata
import json

import numpy as np
import pytest
from interop import edgecv_top1, mediapipe_top1, metadata_displayer, need

from edgecv import zoo
from edgecv.preprocess import apply_chain

N = 200
SMILE_ONNX = ("smile.int8.onnx", "smile.onnx")


@pytest.fixture(scope="module")
def faces(data_dir) -> list[np.ndarray]:
    """200 real face crops (SMILES test split, never trained on), spread over the split, as BGR."""
    from edgecv.data import load, split
    from edgecv.modelfile import load_spec

    spec = load_spec(zoo.ZOO_DIR / "smile.onnx")
    ds = split(load(str(data_dir / "smiles")), "test", spec.data.get("split"))
    idx = np.linspace(0, len(ds) - 1, N).astype(int)
    return [ds.read(int(i)) for i in idx]


def ort_probs(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("name", SMILE_ONNX)
def test_opencv_dnn_runs_the_shipped_onnx_at_batch_1_and_8(faces, name):
    import cv2

    from edgecv.modelfile import load_spec

    path = zoo.ZOO_DIR / name
    spec = load_spec(path)
    x = apply_chain(faces, spec.preprocess, spec.input_shape)
    ref = ort_probs(path, x).argmax(1)
    net = cv2.dnn.readNetFromONNX(str(path))
    for batch in (1, 8):
        rows = []
        for s in range(0, N, batch):
            net.setInput(np.ascontiguousarray(x[s:s + batch]))
            y = net.forward()
            assert y.shape == (len(x[s:s + batch]), 2), (name, batch, y.shape)
            rows.append(y)
        agree = float((np.concatenate(rows).argmax(1) == ref).mean())
        assert agree >= 0.99, f"{name}: OpenCV DNN agrees with ORT on {agree:.1%} at batch {batch}"


@pytest.mark.parametrize("name", SMILE_ONNX)
def test_openvino_agrees_with_onnxruntime(faces, name):
    need("openvino")
    path = zoo.ZOO_DIR / name
    ref = edgecv_top1(path, faces, backend="onnxruntime")
    for kw in ({"threads": 2}, {}):
        got = edgecv_top1(path, faces, backend="openvino", **kw)
        agree = float((got == ref).mean())
        assert agree >= 0.99, f"{name}: OpenVINO agrees with ORT on {agree:.1%} ({kw})"


def test_openvino_runs_batch_by_batch_like_a_pipeline(faces):
    from edgecv.runtime.backends import open_backend

    from edgecv.resolve import resolve

    need("openvino")
    ref = resolve("smile", "openvino")
    assert ref.path.name == "smile.int8.onnx"
    x = apply_chain(faces[:16], ref.spec.preprocess, ref.spec.input_shape)
    with open_backend(ref.path, ref.spec, backend="openvino", threads=1) as be:
        assert be.name == "openvino" and be.threads == 1
        whole = be.run(x)
        one_by_one = np.concatenate([be.run(x[i:i + 1]) for i in range(len(x))])
        assert be.run(x[:0]).shape == (0, 2)
    assert whole.shape == (16, 2)
    np.testing.assert_allclose(whole, one_by_one, atol=1e-5)


def test_mediapipe_image_classifier_loads_the_shipped_smile_tflite(faces):
    import cv2

    from edgecv.modelfile import load_spec

    path = zoo.ZOO_DIR / "smile.fp16.tflite"
    spec = load_spec(path)
    assert spec.colour == "rgb" and spec.input_shape == (32, 32, 3)
    # ImageClassifier's own resize is nearest-neighbour: hand it the crop at the model's size, as
    # the spec's chain makes it (RGB, pixel-area resize).
    rgb = np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_BGR2RGB), (32, 32), interpolation=cv2.INTER_AREA)
                    for f in faces])
    ours = edgecv_top1(path, faces)
    theirs = np.array(mediapipe_top1(path, rgb))
    agree = float((ours == theirs).mean())
    assert agree >= 0.99, f"MediaPipe agrees with edgecv on {agree:.1%} of {N} SMILES faces"


@pytest.mark.parametrize("name", ["smile.fp16.tflite", "captcha-ezpass.int8.tflite", "captcha-v2.int8.tflite"])
def test_every_shipped_tflite_has_standard_metadata(name):
    from edgecv.modelfile import load_spec

    path = zoo.ZOO_DIR / name
    spec = load_spec(path)
    d = metadata_displayer().with_model_file(str(path))
    meta = json.loads(d.get_metadata_json())
    assert meta["name"] == spec.name
    inp = meta["subgraph_metadata"][0]["input_tensor_metadata"][0]
    assert inp["process_units"][0]["options_type"] == "NormalizationOptions"
    labels = d.get_associated_file_buffer("labels.txt").decode().splitlines()
    if spec.output == "ctc":
        assert labels == list(spec.charset) + ["<blank>"]
    else:
        assert labels == list(spec.labels)


def test_exactly_one_cv2_and_it_is_opencv_4():
    import cv2

    need("mediapipe")
    dists = {d.metadata["Name"].lower() for d in importlib.metadata.distributions()}
    opencv = sorted(d for d in dists if d.startswith("opencv"))
    assert len(opencv) == 1, f"more than one OpenCV distribution provides cv2: {opencv}"
    assert cv2.__version__.startswith("4."), cv2.__version__
    assert hasattr(cv2, "CascadeClassifier")   # the runtime's Haar detector (gone in OpenCV 5)
    assert "mediapipe" in dists and "openvino" in dists


def test_openvino_runs_the_qdq_model_as_int8():
    """The int8 artefact's convolutions run in OpenVINO's integer kernels (VNNI/AMX where the CPU has
    them), all but the classifier head the exporter leaves in float; the fp32 one's in f32."""
    from edgecv.runtime.backends import open_backend

    from edgecv.resolve import resolve

    need("openvino")

    def conv_precisions(name: str) -> list[str]:
        ref = resolve(zoo.ZOO_DIR / name)
        with open_backend(ref.path, ref.spec, backend="openvino") as be:
            ops = be.compiled.get_runtime_model().get_ordered_ops()
            return [op.get_rt_info()["runtimePrecision"].astype(str) for op in ops
                    if op.get_rt_info()["layerType"].astype(str) == "Convolution"]

    int8 = conv_precisions("smile.int8.onnx")
    assert len(int8) == 6 and sum(p in ("u8", "i8") for p in int8) == 5, int8
    assert set(conv_precisions("smile.onnx")) == {"f32"}


def test_eval_runs_the_shipped_int8_model_on_openvino(data_dir):
    """`--backend openvino` from the command line, on all 2,190 test faces: the card's accuracy."""
    from conftest import run_cli

    need("openvino")
    proc = run_cli("eval", "smile", "--backend", "openvino", "--data", str(data_dir / "smiles"),
                   "--split", "test", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    result = json.loads(proc.stdout)
    assert result["model"].endswith("smile.int8.onnx") and result["n"] == 2190
    assert result["accuracy"] >= 0.93
