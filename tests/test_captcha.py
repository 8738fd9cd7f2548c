"""Captcha pieces without a model: segmentation on the real ezpass captchas (and made-hard copies of
them), greedy CTC decoding, the scores, and the label table."""
from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest

from edgecv.apps.captcha_segment import segment
from edgecv.ctc import beam_decode, decode_ctc, encode_labels, greedy_decode, text_probability
from edgecv.data.captchas import EZPASS_LABELS, ezpass_holdout, labelled_images, read_labels_csv
from edgecv.errors import DataError, ModelError
from edgecv.textscore import edit_distance, score_texts


@pytest.fixture(scope="module")
def ezpass(data_dir):
    return data_dir / "ezpass"


@pytest.fixture(scope="module")
def table():
    return {r["file"]: r for r in read_labels_csv(EZPASS_LABELS)}


@pytest.fixture(scope="module")
def hand_labels(ezpass):
    rows = (ezpass / "labels.csv").read_text().split()[1:]
    return dict(r.split(",") for r in rows)


def _key(img: np.ndarray) -> str:
    return hashlib.sha1(img.tobytes() + str(img.shape).encode()).hexdigest()


@pytest.fixture(scope="module")
def crop_classes(ezpass):
    """pixels -> class of every hand-cut digit crop in ezpass/digits."""
    out = {}
    for d in range(1, 10):
        for f in (ezpass / "digits" / str(d)).glob("*.png"):
            out[_key(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE))] = str(d)
    return out


# -- segmentation --------------------------------------------------------------------------------

def test_segments_labelled_captchas_like_the_book(ezpass, hand_labels, crop_classes):
    """The 50 hand-labelled captchas: four boxes each, and the crops are pixel-for-pixel the
    publisher's hand-sorted crops of the right digits, in order."""
    assert len(hand_labels) == 50
    for name, label in hand_labels.items():
        seg = segment(cv2.imread(str(ezpass / "raw" / name)))
        assert seg.ok, (name, seg.reason)
        assert len(seg.boxes) == 4 and len(seg.crops) == 4
        assert [b[0] for b in seg.boxes] == sorted(b[0] for b in seg.boxes)
        assert "".join(crop_classes.get(_key(c), "?") for c in seg.crops) == label, name


def test_label_table_agrees_with_hand_labels(table, hand_labels):
    assert len(table) == 405
    for name, label in hand_labels.items():
        assert table[name]["label"] == label and table[name]["source"] == "labels.csv"
    held = ezpass_holdout(list(table.values()))
    assert set(hand_labels) <= held and 100 < len(held) < 150


def _repaint(gray: np.ndarray, boxes, gap: int) -> np.ndarray:
    """The same digits redrawn `gap` pixels apart (negative: overlapping, so they touch)."""
    out = np.full((gray.shape[0], gray.shape[1] + 40), 255, np.uint8)
    x = boxes[0][0]
    for bx, _, bw, _ in boxes:
        out[:, x:x + bw] = np.minimum(out[:, x:x + bw], gray[:, bx:bx + bw])
        x += bw + gap
    return out


