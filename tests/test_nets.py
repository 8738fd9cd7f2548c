"""Every registered network: forward and backward on tiny input, right output shape, no NaN."""
from __future__ import annotations

import numpy as np
import pytest

from edgecv.errors import ConfigError
from edgecv.train.nets import create_model, list_models

SHAPES = {"fchead": (4, 4, 8)}


@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name):
    import keras
    shape = SHAPES.get(name, (32, 32, 3))
    model = create_model(name, shape, 5)
    x = np.random.default_rng(0).random((4, *shape), dtype=np.float32)
    out = np.asarray(model(x, training=False))
    if out.ndim == 3:  # sequence models (CRNN): one softmax per time step, labels per step
        assert out.shape[0] == 4 and out.shape[2] == 5, out.shape
        y = np.zeros(out.shape[:2], np.int64)
    else:
        assert out.shape == (4, 5), out.shape
        y = np.array([0, 1, 2, 3])
    assert np.isfinite(out).all()
    assert np.allclose(out.sum(axis=-1), 1, atol=1e-4)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)


def test_unknown_model_lists_close_matches():
    with pytest.raises(ConfigError, match="Did you mean 'lenet'"):
        create_model("lenett", (28, 28, 1), 10)


def test_unknown_model_option_is_an_error():
    with pytest.raises(ConfigError, match="takes no option"):
        create_model("lenet", (28, 28, 1), 10, widht=3)


def test_resnet_regularises_every_conv():
    """The book's listing forgets to pass `reg` to the modules; ours reaches every convolution."""
    import keras
    model = create_model("resnet", (32, 32, 3), 10, stages=(2, 2, 2), filters=(16, 16, 32, 64), l2=1e-4)
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert convs and all(l.kernel_regularizer is not None for l in convs)


@pytest.mark.parametrize("name", list_models())
def test_every_net_exports_to_tflite_and_onnx_with_parity(name, tmp_path):
    """Each registered net (untrained weights, seeded) converts to TFLite and ONNX at fp32, and both
    files give Keras's outputs on the same inputs."""
    import keras

    from edgecv.export import onnx as onnx_export
    from edgecv.export import tflite as tflite_export
    from edgecv.preprocess import default_chain
    from edgecv.spec import ModelSpec

    keras.utils.set_random_seed(0)
    shape = SHAPES.get(name, (32, 32, 3))
    model = create_model(name, shape, 5)
    spec = ModelSpec(name=name, task="classify", input_shape=shape, colour="bgr",
                     preprocess=tuple(default_chain(shape)), labels=tuple("abcde"), arch=name)
    x = np.random.default_rng(1).random((6, *shape), dtype=np.float32)
    want = np.asarray(model(x, training=False))
    for fmt, module in (("tflite", tflite_export), ("onnx", onnx_export)):
        path = tmp_path / f"{name}.{fmt}"
        path.write_bytes(module.convert(model, spec, "fp32", None, tmp_path))
        got = module.run(path, x)
        assert got.shape == want.shape, (fmt, got.shape, want.shape)
        np.testing.assert_allclose(got, want, atol=2e-5, err_msg=f"{name} {fmt}")
