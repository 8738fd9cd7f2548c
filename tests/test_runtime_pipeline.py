"""The pipeline through its Python API on the shared videos with real ONNX and TFLite models:
frames in order, nothing lost under `every`, batching across frames and sources, sinks (one that
raises), detectors, lifecycle."""
from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
import pytest

from edgecv.errors import ConfigError
from edgecv.runtime.batcher import Batcher
from edgecv.runtime.detect import Box, HaarFaceDetector, YuNetFaceDetector, make_detector, register_detector
from edgecv.resolve import resolve
from edgecv.runtime.build import build_sources, open_pipeline
from edgecv.runtime.pipeline import Pipeline, PipelineOptions, PipelineState
from edgecv.runtime.sinks import CallbackSink, JsonLinesSink, VideoSink
from models import smile_model_files  # noqa: F401  (fixture)


def pipe(model, sources, detector="none", sinks=(), queue_size=4, **options):
    """The Python road: a resolved model, source strings, a detector name, PipelineOptions."""
    return open_pipeline(resolve(model), sources, detector=detector, sinks=sinks, queue_size=queue_size,
                         options=PipelineOptions(**options))


class Collect:
    """A callback sink target that keeps what it was given."""

    def __init__(self):
        self.results = []

    def __call__(self, result):
        self.results.append(result)


@pytest.mark.parametrize("kind", ["onnx", "tflite"])
def test_smile_video_through_the_pipeline(smile_model_files, data_dir, tmp_path, kind):
    got = Collect()
    events = tmp_path / "e.jsonl"
    p = pipe(smile_model_files[kind], [str(data_dir / "videos" / "smile.mp4")], detector="haar",
                 sinks=[CallbackSink(got), JsonLinesSink(events)])
    summary = p.run()
    assert p.state is PipelineState.STOPPED
    assert [r.frame.index for r in got.results] == list(range(55))
    faces = sum(len(r.detections) for r in got.results)
    assert faces >= 40  # Haar finds the front face in almost every frame
    # Each face's label and score are the model's answer for that face's own crop: run the crops
    # one by one through a separate backend and read them with the one decoder.
    from edgecv import decode
    from edgecv.preprocess import apply_chain
    from models import open_model

    with open_model(smile_model_files[kind]) as alone:
        spec = alone.spec
        for r in got.results:
            for d in r.detections:
                assert 0 <= d.box.x and d.box.x + d.box.w <= 1920 and d.box.y + d.box.h <= 1080
                x = apply_chain([d.box.crop(r.frame.image)], spec.preprocess, spec.input_shape)
                want = decode.predictions(spec, alone.run(x), 1)[0]
                assert (d.label, d.label_index) == (want.label, want.index) and abs(d.score - want.score) < 1e-4
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert len(lines) == 55 and sum(len(e["detections"]) for e in lines) == faces
    assert {"detect", "preprocess", "infer", "decode"} <= set(lines[0]["timings_ms"])
    s = summary["sources"]["s0"]
    assert s["frames"] == 55 and s["faces"] == faces and s["state"] == "ended" and s["dropped"] == 0
    stages = summary["stages_ms"]
    assert {"decode", "queue", "detect", "preprocess", "infer", "order", "sink", "other", "age"} <= set(stages)
    assert stages["age"]["p99"] >= stages["age"]["p50"] > 0
    # other = what the stages leave of each frame's age: never negative, and the stages explain most of it
    assert stages["other"]["n"] == 55 and 0 <= stages["other"]["p50"] < stages["age"]["p50"] / 2


def test_every_policy_through_the_pipeline_loses_nothing(smile_model_files, data_dir):
    got = Collect()
    p = pipe(smile_model_files["onnx"], [str(data_dir / "videos" / "vtest_pets2009_480x360_h264.avi")],
                 detector="none", queue_size=1, max_batch=8, max_delay_ms=20, sinks=[CallbackSink(got)])
    summary = p.run()
    assert [r.frame.index for r in got.results] == list(range(795))
    assert all(len(r.detections) == 1 and r.detections[0].box.as_list() == [0, 0, 480, 360] for r in got.results)
    assert summary["sources"]["s0"]["dropped"] == 0
    # Whole frames from a file source arrive faster than 20 ms apart, so batches form across frames.
    assert summary["batches"]["mean_size"] > 1


