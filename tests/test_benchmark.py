"""`edgecv benchmark models` on small real models: the JSON rows carry every documented field with
ordered percentiles, the CSV/Markdown/PNG files are written, an unavailable device is warned about
and marked, outputs are read by edgecv.decode, and every misuse ends in a clean error. Runs are a
fraction of a second per configuration: nothing here checks a speed."""
from __future__ import annotations

import ast
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, assert_clean_error, run_cli
from edgecv.apps.bench.measure import Scoring, engine_threads, physical_cores, score_arrays
from edgecv.apps.bench.report import FIELD_NAMES, order_row, plot, render_table, rows_table
from edgecv.runtime.machine import usable_cpus
from edgecv.spec import ModelSpec
from models import smile_model_files  # noqa: F401  (fixture)

QUICK = ("--duration", "0.3", "--warmup", "2")


def _rows(path):
    doc = json.loads(path.read_text())
    assert doc["schema"] == "edgecv.benchmark/1"
    return doc, doc["rows"]


def _ort_accuracy(onnx: Path, n: int) -> float:
    """Top-1 of a bare ONNX Runtime session (softmax argmax) on n evenly spaced SMILES test images."""
    import onnxruntime as ort

    from edgecv.data import load, split
    from edgecv.modelfile import load_spec
    from edgecv.preprocess import apply_chain

    spec = load_spec(onnx)
    ds = load("smiles")
    part = split(ds, "test", ds.split_info)
    assert list(part.label_names) == list(spec.labels)
    part = part.subset(np.linspace(0, len(part) - 1, n).round().astype(np.int64))
    x, y = part.load_arrays(lambda imgs: apply_chain(imgs, spec.preprocess, spec.input_shape))
    sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    probs = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    return float(np.mean(probs.argmax(1) == np.asarray(y)))


