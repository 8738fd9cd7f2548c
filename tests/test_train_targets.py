"""Soft training targets (label smoothing, mixup, distillation) and the cosine schedule, on real
SMILES faces: the numbers each produces, the batches a run trains on, and a student distilled
from a real teacher run through the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_clean_error, run_cli


def _smiles(data_dir, n=24):
    from edgecv.data import load, split
    from edgecv.preprocess import apply_chain, default_chain
    part = split(load(str(data_dir / "smiles")), "train")
    part = part.subset(np.arange(n))
    shape = (32, 32, 1)
    return part.load_arrays(lambda imgs: apply_chain(imgs, default_chain(shape, colour="gray"), shape))


def test_smoothing_and_teacher_blend():
    from edgecv.train.targets import soft_targets, soften
    y = np.array([0, 1, 1])
    t = soft_targets(y, 2, smoothing=0.1)
    np.testing.assert_allclose(t, [[0.95, 0.05], [0.05, 0.95], [0.05, 0.95]], atol=1e-6)
    teacher = np.array([[0.9, 0.1], [0.3, 0.7], [0.8, 0.2]], np.float32)
    np.testing.assert_allclose(soften(teacher, 1.0), teacher, atol=1e-6)
    flat = soften(teacher, 2.0)
    # Temperature 2 is the softmax of half the logits: 0.9/0.1 becomes 3/1.
    np.testing.assert_allclose(flat[0], [0.75, 0.25], atol=1e-6)
    assert (np.abs(flat - 0.5) <= np.abs(teacher - 0.5) + 1e-7).all()
    blend = soft_targets(y, 2, smoothing=0.0, teacher=teacher, distill=0.7)
    np.testing.assert_allclose(blend, 0.3 * np.eye(2)[y] + 0.7 * teacher, atol=1e-6)
    # The third face: label says 1, the teacher 0; at weight 0.7 the target follows the teacher.
    assert blend[2].argmax() == 0
    np.testing.assert_allclose(blend.sum(1), 1, atol=1e-6)


def test_mixup_blends_real_faces_their_targets_and_weights(data_dir):
    from edgecv.train.targets import mixup, one_hot
    x, y = _smiles(data_dir)
    t, w = one_hot(y, 2), np.where(y == 1, 2.0, 0.5).astype(np.float32)
    xm, tm, wm = mixup(x, t, w, 0.4, np.random.default_rng(3))
    # Recover each image's partner and weight from its target and check pixels and weight agree.
    rng = np.random.default_rng(3)
    lam = rng.beta(0.4, 0.4, len(x))
    lam = np.maximum(lam, 1 - lam)
    j = rng.permutation(len(x))
    np.testing.assert_allclose(xm, lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[j], atol=1e-5)
    np.testing.assert_allclose(tm, lam[:, None] * t + (1 - lam[:, None]) * t[j], atol=1e-6)
    np.testing.assert_allclose(wm, lam * w + (1 - lam) * w[j], atol=1e-5)
    assert (lam >= 0.5).all() and (tm.argmax(1) == y).all()  # every image still mostly its own face
    assert np.abs(xm - x).max() > 0.05 and xm.dtype == x.dtype


def test_sequence_yields_soft_targets_and_repeats_its_mixup(data_dir):
    from edgecv.train.augment import PRESETS
    from edgecv.train.targets import soft_targets
    from edgecv.train.trainer import ArraySequence
    x, y = _smiles(data_dir)
    t = soft_targets(y, 2, smoothing=0.2)
    seq = ArraySequence(x, y, 8, PRESETS["light"], {0: 0.5, 1: 2.0}, seed=4, targets=t, mixup=0.2)
    xb, tb, wb = seq[1]
    assert xb.shape == (8, 32, 32, 1) and tb.shape == (8, 2) and wb.shape == (8,)
    np.testing.assert_allclose(tb.sum(1), 1, atol=1e-6)
    assert ((tb > 0.1 - 1e-6) & (tb < 0.9 + 1e-6)).all()  # smoothed, then mixed: never a hard 0 or 1
    again = ArraySequence(x, y, 8, PRESETS["light"], {0: 0.5, 1: 2.0}, seed=4, targets=t, mixup=0.2)[1]
    for a, b in zip((xb, tb, wb), again):
        np.testing.assert_array_equal(a, b)
    plain = ArraySequence(x, y, 8, None, seed=4)[1]
    assert plain[1].ndim == 1 and len(plain) == 2  # no soft options: labels as before


def test_cosine_schedule_warms_up_then_decays():
    from edgecv.train.schedules import make_schedule
    lr = make_schedule("cosine", 0.01, 20, warmup=3, floor=0.1)
    v = [lr(e) for e in range(20)]
    assert v[0] < v[1] < v[2] < v[3] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(v[3:], v[4:]))
    assert v[-1] == pytest.approx(0.001) and v[11] == pytest.approx(0.0055, rel=0.02)


@pytest.fixture(scope="module")
def smile_teacher(tmp_path_factory):
    run = tmp_path_factory.mktemp("teacher") / "t"
    proc = run_cli("train", "smile", "--epochs", "1", "--max-train", "600", "--input-size", "40", "40",
                   "--out", str(run))
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return run


def test_student_distilled_from_a_larger_teacher(smile_teacher, tmp_path):
    run = tmp_path / "student"
    proc = run_cli("train", "smile", "--epochs", "1", "--max-train", "600", "--teacher", str(smile_teacher),
                   "--distill", "0.6", "--distill-temperature", "2", "--label-smoothing", "0.1", "--mixup", "0.2",
                   "--schedule", "cosine", "--out", str(run))
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    err = proc.stderr.decode()
    assert "teachers: 1, agreeing with" in err
    spec = json.loads((run / "spec.json").read_text())
    assert spec["input_shape"] == [32, 32, 1]  # the student keeps its own size; the teacher was 40x40
    cfg = (run / "config.yaml").read_text()
    assert "label_smoothing: 0.1" in cfg and "mixup: 0.2" in cfg and str(smile_teacher) in cfg
    report = json.loads((run / "eval.json").read_text())
    assert report["test"]["n"] == 2190 and 0 <= report["test"]["accuracy"] <= 1


@pytest.mark.parametrize("extra, match", [
    (["--distill", "0"], r"distill: expected a number in \(0, 1\]"),
    (["--distill", "0.5"], "need at least one teacher"),
    (["--label-smoothing", "1"], "label_smoothing: expected a number from 0 to below 1"),
    (["--mixup", "-1"], "mixup: expected"),
    (["--teacher", "/nonexistent/run"], "not a training run directory"),
])
def test_bad_soft_target_options_are_one_line(tmp_path, extra, match):
    proc = run_cli("train", "smile", "--epochs", "1", "--max-train", "100", *extra, "--out", str(tmp_path / "r"))
    assert_clean_error(proc, match)
    assert not (tmp_path / "r").exists()  # refused before the run folder is made


def test_teacher_from_another_data_set_is_refused(tmp_path):
    mnist = tmp_path / "mnist"
    proc = run_cli("train", "classify", "--arch", "lenet", "--data", "mnist", "--epochs", "1", "--max-train", "300",
                   "--out", str(mnist))
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    proc = run_cli("train", "smile", "--epochs", "1", "--max-train", "100", "--teacher", str(mnist),
                   "--out", str(tmp_path / "r"))
    assert_clean_error(proc, "labels")
