"""Backends on real models and real crops: parity across LiteRT / ONNX Runtime / Keras, bucketed
TFLite batches, int8 (de)quantization, provider fallback and every misuse message."""
from __future__ import annotations

import logging
import shutil

import cv2
import numpy as np
import pytest

from edgecv.errors import ConfigError, ModelError, ModelSpecError
from edgecv.images import read_image
from edgecv.preprocess import apply_chain
from edgecv.runtime.backends import LiteRTBackend, OrtBackend
from edgecv.runtime.detect import HaarFaceDetector
from models import open_model, smile_model_files, smile_spec  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def crops(data_dir) -> np.ndarray:
    """Real face crops: Haar faces from the smile still plus SMILES crops, preprocessed by the spec."""
    still = read_image(data_dir / "videos" / "smile.jpg")
    faces = [b.crop(still) for b in HaarFaceDetector(width=None).detect(still)]
    root = data_dir / "smiles" / "SMILEs"
    files = sorted((root / "positives" / "positives7").glob("*.jpg"))[-20:] + \
        sorted((root / "negatives" / "negatives7").glob("*.jpg"))[-17:]
    images = faces + [read_image(p) for p in files]
    spec = smile_spec()
    return apply_chain(images, spec.preprocess, spec.input_shape)


def test_litert_and_ort_agree_on_the_same_crops(smile_model_files, crops):
    with open_model(smile_model_files["tflite"]) as lite, open_model(smile_model_files["onnx"]) as ort:
        a, b = lite.run(crops), ort.run(crops)
    assert a.shape == b.shape == (len(crops), 2)
    np.testing.assert_allclose(a, b, atol=1e-4, err_msg="litert vs onnxruntime(CPUExecutionProvider)")
    assert (a.argmax(1) == b.argmax(1)).all()


def test_exported_models_match_the_keras_reference(smile_model_files, crops):
    with open_model(smile_model_files["keras"]) as ref:
        want = ref.run(crops)
    for kind in ("tflite", "onnx"):
        with open_model(smile_model_files[kind]) as b:
            np.testing.assert_allclose(b.run(crops), want, atol=1e-4, err_msg=f"{kind} vs keras")


def test_int8_tflite_is_quantized_inside_the_backend(smile_model_files, crops):
    with open_model(smile_model_files["tflite_int8"]) as q, open_model(smile_model_files["tflite"]) as f:
        assert q.input_spec.dtype == "int8" and q.input_spec.quantization is not None
        assert q.spec.quantization == "int8"  # read from the spec embedded in the file
        yq, yf = q.run(crops), f.run(crops)
    assert yq.dtype == np.float32
    assert np.abs(yq - yf).max() < 0.05
    assert (yq.argmax(1) == yf.argmax(1)).mean() >= 0.9


def test_litert_buckets_pad_and_split_without_changing_results(smile_model_files, crops):
    with LiteRTBackend(smile_model_files["tflite"], smile_spec(), buckets=(1, 4, 16)) as b:
        one_by_one = np.concatenate([b.run(crops[i:i + 1]) for i in range(len(crops))])
        for n in (3, 5, 16, len(crops)):  # padded to 4, padded to 16, exact, split across 16s
            np.testing.assert_allclose(b.run(crops[:n]), one_by_one[:n], atol=1e-5)
        assert b.bucket_for(3) == 4 and b.bucket_for(100) == 16
        # One interpreter per bucket, made once: repeated calls reuse them.
        made = dict(b._buckets)
        b.run(crops[:3])
        assert b._buckets == made and set(made) == {1, 4, 16}


