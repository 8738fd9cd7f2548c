"""Each preprocessor on real images, and the ModelSpec chain reproducing the training objects."""
from __future__ import annotations

import numpy as np
import pytest

from edgecv.errors import ModelSpecError
from edgecv.images import read_image
from edgecv.preprocess import apply_chain, default_chain, validate_chain
from edgecv.spec import ModelSpec
from edgecv.train.preprocessors import (AspectAwarePreprocessor, CropPreprocessor, GrayPreprocessor,
                                        ImageToArrayPreprocessor, MeanPreprocessor, PadPreprocessor,
                                        PatchPreprocessor, ScalePreprocessor, SimplePreprocessor, chain_steps)


@pytest.fixture(scope="module")
def photo(data_dir):
    return read_image(data_dir / "videos/smile.jpg")  # 426x640x3 BGR


def test_simple_resize_ignores_aspect(photo):
    out = SimplePreprocessor(32, 24)(photo)
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8


def test_aspect_aware_crops_the_centre(photo):
    out = AspectAwarePreprocessor(64, 64)(photo)
    assert out.shape == (64, 64, 3)
    # The centre crop of a wide image equals resizing the central square.
    h, w = photo.shape[:2]
    import cv2
    square = photo[:, (w - h) // 2:(w - h) // 2 + h]
    ref = cv2.resize(square, (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(out.astype(int) - ref.astype(int)).mean() < 3


def test_pad_keeps_everything_and_replicates_edges(data_dir):
    digit = read_image(next((data_dir / "ezpass/digits/7").glob("*.png")), gray=True)
    out = PadPreprocessor(28, 28)(digit)
    assert out.shape == (28, 28)
    h, w = digit.shape
    if h > w:  # padded left/right: the first column repeats
        assert (out[:, 0] == out[:, 1]).all() or w * 28 / h > 27


def test_gray_scale_image_to_array(photo):
    g = GrayPreprocessor()(photo)
    assert g.ndim == 2
    a = ImageToArrayPreprocessor()(g)
    assert a.shape == (*g.shape, 1)
    s = ScalePreprocessor()(a)
    assert s.dtype == np.float32 and 0 <= s.min() and s.max() <= 1


def test_mean_fit_and_subtract(photo):
    batch = np.stack([photo, photo[::-1]]).astype(np.float32)
    mp = MeanPreprocessor.fit(batch)
    assert np.allclose(mp.means, batch.reshape(-1, 3).astype(np.float64).mean(0), atol=1e-6)
    out = mp(photo)
    assert np.allclose(out.reshape(-1, 3).astype(np.float64).mean(0), 0, atol=1e-2)


def test_patch_is_a_random_crop_inside(photo):
    p = PatchPreprocessor(50, 40, rng=np.random.default_rng(0))
    crops = [p(photo) for _ in range(5)]
    assert all(c.shape == (40, 50, 3) for c in crops)
    assert len({c.tobytes() for c in crops}) > 1


def test_ten_crop(photo):
    crops = CropPreprocessor(64, 64)(photo)
    assert crops.shape == (10, 64, 64, 3)
    assert np.array_equal(crops[5], crops[0][:, ::-1])
    assert np.array_equal(crops[0], photo[:64, :64])


def test_chain_matches_the_training_objects(photo):
    objs = [GrayPreprocessor(), SimplePreprocessor(28, 28), ScalePreprocessor(1 / 255.0)]
    steps = chain_steps(objs)
    x = photo
    for o in objs:
        x = o(x)
    batch = apply_chain([photo], steps, (28, 28, 1))
    assert batch.shape == (1, 28, 28, 1)
    assert np.allclose(batch[0, :, :, 0], x)
    assert steps == default_chain((28, 28, 1))


def test_chain_round_trips_through_the_spec(photo):
    steps = default_chain((32, 32, 3), mode="aspect") + [{"op": "mean", "values": [0.5, 0.4, 0.3]}]
    spec = ModelSpec("m", "classify", (32, 32, 3), "bgr", steps, labels=("a", "b"))
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec
    assert np.array_equal(apply_chain([photo], again.preprocess, again.input_shape),
                          apply_chain([photo], steps, (32, 32, 3)))


def test_bad_chain_and_spec_messages():
    with pytest.raises(ModelSpecError, match="unknown preprocess op 'blur'"):
        validate_chain([{"op": "blur"}])
    with pytest.raises(ModelSpecError, match="resize mode"):
        validate_chain([{"op": "resize", "size": [2, 2], "mode": "squash"}])
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
    assert np.allclose(MeanPreprocessor.fit(x).means, [100.3, 120.7, 90.1], atol=1e-3)


def test_crop_step_and_ten_crops_in_the_deployable_chain(photo):
    """Random-patch training deploys as resize-then-centre-crop; ten_crops cuts the same resized
    image into the 10-crop test batch, the centre crop among them."""
    from edgecv.preprocess import ten_crops

    chain = [{"op": "resize", "size": [40, 48], "mode": "stretch", "interp": "area"},
             {"op": "crop", "size": [32, 32]}, {"op": "scale", "factor": 1 / 255.0}]
    validate_chain(chain)
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
    with pytest.raises(ModelSpecError, match="crop step needs size"):
        validate_chain([{"op": "crop", "size": [32]}])
