"""Prometheus metrics for `--serve` (served at /metrics; the series are listed in the README).

Histograms (frame age, per-stage latency) are observed per frame by a sink, a few microseconds each;
everything else is read from the pipeline, its sources and the live board when Prometheus scrapes,
so an unscraped server costs nothing more. Needs the [live] extra (prometheus-client).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from edgecv.errors import ConfigError

from .live import LiveBoard
from .results import FrameResult

AGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
STAGES = ("decode", "detect", "preprocess", "infer")


def _client():
    try:
        import prometheus_client
    except ModuleNotFoundError:
        raise ConfigError("--serve needs prometheus-client, which the base install leaves out; "
                          "install it with: pip install 'edgecv[live]'") from None
    return prometheus_client


class PrometheusExporter:
    """A sink (name "prometheus") plus a collector on its own registry. `render()` -> the text format.

    board: the LiveBoard the pipeline writes to; pipeline: a callable returning the Pipeline (or None
    before it exists); viewers: a callable returning {stream: (viewers, frames sent)}."""

    name = "prometheus"

    def __init__(self, board: LiveBoard, pipeline: Callable[[], Any] = lambda: None,
                 viewers: Callable[[], dict[str, tuple[int, int]]] = dict) -> None:
        pc = _client()
        self._pc = pc
        self.board, self._pipeline, self._viewers = board, pipeline, viewers
        self.registry = pc.CollectorRegistry(auto_describe=False)
        self.age = pc.Histogram("edgecv_frame_age_seconds", "capture to sink, per frame", ["stream"],
                                buckets=AGE_BUCKETS, registry=self.registry)
        self.stage = pc.Histogram("edgecv_stage_latency_seconds",
                                  "per-frame latency of a pipeline stage (infer: submit to result, batching "
                                  "wait included)", ["stage"], buckets=STAGE_BUCKETS, registry=self.registry)
        self._stage_children = {s: self.stage.labels(s) for s in STAGES}
        self.registry.register(self)

    # -- sink -------------------------------------------------------------------------------------
    def write(self, result: FrameResult) -> None:
        self.age.labels(result.source_id).observe(max(0.0, time.monotonic() - result.frame.t_capture))
        for stage, ms in result.timings_ms.items():
            child = self._stage_children.get(stage)
            if child is not None:
                child.observe(ms / 1000.0)

    def close(self) -> None:
        pass

    def render(self) -> bytes:
        return self._pc.generate_latest(self.registry)

    # -- collector --------------------------------------------------------------------------------
    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.board.stats()["streams"]
        g = {name: GaugeMetricFamily(name, doc, labels=["stream"]) for name, doc in (
            ("edgecv_stream_fps", "frames a second the stream delivers (last 2 s)"),
            ("edgecv_faces", "faces in the stream's latest frame"),
            ("edgecv_smiling", "people smiling now (hysteresis state)"),
            ("edgecv_tracks", "live track ids"),
            ("edgecv_stream_up", "1 while the source is running"),
            ("edgecv_web_viewers", "MJPEG viewers of the stream"))}
        c = {name: CounterMetricFamily(name, doc, labels=["stream"]) for name, doc in (
            ("edgecv_stream_frames", "frames processed"),
            ("edgecv_stream_frames_dropped", "frames dropped by the `latest` policy"),
            ("edgecv_stream_frames_skipped", "frames skipped by --max-fps"),
            ("edgecv_stream_reconnects", "reconnects of the source"),
            ("edgecv_faces_detected", "faces classified"),
            ("edgecv_web_frames_sent", "MJPEG frames sent to viewers"))}
        events = CounterMetricFamily("edgecv_events", "events (smile_start, smile_end, shutter)",
                                     labels=["stream", "event"])
        viewers = self._viewers()
        for sid, st in stats.items():
            g["edgecv_stream_fps"].add_metric([sid], st["fps"])
            g["edgecv_faces"].add_metric([sid], st["faces"])
            g["edgecv_smiling"].add_metric([sid], st["smiling"])
            g["edgecv_tracks"].add_metric([sid], st["tracks"])
            g["edgecv_stream_up"].add_metric([sid], 1.0 if st["state"] in ("running", "") else 0.0)
            n_view, n_sent = viewers.get(sid, (0, 0))
            g["edgecv_web_viewers"].add_metric([sid], n_view)
            c["edgecv_stream_frames"].add_metric([sid], st["frames"])
            c["edgecv_stream_frames_dropped"].add_metric([sid], st["dropped"])
            c["edgecv_stream_frames_skipped"].add_metric([sid], st["skipped"])
            c["edgecv_stream_reconnects"].add_metric([sid], st["reconnects"])
            c["edgecv_faces_detected"].add_metric([sid], st["faces_total"])
            c["edgecv_web_frames_sent"].add_metric([sid], n_sent)
            for ev, n in st["events"].items():
                events.add_metric([sid, ev], n)
        yield from g.values()
        yield from c.values()
        yield events
        p = self._pipeline()
        if p is not None:
            b = p.metrics.snapshot()["batches"]
            yield GaugeMetricFamily("edgecv_batch_size_mean", "mean inference batch (last 4096 batches)",
                                    value=b["mean_size"])
            yield GaugeMetricFamily("edgecv_batch_size_max", "largest inference batch (last 4096 batches)",
                                    value=b["max_size"])
            yield CounterMetricFamily("edgecv_batches", "inference batches run",
                                      value=getattr(p.batcher, "batches", b["count"]) if p.batcher else 0)
