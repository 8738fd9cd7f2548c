"""Drawing detections on frames (HxWx3 uint8 BGR, drawn on a copy)."""
from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

# BGR, one per label index; label 0 red, 1 green reads naturally for not_smiling/smiling.
PALETTE = ((0, 0, 255), (0, 200, 0), (255, 128, 0), (0, 200, 255), (255, 0, 255), (255, 255, 0))


def colour_for(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def annotate(image: np.ndarray, boxes: Sequence[Sequence[int]], texts: Iterable[str] = (),
             label_indices: Iterable[int] = ()) -> np.ndarray:
    """A copy of `image` (HxWx3 uint8 BGR) with each box [x, y, w, h] drawn and its text above it."""
    out = image.copy()
    texts, idx = list(texts), list(label_indices)
    thick = max(1, round(out.shape[1] / 640))
    scale = 0.5 * thick
    for i, (x, y, w, h) in enumerate(boxes):
        colour = colour_for(idx[i] if i < len(idx) else 0)
        cv2.rectangle(out, (int(x), int(y)), (int(x + w), int(y + h)), colour, thick)
        if i < len(texts) and texts[i]:
            ty = int(y) - 6 if y > 20 else int(y + h) + 16 * thick
            cv2.putText(out, texts[i], (int(x), ty), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
    return out