def test_two_sources_share_the_batcher_and_keep_their_own_order(smile_model_files, data_dir):
    got = Collect()
    video = str(data_dir / "videos" / "smile.mp4")
    p = pipe(smile_model_files["tflite"], [video, "synthetic://96x64?frames=40"], detector="none",
                 max_batch=16, max_delay_ms=30, sinks=[CallbackSink(got)])
    summary = p.run()
    by_source = {sid: [r.frame.index for r in got.results if r.source_id == sid] for sid in ("s0", "s1")}
    assert by_source == {"s0": list(range(55)), "s1": list(range(40))}
    assert summary["batches"]["max_size"] > 1
    assert summary["sources"]["s1"]["frames"] == 40


def test_sink_that_raises_is_reported_and_the_others_keep_running(smile_model_files, data_dir, tmp_path, caplog):
    def broken(_result):
        raise OSError("disk on fire")

    got = Collect()
    p = pipe(smile_model_files["onnx"], ["synthetic://64x64?frames=12"], detector="none",
                 sinks=[CallbackSink(broken, name="broken"), CallbackSink(got), VideoSink(tmp_path / "o.avi")])
    summary = p.run()
    assert len(got.results) == 12
    assert summary["sinks_failed"] == {"broken": "OSError: disk on fire"}
    assert summary["sink_errors"] == {"broken": 1}
    assert "sink broken failed" in caplog.text
    cap = cv2.VideoCapture(str(tmp_path / "o.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12


def test_max_frames_and_stop_drain(smile_model_files):
    got = Collect()
    p = pipe(smile_model_files["onnx"], ["synthetic://64x64?frames=1000"], detector="none",
                 max_frames=25, sinks=[CallbackSink(got)])
    p.run()
    assert [r.frame.index for r in got.results] == list(range(25))


def test_stop_from_another_thread_drains_and_finishes(smile_model_files):
    got = Collect()
    p = pipe(smile_model_files["onnx"], ["synthetic://64x64?frames=0&fps=200"], detector="none",
                 sinks=[CallbackSink(got)])
    p.start()
    while len(got.results) < 5:
        time.sleep(0.01)
    threading.Thread(target=p.stop).start()
    assert p.wait(30)
    assert p.state is PipelineState.STOPPED
    n = len(got.results)
    assert [r.frame.index for r in got.results] == list(range(n))
    assert all(not t.is_alive() for t in p._threads)
    assert all(s.state.value == "stopped" for s in p.sources)


def test_stop_before_start_and_misuse(smile_model_files):
    p = pipe(smile_model_files["onnx"], ["synthetic://32x32"])
    p.stop()
    assert p.state is PipelineState.STOPPED
    with pytest.raises(ConfigError, match="starts once; this one is stopped"):
        p.start()
    with pytest.raises(ConfigError, match="at least one source"):
        pipe(smile_model_files["onnx"], [])
    with pytest.raises(ConfigError, match=r"unknown detector 'haarr'.*Did you mean 'haar'"):
        pipe(smile_model_files["onnx"], ["synthetic://32x32"], detector="haarr").start()


def test_a_missing_source_is_refused_before_the_model_is_opened(smile_model_files, tmp_path, monkeypatch):
    """Sources are parsed before the backend opens: a missing file costs no model load."""
    from edgecv.errors import SourceError
    from edgecv.runtime import build

    opened = []
    monkeypatch.setattr(build, "open_backend", lambda *a, **k: opened.append(a))
    with pytest.raises(SourceError, match="no such file: .*missing.avi"):
        pipe(smile_model_files["onnx"], ["synthetic://32x32", str(tmp_path / "missing.avi")])
    assert opened == []


def test_yunet_finds_all_three_people(smile_model_files, data_dir):
    frame = cv2.VideoCapture(str(data_dir / "videos" / "smile.mp4")).read()[1]
    assert len(YuNetFaceDetector().detect(frame)) == 3
    got = Collect()
    pipe(smile_model_files["onnx"], [str(data_dir / "videos" / "smile.mp4")], detector="yunet",
             max_frames=10, sinks=[CallbackSink(got)]).run()
    assert all(len(r.detections) == 3 for r in got.results)


def test_haar_boxes_map_back_to_full_resolution(data_dir):
    still = cv2.imread(str(data_dir / "videos" / "smile.jpg"))
    big = cv2.resize(still, None, fx=2, fy=2)
    small_boxes = HaarFaceDetector(width=300).detect(still)
    big_boxes = HaarFaceDetector(width=300).detect(big)
    assert small_boxes and len(small_boxes) == len(big_boxes)
    for a, b in zip(sorted(small_boxes, key=lambda b: b.x), sorted(big_boxes, key=lambda b: b.x)):
        assert abs(2 * a.x - b.x) <= 6 and abs(2 * a.w - b.w) <= 6


def test_a_plugged_in_detector(smile_model_files):
    class Centre:
        name = "centre"

        def detect(self, image):
            h, w = image.shape[:2]
            return [Box(w // 4, h // 4, w // 2, h // 2, 0.5), Box(-10, -10, 5, 5)]  # second one clips away

    register_detector("centre", Centre)
    assert isinstance(make_detector("centre"), Centre)
    got = Collect()
    pipe(smile_model_files["onnx"], ["synthetic://80x40?frames=3"], detector="centre",
             sinks=[CallbackSink(got)]).run()
    # The test model is a smile model: its spec's crop rule ("square", the Haar-style face crop)
    # turns the 40x20 box into the 20x20 square at its bottom centre; the clipped-away box is gone.
    assert [[d.box.as_list() for d in r.detections] for r in got.results] == [[[30, 10, 20, 20]]] * 3


def test_batcher_returns_each_request_its_own_rows_in_order():
    def infer(x):  # a real function whose output identifies its input row
        return x.reshape(len(x), -1)[:, :1] * 2

    b = Batcher(infer, max_batch=5, max_delay_ms=50)
    results, lock = {}, threading.Lock()

    def cb(i):
        def done(out, err):
            with lock:
                results[i] = (out, err)
        return done

    sizes = [1, 3, 2, 7, 1, 4]
    start = 0
    for i, k in enumerate(sizes):
        b.submit(np.arange(start, start + k, dtype=np.float32).reshape(k, 1, 1, 1), cb(i))
        start += k
    b.close()
    start = 0
    for i, k in enumerate(sizes):
        out, err = results[i]
        assert err is None
        np.testing.assert_array_equal(out[:, 0], 2 * np.arange(start, start + k))
        start += k
    assert b.images == sum(sizes) and b.batches < len(sizes)


def test_batcher_reports_inference_errors_to_every_request():
    def infer(x):
        raise ValueError("bad model")

    b = Batcher(infer, max_batch=4, max_delay_ms=1)
    errors = []
    b.submit(np.zeros((2, 1, 1, 1), np.float32), lambda out, err: errors.append(err))
    b.close()
    assert len(errors) == 1 and isinstance(errors[0], ValueError)


def test_detect_every_kth_frame_predicts_boxes_in_between(smile_model_files, data_dir):
    from edgecv.runtime.track import iou

    got = Collect()
    p = pipe(smile_model_files["onnx"], [str(data_dir / "videos" / "smile.mp4")], detector="yunet",
                 detect_every=3, sinks=[CallbackSink(got)])
    summary = p.run()
    assert summary["stages_ms"]["detect"]["n"] == 19  # frames 0, 3, 6, ..., 54
    assert all(len(r.detections) == 3 for r in got.results)
    # Frames in between carry boxes predicted from their detection frame's (runtime.track): the
    # three people sit, so each stays on its person.
    for r in got.results:
        base = got.results[r.frame.index - r.frame.index % 3]
        for d, b in zip(r.detections, base.detections):
            assert iou(d.box, b.box) > 0.5, (r.frame.index, d.box, b.box)
    with pytest.raises(ConfigError, match="detect_every must be a positive integer; got 0"):
        pipe(smile_model_files["onnx"], ["synthetic://8x8"], detect_every=0)


def test_a_spec_whose_chain_does_not_fit_fails_the_run_cleanly(smile_model_files, tmp_path):
    """The first frame shows that the chain makes 32x32 images for a 28x28 model: the run stops,
    says why, and every thread and file is closed."""
    from edgecv.errors import ModelSpecError
    from edgecv.preprocess import default_chain
    from edgecv.runtime.backends import OrtBackend
    from models import smile_spec

    spec = smile_spec().replace(preprocess=tuple(default_chain((32, 32, 1))))
    events = tmp_path / "e.jsonl"
    with OrtBackend(smile_model_files["onnx"], spec) as backend:
        p = Pipeline(backend, build_sources(["synthetic://64x64?frames=500"]), None, [JsonLinesSink(events)])
        with pytest.raises(ModelSpecError, match=r"pipeline failed: preprocess chain yields \(32, 32\), model expects \(28, 28\)"):
            p.run()
    assert p.state is PipelineState.FAILED
    assert all(not t.is_alive() for t in p._threads) and p.sources[0].join(5)
    assert not events.exists()  # a failed run leaves no output behind (runtime.sinks: temp + rename)
