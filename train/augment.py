"""Random affine augmentation (rotation, shifts, shear, zoom, flips) in NumPy/OpenCV.

Done in the input pipeline rather than as Keras layers inside the model, so the exported graph
holds no training-only ops and the same code runs under every Keras backend.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Augment:
    rotation: float = 10.0      # degrees, +/-
    shift: float = 0.1          # fraction of width/height, +/-
    shear: float = 0.1          # radians-ish shear factor, +/-
    zoom: float = 0.1           # scale in [1 - zoom, 1 + zoom]
    hflip: bool = True

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment an NxHxWxC float32 batch; returns a new array of the same shape."""
        n, h, w, c = batch.shape
        out = np.empty_like(batch)
        for i in range(n):
            a = np.deg2rad(rng.uniform(-self.rotation, self.rotation))
            s = rng.uniform(1 - self.zoom, 1 + self.zoom)
            sh = rng.uniform(-self.shear, self.shear)
            tx, ty = rng.uniform(-self.shift, self.shift) * w, rng.uniform(-self.shift, self.shift) * h
            cos, sin = np.cos(a) * s, np.sin(a) * s
            m = np.array([[cos, -sin + sh, 0.0], [sin, cos, 0.0]], np.float32)
            # Keep the centre fixed, then shift.
            cx, cy = w / 2, h / 2
            m[:, 2] = [cx - m[0, 0] * cx - m[0, 1] * cy + tx, cy - m[1, 0] * cx - m[1, 1] * cy + ty]
            img = cv2.warpAffine(batch[i], m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            img = img.reshape(h, w, c)
            if self.hflip and rng.random() < 0.5:
                img = img[:, ::-1]
            out[i] = img
        return out


PRESETS = {
    "none": None,
    "light": Augment(rotation=10, shift=0.1, shear=0.1, zoom=0.1, hflip=True),
    "digits": Augment(rotation=10, shift=0.1, shear=0.1, zoom=0.1, hflip=False),
    "cifar": Augment(rotation=10, shift=0.1, shear=0.0, zoom=0.0, hflip=True),
    "strong": Augment(rotation=30, shift=0.1, shear=0.2, zoom=0.2, hflip=True),
}
