"""The deployable preprocessing chain on real images: the book's preprocessors as typed steps
(edgecv.preprocess), their parsing from a ModelSpec, and the 10-crop batch."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgecv.errors import ModelSpecError
from edgecv.images import read_image
from edgecv.preprocess import Crop, Gray, Resize, Scale, apply_chain, default_chain, parse_chain, parse_step
from edgecv.spec import ModelSpec


@pytest.fixture(scope="module")
def photo(data_dir):
    return read_image(data_dir / "videos/smile.jpg")  # 426x640x3 BGR


def test_stretch_resize_ignores_aspect(photo):
    out = Resize((24, 32)).image(photo)
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8


def test_aspect_resize_crops_the_centre(photo):
    out = Resize((64, 64), "aspect").image(photo)
    assert out.shape == (64, 64, 3)
    # The centre crop of a wide image equals resizing the central square.
    h, w = photo.shape[:2]
    square = photo[:, (w - h) // 2:(w - h) // 2 + h]
    ref = cv2.resize(square, (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(out.astype(int) - ref.astype(int)).mean() < 3


def test_pad_resize_keeps_everything_and_replicates_edges(data_dir):
    digit = read_image(next((data_dir / "ezpass/digits/7").glob("*.png")), gray=True)
    out = Resize((28, 28), "pad").image(digit)
    assert out.shape == (28, 28)
    h, w = digit.shape
    if h > w:  # padded left/right: the first column repeats
        assert (out[:, 0] == out[:, 1]).all() or w * 28 / h > 27


def test_gray_and_scale_steps(photo):
    batch = apply_chain([photo], [Gray(), Resize((28, 28)), Scale(1 / 255.0)], (28, 28, 1))
    ref = cv2.resize(cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY), (28, 28), interpolation=cv2.INTER_AREA) / 255.0
    assert batch.shape == (1, 28, 28, 1) and batch.dtype == np.float32
    assert np.allclose(batch[0, :, :, 0], ref, atol=1e-6)


def test_chain_round_trips_through_the_spec(photo):
    steps = default_chain((32, 32, 3), mode="aspect") + [{"op": "mean", "values": [0.5, 0.4, 0.3]}]
    spec = ModelSpec("m", "classify", (32, 32, 3), "bgr", steps, labels=("a", "b"))
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec
    assert np.array_equal(apply_chain([photo], again.preprocess, again.input_shape),
                          apply_chain([photo], steps, (32, 32, 3)))


def test_chain_is_parsed_into_typed_steps_and_back(photo):
    steps = default_chain((28, 28, 1))
    typed = parse_chain(steps)
    assert typed == (Gray(), Resize((28, 28), "stretch", "area"), Scale(1 / 255.0))
    assert [t.to_dict() for t in typed] == steps
    assert np.array_equal(apply_chain([photo], typed, (28, 28, 1)), apply_chain([photo], steps, (28, 28, 1)))


@pytest.mark.parametrize("step, match", [
    ({"op": "blur"}, r"unknown preprocess op 'blur'.*Choose from: crop, gray, mean, resize, rgb, scale, std"),
    ({"op": "sacle", "factor": 0.5}, r"unknown preprocess op 'sacle'\. Did you mean 'scale'\?"),
    ({"op": "scale"}, r"preprocess step 'scale' needs field\(s\) factor"),
    ({"op": "scale", "factr": 0.5}, r"preprocess step 'scale': unknown field 'factr'\. Did you mean 'factor'"),
    ({"op": "scale", "factor": "1/255"}, r"scale factor must be a finite number; got '1/255'"),
    ({"op": "scale", "factor": float("nan")}, r"scale factor must be a finite number"),
    ({"op": "resize", "size": [2, 2], "mode": "squash"}, r"unknown resize mode 'squash'"),
    ({"op": "resize", "size": [2, 2], "interp": "bilinear"}, r"unknown interpolation 'bilinear'"),
    ({"op": "resize", "size": [2, 2.5]}, r"resize step needs size \[H, W\] of two positive ints"),
    ({"op": "crop", "size": [32]}, r"crop step needs size"),
    ({"op": "mean", "values": []}, r"mean values must be a non-empty list"),
    ({"op": "std", "values": [0.5, 0]}, r"std values must be non-zero"),
    ({"size": 3}, r"every preprocess step needs an 'op'"),
    ("gray", r"a preprocess step must be an object"),
])
def test_bad_steps_are_refused_with_what_is_allowed(step, match):
    with pytest.raises(ModelSpecError, match=match):
        parse_step(step)
    spec = ModelSpec("m", "classify", (28, 28, 1), "gray", default_chain((28, 28, 1)), labels=("a", "b")).to_dict()
    spec["preprocess"] = [step]
    with pytest.raises(ModelSpecError, match=match):  # the same message when a spec is read
        ModelSpec.from_dict(spec)


def test_bad_spec_messages():
    with pytest.raises(ModelSpecError, match="missing field"):
        ModelSpec.from_json('{"name": "x"}')
    with pytest.raises(ModelSpecError, match="not valid JSON"):
        ModelSpec.from_json("{nope")
    with pytest.raises(ModelSpecError, match="colour"):
        ModelSpec("m", "classify", (28, 28, 3), "gray", [])


def test_channel_means_do_not_saturate_on_large_float32_sets():
    """Regression: float32 accumulation over 46M values per channel returned 0.364 for every channel."""
    from edgecv.train.trainer import channel_means
    # 3M pixels per channel at ~100 (0-255 units): a float32 running sum is off by several percent.
    x = np.empty((3000, 32, 32, 3), np.float32)
    x[..., 0], x[..., 1], x[..., 2] = 100.3, 120.7, 90.1
    assert abs(float(x.reshape(-1, 3).mean(axis=0)[0]) - 100.3) > 0.5  # the trap is real
    assert np.allclose(channel_means(x), [100.3, 120.7, 90.1], atol=1e-3)


def test_crop_step_and_ten_crops_in_the_deployable_chain(photo):
    """Random-patch training deploys as resize-then-centre-crop; ten_crops cuts the same resized
    image into the 10-crop test batch, the centre crop among them."""
    from edgecv.preprocess import ten_crops

    chain = [{"op": "resize", "size": [40, 48], "mode": "stretch", "interp": "area"},
             {"op": "crop", "size": [32, 32]}, {"op": "scale", "factor": 1 / 255.0}]
    assert parse_chain(chain)[1] == Crop((32, 32))
    one = apply_chain([photo], chain, (32, 32, 3))
    resized = apply_chain([photo], chain[:1] + chain[2:], (40, 48, 3))[0]
    np.testing.assert_array_equal(one[0], resized[4:36, 8:40])  # the centre
    ten = ten_crops([photo, photo[::2, ::2]], chain, (32, 32, 3))
    assert ten.shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(ten[4], one[0])                    # corners, then the centre
    np.testing.assert_array_equal(ten[0], resized[:32, :32])         # top-left
    np.testing.assert_array_equal(ten[3], resized[8:, 16:])          # bottom-right
    np.testing.assert_array_equal(ten[5], ten[0][:, ::-1])           # mirrors follow
    with pytest.raises(ModelSpecError, match="needs a preprocess chain with a crop step"):
        ten_crops([photo], default_chain((32, 32, 3)), (32, 32, 3))
    with pytest.raises(ModelSpecError, match="crop to 32x32 needs an image at least that large"):
        apply_chain([photo], [{"op": "resize", "size": [20, 20]}, {"op": "crop", "size": [32, 32]}], (32, 32, 3))
