"""The pipeline and streams benchmarks run end to end on real videos (a few frames; speed is not checked here)."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import assert_clean_error, run_cli
from edgecv.runtime.bench_pipeline import bench_pipeline, format_table
from edgecv.runtime.bench_streams import bench_streams
from edgecv.runtime.bench_streams import format_table as format_streams
from models import smile_model_files  # noqa: F401  (fixture)


def test_bench_pipeline_reports_every_mode(smile_model_files, data_dir):
    r = bench_pipeline(data_dir / "videos" / "smile.mp4", smile_model_files["tflite"],
                       onnx_model=smile_model_files["onnx"], max_frames=6, isolate=False,
                       pipelines={"pipeline haar@300": {"detector": "haar", "detector_options": {"width": 300}}})
    assert set(r["modes"]) == {"decode only", "book loop, LiteRT per face", "pipeline haar@300"}
    assert all(m["frames"] == 6 and m["fps"] > 0 and m["peak_rss_mb"] > 0 for m in r["modes"].values())
    # Same detector, same width: the pipeline finds the faces the book's loop finds.
    assert r["modes"]["pipeline haar@300"]["faces"] == r["modes"]["book loop, LiteRT per face"]["faces"] > 0
    assert set(r["ratios"]["pipeline haar@300"]) == {"vs decode", "vs LiteRT loop"}
    assert [c["backend"] for c in r["crops"]] == ["litert", "onnxruntime"]
    assert all(c["batched_ips"] > 0 and c["unbatched_ips"] > 0 for c in r["crops"])
    table = format_table(r)
    assert "| pipeline haar@300 | 6 |" in table and "img/s at batch 32" in table


def test_pipeline_benchmark_loops_a_short_clip_without_reencoding(data_dir, tmp_path):
    import shutil

    import cv2
    import pytest

    from edgecv.runtime.bench_pipeline import looped

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is installed by `make test`")
    src = data_dir / "videos" / "smile.mp4"
    out = looped(str(src), 3, tmp_path)
    assert looped(str(src), 1, tmp_path) == str(src)
    cap = cv2.VideoCapture(out)
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 3 * 55
    assert abs(Path(out).stat().st_size - 3 * src.stat().st_size) < 0.02 * src.stat().st_size  # packets copied


def test_streams_benchmark_batches_across_streams(smile_model_files, data_dir, tmp_path):
    video = data_dir / "videos" / "vtest_pets2009_480x360_h264.avi"
    r = bench_streams(smile_model_files["onnx"], video, streams=(1, 4), frames=20, max_batch=16, workers=2)
    assert [row["streams"] for row in r["rows"]] == [1, 4]
    for row in r["rows"]:
        assert row["batched"]["frames"] == row["batch1"]["frames"] == 20 * row["streams"]
        assert row["batch1"]["max_batch"] == 1
        assert row["decode_fps"] > 0 and row["batched"]["age_ms_p50"] <= row["batched"]["age_ms_p99"]
    assert r["rows"][1]["batched"]["mean_batch"] > 1  # four streams' frames share batches
    assert "| 4 |" in format_streams(r)
    # the CLI: a table and JSON; bad arguments are one clean line
    out = tmp_path / "streams.json"
    proc = run_cli("benchmark", "streams", str(smile_model_files["onnx"]), "--video", str(video), "--streams", "2",
                   "--max-frames", "10", "--batch", "8", "--json", str(out))
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(out.read_text())["rows"][0]["batched"]["frames"] == 20
    assert_clean_error(run_cli("benchmark", "streams", str(smile_model_files["onnx"]), "--video", str(video),
                               "--streams", "0"), "--streams takes an integer >= 1")
    assert_clean_error(run_cli("benchmark", "streams", str(smile_model_files["onnx"])), "exactly one --video")
    assert_clean_error(run_cli("benchmark", str(smile_model_files["onnx"]), "--streams", "4"),
                       "belong to 'edgecv benchmark pipeline")