@pytest.mark.parametrize("name", ["00000.jpg", "00005.jpg", "00019.jpg", "00031.jpg", "00042.jpg"])
def test_touching_broken_and_specked_digits(ezpass, name):
    gray = cv2.imread(str(ezpass / "raw" / name), cv2.IMREAD_GRAYSCALE)
    boxes = segment(gray).boxes
    for gap in (-1, -2):
        touching = _repaint(gray, boxes, gap)
        raw = segment(touching, expected=None)
        seg = segment(touching)
        assert seg.ok and any("split" in n for n in seg.notes), (gap, seg)
        assert len(raw.boxes) <= 4
    broken = gray.copy()
    for x, y, w, h in boxes:
        broken[y + h // 2, x:x + w] = 255          # a white line through every digit
    seg = segment(broken)
    assert seg.ok and any("merged" in n for n in seg.notes), seg
    specked = gray.copy()
    for y, x in [(1, 3), (30, 60), (0, 120), (20, 145), (33, 90)]:
        specked[y:y + 2, x:x + 2] = 0
    seg = segment(specked)
    assert seg.ok and [b[0] for b in seg.boxes] == [b[0] for b in boxes], seg


def test_says_so_instead_of_guessing(ezpass):
    gray = cv2.imread(str(ezpass / "raw" / "00000.jpg"), cv2.IMREAD_GRAYSCALE)
    x, _, w, _ = segment(gray).boxes[2]
    missing = gray.copy()
    missing[:, x - 2:x + w + 2] = 255
    seg = segment(missing)
    assert not seg.ok and seg.reason == "found 3 character(s), expected 4"
    assert segment(gray, expected=5).reason == "found 4 character(s), expected 5"
    assert "blank" in segment(np.full((36, 150), 255, np.uint8)).reason
    assert "blank" in segment(np.zeros((36, 150, 3), np.uint8)).reason
    noise = np.random.default_rng(0).integers(0, 256, (36, 150)).astype(np.uint8)
    assert "no clear characters" in segment(noise).reason
    assert "too small" in segment(np.zeros((2, 3), np.uint8)).reason


def test_light_text_on_dark_ground(ezpass, hand_labels):
    gray = cv2.imread(str(ezpass / "raw" / "00003.jpg"), cv2.IMREAD_GRAYSCALE)
    assert segment(255 - gray).boxes == segment(gray).boxes


# -- CTC decoding --------------------------------------------------------------------------------

def _onehot(path: list[int], k: int, p: float = 0.9) -> np.ndarray:
    out = np.full((len(path), k), (1 - p) / (k - 1), np.float32)
    out[np.arange(len(path)), path] = p
    return out


def test_greedy_decode_collapses_repeats_and_drops_blanks():
    charset = "abc"
    blank = 3
    probs = _onehot([blank, 0, 0, blank, 0, 1, 1, blank, 2, blank], 4)
    d = greedy_decode(probs, charset)[0]
    assert d.text == "aabc"
    # Greedy path 0.9**10; other alignments spelling "aabc" add to it.
    assert 0.9 ** 10 < d.confidence < 1
    assert d.char_confidences == pytest.approx((0.9, 0.9, 0.9, 0.9))
    # A doubled letter needs a blank between its runs; without one it is a single letter.
    assert greedy_decode(_onehot([0, 0, 0], 4), charset)[0].text == "a"
    assert greedy_decode(_onehot([blank] * 5, 4), charset)[0].text == ""


def test_greedy_decode_batch_blank_first_and_bad_shapes():
    charset = "xy"
    batch = np.stack([_onehot([1, 0, 2, 2], 3), _onehot([0, 2, 0, 1], 3)])
    assert [d.text for d in greedy_decode(batch, charset, blank=0)] == ["xy", "yx"]
    with pytest.raises(ModelError, match="needs 3"):
        greedy_decode(np.zeros((1, 5, 7), np.float32), charset)
    with pytest.raises(ModelError, match="N x T x K"):
        greedy_decode(np.zeros((5,), np.float32), charset)


def test_confidence_falls_with_one_unsure_step():
    sure = _onehot([2, 0, 2, 1, 2], 3, p=0.99)
    unsure = sure.copy()
    unsure[3] = [0.3, 0.4, 0.3]
    a, b = greedy_decode(np.stack([sure, unsure]), "xy")
    assert a.text == b.text == "xy"
    assert b.confidence < 0.5 < a.confidence


def test_text_probability_sums_alignments():
    """Brute force over every path for a tiny case: the forward sum must match it."""
    import itertools
    rng = np.random.default_rng(1)
    probs = rng.random((4, 3)).astype(np.float64)
    probs /= probs.sum(1, keepdims=True)
    blank = 2

    def collapse(path):
        out = [c for i, c in enumerate(path) if c != blank and (i == 0 or path[i - 1] != c)]
        return out

    for label in ([0], [0, 1], [1, 1], []):
        brute = sum(np.prod([probs[t, c] for t, c in enumerate(p)])
                    for p in itertools.product(range(3), repeat=4) if collapse(list(p)) == label)
        assert text_probability(probs, label, blank) == pytest.approx(brute, rel=1e-9)


def test_beam_finds_the_most_probable_text():
    """Brute force over every text of a tiny charset: the beam's answer is the argmax of the
    exact text probability, which greedy misses when a text's mass is spread over alignments."""
    import itertools
    rng = np.random.default_rng(2)
    blank, charset = 3, "abc"
    missed = 0
    for _ in range(60):
        probs = rng.dirichlet(np.full(4, 0.5), size=int(rng.integers(2, 6)))
        texts = [list(t) for n in range(probs.shape[0] + 1) for t in itertools.product(range(3), repeat=n)]
        best = max(texts, key=lambda t: text_probability(probs, t, blank))
        b = beam_decode(probs, charset, beam=64, prune=0)[0]
        g = greedy_decode(probs, charset)[0]
        assert b.text == "".join(charset[c] for c in best)
        assert b.confidence == pytest.approx(text_probability(probs, best, blank), rel=1e-6)
        assert b.confidence >= g.confidence - 1e-9
        missed += b.text != g.text
    assert missed > 0      # the random cases include some where greedy reads a less likely text
    # The textbook case: each step says "a" 0.4, blank 0.6; greedy reads "" (0.36), "a" is 0.64.
    two = np.array([[0.4, 0, 0, 0.6]] * 2)
    assert greedy_decode(two, charset)[0].text == ""
    d = beam_decode(two, charset, beam=4)[0]
    assert d.text == "a" and d.confidence == pytest.approx(0.64)
    assert d.char_confidences == pytest.approx((0.4,))
    assert decode_ctc(two, charset, decoder="beam")[0].text == "a"
    assert decode_ctc(two, charset)[0].text == ""
    with pytest.raises(ModelError, match="unknown CTC decoder"):
        decode_ctc(two, charset, decoder="viterbi")
    with pytest.raises(ModelError, match="at least 1"):
        beam_decode(two, charset, beam=0)


def test_encode_labels_round_trip():
    y = encode_labels(["ab", "c"], "abc")
    assert y.tolist() == [[0, 1], [2, -1]]
    with pytest.raises(ModelError, match="not in the charset"):
        encode_labels(["az"], "abc")


# -- scores --------------------------------------------------------------------------------------

def test_scores_and_coverage():
    assert edit_distance("kitten", "sitting") == 3
    r = score_texts(["1234", "1235", None, "12"], ["1234", "1234", "1234", "1234"], [0.99, 0.6, None, 0.95],
                    thresholds=(0.0, 0.9))
    assert r["sequence_accuracy"] == 0.25
    assert r["char_accuracy"] == pytest.approx((4 + 3 + 0 + 2) / 16)
    assert r["cer"] == pytest.approx((0 + 1 + 4 + 2) / 16)
    assert r["declined"] == 1
    at0, at9 = r["coverage"]
    assert at0["coverage"] == 0.75 and at0["accuracy"] == pytest.approx(1 / 3)
    assert at9["coverage"] == 0.5 and at9["accuracy"] == 0.5
    with pytest.raises(DataError):
        score_texts([], [])


def test_labelled_images_splits(data_dir):
    test = labelled_images(data_dir / "ezpass", "test")
    assert len(test) == 125 and all(p.exists() for p, _ in test)
    assert len(labelled_images("ezpass", "all")) == 405
    v2 = labelled_images(data_dir / "captcha_images_v2", "test")
    assert 120 < len(v2) < 200 and all(p.stem == t for p, t in v2)
    with pytest.raises(DataError, match="unknown split"):
        labelled_images("ezpass", "dev")
