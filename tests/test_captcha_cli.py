"""`edgecv captcha solve` / `annotate` and `evaluate_captcha` with the shipped models on real
images, and every kind of bad input: an `error` field or a one-line message, never a traceback."""
from __future__ import annotations

import json
import struct
import zlib

import cv2
import numpy as np
import pytest

from conftest import assert_clean_error, run_cli
from edgecv import zoo
from edgecv.data.captchas import EZPASS_LABELS, ezpass_holdout, read_labels_csv

pytestmark = pytest.mark.skipif(not {"captcha-ezpass", "captcha-v2"} <= set(zoo.names()),
                                reason="the shipped captcha models are not in edgecv/zoo")


@pytest.fixture(scope="module")
def held_out():
    rows = read_labels_csv(EZPASS_LABELS)
    held = ezpass_holdout(rows)
    return {r["file"]: r["label"] for r in rows if r["file"] in held}


def _lines(proc) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def _png_header(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h (no pixel data): a decompression-bomb stand-in."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)))


def test_solve_held_out_ezpass_captchas(data_dir, held_out):
    """Every held-out captcha (the 50 hand-labelled + the hash-test share), never trained on."""
    raw = data_dir / "ezpass" / "raw"
    files = [str(raw / f) for f in sorted(held_out)]
    proc = run_cli("captcha", "solve", *files, "--json")
    assert proc.returncode == 0, proc.stderr.decode()
    out = _lines(proc)
    assert len(out) == len(files)
    wrong = [(o["file"], o["text"]) for o in out if o["text"] != held_out[o["file"].rsplit("/", 1)[-1]]]
    assert not wrong
    assert all(0.5 < o["confidence"] <= 1 and "error" not in o for o in out)


def test_solve_folder_plain_output_and_stdin(data_dir, tmp_path):
    folder = tmp_path / "caps"
    folder.mkdir()
    src = data_dir / "ezpass" / "raw"
    for name in ("00000.jpg", "00001.jpg"):
        (folder / name).write_bytes((src / name).read_bytes())
    proc = run_cli("captcha", "solve", str(folder))
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert [line.split("\t")[:2] for line in lines] == [[str(folder / "00000.jpg"), "8657"],
                                                       [str(folder / "00001.jpg"), "2756"]]
    assert 0 < float(lines[0].split("\t")[2]) <= 1
    proc = run_cli("captcha", "solve", "-", "--json", input=(src / "00002.jpg").read_bytes())
    assert proc.returncode == 0 and _lines(proc) == [
        {"file": "-", "text": "4983", "confidence": _lines(proc)[0]["confidence"]}]


def test_solve_captcha_v2_test_split(data_dir):
    from edgecv.data.captchas import labelled_images
    pairs = labelled_images(data_dir / "captcha_images_v2", "test")[:40]
    proc = run_cli("captcha", "solve", *[str(p) for p, _ in pairs], "--model", "captcha-v2", "--json")
    out = _lines(proc)
    right = sum(o["text"] == t for o, (_, t) in zip(out, pairs))
    assert right >= 39, [(o, t) for o, (_, t) in zip(out, pairs) if o["text"] != t]


@pytest.fixture(scope="module")
def v2_outputs(data_dir):
    """The shipped CRNN's per-step probabilities for 40 test-split captchas (never trained on)."""
    from edgecv.apps.predict import Predictor
    from edgecv.data.captchas import labelled_images
    from edgecv.images import read_image
    pairs = labelled_images(data_dir / "captcha_images_v2", "test")[:40]
    pred = Predictor("captcha-v2")
    try:
        probs = np.concatenate([np.asarray(pred([read_image(p)]), np.float32) for p, _ in pairs])
    finally:
        pred.close()
    return probs, [t for _, t in pairs], pred.spec


def test_beam_equals_greedy_where_greedy_dominates(v2_outputs):
    """On real outputs the greedy path carries most of its text's mass; the beam then reads the
    same text with the same confidence and per-character confidences."""
    from edgecv.ctc import beam_decode, greedy_decode
    probs, truths, spec = v2_outputs
    g = greedy_decode(probs, spec.charset)
    b = beam_decode(probs, spec.charset, beam=10)
    dominant = [i for i, d in enumerate(g) if d.confidence > 0.5]
    assert len(dominant) >= 35
    for i in dominant:
        assert b[i].text == g[i].text
        assert b[i].confidence == pytest.approx(g[i].confidence, rel=1e-5)
        assert b[i].char_confidences == pytest.approx(g[i].char_confidences)
    assert sum(d.text == t for d, t in zip(b, truths)) >= 39


def test_beam_reads_a_character_greedy_drops(v2_outputs):
    """Real outputs with one character's steps made unsure (0.45 it, 0.55 blank, as a faint
    glyph would): greedy's best path is all blank there and drops the letter; the beam sums the
    alignments that keep it (1 - 0.55**k > 0.5) and reads the whole captcha."""
    from edgecv.ctc import beam_decode, greedy_decode
    probs, truths, spec = v2_outputs
    blank = len(spec.charset)
    fixed = 0
    for i in range(10):
        p = probs[i].copy()
        best = p.argmax(1)
        runs = [t for t in range(len(best)) if best[t] == best[t - 1] and best[t] != blank and t > 0]
        if not runs:
            continue
        steps = np.flatnonzero(best == best[runs[0]])
        steps = steps[(steps >= runs[0] - 1) & (steps <= runs[0] + 1)]
        p[steps] = 0.0
        p[steps, best[runs[0]]] = 0.45
        p[steps, blank] = 0.55
        g, b = greedy_decode(p, spec.charset)[0], beam_decode(p, spec.charset)[0]
        if greedy_decode(probs[i], spec.charset)[0].text != truths[i]:
            continue
        assert len(g.text) == len(truths[i]) - 1
        assert b.text == truths[i] and b.confidence > g.confidence
        fixed += 1
    assert fixed >= 5


def test_solve_with_beam_decoding(data_dir):
    from edgecv.data.captchas import labelled_images
    pairs = labelled_images(data_dir / "captcha_images_v2", "test")[:10]
    files = [str(p) for p, _ in pairs]
    greedy = _lines(run_cli("captcha", "solve", *files, "--model", "captcha-v2", "--json", "--decode", "greedy"))
    proc = run_cli("captcha", "solve", *files, "--model", "captcha-v2", "--json", "--decode", "beam", "--beam", "8")
    assert proc.returncode == 0, proc.stderr.decode()
    beam = _lines(proc)
    assert [o["text"] for o in beam] == [t for _, t in pairs] == [o["text"] for o in greedy]
    assert [o["confidence"] for o in beam] == pytest.approx([o["confidence"] for o in greedy], rel=1e-4)
    assert_clean_error(run_cli("captcha", "solve", files[0], "--model", "captcha-v2", "--beam", "0"), "at least 1")
    assert_clean_error(run_cli("captcha", "solve", files[0], "--decode", "viterbi"), "invalid choice")
    from edgecv.apps.captcha_eval import evaluate_captcha
    r = evaluate_captcha("captcha-v2", data_dir / "captcha_images_v2", split="test", limit=10, decoder="beam")
    assert r["decoder"] == "beam" and r["sequence_accuracy"] == 1.0


def test_bad_inputs_get_an_error_field(data_dir, tmp_path):
    good = data_dir / "ezpass" / "raw" / "00000.jpg"
    (tmp_path / "text.png").write_text("not an image at all\n")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((36, 150, 3), 255, np.uint8))
    cv2.imwrite(str(tmp_path / "noise.png"), np.random.default_rng(0).integers(0, 256, (36, 150), dtype=np.uint8))
    names = ["text.png", "empty.jpg", "bomb.png", "blank.png", "noise.png", "missing.jpg"]
    proc = run_cli("captcha", "solve", str(good), *[str(tmp_path / n) for n in names], "--json")
    assert_clean_error(proc, r"6 of 7 image\(s\) not solved")
    out = _lines(proc)
    assert out[0]["text"] == "8657" and "error" not in out[0]
    errors = {o["file"].rsplit("/", 1)[-1]: o["error"] for o in out[1:]}
    assert all(out[i]["text"] is None for i in range(1, 7))
    assert "not an image" in errors["text.png"]
    assert "empty file" in errors["empty.jpg"]
    assert "pixel limit" in errors["bomb.png"]
    assert "blank image" in errors["blank.png"]
    assert "cannot segment" in errors["noise.png"]
    assert "no such file" in errors["missing.jpg"]
    # The CTC model answers the same way for an image it cannot read or that holds nothing.
    proc = run_cli("captcha", "solve", str(tmp_path / "blank.png"), str(tmp_path / "text.png"),
                   "--model", "captcha-v2", "--json")
    assert_clean_error(proc)
    assert [("blank" in o["error"], o["text"]) for o in _lines(proc)] == [(True, None), (False, None)]
    proc = run_cli("captcha", "solve", "-", input=b"garbage")
    assert_clean_error(proc)
    assert "error: not an image" in proc.stdout.decode()


