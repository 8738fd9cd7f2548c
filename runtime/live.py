"""What a live viewer sees of each stream: its processing fps (a pipeline hook that the annotation
draws) and a board of per-stream counters and recent events that the web page, /metrics and MQTT read.

Both run in the sink thread and cost a few dictionary updates per frame.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .results import FrameResult


class FpsMeter:
    """Pipeline hook: `result.live["stream_fps"]`, frames a second each stream delivers, over the last
    `window` seconds (so a paused or slowed stream shows it within that time)."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self._times: dict[str, deque[float]] = defaultdict(deque)

    def __call__(self, result: FrameResult) -> None:
        now = time.monotonic()
        q = self._times[result.source_id]
        q.append(now)
        while len(q) > 2 and now - q[0] > self.window:
            q.popleft()
        span = q[-1] - q[0]
        result.live["stream_fps"] = (len(q) - 1) / span if len(q) > 1 and span > 0 else 0.0


@dataclass
class StreamState:
    """The latest state of one stream (read under LiveBoard's lock; copied out by `stats`)."""

    frames: int = 0
    faces: int = 0          # in the latest frame
    faces_total: int = 0
    smiling: int = 0        # people smiling now (hysteresis state, when a hook sets it)
    fps: float = 0.0
    tracks: int = 0
    last_frame: int = -1
    t_capture: float = 0.0  # time.monotonic() when the latest frame was read
    age_s: float = 0.0      # capture to this board, latest frame
    events: Counter = field(default_factory=Counter)
    recent: deque = field(default_factory=lambda: deque(maxlen=10))


class LiveBoard:
    """A sink that remembers each stream's latest FrameResult and counters. Listeners (the web
    server's encoder) are called with the source id after each frame; they must return at once."""

    name = "live"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.streams: dict[str, StreamState] = {}
        self.latest: dict[str, FrameResult] = {}
        self.seq: dict[str, int] = defaultdict(int)
        self.listeners: list[Callable[[str], None]] = []
        self.source_stats: Callable[[], dict[str, dict[str, Any]]] | None = None
        self.t_start = time.monotonic()

    def write(self, result: FrameResult) -> None:
        sid = result.source_id
        now = time.monotonic()
        with self._lock:
            st = self.streams.setdefault(sid, StreamState())
            st.frames += 1
            st.faces = len(result.detections)
            st.faces_total += st.faces
            st.smiling = int(result.live.get("smiling", 0))
            st.fps = float(result.live.get("stream_fps", 0.0))
            st.tracks = len(result.live.get("tracks", ()))
            st.last_frame = result.frame.index
            st.t_capture = result.frame.t_capture
            st.age_s = now - result.frame.t_capture
            for ev in result.events:
                st.events[ev.get("event", "?")] += 1
                st.recent.append(ev)
            self.latest[sid] = result
            self.seq[sid] += 1
        for fn in self.listeners:
            fn(sid)

    def get(self, sid: str) -> tuple[FrameResult | None, int]:
        with self._lock:
            return self.latest.get(sid), self.seq.get(sid, 0)

    def stream_ids(self) -> list[str]:
        with self._lock:
            return list(self.streams)

    def stats(self) -> dict[str, Any]:
        """JSON-ready: per stream its counters, recent events and (when given) the source's own stats."""
        src = {}
        if self.source_stats is not None:
            try:
                src = self.source_stats()
            except Exception:  # a stats read must never break a page
                src = {}
        with self._lock:
            out = {}
            for sid, st in self.streams.items():
                s = src.get(sid, {})
                out[sid] = {"frames": st.frames, "faces": st.faces, "faces_total": st.faces_total,
                            "smiling": st.smiling, "fps": round(st.fps, 2), "tracks": st.tracks,
                            "frame": st.last_frame, "age_ms": round(st.age_s * 1000, 1),
                            "events": dict(st.events), "recent": list(st.recent),
                            "dropped": s.get("dropped", 0), "skipped": s.get("skipped_max_fps", 0),
                            "reconnects": s.get("reconnects", 0), "state": s.get("state", "")}
            for sid, s in src.items():  # a stream with no frame yet still shows
                out.setdefault(sid, {"frames": 0, "faces": 0, "faces_total": 0, "smiling": 0, "fps": 0.0,
                                     "tracks": 0, "frame": -1, "age_ms": 0.0, "events": {}, "recent": [],
                                     "dropped": s.get("dropped", 0), "skipped": s.get("skipped_max_fps", 0),
                                     "reconnects": s.get("reconnects", 0), "state": s.get("state", "")})
        return {"uptime_s": round(time.monotonic() - self.t_start, 1), "streams": out}

    def close(self) -> None:
        pass