def test_benchmark_writes_every_field_and_ordered_percentiles(smile_model_files, tmp_path):
    out = {k: tmp_path / f"b.{k}" for k in ("json", "csv", "md", "png")}
    tfl, onnx = smile_model_files["tflite_int8"], smile_model_files["onnx"]
    proc = run_cli("benchmark", "models", str(tfl), str(onnx), "--batch", "1,4", *QUICK, "--data", "smiles",
                   "--data-limit", "64", "--json", str(out["json"]), "--csv", str(out["csv"]),
                   "--md", str(out["md"]), "--plot", str(out["png"]), timeout=300)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err
    doc, rows = _rows(out["json"])
    # .onnx runs on ONNX Runtime and, with the [openvino] extra installed (the test environment), OpenVINO.
    assert [(r["artefact"], r["backend"], r["batch"]) for r in rows] == [
        (tfl.name, "litert", 1), (tfl.name, "litert", 4), (onnx.name, "onnxruntime", 1), (onnx.name, "onnxruntime", 4),
        (onnx.name, "openvino", 1), (onnx.name, "openvino", 4)]
    for r in rows:
        assert list(r) == list(FIELD_NAMES)
        assert r["status"] == "ok" and r["error"] is None
        assert 0 < r["latency_ms_min"] <= r["latency_ms_p50"] <= r["latency_ms_p90"] <= r["latency_ms_p99"] \
            <= r["latency_ms_max"]
        assert r["per_image_ms_p50"] == pytest.approx(r["latency_ms_p50"] / r["batch"], rel=1e-3)
        assert r["iters"] > 0 and r["throughput_ips"] > 0 and r["bare_ms_p50"] > 0
        assert r["size_bytes"] == (tfl if r["format"] == "tflite" else onnx).stat().st_size
        assert r["peak_rss_mb"] >= r["baseline_rss_mb"] > 0
        assert r["device"] == r["device_used"] == "cpu"
        assert isinstance(r["overhead_ok"], bool) and r["harness_ns"] > 0
        # Scored once per artefact and backend, shown on every batch row.
        assert r["accuracy_n"] == 64 and r["accuracy_data"] == "smiles[test]"
        assert r["source_accuracy"] is None and r["drop_pts"] is None  # the test spec names no data set
        # The threads each row ran with, read back from the engine: none is left at null.
        assert r["threads_requested"] is None and r["threads"] >= 1
    # LiteRT gets one thread per usable CPU (not its own default of one); ORT sizes its pool to the
    # physical cores; OpenVINO's compiled model says what it chose.
    assert [r["threads_source"] for r in rows[::2]] == [
        "litert num_threads", "onnxruntime default: one per physical core", "openvino INFERENCE_NUM_THREADS"]
    assert rows[0]["threads"] == usable_cpus()
    assert rows[2]["threads"] == physical_cores()
    assert rows[4]["provider"] == "OpenVINO CPU"
    # The score is the one a plain ONNX Runtime session gives on the same 64 evenly spaced images.
    assert rows[2]["accuracy"] == rows[3]["accuracy"] == _ort_accuracy(onnx, 64)
    # OpenVINO runs the same file: the same answers on all but a few images.
    assert abs(rows[4]["accuracy"] - rows[2]["accuracy"]) <= 2 / 64
    # The int8 TFLite and the fp32 ONNX export of one model agree on all but a few of them.
    assert abs(rows[0]["accuracy"] - rows[2]["accuracy"]) <= 3 / 64
    assert rows[0]["quant"] == "int8" and rows[0]["input_dtype"] == "int8"
    assert rows[2]["provider"] == "CPUExecutionProvider"
    assert {"cpu_model", "cpu_flags", "usable_cpus", "versions", "loadavg_1_5_15"} <= set(doc["env"])
    assert doc["env"]["versions"]["onnxruntime"]
    assert doc["settings"]["batches"] == [1, 4]
    assert doc["settings"]["command"].startswith("edgecv benchmark models ")

    with open(out["csv"], newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6 and list(table[0]) == list(FIELD_NAMES)
    md = out["md"].read_text()
    assert md.startswith("`edgecv benchmark models ") and "| artefact | backend/device |" in md and tfl.name in md
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stdout = proc.stdout.decode()
    assert "p50 ms" in stdout and onnx.name in stdout
    assert "[6/6]" in err  # not a TTY: one progress line per configuration


ZOO = REPO / "edgecv" / "zoo"


def test_plot_shows_accuracy_against_latency_of_the_measured_rows(tmp_path):
    """The shipped smile artefacts, measured for real (LiteRT, ORT, OpenVINO): the accuracy-vs-latency
    panel has one point per artefact and backend at the chosen batch, at the row's per-image p50 and
    accuracy, labelled with its size and threads; the SVG keeps those labels as text, the PNG decodes."""
    import xml.etree.ElementTree as ET

    import cv2

    j, svg, png = tmp_path / "z.json", tmp_path / "z.svg", tmp_path / "z.png"
    proc = run_cli("benchmark", "models", str(ZOO / "smile.int8.onnx"), str(ZOO / "smile.fp16.tflite"),
                   "--batch", "1,4", *QUICK, "--data-limit", "64", "--json", str(j), "--plot", str(svg),
                   "--plot-batch", "1", timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    rows = _rows(j)[1]
    assert {(r["artefact"], r["backend"]) for r in rows} == {
        ("smile.int8.onnx", "onnxruntime"), ("smile.int8.onnx", "openvino"), ("smile.fp16.tflite", "litert")}
    assert all(r["accuracy_data"] == "smiles[test]" and r["accuracy_n"] == 64 for r in rows)

    text = "".join(t.text or "" for t in ET.parse(svg).getroot().iter("{http://www.w3.org/2000/svg}text"))
    assert "accuracy vs latency at batch 1" in text
    at1 = [r for r in rows if r["batch"] == 1]
    for r in at1:
        assert f"{r['artefact']} {r['backend']}/cpu, {r['size_bytes'] / 1e6:.1f} MB, {r['threads']} thr" in text
    assert not list(tmp_path.glob(".*"))  # the temporary name was renamed

    data = plot(rows, png)  # the default batch: the largest measured
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cv2.imdecode(np.frombuffer(png.read_bytes(), np.uint8), cv2.IMREAD_COLOR).shape[1] > 600
    assert data["batch"] == 4 and data["unscored"] == []
    at4 = {(r["artefact"], r["backend"]): r for r in rows if r["batch"] == 4}
    assert {(p["artefact"], p["backend"]) for p in data["points"]} == set(at4)
    for p in data["points"]:
        r = at4[p["artefact"], p["backend"]]
        assert p["per_image_ms"] == r["per_image_ms_p50"] and p["accuracy_pct"] == 100 * r["accuracy"]
        assert p["threads"] == r["threads"] and p["mb"] == pytest.approx(r["size_bytes"] / 1e6, abs=1e-3)


def test_engine_threads_are_the_threads_the_engine_starts():
    """What a row reports is what the engine does: ONNX Runtime left at its default and LiteRT
    given one thread per usable CPU each start (threads - 1) pool threads beside the caller's."""
    import os

    from edgecv.resolve import resolve
    from edgecv.runtime.backends import open_backend

    def count():
        return len(os.listdir("/proc/self/task"))

    for name, threads in (("smile.int8.onnx", None), ("smile.fp16.tflite", usable_cpus())):
        ref = resolve(ZOO / name)
        before = count()
        with open_backend(ref.path, ref.spec, threads=threads) as b:
            b.run(np.zeros((1, *ref.spec.input_shape), np.float32))
            n, _ = engine_threads(b)
            assert count() - before == n - 1, (name, n)
        del b  # its pool's threads end with it, before the next count
        assert n == (threads or physical_cores())


def test_missing_openvino_extra_skips_its_rows_with_a_note(smile_model_files, tmp_path):
    """Without OpenVINO (an import that fails, as on the edge install) the .onnx file is measured on
    ONNX Runtime alone and a note names the extra; asking for openvino by name is one clean error."""
    shadow = tmp_path / "no-openvino" / "openvino"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'openvino'\", name='openvino')\n")
    env = {"PYTHONPATH": str(shadow.parent)}
    j = tmp_path / "b.json"
    onnx = str(smile_model_files["onnx"])
    proc = run_cli("benchmark", "models", onnx, "--batch", "2", *QUICK, "--data", "none", "--json", str(j),
                   env=env, timeout=120)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err
    assert "note: openvino rows skipped" in err and "pip install 'edgecv[openvino]'" in err
    assert "Traceback" not in err
    assert [r["backend"] for r in _rows(j)[1]] == ["onnxruntime"]
    assert_clean_error(run_cli("benchmark", "models", onnx, "--backend", "openvino", "--batch", "2", *QUICK,
                               "--data", "none", env=env, timeout=120),
                       r"nothing to measure.*edgecv\[openvino\]")


def test_a_child_reports_its_own_memory_not_its_parents(data_dir):
    """A measuring process started by a parent holding 300 MB reports what it used itself (ru_maxrss
    would carry the parent's 300 MB across fork + exec)."""
    from edgecv.apps.bench.harness import run_child

    held = np.ones(300 << 17)  # 300 MiB of float64, touched
    r = run_child("pipeline-mode", {"mode": "decode", "video": str(data_dir / "videos" / "smile.mp4"),
                                    "model": "", "max_frames": 2}, label="decode", timeout=120)
    assert r["frames"] == 2 and 10 < r["peak_rss_mb"] < 250, r
    del held


def test_unavailable_device_is_warned_and_marked(smile_model_files, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this box has the CUDA provider: nothing falls back")
    j = tmp_path / "b.json"
    proc = run_cli("benchmark", "models", str(smile_model_files["onnx"]), "--device", "cuda", "--batch", "2",
                   *QUICK, "--data", "none", "--json", str(j), timeout=120)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err
    assert "warning: --device cuda requested" in err and "CUDAExecutionProvider" in err
    row, ov = _rows(j)[1]
    assert (row["device"], row["device_used"], row["provider"]) == ("cuda", "cpu", "CPUExecutionProvider")
    assert any("CUDAExecutionProvider" in w for w in row["warnings"])
    assert row["accuracy"] is None
    assert "onnxruntime/cuda->cpu!" in proc.stdout.decode()
    # OpenVINO runs on the CPU only here: said before the run and marked in its row too.
    assert "--device cuda requested but the openvino backend runs on the CPU only" in err
    assert (ov["backend"], ov["device"], ov["device_used"]) == ("openvino", "cuda", "cpu")
    assert ov["provider"] == "OpenVINO CPU"
    assert "openvino/cuda->cpu!" in proc.stdout.decode()


@pytest.mark.parametrize("args, match", [
    (["--backend", "tensorflow"], r"unknown backend 'tensorflow'.*Choose from: keras, litert, onnxruntime, openvino"),
    (["--backend", "litert"], r"nothing to measure"),
    (["--device", "gpu"], r"unknown device 'gpu'"),
    (["--batch", "0"], r"--batch: takes positive integers.*'0'"),
    (["--batch", "1,x"], r"--batch: takes positive integers.*'x'"),
    (["--threads", "0"], r"--threads: takes an integer >= 1"),
    (["--duration", "soon"], r"--duration: takes seconds"),
    (["--warmup", "-1"], r"--warmup: takes an integer >= 0"),
    (["--plot", "out.txt"], r"--plot out.txt: must end in .png"),
    (["--batch", "1,4", "--plot-batch", "3"], r"--plot-batch 3: not one of the measured --batch sizes \(1,4\)"),
    (["--out", "somewhere"], r"--out is for --export-all"),
    (["--video", "x.mp4"], r"unrecognized arguments: --video x.mp4"),
])
def test_bad_options_fail_cleanly(smile_model_files, args, match):
    assert_clean_error(run_cli("benchmark", "models", str(smile_model_files["onnx"]), *args, timeout=120), match)


def test_subcommands_are_required(smile_model_files):
    """`models` is a word of its own: the old `edgecv benchmark FILE` form names the choices."""
    assert_clean_error(run_cli("benchmark"), r"required: \{models,pipeline,streams\}")
    assert_clean_error(run_cli("benchmark", str(smile_model_files["onnx"])),
                       r"invalid choice: .*smile.onnx.*choose from 'models', 'pipeline', 'streams'")
    assert_clean_error(run_cli("benchmark", "models"), r"required: MODEL_OR_DIR")


def test_bad_models_fail_cleanly(smile_model_files, tmp_path):
    def models(*args):
        return run_cli("benchmark", "models", *args, timeout=120)

    assert_clean_error(models(str(tmp_path / "nope.tflite")), r"nope.tflite: no such model file")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model\n")
    assert_clean_error(models(str(notes)), r"not a model file \(expected .tflite, .onnx or .keras")
    assert_clean_error(models(str(tmp_path)), r"no .tflite or .onnx files in this folder")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage" * 64)
    assert_clean_error(models(str(junk)), r"junk.onnx: not a loadable ONNX model")
    # A model file that is garbage but has a valid spec beside it fails in the measuring process:
    # its reason still comes back as one line.
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL3" + b"\x00" * 256)
    shutil.copy(str(smile_model_files["tflite"]) + ".spec.json", str(bad) + ".spec.json")
    err = assert_clean_error(models(str(bad), "--batch", "1", *QUICK, "--data", "none"),
                             r"bad.tflite: LiteRT cannot load this model")
    assert len(err.strip().splitlines()) == 1, err
    tfl = str(smile_model_files["tflite"])
    assert_clean_error(models(tfl, tfl, "--export-all"), r"--export-all takes exactly one MODEL")


def test_a_model_whose_output_does_not_fit_its_spec_is_not_timed(smile_model_files, tmp_path):
    """Three labels for a two-column model: the first inference is decoded and refused, before timing."""
    model = tmp_path / "m.onnx"
    shutil.copy(smile_model_files["onnx"], model)
    spec = json.loads(Path(str(smile_model_files["onnx"]) + ".spec.json").read_text())
    spec["labels"] = ["a", "b", "c"]
    (tmp_path / "m.onnx.spec.json").write_text(json.dumps(spec))
    err = assert_clean_error(run_cli("benchmark", "models", str(model), "--batch", "2", *QUICK, "--data", "none",
                                     timeout=120), r"returns 2 value\(s\) per input.*expects 3")
    assert len(err.strip().splitlines()) == 1, err


def _sigmoid_spec() -> ModelSpec:
    return ModelSpec(name="s", task="classify", input_shape=(4, 4, 1), colour="gray", preprocess=(),
                     labels=("no", "yes"), output="sigmoid")


def test_accuracy_reads_outputs_through_decode(tmp_path):
    """A sigmoid probability of exactly 0.5 is the second label (decode's >= rule, as in the
    runtime); a NaN output is an error, not a miss."""
    x, y = np.zeros((4, 4, 4, 1), np.float32), np.array([1, 1, 0, 0])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    scoring = Scoring(str(tmp_path / "x.npy"), str(tmp_path / "y.npy"))

    def model(out):
        return lambda batch: np.asarray(out[:len(batch)], np.float32).reshape(-1, 1)

    assert score_arrays(model([0.5, 0.9, 0.49, 0.0]), _sigmoid_spec(), scoring, 4)["accuracy"] == 1.0
    from edgecv.errors import ModelError
    with pytest.raises(ModelError, match="non-finite"):
        score_arrays(model([np.nan, 1, 0, 0]), _sigmoid_spec(), scoring, 4)
    # Data-set class i is model output label_map[i]: the same answers, labels swapped.
    swapped = Scoring(scoring.x_path, scoring.y_path, label_map=[1, 0])
    assert score_arrays(model([0.5, 0.9, 0.49, 0.0]), _sigmoid_spec(), swapped, 4)["accuracy"] == 0.0


def test_tables_and_error_rows():
    row = order_row({"artefact": "m.onnx", "backend": "onnxruntime", "device": "cpu", "batch": 1,
                     "status": "error", "error": "m.onnx: onnxruntime cannot load this model"})
    assert row["latency_ms_p50"] is None and list(row) == list(FIELD_NAMES)
    text = rows_table([row])
    assert "m.onnx" in text and "error: m.onnx: onnxruntime cannot load" in text
    md = rows_table([row], markdown=True).splitlines()
    assert md[1].startswith("|---|---|---:|") and md[2].count("|") == md[0].count("|")
    plain = render_table(["name", "n"], [["a", "1"], ["bbb", "22"]]).splitlines()
    assert plain == ["name   n", "----  --", "a      1", "bbb   22"]


def _imports(path: Path, package: str) -> set[str]:
    """Modules of `package` that the file imports, at any level (a function-level import is a
    dependency too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(a.name for a in node.names)
            elif node.module and node.module.startswith(package + "."):
                found.add(node.module[len(package) + 1:].split(".")[0])
    return found


def test_the_benchmark_is_one_package_without_import_cycles():
    bench = REPO / "apps" / "bench"
    graph = {p.stem: _imports(p, "edgecv.apps.bench") & {q.stem for q in bench.glob("*.py")}
             for p in bench.glob("*.py")}
    # The child names its jobs as strings (imported when run), so no module imports the child.
    assert not any("child" in deps for deps in graph.values())

    def visit(node, path):
        assert node not in path, f"import cycle: {' -> '.join(path + [node])}"
        for dep in graph[node]:
            visit(dep, path + [node])

    for node in graph:
        visit(node, [])
    # runtime/ holds no benchmark code, and imports no app.
    assert not list((REPO / "runtime").glob("bench*.py"))
    assert not list((REPO / "apps").glob("bench_*.py")) and not (REPO / "apps" / "benchmark.py").exists()
    for p in (REPO / "runtime").glob("*.py"):
        modules = [n.module or "" for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.ImportFrom)]
        modules += [a.name for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in modules if m.startswith("edgecv.apps")], p
