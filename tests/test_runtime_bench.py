"""The pipeline benchmark runs end to end on a real video (a few frames; speed is not checked here)."""
from __future__ import annotations

from edgecv.runtime.bench_pipeline import bench_pipeline, format_table
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