class LiveOutputs:
    """What the live options of `edgecv run` / `edgecv smile` add to a run, built from their args:
    hooks (track ids with a detector, stream fps), and the sinks and server for --serve and --mqtt.
    Everything that can fail on user input (a port in use, a bad host, a missing extra) fails here,
    before the model is opened. `attach(pipeline)` after the pipeline exists; `close()` always."""

    def __init__(self, args: Any, track_ids: bool, hooks: Any = ()) -> None:
        import os

        from edgecv.errors import ConfigError

        from .identity import IdentityTracker

        self.hooks: list[Callable[[FrameResult], None]] = []
        if track_ids:
            self.hooks.append(IdentityTracker())
        self.hooks.append(FpsMeter())
        self.hooks.extend(hooks)
        self.sinks: list[Any] = []
        self.board: LiveBoard | None = None
        self.server = None
        self.exporter = None
        self.mqtt = None
        self._pipeline = None
        serve = getattr(args, "serve", None)
        mqtt = getattr(args, "mqtt", None)
        try:
            if serve:
                from .prometheus import PrometheusExporter
                from .web import LiveServer, parse_hostport

                host, port = parse_hostport(serve)
                quality = getattr(args, "serve_quality", 80)
                if not 1 <= quality <= 100:
                    raise ConfigError(f"--serve-quality must be from 1 to 100; got {quality}")
                self.board = LiveBoard()
                self.exporter = PrometheusExporter(self.board, lambda: self._pipeline, self._viewers)
                token = getattr(args, "serve_token", None) or os.environ.get("EDGECV_SERVE_TOKEN") or None
                self.server = LiveServer(host, port, self.board, token=token, fps=getattr(args, "serve_fps", 10.0),
                                         quality=quality, max_width=getattr(args, "serve_width", 960),
                                         metrics=self.exporter.render)
                self.sinks += [self.board, self.exporter]
            if mqtt:
                from .mqtt import MqttSink

                self.mqtt = MqttSink(mqtt, getattr(args, "mqtt_topic", "edgecv"),
                                     interval=getattr(args, "mqtt_interval", 10.0))
                self.sinks.append(self.mqtt)
        except BaseException:
            self.close()
            raise

    def _viewers(self) -> dict[str, tuple[int, int]]:
        s = self.server
        if s is None:
            return {}
        return {sid: (s.viewers.get(sid, 0), s.sent.get(sid, 0)) for sid in set(s.viewers) | set(s.sent)}

    def attach(self, pipeline: Any) -> None:
        """Give the pipeline the hooks and the server the pipeline's sources, then start serving."""
        self._pipeline = pipeline
        pipeline.hooks.extend(self.hooks)
        if self.board is not None:
            self.board.source_stats = lambda: {s.id: s.stats() for s in pipeline.sources}
        if self.server is not None:
            self.server.start()

    def close(self) -> None:
        """Stop serving (the MQTT sink is closed with the other sinks)."""
        if self.server is not None:
            self.server.close()

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.server is not None:
            out["serve"] = self.server.summary()
        if self.mqtt is not None:
            out["mqtt"] = self.mqtt.summary()
        for h in self.hooks:
            if hasattr(h, "summary") and hasattr(h, "name"):
                out[h.name] = h.summary()
        return out
