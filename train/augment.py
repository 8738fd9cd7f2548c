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
        # Every random draw for the batch at once: the per-image loop is then one warpAffine
        # (Python overhead per image was half the cost on CIFAR's 32x32 images).
        a = np.deg2rad(rng.uniform(-self.rotation, self.rotation, n))
        s = rng.uniform(1 - self.zoom, 1 + self.zoom, n)
        sh = rng.uniform(-self.shear, self.shear, n)
        tx = rng.uniform(-self.shift, self.shift, n) * w
        ty = rng.uniform(-self.shift, self.shift, n) * h
        flip = rng.random(n) < 0.5 if self.hflip else np.zeros(n, bool)
        m = np.empty((n, 2, 3), np.float32)
        m[:, 0, 0], m[:, 0, 1] = np.cos(a) * s, -np.sin(a) * s + sh
        m[:, 1, 0], m[:, 1, 1] = np.sin(a) * s, np.cos(a) * s
        # Keep the centre fixed, then shift.
        cx, cy = w / 2, h / 2
        m[:, 0, 2] = cx - m[:, 0, 0] * cx - m[:, 0, 1] * cy + tx
        m[:, 1, 2] = cy - m[:, 1, 0] * cx - m[:, 1, 1] * cy + ty
        out = np.empty_like(batch)
        for i in range(n):
            out[i] = cv2.warpAffine(batch[i], m[i], (w, h), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE).reshape(h, w, c)
        out[flip] = out[flip, :, ::-1]
        return out


PRESETS = {
    "none": None,
    "light": Augment(rotation=10, shift=0.1, shear=0.1, zoom=0.1, hflip=True),
    "digits": Augment(rotation=10, shift=0.1, shear=0.1, zoom=0.1, hflip=False),
    "cifar": Augment(rotation=10, shift=0.1, shear=0.0, zoom=0.0, hflip=True),
    # Practitioner ch. 11-12 (MiniGoogLeNet, ResNet on CIFAR-10): shifts and flips, no rotation.
    "shift-flip": Augment(rotation=0, shift=0.1, shear=0.0, zoom=0.0, hflip=True),
    "strong": Augment(rotation=30, shift=0.1, shear=0.2, zoom=0.2, hflip=True),
}


@dataclass(frozen=True)
class CaptchaAugment:
    """Affine jitter plus what varies between captchas of one generator: an extra thin stroke
    across the text (the generator already draws one), a slight blur and a contrast change.

    Values stay in [0, 1] and the text is never flipped or cropped out (shifts are small)."""

    affine: Augment = Augment(rotation=3, shift=0.04, shear=0.08, zoom=0.05, hflip=False)
    line_p: float = 0.5         # chance of one extra dark stroke
    blur_p: float = 0.3         # chance of a 3x3 Gaussian blur
    contrast: float = 0.2       # dark level scaled by [1 - contrast, 1 + contrast]

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = self.affine(batch, rng)
        n, h, w, c = out.shape
        line = rng.random(n) < self.line_p
        blur = rng.random(n) < self.blur_p
        ends = rng.uniform(0, 1, (n, 4)) * [w * 0.3, h, w * 0.3, h] + [0, 0, w * 0.7, 0]
        thick = rng.integers(1, 3, n)
        shade = rng.uniform(0.0, 0.35, n)
        gain = rng.uniform(1 - self.contrast, 1 + self.contrast, n)
        for i in range(n):
            img = out[i].reshape(h, w, c)
            # Painted at one grey level over paper and text alike, as a pen stroke over print
            # would be: where it crosses darker ink it lightens it a little.
            if line[i]:
                x0, y0, x1, y1 = (int(v) for v in ends[i])
                cv2.line(img, (x0, y0), (x1, y1), (float(shade[i]),) * c, int(thick[i]), cv2.LINE_AA)
            if blur[i]:
                img = cv2.GaussianBlur(img, (3, 3), 0).reshape(h, w, c)
            # Contrast about white (the background): ink gets darker or lighter, paper stays white.
            out[i] = np.clip(1.0 - (1.0 - img) * gain[i], 0.0, 1.0).reshape(h, w, c)
        return out
