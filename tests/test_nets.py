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
