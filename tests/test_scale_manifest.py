"""`edgecv batch` and fleet bookkeeping without a cluster: the manifest survives a record cut short by a kill,
results files are whole or absent, inputs expand once each with distinct results names, shards are
even, an address is parsed and refused in one line, and a fleet's events after an actor restart stay
one per frame (a file's replayed frames skipped, a live stream's renumbered)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgecv.errors import ConfigError


def test_manifest_drops_a_record_cut_short_and_keeps_the_rest(tmp_path):
    from edgecv.apps.batch import Manifest

    m = Manifest(tmp_path)
    m.open()
    m.append({"kind": "job", "schema": "edgecv.batch/1"})
    m.append({"kind": "input", "input": "/a.mp4", "status": "done", "results": "a"})
    m.close()
    with open(tmp_path / "manifest.jsonl", "ab") as f:
        f.write(b'{"kind":"input","input":"/b.mp4","sta')  # the driver was killed mid-write
    m2 = Manifest(tmp_path)
    m2.open()
    assert list(m2.latest()) == ["/a.mp4"] and m2.job["schema"] == "edgecv.batch/1"
    m2.append({"kind": "input", "input": "/b.mp4", "status": "failed", "error": "x"})
    m2.close()
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(x)["kind"] for x in lines] == ["job", "input", "input"]


def test_manifest_that_is_not_ours_is_refused(tmp_path):
    from edgecv.apps.batch import Manifest
    from edgecv.safeio import OutputError

    (tmp_path / "manifest.jsonl").write_text("hello\n")
    with pytest.raises(OutputError, match="not a manifest edgecv batch wrote"):
        Manifest(tmp_path).open()


def test_results_are_whole_or_absent(tmp_path, monkeypatch):
    from edgecv.apps import batch

    target = tmp_path / "r.jsonl"
    assert batch.write_results(target, [{"frame": 0}, {"frame": 1}], "jsonl") > 0
    assert [json.loads(x)["frame"] for x in target.read_text().splitlines()] == [0, 1]

    def full_disk(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("edgecv.safeio.write_all", full_disk)
    with pytest.raises(OSError):
        batch.write_results(target, [{"frame": 9}], "jsonl")
    assert [json.loads(x)["frame"] for x in target.read_text().splitlines()] == [0, 1]  # the earlier file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]  # no temporary left


def test_stale_temporaries_of_dead_processes_are_swept(tmp_path):
    from edgecv.apps.batch import sweep_temps

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".a.jsonl.edgecv-{dead.stdout.strip()}.part.jsonl"
    mine = tmp_path / f".b.jsonl.edgecv-{os.getpid()}.part.jsonl"
    stale.write_text("x")
    mine.write_text("y")
    assert sweep_temps(tmp_path) == 1
    assert not stale.exists() and mine.exists()


def test_inputs_expand_once_each_with_distinct_results_names(tmp_path):
    from edgecv.apps.batch import expand_inputs, results_name

    for d in ("a", "b", "a/.hidden"):
        (tmp_path / d).mkdir()
    for f in ("a/clip.mp4", "b/clip.mp4", "a/x.jpg", "a/notes.txt", "a/.hidden/y.jpg"):
        (tmp_path / f).write_bytes(b"0")
    got = expand_inputs([str(tmp_path / "a"), str(tmp_path / "b" / "*.mp4"), str(tmp_path / "a" / "clip.mp4"),
                         str(tmp_path / "missing.avi"), str(tmp_path / "none*.mp4"), "rtsp://admin:pw@cam/1"])
    keys = [p.key for p in got]
    assert keys == [str(tmp_path / "a" / "clip.mp4"), str(tmp_path / "a" / "x.jpg"), str(tmp_path / "b" / "clip.mp4"),
                    str(tmp_path / "missing.avi"), str(tmp_path / "none*.mp4"), "rtsp://***@cam/1"]
    assert [p.image for p in got[:3]] == [False, True, False]
    assert "no such file" in got[3].error and "no files match" in got[4].error and got[5].error is None
    assert got[5].source == "rtsp://admin:pw@cam/1" and "pw" not in got[5].key  # read with, never recorded
    names = {results_name(k, "jsonl") for k in keys}
    assert len(names) == len(keys) and all(n.startswith(("clip.mp4.", "x.jpg.", "missing.avi.", "none_.mp4.", "1."))
                                           for n in names)


def test_shards_are_even():
    from edgecv.runtime.fleet import shard

    assert shard(5, 2) == [[0, 2, 4], [1, 3]]
    assert shard(4, 4) == [[0], [1], [2], [3]]
    assert sorted(i for s in shard(64, 3) for i in s) == list(range(64))


@pytest.mark.parametrize("address, message", [
    ("head:notaport", "the port is not a number"),
    ("ftp://head:21", "expected HOST:PORT"),
])
def test_bad_addresses_are_refused(address, message):
    from edgecv.raycluster import check_reachable

    with pytest.raises(ConfigError, match=message):
        check_reachable(address)


def test_address_from_flag_then_environment(monkeypatch):
    from edgecv.raycluster import address_from

    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert address_from(None) == "10.0.0.5:6379"
    assert address_from("h:1") == "h:1"
    monkeypatch.setenv("RAY_ADDRESS", "")
    assert address_from(None) is None


def test_parquet_results_hold_the_same_fields(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from edgecv.apps.batch import write_results

    events = [{"source": "/a.mp4", "frame": 0, "t_capture": 1.5, "width": 480, "height": 360, "detections": [],
               "timings_ms": {"decode": 1.0}},
              {"source": "/a.mp4", "frame": 1, "t_capture": 1.6, "width": 480, "height": 360,
               "detections": [{"box": [1, 2, 30, 30], "label": "smiling", "score": 0.9, "detector_score": 0.8}],
               "timings_ms": {"decode": 1.0, "detect": 3.0}}]
    write_results(tmp_path / "a.parquet", events, "parquet")
    rows = pq.read_table(tmp_path / "a.parquet").to_pylist()
    assert [r["frame"] for r in rows] == [0, 1]
    assert rows[1]["detections"] == events[1]["detections"] and rows[0]["detections"] == []
    assert set(rows[0]) == set(events[0])


def test_fleet_delivery_after_a_restart_skips_replayed_file_frames_and_renumbers_live_ones():
    import argparse

    from edgecv.runtime.fleet import _Actor, _Fleet, _Stream

    got = []

    class Sink:
        name = "t"

        def write(self, r):
            got.append(dict(r.to_event()))

        def close(self):
            pass

    args = argparse.Namespace(max_frames=None, metrics_interval=0, max_restarts=3)
    actor = _Actor("a0", None, ["s0", "s1"])
    fleet = _Fleet(None, [actor], {"s0": _Stream(), "s1": _Stream()}, [Sink()], args, 0.0)
    fleet._started(actor, {"incarnation": "1", "live": {"s0": False, "s1": True}}, first=True)
    for i in range(3):
        fleet._deliver({"source": "s0", "frame": i, "detections": []})
        fleet._deliver({"source": "s1", "frame": i, "detections": [{}]})
    fleet.streams["s1"].stats["decoded"] = 3
    # Ray restarted the actor: the file starts over, the live stream counts from 0 again.
    fleet._started(actor, {"incarnation": "2", "live": {"s0": False, "s1": True}})
    for i in range(5):
        fleet._deliver({"source": "s0", "frame": i, "detections": []})
    for i in range(2):
        fleet._deliver({"source": "s1", "frame": i, "detections": []})
    assert [e["frame"] for e in got if e["source"] == "s0"] == [0, 1, 2, 3, 4]
    assert [e["frame"] for e in got if e["source"] == "s1"] == [0, 1, 2, 3, 4]
    assert fleet.frames == 10 and fleet.streams["s1"].faces == 3 and fleet.streams["s1"].decoded_before == 3


def test_a_shipped_file_is_used_in_place_or_copied_once(tmp_path, monkeypatch):
    import hashlib

    from edgecv import raycluster
    from edgecv.raycluster import ClusterError, ShippedFile, local_path

    monkeypatch.setattr(raycluster, "_local", {})
    monkeypatch.setattr(raycluster.tempfile, "gettempdir", lambda: str(tmp_path / "node"))
    data = b"model bytes"
    sha = hashlib.sha256(data).hexdigest()
    here = tmp_path / "m.onnx"
    here.write_bytes(data)
    assert local_path(ShippedFile(str(here), sha, None), fetch=lambda: 1 / 0) == str(here)  # no copy needed
    calls = []
    missing = ShippedFile(str(tmp_path / "elsewhere" / "m.onnx"), sha, None)
    raycluster._local.clear()
    copy = local_path(missing, fetch=lambda: calls.append(1) or data)
    assert copy.endswith(f"edgecv-shipped/{sha}/m.onnx") and open(copy, "rb").read() == data
    raycluster._local.clear()
    assert local_path(missing, fetch=lambda: calls.append(1) or data) == copy and calls == [1]  # once per node
    raycluster._local.clear()
    with pytest.raises(ClusterError, match="does not match its SHA-256"):
        local_path(ShippedFile(str(tmp_path / "x.onnx"), "0" * 64, None), fetch=lambda: data)