def test_litert_int8_fast_path_matches_a_plain_interpreter(smile_model_files, crops):
    """The backend writes quantized inputs straight into the interpreter's buffer and dequantizes
    through a table; a plain set_tensor/invoke/get_tensor with the textbook formulas must give the
    very same numbers, also for out-of-range inputs (clipped, not wrapped) and padded buckets."""
    from edgecv.runtime.backends import _litert_factory, dequantize, quantize

    path = smile_model_files["tflite_int8"]
    x = crops.copy()
    x[0] = 50.0   # far above the calibrated range: must saturate at the int8 maximum
    x[1] = -50.0  # and at the minimum
    it = _litert_factory()(model_content=path.read_bytes())
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], [len(x), *inp["shape"][1:]])
    it.allocate_tensors()
    it.set_tensor(inp["index"], quantize(x, inp["quantization"], np.dtype(inp["dtype"])))
    it.invoke()
    want = dequantize(it.get_tensor(out["index"]), out["quantization"])
    with LiteRTBackend(path, smile_spec(), buckets=(1, 4, 64)) as b:
        np.testing.assert_array_equal(b.run(x), want)           # padded into the 64 bucket
        np.testing.assert_array_equal(b.run(x[:3]), want[:3])   # padded 3 -> 4, stale rows above
        np.testing.assert_array_equal(b.run(x[:1]), want[:1])
        # The path for a LiteRT without the wrapper's Invoke (views made per call) agrees too.
        for bucket in b._buckets.values():
            bucket.close()
            bucket._invoke = None
        np.testing.assert_array_equal(b.run(x), want)
        np.testing.assert_array_equal(b.run(x[:3]), want[:3])


def test_empty_batch_gives_empty_output(smile_model_files):
    with open_model(smile_model_files["onnx"]) as b:
        assert b.run(np.zeros((0, 28, 28, 1), np.float32)).shape == (0, 2)


def test_unavailable_provider_warns_by_name_and_runs_on_cpu(smile_model_files, crops, caplog):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the fallback path is for builds without it")
    with caplog.at_level(logging.WARNING, logger="edgecv.runtime.backends"):
        with open_model(smile_model_files["onnx"], device="tensorrt") as b:
            assert b.providers == ("CPUExecutionProvider",)
            assert b.run(crops[:2]).shape == (2, 2)
    text = caplog.text
    assert "TensorrtExecutionProvider" in text and "CUDAExecutionProvider" in text and "falling back" in text


def test_cpu_only_backend_says_so_for_a_gpu_device(smile_model_files, caplog):
    with caplog.at_level(logging.WARNING, logger="edgecv.runtime.backends"):
        open_model(smile_model_files["tflite"], device="cuda").close()
    assert "runs on the CPU only" in caplog.text


