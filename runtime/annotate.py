"""Drawing detections on frames (HxWx3 uint8 BGR, drawn on a copy)."""
from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

# BGR, one per label index; label 0 red, 1 green reads naturally for not_smiling/smiling.
PALETTE = ((0, 0, 255), (0, 200, 0), (255, 128, 0), (0, 200, 255), (255, 0, 255), (255, 255, 0))


def colour_for(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label(out: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], scale: float,
           thick: int, below: int | None = None, taken: list | None = None) -> None:
    """Text on a filled box of `colour`, its bottom-left at (x, y), kept inside the image; moved under
    `below` when there is no room above or when it would cover a label in `taken` (which it joins).
    Black or white text, whichever reads better on the colour."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = 3 * thick
    h, w = out.shape[:2]
    lh, lw = th + base + 2 * pad, tw + 2 * pad
    x = min(max(0, x), max(0, w - lw))

    def place(top: int) -> tuple[int, int, int, int]:
        top = min(max(0, top), max(0, h - lh))
        return (x, top, x + lw, top + lh)

    rect = place(y - lh)
    if below is not None and (y - lh < 0 or any(_overlaps(rect, r) for r in taken or ())):
        rect = place(below)
    if taken is not None:
        taken.append(rect)
    cv2.rectangle(out, rect[:2], (rect[2], rect[3]), colour, cv2.FILLED)
    ink = (0, 0, 0) if 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2] > 140 else (255, 255, 255)
    cv2.putText(out, text, (x + pad, rect[1] + pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thick, cv2.LINE_AA)


def annotate(image: np.ndarray, boxes: Sequence[Sequence[int]], texts: Iterable[str] = (),
             label_indices: Iterable[int] = (), header: str | None = None) -> np.ndarray:
    """A copy of `image` (HxWx3 uint8 BGR) with each box [x, y, w, h] drawn and its text above it on a
    filled background; `header` (e.g. the stream and its fps) at the top left."""
    out = image.copy()
    texts, idx = list(texts), list(label_indices)
    thick = max(1, round(out.shape[1] / 640))
    scale = 0.5 * out.shape[1] / 640 if out.shape[1] > 640 else 0.5
    taken: list = []
    if header:
        _label(out, header, 0, 0, (40, 40, 40), scale, thick, below=0, taken=taken)
    for i, (x, y, w, h) in enumerate(boxes):
        colour = colour_for(idx[i] if i < len(idx) else 0)
        cv2.rectangle(out, (int(x), int(y)), (int(x + w), int(y + h)), colour, thick)
    for i, (x, y, w, h) in enumerate(boxes):  # labels after every box: no box line crosses a label
        if i < len(texts) and texts[i]:
            colour = colour_for(idx[i] if i < len(idx) else 0)
            _label(out, texts[i], int(x), int(y), colour, scale, thick, below=int(y + h), taken=taken)
    return out
