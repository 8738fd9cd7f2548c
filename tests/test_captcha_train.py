"""Tiny runs of `edgecv train captcha` / `captcha-ctc` (one epoch, a few images: the plumbing, not
the accuracy), the CRNN's shape contract, and the shipped CRNN being TFLite builtins only."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_clean_error, run_cli
from edgecv.modelfile import load_spec


def test_crnn_shapes_and_options():
    from edgecv.train.nets import create_model
    from edgecv.train.nets import crnn as _  # noqa: F401
    m = create_model("crnn", (50, 200, 1), 20)
    assert m.output_shape == (None, 25, 20)
    probs = np.asarray(m(np.random.rand(2, 50, 200, 1).astype("float32")))
    assert np.allclose(probs.sum(-1), 1, atol=1e-5) and np.isfinite(probs).all()
    assert create_model("crnn", (32, 128, 1), 11, rnn="gru", filters=(16, 32)).output_shape == (None, 32, 11)
    assert create_model("crnn", (50, 200, 1), 20, rnn="none").output_shape == (None, 25, 20)
    from edgecv.errors import ConfigError
    with pytest.raises(ConfigError, match="multiple of 8"):
        create_model("crnn", (50, 196, 1), 20)


@pytest.mark.slow
def test_tiny_digit_run(tmp_path):
    run = tmp_path / "ez"
    proc = run_cli("train", "captcha", "--data", "ezpass", "--out", str(run), "--epochs", "1")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    for f in ("model.keras", "spec.json", "config.yaml", "history.json", "eval.json"):
        assert (run / f).is_file(), f
    spec = load_spec(run)
    assert spec.task == "captcha-digits" and spec.labels == tuple("123456789")
    assert spec.input_shape == (28, 28, 1) and spec.preprocess[1].mode == "pad"
    report = json.loads((run / "eval.json").read_text())
    assert report["n"] == 125 and "coverage" in report
    # The held-out captchas' digits were kept out of training.
    assert "00000.jpg" in spec.data["held_out_captchas"]
    assert_clean_error(run_cli("train", "captcha", "--data", "ezpass", "--out", str(run)), "already holds")


@pytest.mark.slow
def test_tiny_ctc_run(tmp_path):
    # The conv-only variant: an unrolled BiLSTM's first compile alone takes a minute on 2 cores;
    # that the LSTM converts is checked on the shipped model below.
    run = tmp_path / "v2"
    proc = run_cli("train", "captcha-ctc", "--data", "captcha-v2", "--out", str(run),
                   "--max-train", "16", "--model-kw", "rnn=none", "--model-kw", "rnn_units=[16]",
                   "--epochs", "2", "--select", "last", "--aug", "captcha", "--schedule", "cosine")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    spec = load_spec(run)
    assert spec.task == "captcha-ctc" and spec.charset == "2345678bcdefgmnpwxy"
    assert spec.extra["blank"] == len(spec.charset) and spec.extra["time_steps"] == 25
    report = json.loads((run / "eval.json").read_text())
    assert report["test"]["n"] > 100 and 0 <= report["test"]["cer"]
    # --select last: every epoch runs and the last one's weights are kept, whatever val says.
    assert report["select"] == "last" and report["epochs_run"] == report["best_epoch"] == 2
    assert (report["aug"], report["schedule"]) == ("captcha", "cosine")


def test_ctc_data_must_be_captchas(tmp_path):
    assert_clean_error(run_cli("train", "captcha-ctc", "--data", "mnist", "--out", str(tmp_path / "x")),
                       "needs captchas")


def test_shipped_crnn_is_builtins_only():
    """CTC decoding stays outside the graph and the unrolled LSTM is plain builtins: no Flex or
    custom ops, so LiteRT runs it anywhere."""
    from edgecv import zoo
    if "captcha-v2" not in zoo.names():
        pytest.skip("captcha-v2 is not shipped")
    from ai_edge_litert.interpreter import Interpreter
    path = zoo.resolve("captcha-v2", ".tflite")
    it = Interpreter(model_path=str(path))
    ops = {d["op_name"] for d in it._get_ops_details()}
    assert not any(o.startswith("Flex") or o in ("CUSTOM", "WHILE", "CTC_BEAM_SEARCH_DECODER") for o in ops), ops
    assert {"FULLY_CONNECTED", "LOGISTIC", "TANH", "CONV_2D"} <= ops
    assert path.stat().st_size < 600_000


def test_captcha_augment_on_real_captchas(data_dir):
    """The captcha augmentation keeps real captchas in [0, 1], the same shape and white paper,
    adds ink (the extra stroke) to some, is a function of the generator, and never flips text."""
    import cv2
    from edgecv.train.augment import CaptchaAugment
    files = sorted((data_dir / "captcha_images_v2").glob("*.png"))[:16]
    x = np.stack([cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (200, 50),
                             interpolation=cv2.INTER_AREA) for f in files]).astype(np.float32)[..., None] / 255
    aug = CaptchaAugment()
    a = aug(x, np.random.default_rng(7))
    assert a.shape == x.shape and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    assert np.array_equal(a, aug(x, np.random.default_rng(7)))
    assert not np.allclose(a, x)
    # Still the same image: closer to its own source than to the left-right mirror of it.
    for i in range(len(x)):
        assert np.abs(a[i] - x[i]).mean() < np.abs(a[i] - x[i, :, ::-1]).mean()
    # No affine, no blur, no contrast: only the stroke, painted over paper and text alike.
    from edgecv.train.augment import Augment
    stroke = CaptchaAugment(affine=Augment(0, 0, 0, 0, False), line_p=1.0, blur_p=0.0, contrast=0.0)
    s = stroke(x, np.random.default_rng(1))
    for i in range(len(x)):
        changed = np.abs(s[i] - x[i]) > 1e-6
        assert 50 < changed.sum() < 0.1 * x[i].size
        assert (s[i][changed & (x[i] > 0.9)] < 0.9).any()     # paper under the stroke got ink
