"""The books' preprocessors as small composable objects.

The deployable ones (Simple, AspectAware, Gray, Scale, Mean) each map to one step of the ModelSpec
chain (`to_step()`), executed by edgecv.preprocess, so training and inference cannot drift apart.
Patch (random crop) is training-only augmentation; Crop (10-crop) is test-time augmentation.
ImageToArray is the identity here: our arrays are already NumPy HxWxC.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from edgecv.preprocess import resize, to_gray


class Preprocessor:
    def __call__(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def to_step(self) -> dict[str, Any] | None:
        """The ModelSpec step this preprocessor stands for (None: not part of the deployed chain)."""
        return None


class SimplePreprocessor(Preprocessor):
    """Resize to (width, height), ignoring the aspect ratio."""

    def __init__(self, width: int, height: int, interp: str = "area"):
        self.width, self.height, self.interp = width, height, interp

    def __call__(self, image):
        return resize(image, (self.height, self.width), "stretch", self.interp)

    def to_step(self):
        return {"op": "resize", "size": [self.height, self.width], "mode": "stretch", "interp": self.interp}


class AspectAwarePreprocessor(SimplePreprocessor):
    """Resize the shorter side, then centre-crop to (width, height)."""

    def __call__(self, image):
        return resize(image, (self.height, self.width), "aspect", self.interp)

    def to_step(self):
        return {"op": "resize", "size": [self.height, self.width], "mode": "aspect", "interp": self.interp}


class PadPreprocessor(SimplePreprocessor):
    """Fit inside (width, height) and pad by edge replication (the captcha case study's helper)."""

    def __call__(self, image):
        return resize(image, (self.height, self.width), "pad", self.interp)

    def to_step(self):
        return {"op": "resize", "size": [self.height, self.width], "mode": "pad", "interp": self.interp}


class GrayPreprocessor(Preprocessor):
    def __call__(self, image):
        return to_gray(image)

    def to_step(self):
        return {"op": "gray"}


class ImageToArrayPreprocessor(Preprocessor):
    """Adds the channel axis to a 2-D gray image (Keras' img_to_array, channels last)."""

    def __call__(self, image):
        return image[..., None] if image.ndim == 2 else image


class ScalePreprocessor(Preprocessor):
    def __init__(self, factor: float = 1 / 255.0):
        self.factor = factor

    def __call__(self, image):
        return image.astype(np.float32) * np.float32(self.factor)

    def to_step(self):
        return {"op": "scale", "factor": self.factor}


class MeanPreprocessor(Preprocessor):
    """Subtract per-channel means computed on the training split (Practitioner ch. 10)."""

    def __init__(self, means: Sequence[float]):
        self.means = [float(m) for m in means]

    @classmethod
    def fit(cls, images: np.ndarray) -> "MeanPreprocessor":
        """Means of an NxHxWxC batch (in the chain's units at this point)."""
        # float64 accumulation: a float32 sum over tens of millions of pixels saturates at 2**24.
        images = np.asarray(images)
        return cls(images.reshape(-1, images.shape[-1]).mean(axis=0, dtype=np.float64).tolist())

    def __call__(self, image):
        return image.astype(np.float32) - np.asarray(self.means, np.float32)

    def to_step(self):
        return {"op": "mean", "values": self.means}


class PatchPreprocessor(Preprocessor):
    """A random (width, height) crop: training-time augmentation against overfitting."""

    def __init__(self, width: int, height: int, rng: np.random.Generator | None = None):
        self.width, self.height = width, height
        self.rng = rng or np.random.default_rng()

    def __call__(self, image):
        h, w = image.shape[:2]
        y = int(self.rng.integers(0, h - self.height + 1))
        x = int(self.rng.integers(0, w - self.width + 1))
        return image[y:y + self.height, x:x + self.width]


class CropPreprocessor:
    """Ten crops (four corners + centre, and their mirror images) for test-time averaging."""

    def __init__(self, width: int, height: int, horizontal: bool = True):
        self.width, self.height, self.horizontal = width, height, horizontal

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        cw, ch = self.width, self.height
        coords = [(0, 0), (w - cw, 0), (0, h - ch), (w - cw, h - ch), ((w - cw) // 2, (h - ch) // 2)]
        crops = [image[y:y + ch, x:x + cw] for x, y in coords]
        if self.horizontal:
            crops += [c[:, ::-1] for c in crops]
        return np.stack(crops)


def chain_steps(preprocessors: Iterable[Preprocessor]) -> list[dict[str, Any]]:
    """The ModelSpec chain for a list of preprocessors (training-only ones are left out)."""
    return [s for p in preprocessors if (s := p.to_step()) is not None]