def test_wrong_batch_shape_is_a_clear_error(smile_model_files):
    with open_model(smile_model_files["onnx"]) as b:
        with pytest.raises(Exception, match=r"Nx28x28x1 float32; got shape \(2, 32, 32, 3\)"):
            b.run(np.zeros((2, 32, 32, 3), np.float32))


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"backend": "tensorflow"}, ConfigError, r"unknown backend 'tensorflow'.*Choose from: keras, litert, onnxruntime"),
    ({"backend": "onnxruntime"}, ConfigError, r"backend 'onnxruntime' runs \.onnx files; got smile\.tflite"),
    ({"device": "gpu"}, ConfigError, r"unknown device 'gpu'.*cpu, cuda, tensorrt"),
    ({"threads": 0}, ConfigError, r"threads must be a positive int; got 0"),
])
def test_open_backend_misuse(smile_model_files, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        open_model(smile_model_files["tflite"], **kwargs)


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_garbage_model_file_is_a_model_error(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    smile_spec().save(str(path) + ".spec.json")
    with pytest.raises(ModelError, match="garbage"):
        open_model(path)


def test_unknown_suffix_and_missing_file(tmp_path):
    from edgecv.runtime.backends import open_backend

    with pytest.raises(ConfigError, match=r"cannot tell the backend from suffix '\.pb'"):
        open_backend(tmp_path / "model.pb", smile_spec())
    with pytest.raises(ModelError, match="no such model file"):
        open_backend(tmp_path / "missing.onnx", smile_spec())


def test_spec_that_does_not_fit_the_model_is_refused(smile_model_files, tmp_path):
    path = tmp_path / "smile.onnx"
    shutil.copy(smile_model_files["onnx"], path)
    wrong = smile_spec().replace(input_shape=(32, 32, 1), preprocess=smile_spec().preprocess)
    with pytest.raises(ModelSpecError, match=r"model input shape \[None, 28, 28, 1\] does not match.*\[32, 32, 1\]"):
        OrtBackend(path, wrong)


def test_real_face_crop_survives_the_whole_chain(smile_model_files, data_dir):
    """A face found by Haar in a real still, classified by both backends to the same label."""
    still = cv2.imread(str(data_dir / "videos" / "smile.jpg"))
    boxes = HaarFaceDetector().detect(still)
    assert boxes, "Haar found no face in smile.jpg"
    spec = smile_spec()
    x = apply_chain([b.crop(still) for b in boxes], spec.preprocess, spec.input_shape)
    with open_model(smile_model_files["tflite"]) as a, open_model(smile_model_files["onnx"]) as b:
        assert (a.run(x).argmax(1) == b.run(x).argmax(1)).all()


def test_ort_io_binding_path_on_the_cpu_provider_matches_plain_runs(smile_model_files, crops):
    """The GPU path's code (fixed per-bucket buffers, staging, one copy each way) behind the CPU
    provider: same numbers as session.run for every batch size, buckets padded and split."""
    x = np.concatenate([crops] * 9)[:300]  # 300 > the largest bucket (256): split
    with OrtBackend(smile_model_files["onnx"], smile_spec()) as plain, \
            OrtBackend(smile_model_files["onnx"], smile_spec(), io_binding=True) as bound:
        assert bound.io_binding and not plain.io_binding
        for n in (1, 3, 5, 64, 300):
            np.testing.assert_allclose(bound.run(x[:n]), plain.run(x[:n]), atol=1e-6)
        slots = dict(bound._bound._slots)
        bound.run(x[:3])  # buffers are made once per bucket
        assert bound._bound._slots == slots and set(slots) == {1, 4, 8, 64, 256}
        assert not bound._bound.pinned  # no CUDA here: pageable staging, and nothing pretends otherwise


def test_io_binding_warmup_prepares_every_bucket_and_keeps_results(smile_model_files, crops):
    """On a GPU every bucket is run once at open (cuDNN's search and graph capture cost hundreds of
    ms per new shape on the H100): the warm-up must leave all buffers ready and outputs unchanged."""
    with OrtBackend(smile_model_files["onnx"], smile_spec()) as plain, \
            OrtBackend(smile_model_files["onnx"], smile_spec(), io_binding=True) as bound:
        assert bound._bound._slots == {}  # the CPU provider is not warmed at open
        bound._bound.warmup()
        assert set(bound._bound._slots) == set(bound._bound.buckets)
        for n in (1, 7, len(crops)):
            np.testing.assert_allclose(bound.run(crops[:n]), plain.run(crops[:n]), atol=1e-6)


def test_cuda_graph_request_without_cuda_warns_and_runs(smile_model_files, crops, caplog):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the warning is for builds without it")
    with caplog.at_level("WARNING"):
        with open_model(smile_model_files["onnx"], cuda_graph=True) as b:
            assert not b.cuda_graph
            y = b.run(crops)
    assert y.shape == (len(crops), 2)
    assert "CUDA graphs were requested but the session runs on CPUExecutionProvider" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        open_model(smile_model_files["tflite"], cuda_graph=True).close()
    assert "CUDA graphs were requested but the litert backend has none" in caplog.text


def test_pinned_staging_buffer_falls_back_to_pageable_memory_with_a_warning(caplog):
    from edgecv.runtime.ort_io import HostBuffer

    with caplog.at_level("WARNING"):
        buf = HostBuffer((4, 28, 28, 1), pinned=True)
    if buf.pinned:
        buf.close()
        pytest.skip("this machine has a GPU and its CUDA runtime page-locked the buffer")
    assert not buf.pinned and buf.array.shape == (4, 28, 28, 1) and buf.array.dtype == np.float32
    assert "could not page-lock" in caplog.text
    buf.close()


def test_backends_are_safe_to_share_between_threads(smile_model_files, crops):
    """LiteRT interpreters and the IO-binding buffers are per bucket and not thread-safe by
    themselves: four threads hammering one backend each get their own rows back."""
    from concurrent.futures import ThreadPoolExecutor

    for b in (open_model(smile_model_files["tflite_int8"]),
              OrtBackend(smile_model_files["onnx"], smile_spec(), io_binding=True)):
        with b:
            want = [b.run(crops[i:i + 3]) for i in range(0, 12, 3)]

            def worker(k):
                return all(np.array_equal(b.run(crops[3 * k:3 * k + 3]), want[k]) for _ in range(50))

            with ThreadPoolExecutor(4) as pool:
                assert all(pool.map(worker, range(4))), b.name
