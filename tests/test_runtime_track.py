"""The box tracker between detections: a real face (the smile still's) moved across a canvas."""
from __future__ import annotations

import numpy as np

from edgecv.images import read_image
from edgecv.runtime.detect import Box, YuNetFaceDetector
from edgecv.runtime.track import BoxTracker, iou


def _moving_face_frames(data_dir, n=12, step=(14, 4)):
    still = read_image(data_dir / "videos" / "smile.jpg")
    face = max(YuNetFaceDetector(width=None).detect(still), key=lambda b: b.w * b.h)
    # The face with a margin, pasted at a position that moves by `step` pixels per frame.
    m = face.w // 2
    patch = still[max(0, face.y - m):face.y + face.h + m, max(0, face.x - m):face.x + face.w + m]
    h, w = patch.shape[:2]
    frames = []
    for i in range(n):
        canvas = np.full((h + n * step[1] + 40, w + n * step[0] + 40, 3), 90, np.uint8)
        x, y = 20 + i * step[0], 20 + i * step[1]
        canvas[y:y + h, x:x + w] = patch
        frames.append(canvas)
    return frames


def test_predicted_boxes_follow_a_moving_face(data_dir):
    frames = _moving_face_frames(data_dir)
    det = YuNetFaceDetector(width=None)
    truth = [det.detect(f) for f in frames]
    assert all(len(t) == 1 for t in truth)
    tracker = BoxTracker(every=3)
    held, predicted = [], []
    for i, frame in enumerate(frames):
        boxes = tracker.predict("s0", i)
        if boxes is None:
            assert i % 3 == 0  # the tracker asks for a detection on every 3rd frame only
            tracker.update("s0", i, truth[i])
            continue
        assert len(boxes) == 1
        predicted.append(iou(boxes[0], truth[i][0]))
        held.append(iou(truth[i - i % 3][0], truth[i][0]))
    # After the second detection the velocity is known: predictions beat holding the last box.
    later = slice(2, None)  # frames 4, 5, 7, 8, ...
    assert np.mean(predicted[later]) > np.mean(held[later]) + 0.1
    assert min(predicted[later]) > 0.75


def test_tracker_edge_cases():
    t = BoxTracker(every=1)
    assert t.predict("s0", 5) is None  # detect every frame: never predicts
    t = BoxTracker(every=4)
    assert t.predict("s0", 0) is None  # nothing detected yet
    t.update("s0", 8, [Box(10, 10, 20, 20)])
    assert t.predict("s0", 9) == [Box(10, 10, 20, 20)]  # one detection: no velocity, the box stands
    assert t.predict("s0", 12) is None and t.predict("s0", 7) is None  # due again / older frame
    assert t.predict("s1", 9) is None  # per source
    t.update("s0", 12, [Box(18, 10, 20, 20), Box(200, 200, 10, 10)])
    assert t.predict("s0", 13) == [Box(20, 10, 20, 20), Box(200, 200, 10, 10)]  # matched box moves 2 px/frame
    t.update("s0", 10, [])  # an older frame finishing late does not replace the newer detection
    assert len(t.predict("s0", 13)) == 2
