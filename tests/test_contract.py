"""The ModelSpec contract end to end: a spec that does not fit its model is refused at load with one
line, a model whose output does not fit its spec never yields a label, every command reads outputs
the same way, and one model reference opens one inference session.

The misfit models are real ONNX graphs built here with the `onnx` package and run by ONNX Runtime:
10 classes behind a 2-label spec, NaN outputs, logits taken for probabilities, four rows per input.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import assert_clean_error, run_cli
from edgecv.errors import ModelError
from edgecv.spec import ModelSpec
from models import smile_model_files, smile_spec  # noqa: F401  (fixture)

SYN = ["--source", "synthetic://64x64?frames=3", "--detector", "none", "--no-display", "--metrics-interval", "0"]


def misfit_onnx(path, kind: str):
    """A real ONNX model taking the test smile spec's Nx28x28x1 input:
    ten     -> Flatten, MatMul(784x10), Softmax            (10 probabilities)
    nan     -> Flatten, MatMul(784x2), Add(NaN)            (non-finite)
    logits  -> Flatten, MatMul(784x2) * 50                 (unnormalised scores)
    rows4   -> Flatten, MatMul(784x8), Reshape(-1, 2), Softmax (4 rows per input)
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    cols = {"ten": 10, "nan": 2, "logits": 2, "rows4": 8}[kind]
    w = (rng.standard_normal((784, cols)) * 0.05).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([-1, 2], np.int64), "shape"),
             numpy_helper.from_array(np.array([np.nan, 0], np.float32), "nan"),
             numpy_helper.from_array(np.array(50, np.float32), "fifty")]
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["z"])]
    if kind == "ten":
        nodes.append(helper.make_node("Softmax", ["z"], ["y"], axis=1))
    elif kind == "nan":
        nodes.append(helper.make_node("Add", ["z", "nan"], ["y"]))
    elif kind == "logits":
        nodes.append(helper.make_node("Mul", ["z", "fifty"], ["y"]))
    else:
        nodes += [helper.make_node("Reshape", ["z", "shape"], ["r"]), helper.make_node("Softmax", ["r"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 28, 28, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    smile_spec().save(str(path) + ".spec.json")
    return path


@pytest.mark.parametrize("kind, match", [
    ("ten", r"returns 10 value\(s\) per input; its ModelSpec \(softmax, labels \['not_smiling', 'smiling'\]\) expects 2"),
    ("nan", r"non-finite values \(NaN or inf\)"),
    ("logits", r"values outside \[0, 1\].*set \"output\": \"logits\""),
    ("rows4", r"returned \d+ output row\(s\) for a batch of \d+; its first output must have one row per input"),
])
def test_a_model_whose_output_does_not_fit_its_spec_gives_no_label(tmp_path, kind, match):
    model = misfit_onnx(tmp_path / f"{kind}.onnx", kind)
    events = tmp_path / "e.jsonl"
    proc = run_cli("run", "--model", str(model), *SYN, "--json-out", str(events), timeout=120)
    assert_clean_error(proc, match)
    assert not events.exists() or all(json.loads(x)["detections"] == [] for x in events.read_text().splitlines())


def test_logits_are_read_as_logits_when_the_spec_says_so(tmp_path):
    model = misfit_onnx(tmp_path / "logits.onnx", "logits")
    smile_spec().replace(output="logits").save(str(model) + ".spec.json")
    events = tmp_path / "e.jsonl"
    proc = run_cli("run", "--model", str(model), *SYN, "--json-out", str(events), timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    dets = [d for x in events.read_text().splitlines() for d in json.loads(x)["detections"]]
    assert len(dets) == 3 and all(0.5 <= d["score"] <= 1.0 for d in dets)


MISSPELT = {"preprocess": [{"op": "gray"}, {"op": "resize", "size": [28, 28]}, {"op": "sacle", "factor": 0.0039}]}
MISSPELT_MESSAGE = r"unknown preprocess op 'sacle'\. Did you mean 'scale'\?"
# Every kind of misfit on `edgecv run`, and the misspelt step on every command that loads a model
# (each case starts a Python process: ~2 s on the 2-core box, so not the full cross product).
CASES = [
    ("run", MISSPELT, MISSPELT_MESSAGE),
    ("run", {"preprocess": [{"op": "gray"}, {"op": "resize", "size": [28, 28]}, {"op": "scale"}]},
     r"preprocess step 'scale' needs field\(s\) factor"),
    ("run", {"output": "probabilities"}, r"unknown output kind 'probabilities'"),
    ("run", {"labels": ["a", "b", "c"]},
     r"returns 2 value\(s\) per input; its ModelSpec \(softmax, labels \['a', 'b', 'c'\]\) expects 3"),
    ("run", {"crop": {"kind": "circle"}}, r"unknown crop kind 'circle'"),
    ("run", {"outputs": "softmax"}, r"unknown ModelSpec field 'outputs'\. Did you mean 'output'"),
    ("smile", {"labels": ["a", "b", "c"]}, r"a smile model must have 2 labels"),
    ("eval", {"labels": ["a", "b", "c"]}, r"expects 3"),
    *[(command, MISSPELT, MISSPELT_MESSAGE) for command in ("smile", "eval", "benchmark", "captcha")],
]


@pytest.mark.parametrize("command, change, match", CASES)
def test_a_spec_that_does_not_fit_is_one_line_and_a_non_zero_exit(smile_model_files, tmp_path, data_dir,
                                                                    command, change, match):
    model = tmp_path / "m.onnx"
    shutil.copy(smile_model_files["onnx"], model)
    d = smile_spec().to_dict()
    d.update(change)
    (tmp_path / "m.onnx.spec.json").write_text(json.dumps(d))
    argv = {"run": ["run", "--model", str(model), *SYN],
            "smile": ["smile", "--model", str(model), *SYN],
            "eval": ["eval", str(model), "--data", "smiles", "--split", "test"],
            "benchmark": ["benchmark", "models", str(model), "--batch", "1", "--duration", "0.2"],
            "captcha": ["captcha", "solve", str(data_dir / "ezpass" / "raw" / "00000.jpg"), "--model", str(model)]}
    proc = run_cli(*argv[command], timeout=180)
    err = assert_clean_error(proc, match)
    assert len(err.strip().splitlines()) == 1, err


def test_run_and_smile_feed_the_same_crops_and_give_the_same_labels(tmp_path):
    """The face region comes from the model's spec (crop: square), not from the smile app."""
    got = {}
    for cmd in (["run", "--model", "edgecv/zoo/smile.int8.onnx", "--detector", "yunet"], ["smile"]):
        out = tmp_path / f"{cmd[0]}.jsonl"
        proc = run_cli(*cmd, "--source", "video:smile.mp4", "--no-display", "--metrics-interval", "0",
                       "--json-out", str(out), timeout=300)
        assert proc.returncode == 0, proc.stderr.decode()
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        got[cmd[0]] = [[(d["box"], d["label"], d["score"]) for d in e["detections"]]
                       for e in lines if not e.get("end_of_run")]  # smile closes the smiles still on
    assert len(got["run"]) == 55 and sum(len(f) for f in got["run"]) == 165  # 3 faces in each of 55 frames
    assert got["run"] == got["smile"]
    labels = [lab for f in got["run"] for _, lab, _ in f]
    assert 0 < labels.count("smiling") < len(labels)  # two of the three people smile


def test_one_inference_session_per_smile_start(monkeypatch, tmp_path):
    """The spec is read from the ONNX file's metadata without a session; the backend builds the one."""
    import onnxruntime as ort

    from edgecv.cli import main

    made = []
    real = ort.InferenceSession

    class Counting(real):
        def __init__(self, *a, **k):
            made.append(a[0] if a else k.get("path_or_bytes"))
            super().__init__(*a, **k)

    monkeypatch.setattr(ort, "InferenceSession", Counting)
    code = main(["smile", "--backend", "onnxruntime", "--source", "video:smile.mp4", "--max-frames", "5",
                 "--no-display", "--metrics-interval", "0", "--json-out", str(tmp_path / "e.jsonl")])
    assert code == 0
    # The detector's YuNet sessions (one per detect worker, runtime/yunet_batch.py) are not the model's.
    models = [m for m in made if "yunet" not in str(m)]
    assert len(models) == 1 and str(models[0]).endswith("smile.int8.onnx"), made


def test_shipped_version_1_specs_are_upgraded_on_read():
    from edgecv.modelfile import load_spec
    from edgecv.resolve import resolve

    # captcha-ezpass still ships a version 1 spec (the upgrade path on read); smile (issue 16) and
    # captcha-v2 (issue 21) were re-exported with version 2.
    for name, output, crop, stored in (("smile", "softmax", "square", 2), ("captcha-ezpass", "softmax", "box", 1),
                                       ("captcha-v2", "ctc", "box", 2)):
        ref = resolve(name)
        raw = json.loads(open(str(ref.path) + ".spec.json").read())
        assert raw["version"] == stored and ("output" in raw) == (stored == 2)
        spec = load_spec(ref.path)
        assert (spec.version, spec.output, spec.crop.kind) == (2, output, crop)
        assert ModelSpec.from_json(spec.to_json()) == spec  # v2 round-trips


def test_sigmoid_decisions_follow_the_threshold_everywhere():
    """One rule: p >= 0.5 is the second label, in the runtime's decoder and in the export gate."""
    from edgecv import decode
    from edgecv.export.calibration import Samples
    from edgecv.export.check import compare

    spec = smile_spec().replace(output="sigmoid")
    p = np.array([[0.2], [0.5], [0.7], [0.49]], np.float32)
    assert decode.indices(spec, p, 4).tolist() == [0, 1, 1, 0]
    assert [(x.label, round(x.score, 2)) for x in decode.predictions(spec, p, 4)] == [
        ("not_smiling", 0.8), ("smiling", 0.5), ("smiling", 0.7), ("not_smiling", 0.51)]
    samples = Samples(np.zeros((4, 28, 28, 1), np.float32), np.array([0, 1, 1, 0]), "test")
    kw = dict(spec=spec, fmt="onnx", quant="int8", path="x.onnx", max_drop=1.0, size_bytes=1, source_bytes=1,
              fp32_weight_bytes=1, runtime="onnxruntime")
    same = compare(p, p + 0.005 * (p < 0.5), samples, **kw)      # moved, but no decision crosses 0.5
    assert same.agreement == 1.0 and same.passed and same.accuracy == 1.0
    flipped = compare(p, np.array([[0.2], [0.4], [0.7], [0.51]], np.float32), samples, **kw)
    assert flipped.agreement == 0.5 and flipped.accuracy == 0.5 and not flipped.passed  # argmax would say 1.0
    with pytest.raises(Exception, match="output does not fit the ModelSpec.*non-finite"):
        compare(p, np.full_like(p, np.nan), samples, **kw)


def test_decoder_checks_rows_columns_and_probabilities():
    from edgecv import decode

    spec = smile_spec()
    with pytest.raises(ModelError, match=r"returned 3 output row\(s\) for 2 input\(s\)"):
        decode.predictions(spec, np.full((3, 2), 0.5, np.float32), 2)
    with pytest.raises(ModelError, match=r"softmax row 0 sums to 1\.6"):
        decode.predictions(spec, np.array([[0.8, 0.8]], np.float32), 1)
    assert decode.predictions(spec, np.zeros((0, 2), np.float32), 0) == []
