"""`edgecv benchmark pipeline` and `edgecv benchmark streams` end to end on real videos (a few
frames; speed is not checked here)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import assert_clean_error, run_cli
from edgecv.apps.bench.pipeline import PIPELINES, bench_pipeline, looped, pipeline_table
from edgecv.apps.bench.streams import bench_streams, streams_table
from edgecv.runtime.machine import choose_detector, usable_cpus
from models import smile_model_files  # noqa: F401  (fixture)

HAAR = {"pipeline haar@300": PIPELINES["pipeline haar@300"]}


def test_bench_pipeline_reports_every_mode(smile_model_files, data_dir):
    r = bench_pipeline(data_dir / "videos" / "smile.mp4", smile_model_files["tflite"],
                       onnx_model=smile_model_files["onnx"], max_frames=6, pipelines=HAAR)
    assert set(r["modes"]) == {"decode only", "book loop, LiteRT per face", "pipeline haar@300"}
    # Each mode ran in its own process: each has its own peak RSS.
    assert all(m["frames"] == 6 and m["fps"] > 0 and m["peak_rss_mb"] > 0 for m in r["modes"].values())
    # Same detector, same width: the pipeline finds the faces the book's loop finds.
    book = r["modes"]["book loop, LiteRT per face"]
    assert r["modes"]["pipeline haar@300"]["faces"] == book["faces"] > 0
    assert sum(book["labels"].values()) == book["faces"]  # every face decoded to a label
    assert set(r["ratios"]["pipeline haar@300"]) == {"vs decode", "vs LiteRT loop"}
    assert [c["backend"] for c in r["crops"]] == ["litert", "onnxruntime"]
    assert all(c["batched_ips"] > 0 and c["unbatched_ips"] > 0 for c in r["crops"])
    table = pipeline_table(r)
    assert "| pipeline haar@300 | 6 |" in table and "img/s at batch 32" in table


def test_pipeline_rows_state_the_limit_and_the_fraction_reached(data_dir, tmp_path):
    """On the 480x360 PETS video: decode and YuNet are timed per frame on one thread in the same run,
    the limit is usable CPUs / (decode + detect / detect_every), and each pipeline row reports
    fps / limit, in its JSON and its table."""
    video = data_dir / "videos" / "vtest_pets2009_480x360_h264.avi"
    j, md = tmp_path / "p.json", tmp_path / "p.md"
    proc = run_cli("benchmark", "pipeline", "smile", "--video", str(video), "--max-frames", "12",
                   "--json", str(j), "--md", str(md), timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    (cli,) = json.loads(j.read_text())
    assert "| limit fps | x limit |" in md.read_text() and "limit = " in md.read_text()
    lim = cli["limit"]
    assert lim["cores"] == cli["usable_cpus"] == usable_cpus()
    assert lim["frames"] == 12 and lim["decode_ms"] > 0 and lim["detect_ms"]["yunet-opencv@320"] > 0
    for name, m in cli["modes"].items():
        if not name.startswith("pipeline"):
            assert "limit_fps" not in m
            continue
        every = PIPELINES[name].get("options", {}).get("detect_every", 1)
        key = f"{m['detector']}@{m['detector_options']['width']}"  # the detector the mode ran
        per_frame = lim["decode_ms"] + lim["detect_ms"][key] / every
        assert m["limit_fps"] == pytest.approx(lim["cores"] * 1000 / per_frame, rel=1e-3)
        assert m["fraction_of_limit"] == pytest.approx(m["fps"] / m["limit_fps"], rel=1e-3)
        assert m["fps"] > 0 and m["fraction_of_limit"] > 0
    r = cli["modes"]
    # `run defaults` runs what `edgecv smile` picks here, and its limit is that detector's.
    picked = choose_detector("yunet", usable_cpus(), r["pipeline yunet@320, run defaults"]["detect_workers"])
    assert r["pipeline yunet@320, run defaults"]["detector"] == picked.name
    assert f"{picked.name}@320" in cli["limit"]["detect_ms"]
    # Detecting every 2nd frame halves the detector's share of the limit: a higher limit.
    assert r["pipeline yunet@320 every 2nd"]["limit_fps"] > r["pipeline yunet@320"]["limit_fps"]
    assert r["pipeline haar@300"]["limit_fps"] != r["pipeline yunet@320"]["limit_fps"]


def test_the_book_loop_feeds_the_model_its_own_input_size(tmp_path):
    """The shipped smile model reads 32x32 (the book's own model 28x28): the loop takes the size
    and chain from the ModelSpec, so the shipped artefact can be benchmarked by name."""
    j, md = tmp_path / "p.json", tmp_path / "p.md"
    proc = run_cli("benchmark", "pipeline", "smile", "--video", "video:smile.mp4", "--max-frames", "4",
                   "--json", str(j), "--md", str(md), timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    (result,) = json.loads(j.read_text())
    assert result["model"] == "smile.fp16.tflite" and result["video"] == "smile.mp4"
    book = result["modes"]["book loop, LiteRT per face"]
    assert book["frames"] == 4 and book["faces"] == 4
    # The Haar face in these frames is a smiling one (the smile demo: two of three people smile).
    assert book["labels"] == {"smiling": 4}
    assert all(m["frames"] == 4 for m in result["modes"].values())
    assert "| decode only | 4 |" in md.read_text()


def test_pipeline_misuse(smile_model_files, tmp_path):
    tfl = str(smile_model_files["tflite"])
    assert_clean_error(run_cli("benchmark", "pipeline", tfl), r"required: --video")
    assert_clean_error(run_cli("benchmark", "pipeline", str(smile_model_files["onnx"]), "--video", "video:smile.mp4"),
                       r"takes a .tflite classifier")
    assert_clean_error(run_cli("benchmark", "pipeline", tfl, "--video", str(tmp_path / "none.mp4")),
                       r"--video .*none.mp4: no such file")
    assert_clean_error(run_cli("benchmark", "pipeline", tfl, "--video", "x", "--plot", "p.png"),
                       r"unrecognized arguments: --plot p.png")
    assert_clean_error(run_cli("benchmark", "pipeline", tfl, "--video", "x", "--loop", "0"),
                       r"--loop: takes an integer >= 1")


def test_pipeline_benchmark_loops_a_short_clip_without_reencoding(data_dir, tmp_path):
    import cv2

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
    # The limit for whole frames: decode + preprocess + inference per frame on one thread, x usable CPUs.
    lim = r["limit"]
    per_frame = lim["decode_ms"] + lim["preprocess_ms"]
    assert lim["cores"] == usable_cpus() and per_frame > 0 and lim["infer_batch"] == 16
    for row in r["rows"]:
        for k in ("batched", "batch1"):
            limit = lim["cores"] * 1000 / (per_frame + lim["infer_ms_per_image"][k])
            assert row[k]["limit_fps"] == pytest.approx(limit, rel=1e-3)
            assert row[k]["fraction_of_limit"] == pytest.approx(row[k]["fps"] / row[k]["limit_fps"], rel=1e-3)
    assert "| 4 |" in streams_table(r)
    # the CLI: a table and JSON; bad arguments are one clean error
    out = tmp_path / "streams.json"
    proc = run_cli("benchmark", "streams", str(smile_model_files["onnx"]), "--video", str(video), "--streams", "2",
                   "--max-frames", "10", "--batch", "8", "--json", str(out))
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(out.read_text())["rows"][0]["batched"]["frames"] == 20
    assert_clean_error(run_cli("benchmark", "streams", str(smile_model_files["onnx"]), "--video", str(video),
                               "--streams", "0"), r"--streams: takes positive integers")
    assert_clean_error(run_cli("benchmark", "streams", str(smile_model_files["onnx"])), r"required: --video")
    assert_clean_error(run_cli("benchmark", "models", str(smile_model_files["onnx"]), "--streams", "4"),
                       r"unrecognized arguments: --streams 4")
