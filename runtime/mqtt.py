"""`--mqtt HOST[:PORT] --mqtt-topic PREFIX`: the run's events and periodic stats to an MQTT broker.

Topics (payloads are JSON):
  PREFIX/events/EVENT   each event of a frame (smile_start, smile_end, shutter), QoS 1
  PREFIX/stats          every --mqtt-interval seconds: per-stream fps, frames, faces, smiling, QoS 1
  PREFIX/status         "online" (retained) at connect; "offline" at the end, and as the will when the
                        connection drops

paho-mqtt's network loop runs on its own thread and reconnects with backoff (1 to 30 s); the sink
only queues messages, so a broker that is slow, gone or never there never slows the pipeline or the
other sinks (the JSON lines). While disconnected, up to `max_queued` messages wait and are sent on
reconnect (QoS 1: at least once); beyond that new ones are dropped and counted. Needs the [live] extra.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from edgecv.errors import ConfigError

from .results import FrameResult
from .web import parse_hostport

log = logging.getLogger("edgecv.mqtt")


def _paho():
    try:
        import paho.mqtt.client as mqtt
    except ModuleNotFoundError:
        raise ConfigError("--mqtt needs paho-mqtt, which the base install leaves out; "
                          "install it with: pip install 'edgecv[live]'") from None
    return mqtt


def check_topic(prefix: str) -> str:
    p = str(prefix).strip().rstrip("/")
    if not p or any(c in p for c in "#+\0") or p.startswith("$"):
        raise ConfigError(f"--mqtt-topic {prefix!r}: a topic prefix must be non-empty, without # + or a "
                          f"leading $")
    return p


class MqttSink:
    """The sink. Connects in the background at construction; waits up to `connect_wait` seconds for
    the first connection so the log says whether the broker answered (it does not fail the run)."""

    name = "mqtt"

    def __init__(self, target: str, prefix: str = "edgecv", *, interval: float = 10.0, qos: int = 1,
                 client_id: str = "", max_queued: int = 1000, connect_wait: float = 3.0,
                 keepalive: int = 15) -> None:
        mqtt = _paho()
        self.host, self.port = parse_hostport(target, "--mqtt", default_host="", default_port=1883)
        if not self.host:
            raise ConfigError(f"--mqtt {target!r}: expected HOST[:PORT]")
        self.prefix = check_topic(prefix)
        self.interval, self.qos = interval, qos
        self.published = 0
        self.dropped = 0
        self.max_queued = max_queued
        self._queue_full = mqtt.MQTT_ERR_QUEUE_SIZE
        self.disconnects = 0
        self.connects = 0
        self._connected = threading.Event()
        self._closing = False
        self._next_stats = time.monotonic() + interval
        self._stats: dict[str, dict[str, Any]] = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.max_queued_messages_set(max_queued)
        self.client.reconnect_delay_set(1, 30)
        self.client.will_set(f"{self.prefix}/status", "offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self._acked = 0
        self._ack_lock = threading.Lock()
        try:
            self.client.connect_async(self.host, self.port, keepalive=keepalive)
        except (OSError, ValueError) as e:
            raise ConfigError(f"--mqtt {target}: {e}") from None
        self.client.loop_start()
        if not self._connected.wait(connect_wait):
            log.warning("MQTT broker %s:%d does not answer (yet); events are queued (up to %d) and sent when "
                        "it does, the run goes on", self.host, self.port, max_queued)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if getattr(reason_code, "is_failure", False):
            log.warning("MQTT broker %s:%d refused the connection: %s", self.host, self.port, reason_code)
            return
        self.connects += 1
        if self.connects > 1:
            log.info("MQTT reconnected to %s:%d", self.host, self.port)
        client.publish(f"{self.prefix}/status", "online", qos=1, retain=True)
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected.is_set() and not self._closing:
            self.disconnects += 1
            log.warning("MQTT connection to %s:%d lost (%s); reconnecting in the background",
                        self.host, self.port, reason_code)
        self._connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._ack_lock:
            self._acked += 1

    def _publish(self, topic: str, payload: dict[str, Any] | str, retain: bool = False) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
        # Queued when disconnected (paho keeps QoS>0 messages for the next connection).
        info = self.client.publish(f"{self.prefix}/{topic}", data, qos=self.qos, retain=retain)
        if info.rc == self._queue_full:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("MQTT: %d messages are waiting for the broker; newer ones are dropped and counted",
                            self.max_queued)
            return
        self.published += 1

    def write(self, result: FrameResult) -> None:
        self.write_events(result.events)
        st = self._stats.setdefault(result.source_id, {"frames": 0})
        st["frames"] += 1
        st.update(faces=len(result.detections), smiling=int(result.live.get("smiling", 0)),
                  fps=round(float(result.live.get("stream_fps", 0.0)), 2), frame=result.frame.index)
        now = time.monotonic()
        if now >= self._next_stats:
            self._next_stats = now + self.interval
            self._publish("stats", {"time": round(time.time(), 3), "streams": self._stats})

    def write_events(self, events: list[dict[str, Any]]) -> None:
        for ev in events:
            self._publish(f"events/{ev.get('event', 'event')}", ev)

    @property
    def acked(self) -> int:
        with self._ack_lock:
            return self._acked

    def close(self, wait: float = 2.0) -> None:
        """Say offline, give queued messages up to `wait` seconds when connected, then disconnect."""
        if self._closing:
            return
        if self._connected.is_set():
            self._publish("status", "offline", retain=True)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self.acked < self.published:
                time.sleep(0.02)
        self._closing = True
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    def summary(self) -> dict[str, Any]:
        return {"broker": f"{self.host}:{self.port}", "published": self.published, "acked": self.acked,
                "dropped": self.dropped,
                "connects": self.connects, "disconnects": self.disconnects,
                "connected": self._connected.is_set()}
