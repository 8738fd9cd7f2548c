"""Cutting a digit CAPTCHA into one crop per character: the Starter Bundle's threshold + contours,
made robust and honest.

The book pads the image, Otsu-thresholds it, keeps the four largest external contours and crops
each with a 5-pixel margin. On clean captchas this does exactly that (the crops are bit-identical
to the book's, which is what the digit model was trained on). On top of it:
- noise specks (components far smaller than the characters) are dropped;
- pieces of one broken character (boxes that overlap in x) are merged;
- touching characters (too few, over-wide boxes) are split at the columns with the least ink,
  as many parts per box as its width asks for;
- when the result still does not have the expected count, it says so instead of guessing.
Images are HxWx3 uint8 BGR or HxW uint8 gray.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from edgecv.preprocess import to_gray

PAD = 8          # the book's border, so characters touching the edge get a whole contour
MARGIN = 5       # the book's crop margin around each box


@dataclass(frozen=True)
class Segmentation:
    """boxes: (x, y, w, h) per character, left to right, in the input image's coordinates.
    crops: HxW uint8 gray, each box plus MARGIN pixels (edge-replicated beyond the image).
    ok: the count matched `expected` (always True when nothing was expected); reason says why not."""

    boxes: tuple[tuple[int, int, int, int], ...]
    crops: tuple[np.ndarray, ...] = field(repr=False)
    ok: bool
    reason: str | None = None
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.boxes)


def binarize(gray: np.ndarray) -> np.ndarray:
    """Foreground (ink) = 255. Otsu, inverted for dark text on light ground; flipped back when
    most of the image came out as ink (light text on a dark ground)."""
    th = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)[1]
    if np.count_nonzero(th) > th.size // 2:
        th = cv2.bitwise_not(th)
    return th


def _components(th: np.ndarray) -> list[list[int]]:
    """[x, y, w, h, area] per 8-connected ink component (area = ink pixels)."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(th, connectivity=8)
    return [[int(v) for v in stats[i]] for i in range(1, n)]


def _union(a: list[int], b: list[int]) -> list[int]:
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return [x0, y0, x1 - x0, y1 - y0, a[4] + b[4]]


def _x_overlap(a: list[int], b: list[int]) -> float:
    """Overlap in x as a share of the narrower box."""
    inter = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    return max(0, inter) / max(1, min(a[2], b[2]))


def _merge_pieces(boxes: list[list[int]], min_overlap: float) -> list[list[int]]:
    boxes = sorted(boxes)
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if _x_overlap(boxes[i], boxes[j]) >= min_overlap:
                    boxes[i] = _union(boxes[i], boxes[j])
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return sorted(boxes)


def _tighten(th: np.ndarray, x: int, w: int, y: int, h: int) -> list[int] | None:
    """The ink bounding box inside columns x..x+w of rows y..y+h (None when there is no ink)."""
    part = th[y:y + h, x:x + w]
    ys, xs = np.nonzero(part)
    if len(xs) == 0:
        return None
    return [x + int(xs.min()), y + int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1),
            int(len(xs))]


