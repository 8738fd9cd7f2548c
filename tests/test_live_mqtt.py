"""`edgecv smile --mqtt` against a real mosquitto broker (Debian's package) that the test starts on
127.0.0.1, stops and starts again mid-run (always by its PID): smile_start / smile_end reach a
subscriber for the two women and never for the man, and the run keeps going through the outage
with every JSON line written."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import free_port, wait_until

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
pytestmark = [pytest.mark.network,
              pytest.mark.skipif(MOSQUITTO is None, reason="needs Debian's mosquitto (make system-deps)")]
TOPIC = "edgecv-test"
LOOPS, GAP = 3, 20  # smile.mp4 (55 frames) then 20 black frames (everyone leaves), 3 times


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Broker:
    """mosquitto on 127.0.0.1:port, its state kept in the test's folder; start() / stop() by PID."""

    def __init__(self, folder: Path, port: int) -> None:
        self.port = port
        self.conf = folder / "mosquitto.conf"
        # Persistence: the subscriber's session (and the messages queued for it) outlive the restart,
        # so what edgecv sends before the subscriber is back still reaches it.
        self.conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {folder}/\nlog_dest stderr\n")
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=f, stderr=f)
        wait_until(lambda: self.proc.poll() is not None or port_open(self.port), 10, "mosquitto to listen")
        assert self.proc.poll() is None, self.log.read_text()[-2000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class Subscriber:
    """A paho client on PREFIX/# with a persistent session (clean_session False), re-subscribing on
    every (re)connect."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[float, str, bytes]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edgecv-test-subscriber",
                                  clean_session=False, protocol=mqtt.MQTTv311)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{TOPIC}/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((time.monotonic(), msg.topic, msg.payload))

    def events(self, kind: str | None = None) -> list[dict]:
        with self.lock:
            msgs = list(self.messages)
        return [json.loads(p) for _, t, p in msgs
                if t.startswith(f"{TOPIC}/events/") and (kind is None or t.endswith("/" + kind))]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def make_clip(src: Path, out: Path) -> int:
    """smile.mp4 at 960x540, followed by GAP black frames, LOOPS times (MJPG .avi). Returns frames."""
    cap = cv2.VideoCapture(str(src))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(f, (960, 540), interpolation=cv2.INTER_AREA))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 25, (960, 540))
    black = np.zeros_like(frames[0])
    n = 0
    for _ in range(LOOPS):
        for f in frames + [black] * GAP:
            writer.write(f)
            n += 1
    writer.release()
    return n


def test_events_reach_a_real_broker_through_a_restart(tmp_path, data_dir):
    clip = tmp_path / "clip.avi"
    total = make_clip(data_dir / "videos/smile.mp4", clip)
    broker = Broker(tmp_path, free_port())
    sub = run = None
    try:
        broker.start()
        sub = Subscriber(broker.port)
        wait_until(lambda: sub.client.is_connected(), 10, "the subscriber to connect")
        err = open(tmp_path / "stderr.txt", "wb")
        run = subprocess.Popen([sys.executable, "-m", "edgecv", "smile", "--source", str(clip), "--no-display",
                                "--max-fps", "20", "--metrics-interval", "0", "--json-out", str(tmp_path / "e.jsonl"),
                                "--mqtt", f"127.0.0.1:{broker.port}", "--mqtt-topic", TOPIC, "--mqtt-interval", "1"],
                               stdout=open(tmp_path / "stdout.txt", "wb"), stderr=err, env=dict(os.environ))
        # The first pass: both women start and stop smiling (they leave in the black frames).
        wait_until(lambda: len(sub.events("smile_end")) >= 2, 90, "two smile_end events")
        before = len(sub.events())
        t_down = time.monotonic()
        broker.stop()
        time.sleep(2.0)
        assert run.poll() is None, "the run stopped with the broker"
        broker.start()
        t_up = time.monotonic()
        wait_until(lambda: run.poll() is not None, 120, "the run to end")
        time.sleep(1.0)  # the last messages in flight to the subscriber
        assert run.returncode == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    finally:
        if run is not None and run.poll() is None:
            run.send_signal(signal.SIGINT)
            try:
                run.wait(30)
            except subprocess.TimeoutExpired:
                run.kill()
        if sub is not None:
            sub.close()
        broker.stop()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in stderr and "connection to 127.0.0.1" in stderr  # the loss was noticed
    summary = json.loads((tmp_path / "stdout.txt").read_text())
    assert summary["mqtt"]["connects"] >= 2 and summary["mqtt"]["disconnects"] == 1, summary["mqtt"]
    lines = [json.loads(x) for x in (tmp_path / "e.jsonl").read_text().splitlines()]
    lines = [e for e in lines if not e.get("end_of_run")]
    assert len(lines) == summary["frames"] == total  # not a line lost to the outage

    # Who each track id is, from the JSON lines (boxes in the 960 px frame).
    person: dict[int, str] = {}
    for e in lines:
        for d in e["detections"]:
            cx = (d["box"][0] + d["box"][2] / 2) * 2
            person.setdefault(d["track_id"], "left" if cx < 700 else ("centre" if cx < 1150 else "right"))
    events = sub.events()
    assert len(events) > before, "nothing arrived after the broker came back"
    for kind in ("smile_start", "smile_end"):
        got = [person[ev["track_id"]] for ev in sub.events(kind)]
        assert set(got) == {"left", "centre"}, (kind, got)  # both women, never the man
    assert all(ev["stream"] == "s0" and "time" in ev for ev in events)
    ends = sub.events("smile_end")
    assert all(ev["duration_s"] > 0 and ev["frames"] > 0 for ev in ends)
    # After the restart, later passes' events came through too.
    late = [ev for ev in events if ev["frame"] > 75 + 55]
    assert {person[ev["track_id"]] for ev in late if ev["event"] == "smile_start"} == {"left", "centre"}
    # Events that happened while the broker was down were queued and delivered after (QoS 1).
    during = {(ev["event"], ev["track_id"]) for e in lines for ev in e.get("events", [])
              if t_down <= ev["t_capture"] <= t_up}
    got = {(ev["event"], ev["track_id"]) for ev in events}
    assert during <= got, f"lost in the outage: {during - got}"
    assert summary["mqtt"]["dropped"] == 0
    with sub.lock:
        topics = {t for _, t, _ in sub.messages}
    assert f"{TOPIC}/stats" in topics and f"{TOPIC}/status" in topics
    assert "Saving in-memory database" in broker.log.read_text() or (tmp_path / "mosquitto.db").exists()