def test_min_confidence_declines(data_dir):
    good = str(data_dir / "ezpass" / "raw" / "00000.jpg")
    proc = run_cli("captcha", "solve", good, "--json", "--min-confidence", "1.0")
    out = _lines(proc)
    if out[0]["confidence"] < 1.0:
        assert_clean_error(proc)
        assert out[0]["text"] is None and "below --min-confidence" in out[0]["error"]
    assert_clean_error(run_cli("captcha", "solve", good, "--min-confidence", "1.5"), "between 0 and 1")


def test_usage_errors_are_one_line(data_dir, tmp_path):
    good = str(data_dir / "ezpass" / "raw" / "00000.jpg")
    assert_clean_error(run_cli("captcha", "solve", good, "--model", "captcha-ezpas"), "Did you mean 'captcha-ezpass'")
    (tmp_path / "m.onnx").write_bytes(b"junk")
    assert_clean_error(run_cli("captcha", "solve", good, "--model", str(tmp_path / "m.onnx")))
    empty = tmp_path / "none"
    empty.mkdir()
    proc = run_cli("captcha", "solve", str(empty))
    assert_clean_error(proc)
    assert "no images in this folder" in proc.stdout.decode()


def test_annotate_without_display(data_dir, tmp_path):
    proc = run_cli("captcha", "annotate", str(data_dir / "ezpass" / "raw"), "--out", str(tmp_path / "d"),
                   env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    assert_clean_error(proc, "needs a display")
    assert not (tmp_path / "d").exists()


def test_evaluate_captcha_reports(data_dir):
    from edgecv.apps.captcha_eval import evaluate_captcha
    r = evaluate_captcha("captcha-ezpass", "ezpass", split="test")
    assert r["n"] == 125 and r["sequence_accuracy"] == 1.0 and r["cer"] == 0.0
    assert [c["threshold"] for c in r["coverage"]][:2] == [0.0, 0.1]
    assert r["coverage"][0]["coverage"] == 1.0
    r = evaluate_captcha("captcha-v2", data_dir / "captcha_images_v2", split="test", limit=30)
    assert r["n"] == 30 and r["sequence_accuracy"] >= 0.96 and r["char_accuracy"] >= 0.99
    json.dumps(r)
