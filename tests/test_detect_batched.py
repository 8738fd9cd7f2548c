"""YuNet batched on ONNX Runtime (runtime.yunet_batch, `--detector yunet-ort`) on real frames: a batch
of N frames gives exactly what N single calls give, the same faces as OpenCV's FaceDetectorYN
(IoU >= 0.9), and the pipeline and `edgecv smile` give the same faces and labels with it; where
the machine picks it; how bad use is refused."""
from __future__ import annotations

import glob
import json
import logging

import cv2
import numpy as np
import pytest

from conftest import assert_clean_error, run_cli
from edgecv.errors import ConfigError, ModelError
from edgecv.resolve import resolve
from edgecv.runtime.build import open_pipeline
from edgecv.runtime.detect import YuNetFaceDetector, detect_batch_of, register_detector
from edgecv.runtime.machine import choose_detector
from edgecv.runtime.pipeline import PipelineOptions
from edgecv.runtime.sinks import CallbackSink
from edgecv.runtime.track import iou
from edgecv.runtime.yunet_batch import YuNetBatchDetector, cuda_available
from models import smile_model_files  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(300)


def video_frames(path, every: int, limit: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out, i = [], 0
    while len(out) < limit:
        ok, image = cap.read()
        if not ok:
            break
        if i % every == 0:
            out.append(image)
        i += 1
    return out


def smiles_montage(data_dir, start: int, cols: int = 8, rows: int = 5, side: int = 90) -> np.ndarray:
    """Real SMILES face crops tiled into one frame (720x450 at the defaults: not a multiple of 32,
    so the padding is exercised): about 35 faces a frame for the NMS and the decoding."""
    paths = sorted(glob.glob(str(data_dir / "smiles" / "SMILEs" / "*" / "*" / "*.jpg")))[start:start + 5 * cols * rows:5]
    tiles = [cv2.resize(cv2.imread(p), (side, side)) for p in paths]
    return np.vstack([np.hstack(tiles[r * cols:(r + 1) * cols]) for r in range(rows)])


@pytest.fixture(scope="module")
def frames(data_dir) -> dict[str, list[np.ndarray]]:
    videos = data_dir / "videos"
    return {"smile": video_frames(videos / "smile.mp4", 6, 10),  # 1920x1080, three people
            "pets": video_frames(videos / "vtest_pets2009_480x360_h264.avi", 20, 12) + video_frames(
                videos / "vtest_pets2009_480x360_h264.avi", 1, 101)[100:],  # frame 100 holds a face
            "still": [cv2.imread(str(videos / "smile.jpg"))],
            "montage": [smiles_montage(data_dir, s) for s in (0, 200, 400)]}


def assert_same_faces(want, got, what: str) -> None:
    """Same number of faces per frame, and each of `want` overlaps one of `got` with IoU >= 0.9."""
    assert [len(b) for b in got] == [len(b) for b in want], what
    for i, (a, b) in enumerate(zip(want, got)):
        for box in a:
            best = max(iou(box, other) for other in b)
            assert best >= 0.9, (what, i, box, best)


@pytest.mark.parametrize("width", [320, None])
def test_a_batch_equals_single_frames_and_faceDetectorYN(frames, width):
    batched = YuNetBatchDetector(width=width, max_batch=8)
    reference = YuNetFaceDetector(width=width)
    mixed = frames["smile"][:3] + frames["pets"][:5] + frames["still"] + frames["montage"] + frames["smile"][3:5]
    if width is None:
        mixed = [f for f in mixed if f.shape[1] < 1000] + frames["smile"][:1]
    single = [batched.detect(f) for f in mixed]
    # One call with frames of four sizes, more frames of one size than max_batch: exactly the boxes
    # and scores of one frame a call.
    assert batched.detect_batch(mixed) == single
    assert_same_faces([reference.detect(f) for f in mixed], single, f"width {width}")
    assert sum(map(len, single)) >= 3 * 3 + 1 + 3 * 30  # three people, the still, ~35 faces a montage


def test_every_shared_frame_matches_faceDetectorYN(frames):
    batched = YuNetBatchDetector(max_batch=32)
    reference = YuNetFaceDetector()
    for name in ("smile", "pets", "montage"):
        want = [reference.detect(f) for f in frames[name]]
        got = batched.detect_batch(frames[name])
        assert_same_faces(want, got, name)
        if name == "pets":
            assert sum(map(len, got)) == sum(map(len, want)) >= 1


def test_a_cuda_request_runs_on_the_cpu_provider_here(caplog):
    if cuda_available():
        pytest.skip("this onnxruntime has the CUDA provider")
    with caplog.at_level(logging.WARNING):
        det = YuNetBatchDetector(device="cuda", max_batch=4)
    assert det.providers == ("CPUExecutionProvider",)
    assert "no CUDA provider" in caplog.text and "edgecv[gpu]" in caplog.text
    assert detect_batch_of(det) == 4 and detect_batch_of(YuNetFaceDetector()) == 1


def test_bad_models_and_options_are_refused(smile_model_files, tmp_path):
    with pytest.raises(ModelError, match="not the YuNet 2023mar layout"):
        YuNetBatchDetector(model=smile_model_files["onnx"])
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model" * 50)
    with pytest.raises(ModelError, match="junk.onnx"):
        YuNetBatchDetector(model=junk)
    with pytest.raises(ModelError, match="junk.onnx: onnxruntime cannot load it one frame a call"):
        YuNetBatchDetector(model=junk, max_batch=1)
    with pytest.raises(ModelError, match="YuNet model not found"):
        YuNetBatchDetector(model=tmp_path / "missing.onnx")
    with pytest.raises(ConfigError, match="max_batch must be a positive integer; got 0"):
        YuNetBatchDetector(max_batch=0)


def test_the_machine_picks_the_engine():
    c = choose_detector("yunet", cpus=2, detect_workers=2, cuda=False, onnx=False)
    assert (c.name, c.options, c.chosen) == ("yunet-ort", {"max_batch": 1, "threads": 1}, ("name", "max_batch", "threads"))
    c = choose_detector("yunet", cpus=16, detect_workers=8, cuda=True, onnx=True)
    assert (c.name, c.options, c.chosen) == ("yunet-ort", {"max_batch": 32}, ("name", "max_batch"))
    assert choose_detector("yunet", 16, 8, cuda=True, onnx=False).options == {"max_batch": 1}  # with a warning
    c = choose_detector("yunet", cpus=2, detect_workers=1, detect_batch=4, cuda=False, onnx=True)
    assert (c.name, c.options) == ("yunet-ort", {"max_batch": 4, "threads": 2})
    assert choose_detector("yunet-ort", 2, 2, cuda=False, onnx=True).chosen == ("max_batch", "threads")
    assert choose_detector("yunet-opencv", 16, 8, cuda=True, onnx=True).name == "yunet-opencv"
    with pytest.raises(ConfigError, match="--detect-batch needs a detector that batches"):
        choose_detector("haar", 2, 2, detect_batch=8)


def test_one_frame_a_call_needs_no_onnx_package(monkeypatch, frames):
    """The edge install has onnxruntime but not onnx: one frame a call runs the file as it is."""
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    single = YuNetBatchDetector(max_batch=1)
    assert [b.as_list() for b in single.detect(frames["smile"][0])] == [
        b.as_list() for b in YuNetFaceDetector().detect(frames["smile"][0])]
    with pytest.raises(Exception, match=r"needs the onnx package .*install edgecv\[gpu\]"):
        YuNetBatchDetector(max_batch=2)


def run_collect(model, source, detector, **options):
    got = []
    p = open_pipeline(resolve(model), [source], detector=detector, sinks=[CallbackSink(got.append)],
                      options=PipelineOptions(**options))
    return p, got, p.run


def test_the_pipeline_hands_waiting_frames_to_the_detector_at_once(smile_model_files, data_dir):
    """One detect worker, detect_every=3: each call takes the frames already queued (the first call
    waits until several are), the tracker predicts the frames in between exactly as one frame a call
    would, and each frame's detect time is its share of its call."""
    video = str(data_dir / "videos" / "smile.mp4")
    holder = {}

    class Held(YuNetBatchDetector):
        first = True

        def detect_batch(self, images):
            if Held.first:  # let frames pile up before the first call, so a batch must form
                Held.first = False
                p = holder["p"]
                while p._work_q.qsize() < 8 and not all(s.done for s in p.sources):  # frames 1-8: 3 and 6 detect
                    p._stopping.wait(0.01)
            return super().detect_batch(images)

    register_detector("yunet-held", lambda **kw: Held(max_batch=8, **kw))
    p, got, run = run_collect(smile_model_files["onnx"], video, "yunet-held", detect_every=3, detect_workers=1)
    holder["p"] = p
    summary = run()
    _, want, run_ref = run_collect(smile_model_files["onnx"], video, "yunet", detect_every=3, detect_workers=1)
    ref = run_ref()
    assert [r.frame.index for r in got] == list(range(55))
    assert summary["stages_ms"]["detect"]["n"] == ref["stages_ms"]["detect"]["n"] == 19  # frames 0, 3, ..., 54
    assert summary["detect_batches"]["max_size"] > 1 and summary["detect_batches"]["count"] < 19
    assert sum(1 for r in got if "detect" in r.timings_ms) == 19
    for a, b in zip(want, got):
        assert [(d.box.as_list(), d.label) for d in a.detections] == [(d.box.as_list(), d.label) for d in b.detections]


def test_edgecv_smile_gives_the_same_faces_and_labels_with_each_engine(tmp_path):
    """FaceDetectorYN (yunet-opencv), the default (YuNet on ONNX Runtime, one frame a call here) and
    batches of up to 4: the same boxes and labels on every frame of smile.mp4."""
    def faces(path):
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        return [[(d["box"], d["label"]) for d in e["detections"]] for e in lines if not e.get("end_of_run")]

    out = {}
    for name, args in (("opencv", ["--detector", "yunet-opencv"]), ("default", []),
                       ("batched", ["--detector", "yunet-ort", "--detect-batch", "4"])):
        path = tmp_path / f"{name}.jsonl"
        proc = run_cli("smile", "--source", "video:smile.mp4", "--no-display", "--metrics-interval", "0",
                       "--json-out", str(path), *args)
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
        out[name] = (faces(path), json.loads(proc.stdout))
    reference = out["opencv"][0]
    assert len(reference) == 55 and sum(map(len, reference)) >= 160
    assert out["default"][0] == reference and out["batched"][0] == reference
    assert out["opencv"][1]["detector"]["name"] == "yunet-opencv"
    s_default, s_batched = out["default"][1], out["batched"][1]
    assert s_default["detector"]["name"] == "yunet-ort"
    if not cuda_available():
        assert s_default["detector"]["max_batch"] == 1 and "detect_batches" not in s_default
        assert s_batched["detector"] == {"name": "yunet-ort", "max_batch": 4, "chosen": ["threads"],
                                         "why": "CPU: YuNet on ONNX Runtime, --detect-batch 4"}
    assert s_batched["stages_ms"]["detect"]["n"] == 55 and s_batched["detect_batches"]["count"] <= 55


def test_detect_batch_with_a_detector_that_cannot_batch_is_one_line():
    proc = run_cli("smile", "--source", "video:smile.mp4", "--no-display", "--detector", "haar",
                   "--detect-batch", "8")
    assert_clean_error(proc, "--detect-batch needs a detector that batches")
    proc = run_cli("smile", "--source", "video:smile.mp4", "--no-display", "--detect-batch", "0")
    assert_clean_error(proc, "detect-batch")