def _split(th: np.ndarray, box: list[int], parts: int) -> list[list[int]]:
    """Split a box into `parts` at low-ink columns near its equal divisions.

    A cut is scored by the ink it crosses plus its distance from the equal division; cuts that
    would leave a piece less than 60% of the box's height (a sliver of a neighbour's stroke) are
    not considered, so the pieces stay character-shaped."""
    x, y, w, h, _ = box
    profile = np.count_nonzero(th[y:y + h, x:x + w], axis=0).astype(np.float64)
    cuts = [0]
    for k in range(1, parts):
        centre = k * w / parts
        half = max(2, w // (2 * parts))
        lo, hi = max(cuts[-1] + 2, int(centre) - half), min(w - 2, int(centre) + half)
        best, best_cost = int(round(centre)), float("inf")
        for c in range(lo, hi + 1):
            left, right = _tighten(th, x + cuts[-1], c - cuts[-1], y, h), _tighten(th, x + c, w - c, y, h)
            if left is None or right is None or min(left[3], right[3]) < 0.6 * h:
                continue
            cost = profile[c] + 0.5 * abs(c - centre)
            if cost < best_cost:
                best, best_cost = c, cost
        cuts.append(best)
    cuts.append(w)
    out = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        t = _tighten(th, x + a, b - a, y, h)
        if t is not None:
            out.append(t)
    return out


def _allocate(widths: list[int], total: int) -> list[int]:
    """How many characters each box holds, summing to `total`: proportional to width, at least 1."""
    unit = sum(widths) / total
    parts = [max(1, round(w / unit)) for w in widths]
    while sum(parts) > total:
        # Take one from the box whose characters would stay widest.
        i = max((i for i in range(len(parts)) if parts[i] > 1), key=lambda i: widths[i] / (parts[i] - 1),
                default=None)
        if i is None:
            break
        parts[i] -= 1
    while sum(parts) < total:
        i = max(range(len(parts)), key=lambda i: widths[i] / parts[i])
        parts[i] += 1
    return parts


def segment(image: np.ndarray, expected: int | None = 4, min_speck: float = 0.12,
            merge_overlap: float = 0.6, max_aspect: float = 1.15, min_char_aspect: float = 0.45) -> Segmentation:
    """Segment a captcha into characters (see the module docstring).

    expected: the number of characters (None: take what is found, no splitting to a count).
    min_speck: components with less ink than this share of the largest one are noise.
    merge_overlap: boxes overlapping this much in x (share of the narrower) are one character.
    max_aspect: with `expected` None, a box wider than max_aspect x its height is split.
    min_char_aspect: a split never makes characters narrower than this x their height, so a
        captcha with a character missing is reported, not "fixed" by halving a whole digit.
    """
    gray = to_gray(image)
    if gray.ndim != 2 or min(gray.shape[:2]) < 4:
        return Segmentation((), (), False, f"image too small to segment ({gray.shape[1]}x{gray.shape[0]})")
    padded = cv2.copyMakeBorder(gray, PAD, PAD, PAD, PAD, cv2.BORDER_REPLICATE)
    if int(padded.max()) - int(padded.min()) < 16:
        return Segmentation((), (), False, "blank image: no characters found")
    th = binarize(padded)
    # Ink only counts inside the image: a speck on the edge would otherwise be smeared across the
    # replicated border into a tall streak that passes for a character.
    th[:PAD], th[-PAD:], th[:, :PAD], th[:, -PAD:] = 0, 0, 0, 0
    ink = np.count_nonzero(th) / float(gray.size)
    if ink > 0.3:
        # Captchas are mostly background (ezpass 3-6% ink, captcha-v2 17-23%); Otsu on noise or a
        # photo gives about half, and any boxes found there would be a guess.
        return Segmentation((), (), False, f"no clear characters ({ink:.0%} of the image is ink: "
                            "noise, a photo, or not a captcha)")
    comps = _components(th)
    notes: list[str] = []
    if not comps:
        return Segmentation((), (), False, "no characters found")
    biggest = max(c[4] for c in comps)
    tallest = max(c[3] for c in comps)
    # Specks: little ink, or short and thin: a character's pieces are rarely both.
    keep = [c for c in comps if c[4] >= min_speck * biggest or c[3] >= 0.5 * tallest]
    if len(keep) < len(comps):
        notes.append(f"dropped {len(comps) - len(keep)} speck(s)")
    boxes = _merge_pieces(keep, merge_overlap)
    if len(boxes) < len(keep):
        notes.append(f"merged {len(keep) - len(boxes)} broken piece(s)")
    if expected is not None and 0 < len(boxes) < expected:
        parts = _allocate([b[2] for b in boxes], expected)
        # Cap each box at the number of plausible characters its width can hold.
        parts = [min(p, max(1, int(b[2] / (min_char_aspect * b[3])))) for b, p in zip(boxes, parts)]
        split: list[list[int]] = []
        for b, p in zip(boxes, parts):
            split.extend(_split(th, b, p) if p > 1 else [b])
        if len(split) > len(boxes):
            notes.append(f"split {sum(p > 1 for p in parts)} wide box(es)")
        boxes = sorted(split)
    elif expected is None:
        out: list[list[int]] = []
        for b in boxes:
            n = int(round(b[2] / (max_aspect * 0.75 * b[3]))) if b[2] > max_aspect * b[3] else 1
            out.extend(_split(th, b, n) if n > 1 else [b])
        boxes = sorted(out)
    if expected is not None and len(boxes) > expected:
        # Extra boxes much smaller than the characters are leftovers of noise; drop them. Extra
        # boxes of character size mean the image is not what we expect: say so.
        areas = sorted((b[4] for b in boxes), reverse=True)
        floor = 0.35 * areas[expected - 1]
        small = [b for b in boxes if b[4] < floor]
        if len(boxes) - len(small) == expected:
            boxes = [b for b in boxes if b[4] >= floor]
            notes.append(f"dropped {len(small)} small extra box(es)")
    crops = tuple(_crop(padded, b, boxes, th) for b in boxes)
    wide = [b for b in boxes if b[2] > 1.6 * b[3]]
    if expected is not None and wide:
        return Segmentation(tuple((b[0] - PAD, b[1] - PAD, b[2], b[3]) for b in boxes), crops, False,
                            f"a {wide[0][2]}x{wide[0][3]} box is too wide for one character", tuple(notes))
    out_boxes = tuple((b[0] - PAD, b[1] - PAD, b[2], b[3]) for b in boxes)
    if expected is not None and len(boxes) != expected:
        return Segmentation(out_boxes, crops, False,
                            f"found {len(boxes)} character(s), expected {expected}", tuple(notes))
    return Segmentation(out_boxes, crops, True, None, tuple(notes))


def _crop(padded: np.ndarray, b: list[int], boxes: list[list[int]], th: np.ndarray) -> np.ndarray:
    """The box plus MARGIN, with any neighbouring character that reaches into the margin painted
    over with the background: digits split apart were trained on clean crops, not on crops with a
    slice of the next digit at the edge. Crops of well-separated characters stay the book's."""
    x, y, w, h = b[:4]
    y0, y1, x0, x1 = y - MARGIN, y + h + MARGIN, x - MARGIN, x + w + MARGIN
    if y0 >= 0 and x0 >= 0 and y1 <= padded.shape[0] and x1 <= padded.shape[1]:
        crop = padded[y0:y1, x0:x1].copy()
    else:
        # Near the border: replicate edges rather than return a short crop.
        big = cv2.copyMakeBorder(padded, MARGIN, MARGIN, MARGIN, MARGIN, cv2.BORDER_REPLICATE)
        crop = big[y0 + MARGIN:y1 + MARGIN, x0 + MARGIN:x1 + MARGIN].copy()
    for o in boxes:
        if o is b:
            continue
        # Columns of the neighbour inside this crop, minus this character's own columns.
        lo, hi = max(o[0], x0), min(o[0] + o[2], x1)
        lo, hi = (lo, min(hi, x)) if o[0] < x else (max(lo, x + w), hi)
        if lo < hi:
            background = np.median(padded[th == 0]) if np.any(th == 0) else 255
            crop[:, lo - x0:hi - x0] = np.uint8(background)
    return crop
