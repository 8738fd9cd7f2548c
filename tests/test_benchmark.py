"""`edgecv benchmark` on small real models: the JSON rows carry every documented field with ordered
percentiles, the CSV/Markdown/PNG files are written, an unavailable device is warned about and
marked, and every misuse ends in a one-line error. Runs are a fraction of a second per
configuration: nothing here checks a speed."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from conftest import assert_clean_error, run_cli
from edgecv.apps.bench_report import FIELD_NAMES, format_table, order_row
from edgecv.apps.benchmark import parse_batches
from edgecv.errors import ConfigError
from models import smile_model_files  # noqa: F401  (fixture)

QUICK = ("--duration", "0.3", "--warmup", "2")


def _rows(path):
    doc = json.loads(path.read_text())
    assert doc["schema"] == "edgecv.benchmark/1"
    return doc, doc["rows"]


def test_benchmark_writes_every_field_and_ordered_percentiles(smile_model_files, tmp_path):
    out = {k: tmp_path / f"b.{k}" for k in ("json", "csv", "md", "png")}
    tfl, onnx = smile_model_files["tflite_int8"], smile_model_files["onnx"]
    proc = run_cli("benchmark", str(tfl), str(onnx), "--batch", "1,4", *QUICK, "--data", "smiles",
                   "--data-limit", "64", "--json", str(out["json"]), "--csv", str(out["csv"]),
                   "--md", str(out["md"]), "--plot", str(out["png"]), timeout=300)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err
    doc, rows = _rows(out["json"])
    assert [(r["artefact"], r["backend"], r["batch"]) for r in rows] == [
        (tfl.name, "litert", 1), (tfl.name, "litert", 4), (onnx.name, "onnxruntime", 1), (onnx.name, "onnxruntime", 4)]
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
        assert 0 <= r["accuracy"] <= 1 and r["accuracy_n"] == 64 and r["accuracy_data"] == "smiles[test]"
        assert r["source_accuracy"] is None and r["drop_pts"] is None  # the test spec names no data set
    assert rows[0]["quant"] == "int8" and rows[0]["input_dtype"] == "int8"
    assert rows[2]["provider"] == "CPUExecutionProvider"
    assert {"cpu_model", "cpu_flags", "usable_cpus", "versions", "loadavg_1_5_15"} <= set(doc["env"])
    assert doc["env"]["versions"]["onnxruntime"]
    assert doc["settings"]["batches"] == [1, 4]

    with open(out["csv"], newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and list(table[0]) == list(FIELD_NAMES)
    md = out["md"].read_text()
    assert md.startswith("`edgecv benchmark ") and "| artefact | backend/device |" in md and tfl.name in md
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stdout = proc.stdout.decode()
    assert "p50 ms" in stdout and onnx.name in stdout
    assert "[4/4]" in err  # not a TTY: one progress line per configuration


def test_unavailable_device_is_warned_and_marked(smile_model_files, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this box has the CUDA provider: nothing falls back")
    j = tmp_path / "b.json"
    proc = run_cli("benchmark", str(smile_model_files["onnx"]), "--device", "cuda", "--batch", "2", *QUICK,
                   "--data", "none", "--json", str(j), timeout=120)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err
    assert "warning: --device cuda requested" in err and "CUDAExecutionProvider" in err
    (row,) = _rows(j)[1]
    assert (row["device"], row["device_used"], row["provider"]) == ("cuda", "cpu", "CPUExecutionProvider")
    assert any("CUDAExecutionProvider" in w for w in row["warnings"])
    assert row["accuracy"] is None
    assert "onnxruntime/cuda->cpu!" in proc.stdout.decode()


@pytest.mark.parametrize("args, match", [
    (["--backend", "tensorflow"], r"unknown backend 'tensorflow'.*Choose from: keras, litert, onnxruntime"),
    (["--backend", "litert"], r"nothing to measure"),
    (["--device", "gpu"], r"unknown device 'gpu'"),
    (["--batch", "0"], r"--batch takes positive integers.*'0'"),
    (["--batch", "1,x"], r"--batch takes positive integers.*'x'"),
    (["--threads", "0"], r"--threads takes an integer >= 1"),
    (["--duration", "soon"], r"--duration takes seconds"),
    (["--warmup", "-1"], r"--warmup takes an integer >= 0"),
    (["--plot", "out.txt"], r"--plot out.txt: must end in .png"),
    (["--out", "somewhere"], r"--out is for --export-all"),
    (["--video", "x.mp4"], r"--video belong to 'edgecv benchmark pipeline"),
])
def test_bad_options_fail_cleanly(smile_model_files, args, match):
    assert_clean_error(run_cli("benchmark", str(smile_model_files["onnx"]), *args, timeout=120), match)


def test_bad_models_fail_cleanly(smile_model_files, tmp_path):
    assert_clean_error(run_cli("benchmark"), r"name at least one model")
    assert_clean_error(run_cli("benchmark", str(tmp_path / "nope.tflite")), r"nope.tflite: no such model file")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model\n")
    assert_clean_error(run_cli("benchmark", str(notes)), r"not a model file \(expected .tflite, .onnx or .keras")
    assert_clean_error(run_cli("benchmark", str(tmp_path)), r"no .tflite or .onnx files in this folder")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage" * 64)
    assert_clean_error(run_cli("benchmark", str(junk)), r"junk.onnx: not a loadable ONNX model")
    # A model file that is garbage but has a valid spec beside it fails in the measuring process:
    # its reason still comes back as one line.
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL3" + b"\x00" * 256)
    shutil.copy(str(smile_model_files["tflite"]) + ".spec.json", str(bad) + ".spec.json")
    assert_clean_error(run_cli("benchmark", str(bad), "--batch", "1", *QUICK, "--data", "none", timeout=120),
                       r"bad.tflite: LiteRT cannot load this model")


def test_export_all_and_pipeline_misuse(smile_model_files, tmp_path):
    tfl = str(smile_model_files["tflite"])
    assert_clean_error(run_cli("benchmark", tfl, tfl, "--export-all"), r"--export-all takes exactly one MODEL")
    assert_clean_error(run_cli("benchmark", "pipeline", tfl), r"needs --video")
    assert_clean_error(run_cli("benchmark", "pipeline", str(smile_model_files["onnx"]), "--video", "video:smile.mp4"),
                       r"takes an existing .tflite classifier")
    assert_clean_error(run_cli("benchmark", "pipeline", tfl, "--video", str(tmp_path / "none.mp4")),
                       r"--video .*none.mp4: no such file")
    assert_clean_error(run_cli("benchmark", "pipeline", tfl, "--video", "x", "--plot", "p.png"),
                       r"--plot: not options of 'edgecv benchmark pipeline'")


def test_pipeline_delegates_to_the_runtime_benchmark(smile_model_files, tmp_path):
    j, md = tmp_path / "p.json", tmp_path / "p.md"
    proc = run_cli("benchmark", "pipeline", str(smile_model_files["tflite"]), "--video", "video:smile.mp4",
                   "--max-frames", "3", "--json", str(j), "--md", str(md), timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    (result,) = json.loads(j.read_text())
    assert result["video"] == "smile.mp4" and "decode only" in result["modes"]
    assert all(m["frames"] == 3 for m in result["modes"].values())
    assert "| decode only | 3 |" in md.read_text()


def test_parse_batches_and_table_with_an_error_row():
    assert parse_batches("32, 1,8,8") == [1, 8, 32]
    for bad in ("", "0", "-2", "1,,2", "1.5"):
        with pytest.raises(ConfigError, match="--batch takes positive integers"):
            parse_batches(bad)
    row = order_row({"artefact": "m.onnx", "backend": "onnxruntime", "device": "cpu", "batch": 1,
                     "status": "error", "error": "m.onnx: onnxruntime cannot load this model"})
    assert row["latency_ms_p50"] is None and list(row) == list(FIELD_NAMES)
    text = format_table([row])
    assert "m.onnx" in text and "error: m.onnx: onnxruntime cannot load" in text
