"""Small real smile models for runtime tests: a tiny Keras CNN (28x28x1 gray -> not_smiling/smiling)
trained for a few steps on real SMILES crops, saved as .keras, converted to .tflite (fp32 and full
int8) and .onnx, each with its ModelSpec sidecar.

Building needs TensorFlow, so it runs in a child process (`python tests/models.py OUT`): the test
process itself stays free of TensorFlow, as the runtime is. `smile_models(cache_dir)` builds once
and reuses the files while this builder's source is unchanged.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
FILES = {"keras": "smile.keras", "tflite": "smile.tflite", "tflite_int8": "smile_int8.tflite", "onnx": "smile.onnx"}
SHAPE = (28, 28, 1)
LABELS = ("not_smiling", "smiling")


def smile_spec():
    from edgecv.preprocess import default_chain
    from edgecv.spec import ModelSpec

    return ModelSpec(name="test-smile", task="smile", input_shape=SHAPE, colour="gray",
                     preprocess=tuple(default_chain(SHAPE)), labels=LABELS, arch="tiny-cnn")


def embed_tflite(data: bytes, spec) -> bytes:
    """TFLite bytes with the spec appended as a zip member `edgecv.spec.json`: the layout
    edgecv.modelfile reads (exports write it inside the standard TFLite Metadata's zip)."""
    import io
    import zipfile

    from edgecv.modelfile import TFLITE_MEMBER

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(TFLITE_MEMBER, spec.to_json())
    return data + buf.getvalue()


def open_model(path, **kwargs):
    """A backend for a model file, its spec read the one way (edgecv.resolve)."""
    from edgecv.resolve import resolve
    from edgecv.runtime.backends import open_backend

    ref = resolve(path)
    return open_backend(ref.path, ref.spec, **kwargs)


def smile_models(cache_dir: str | os.PathLike) -> dict[str, Path]:
    """{'keras': .., 'tflite': .., 'tflite_int8': .., 'onnx': ..} built (once) under cache_dir."""
    key = hashlib.sha256(HERE.read_bytes()).hexdigest()[:12]
    out = Path(cache_dir) / f"smile-{key}"
    paths = {kind: out / name for kind, name in FILES.items()}
    if not all(p.exists() and Path(str(p) + ".spec.json").exists() for p in paths.values()):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="")
        proc = subprocess.run([sys.executable, str(HERE), str(out)], capture_output=True, env=env, cwd=REPO,
                              timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"building test models failed:\n{proc.stderr.decode(errors='replace')[-4000:]}")
    return paths


@pytest.fixture(scope="session")
def smile_model_files(request, tmp_path_factory) -> dict[str, Path]:
    """The test models, built once per session; kept in pytest's cache between sessions while this
    file is unchanged (CI runs with `-p no:cacheprovider`: then a temporary folder)."""
    cache = getattr(request.config, "cache", None)
    root = cache.mkdir("edgecv-test-models") if cache is not None else tmp_path_factory.mktemp("edgecv-test-models")
    return smile_models(root)


def _training_data(n: int = 768):
    """Real SMILES crops (64x64 gray JPG), half smiling, preprocessed by the spec's own chain."""
    import numpy as np

    from edgecv.images import read_image
    from edgecv.preprocess import apply_chain

    root = Path(os.environ.get("EDGECV_DATA", REPO.parent / "shared" / "data")) / "smiles" / "SMILEs"
    pos = sorted((root / "positives" / "positives7").glob("*.jpg"))[: n // 2]
    neg = sorted((root / "negatives" / "negatives7").glob("*.jpg"))[: n // 2]
    images = [read_image(p, gray=True) for p in pos + neg]
    x = apply_chain(images, smile_spec().preprocess, SHAPE)
    y = np.array([1] * len(pos) + [0] * len(neg), np.int64)
    return x, y


def build(out: Path) -> None:
    import numpy as np
    import keras
    import tensorflow as tf
    import tf2onnx

    from edgecv.modelfile import write_sidecar

    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    spec = smile_spec()
    x, y = _training_data()
    model = keras.Sequential([
        keras.Input(SHAPE),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=64, verbose=0, shuffle=True)
    model.save(out / "smile.keras")
    write_sidecar(out / "smile.keras", spec)

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    (out / "smile.tflite").write_bytes(conv.convert())
    write_sidecar(out / "smile.tflite", spec)

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(0, len(x), 8))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    int8_spec = spec.replace(quantization="int8")
    (out / "smile_int8.tflite").write_bytes(embed_tflite(conv.convert(), int8_spec))
    write_sidecar(out / "smile_int8.tflite", int8_spec)

    fn = tf.function(lambda t: model(t, training=False), input_signature=[tf.TensorSpec((None, *SHAPE), tf.float32)])
    tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=17,
                                  output_path=str(out / "smile.onnx"))
    write_sidecar(out / "smile.onnx", spec)
    np.save(out / "check.npy", x[:4])


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    build(Path(sys.argv[1]))
