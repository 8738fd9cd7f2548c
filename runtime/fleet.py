"""`edgecv run/smile --ray`: a fleet of sources sharded over Ray actors, each running today's
one-process pipeline (runtime.pipeline) on its share, so batching across its streams still
happens inside the actor. Events and metrics come back to this process's sinks (--json-out, the
summary); an actor that dies is restarted by Ray (max_restarts), its pipeline started again (its
streams reconnect; a file starts over and the frames already delivered are skipped, so a file's
events stay exactly one per frame), and the summary shows the restart and the gap.

Ray is imported only when a fleet runs: this module loads on an edge install.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

from edgecv.errors import ConfigError, EdgecvError, SourceError
from edgecv.safeio import redact_url

log = logging.getLogger("edgecv.fleet")

POLL_S = 0.2            # how often the driver collects events from each actor
MAX_EVENTS_PER_POLL = 5000
DOWN_LIMIT_S = 120.0    # an actor that stays unreachable this long is given up


def add_fleet_options(p: argparse.ArgumentParser) -> None:
    """--ray, --address, --ray-actors, --max-restarts: shared by `edgecv run` and `edgecv smile`."""
    from edgecv.safeio import int_at_least

    p.add_argument("--ray", action="store_true",
                   help="shard the sources over Ray actors, each running the pipeline on its share "
                        "(needs the [cluster] extra; a local Ray unless --address / RAY_ADDRESS)")
    p.add_argument("--address", metavar="ADDR",
                   help="with --ray: a running Ray cluster (HOST:PORT, ray://HOST:PORT or auto; default RAY_ADDRESS)")
    p.add_argument("--ray-actors", type=int_at_least(1), metavar="N",
                   help="with --ray: pipeline actors (default: one per source, up to the cluster's CPUs)")
    p.add_argument("--max-restarts", type=int_at_least(0), default=3, metavar="N",
                   help="with --ray: times Ray restarts an actor that died (default 3)")


@dataclass(frozen=True)
class ShardSource:
    sid: str        # the id of the source in the whole fleet (s0, s1, ... in the order given)
    text: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FleetSettings:
    """What every actor builds its pipeline from (the run options, already checked by run_model)."""

    detector: str | None
    detector_options: dict[str, Any]
    backend: str | None
    device: str
    threads: int
    cuda_graph: bool
    policy: str | None
    max_fps: float | None
    options: Any            # runtime.pipeline.PipelineOptions
    max_frame_pixels: int | None = None


class FleetWorker:
    """The body of one pipeline actor. The pipeline starts on `start()`, not in the constructor, so
    after a restart the driver sees a fresh actor (`started` False, a new `incarnation`) and starts
    it again itself, counting the restart."""

    def __init__(self, ref, shard: Sequence[ShardSource], settings: FleetSettings, model=None) -> None:
        """model: the model file as an edgecv.raycluster.ShippedFile (copied to this node when it
        lacks it); None opens ref.path."""
        self.ref, self.shard, self.settings, self.model = ref, list(shard), settings, model
        self.pipeline = None
        self.events: deque = deque()
        self.incarnation = f"{os.getpid()}-{time.time_ns()}"

    def start(self) -> dict[str, Any]:
        from .backends import open_backend
        from .build import detector_factory
        from .pipeline import Pipeline
        from .sinks import CallbackSink
        from .sources import parse_source, set_max_frame_pixels

        if self.pipeline is not None:
            return self._status()
        s = self.settings
        set_max_frame_pixels(s.max_frame_pixels)
        try:
            from .archive import resolve_files

            factory = detector_factory(s.detector, **{k: resolve_files(v) for k, v in s.detector_options.items()})
            path = self.ref.path if self.model is None else resolve_files(self.model)
            sources = [parse_source(x.text, x.sid, x.options.get("policy", s.policy), 4,
                                    max_fps=x.options.get("max_fps", s.max_fps)) for x in self.shard]
            backend = open_backend(path, self.ref.spec, backend=s.backend, device=s.device,
                                   threads=s.threads, cuda_graph=s.cuda_graph)
            try:
                pipeline = Pipeline(backend, sources, factory, [CallbackSink(self._collect, "fleet")], s.options,
                                    owns_backend=True)
            except BaseException:
                backend.close()
                raise
            pipeline.start()
        except EdgecvError as e:
            return {"incarnation": self.incarnation, "error": str(e), "error_type": type(e).__name__}
        self.pipeline = pipeline
        return self._status()

    def _collect(self, result) -> None:
        self.events.append(result.to_event())

    def _status(self) -> dict[str, Any]:
        p = self.pipeline
        out: dict[str, Any] = {"incarnation": self.incarnation, "started": p is not None, "pid": os.getpid()}
        if p is not None:
            out["live"] = {src.id: bool(src.reader.live) for src in p.sources}
            out["state"] = p.state.value
        return out

    def poll(self, max_events: int = MAX_EVENTS_PER_POLL) -> dict[str, Any]:
        """Events since the last poll (at most max_events), per-source counters, and when the
        pipeline has finished and every event was taken, its summary."""
        from .pipeline import PipelineState

        out = self._status()
        p = self.pipeline
        if p is None:
            return out
        finished = p.state in (PipelineState.STOPPED, PipelineState.FAILED)  # read before draining
        events = []
        while self.events and len(events) < max_events:
            events.append(self.events.popleft())
        out["events"] = events
        out["sources"] = {src.id: {"decoded": src.decoded, "dropped": src.dropped, "state": src.state.value}
                          for src in p.sources}
        if finished and not self.events:
            out["summary"] = p.summary()
            out["finished"] = True
        return out

    def stop(self) -> bool:
        if self.pipeline is not None:
            self.pipeline.stop()
        return True


class _Event:
    """An event from an actor, shaped for the driver's sinks (they read `to_event()` and `source_id`)."""

    __slots__ = ("event",)

    def __init__(self, event: dict[str, Any]) -> None:
        self.event = event

    @property
    def source_id(self) -> str:
        return self.event["source"]

    def to_event(self) -> dict[str, Any]:
        return self.event


@dataclass
class _Actor:
    name: str
    handle: Any
    sids: list[str]
    incarnation: str | None = None
    poll_ref: Any = None
    restarts: int = 0
    gaps_s: list[float] = field(default_factory=list)
    down_since: float | None = None
    finished: bool = False
    dead: str | None = None
    summary: dict[str, Any] | None = None
    pid: int | None = None


@dataclass
class _Stream:
    live: bool = False
    delivered: int = 0
    last: int = -1          # highest frame index delivered (the fleet's numbering)
    offset: int = 0         # added to a live source's index after a restart (its count starts at 0 again)
    faces: int = 0
    decoded_before: int = 0  # decoded by earlier incarnations (live sources)
    stats: dict[str, Any] = field(default_factory=dict)


def shard(n_sources: int, n_actors: int) -> list[list[int]]:
    """Source indexes per actor, round-robin: counts differ by at most one."""
    return [list(range(a, n_sources, n_actors)) for a in range(n_actors)]


def run_fleet(args: argparse.Namespace, ref, detector: str, entries: Sequence[tuple[str, dict[str, Any]]],
              detector_options: dict[str, Any], options) -> int:
    """The --ray branch of runtime.cli.run_model: same options, same summary shape and exit codes."""
    from edgecv.raycluster import address_from, check_reachable, connect, require_ray, ship

    from .machine import choose_defaults, usable_cpus
    from .outputs import commit_only_if, report_run
    from .sinks import JsonLinesSink, display_available

    if args.save:
        raise ConfigError("--save needs every frame in this process; with --ray frames stay in the actors "
                          "(use --json-out, or run without --ray)")
    require_ray()  # without the [cluster] extra: one line naming it, before anything is opened
    for flag in ("serve", "mqtt"):
        if getattr(args, flag, None):
            raise ConfigError(f"--{flag} is not available with --ray yet (the frames stay in the actors)")
    address = address_from(getattr(args, "address", None))
    if address not in (None, "local", "auto"):
        check_reachable(address)
    if not args.no_display and display_available():
        log.info("--ray: no window (frames stay in the actors)")
    det_opts = dict(detector_options)
    if detector in ("yunet", "yunet-opencv") and "model" not in det_opts:
        from edgecv.data import resource_path

        det_opts["model"] = str(resource_path("yunet", "models/face_detection_yunet_2023mar.onnx"))
    sinks: list = [JsonLinesSink(args.json_out)] if args.json_out else []
    env = {k: v for k, v in os.environ.items() if k.startswith("EDGECV_")}
    runtime_env = {"env_vars": env} if address not in (None, "local") and env else None
    t0 = time.monotonic()
    with connect(address, num_cpus=usable_cpus(), runtime_env=runtime_env) as cluster:
        import ray

        n = min(len(entries), args.ray_actors or max(1, min(len(entries), cluster.cpus)))
        cpus_each = max(1, cluster.cpus // n) if cluster.cpus else 1
        actor_opts: dict[str, Any] = {"num_cpus": cpus_each, "max_restarts": args.max_restarts, "max_task_retries": 0}
        if args.device != "cpu":
            if not cluster.gpus:
                raise ConfigError(f"--device {args.device} with --ray: the Ray cluster has no GPU")
            actor_opts["num_gpus"] = cluster.gpus / n if cluster.gpus < n else cluster.gpus // n
        shards = shard(len(entries), n)
        chosen = choose_defaults(cpus_each, max(len(s) for s in shards), detector != "none", args.detect_workers,
                                 args.threads)
        from dataclasses import replace

        shipped = {k: ship(v) for k, v in det_opts.items() if k == "model"}  # nodes without the files get copies
        model_file = ship(ref.path)
        settings = FleetSettings(None if detector == "none" else detector, {**det_opts, **shipped}, args.backend,
                                 args.device, chosen.threads, args.cuda_graph, args.policy, args.max_fps,
                                 replace(options, detect_workers=chosen.detect_workers, metrics_interval=0.0,
                                         max_frames=None), getattr(args, "max_frame_pixels", None))
        remote = ray.remote(**actor_opts)(FleetWorker)
        actors = []
        streams: dict[str, _Stream] = {}
        for a, idx in enumerate(shards):
            part = [ShardSource(f"s{i}", entries[i][0], dict(entries[i][1])) for i in idx]
            actors.append(_Actor(f"a{a}", remote.remote(ref, part, settings, model_file), [x.sid for x in part]))
            for x in part:
                streams[x.sid] = _Stream(stats={"uri": redact_url(x.text)})  # never a password
        fleet = _Fleet(ray, actors, streams, sinks, args, t0)
        commit_only_if(sinks, lambda: fleet.error is None)
        try:
            fleet.start()
            fleet.run()
        finally:
            fleet.close()
        summary = fleet.summary(cluster.to_dict(), chosen.to_dict(), actor_opts)
    return report_run(args, summary, fleet.error, interrupted=fleet.signals > 0)


class _Fleet:
    """The driver's side: start the actors, poll them, restart what Ray restarted, feed the sinks."""

    def __init__(self, ray, actors: list[_Actor], streams: dict[str, _Stream], sinks: list, args, t0: float) -> None:
        from .sinks import SinkSet

        self.ray, self.actors, self.streams, self.args = ray, actors, streams, args
        self.sinks = SinkSet(sinks)
        self.t0 = t0
        self.t_start = time.monotonic()
        self.error: str | None = None
        self.signals = 0
        self.stopping = False
        self.frames = 0
        self.backend: dict[str, Any] | None = None
        self.next_metrics = time.monotonic() + (args.metrics_interval or 0)

    # -- start / restart --------------------------------------------------------------------------
    def start(self) -> None:
        refs = [(a, a.handle.start.remote()) for a in self.actors]
        for a, ref in refs:
            try:
                status = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as e:
                if isinstance(e, self.ray.exceptions.ActorDiedError) and self.args.max_restarts == 0:
                    raise EdgecvError(f"pipeline actor {a.name} could not start: {_actor_error(e)}") from None
                # It died while starting: Ray restarts it and the loop starts it again, as after any death.
                a.down_since = time.monotonic()
                log.warning("pipeline actor %s died while starting: %s", a.name, _actor_error(e))
                continue
            self._started(a, status, first=True)
        self.t_start = time.monotonic()

    def _started(self, a: _Actor, status: dict[str, Any], first: bool = False) -> None:
        if status.get("error"):
            if first:
                cls = SourceError if status.get("error_type") == "SourceError" else EdgecvError
                raise cls(status["error"])
            a.dead = f"restarted, but its pipeline did not start: {status['error']}"
            return
        a.incarnation = status["incarnation"]
        a.pid = status.get("pid")
        for sid, live in status.get("live", {}).items():
            st = self.streams[sid]
            st.live = live
            if not first and live:
                st.offset = st.last + 1
                st.decoded_before += int(st.stats.get("decoded", 0))

    # -- the loop -----------------------------------------------------------------------------------
    def run(self) -> None:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while any(not a.finished and not a.dead for a in self.actors):
                for a in self.actors:
                    if a.poll_ref is None and not a.finished and not a.dead:
                        a.poll_ref = a.handle.poll.remote()
                refs = [a.poll_ref for a in self.actors if a.poll_ref is not None]
                ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=POLL_S)
                ready_set = set(ready)
                for a in self.actors:
                    if a.poll_ref is not None and a.poll_ref in ready_set:
                        ref, a.poll_ref = a.poll_ref, None
                        self._collect(a, ref)
                    elif a.down_since is not None and time.monotonic() - a.down_since > DOWN_LIMIT_S:
                        a.dead = f"unreachable for {DOWN_LIMIT_S:.0f} s"
                self._metrics()
                if ready_set == set(refs):
                    time.sleep(POLL_S / 2)
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _collect(self, a: _Actor, ref) -> None:
        ray = self.ray
        try:
            status = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            if a.down_since is None:
                a.down_since = time.monotonic()
                log.warning("pipeline actor %s (sources %s) died: %s; Ray restarts it (%d of %d restarts used)",
                            a.name, ",".join(a.sids), _actor_error(e), a.restarts, self.args.max_restarts)
            if isinstance(e, ray.exceptions.ActorDiedError) and a.restarts >= self.args.max_restarts:
                a.dead = f"died after {a.restarts} restart(s): {_actor_error(e)}"
                log.error("pipeline actor %s: %s", a.name, a.dead)
            return
        if status.get("incarnation") != a.incarnation:
            # Ray restarted the actor: a fresh process whose pipeline has not started.
            a.restarts += 1
            gap_from = a.down_since if a.down_since is not None else time.monotonic()
            if self.stopping:
                a.finished = True
                return
            try:
                started = ray.get(a.handle.start.remote())
            except ray.exceptions.RayActorError as e:
                if a.down_since is None:
                    a.down_since = gap_from
                log.warning("pipeline actor %s died again while starting: %s", a.name, _actor_error(e))
                return
            self._started(a, started)
            a.gaps_s.append(round(time.monotonic() - gap_from, 3))
            a.down_since = None
            log.info("pipeline actor %s restarted (%d); its streams reconnect after a %.1f s gap",
                     a.name, a.restarts, a.gaps_s[-1])
            return
        a.down_since = None
        for e in status.get("events", ()):
            self._deliver(e)
        for sid, stats in status.get("sources", {}).items():
            self.streams[sid].stats.update(stats)
        if status.get("finished"):
            a.finished = True
            a.summary = status.get("summary")
            if a.summary:
                self.backend = self.backend or a.summary.get("backend")
                if a.summary.get("error") and self.error is None:
                    self.error = f"pipeline actor {a.name}: {a.summary['error']}"
                    self.stop()

    def _deliver(self, event: dict[str, Any]) -> None:
        st = self.streams[event["source"]]
        if st.live:
            event["frame"] += st.offset
        elif event["frame"] <= st.last:
            return  # replayed after a restart: this frame was delivered by the earlier incarnation
        limit = self.args.max_frames
        if limit is not None and self.frames >= limit:
            return
        st.last = event["frame"]
        st.delivered += 1
        st.faces += len(event.get("detections", ()))
        self.frames += 1
        self.sinks.write(_Event(event))
        if limit is not None and self.frames >= limit:
            self.stop()

    def _metrics(self) -> None:
        interval = self.args.metrics_interval
        if not interval:
            return
        now = time.monotonic()
        if now < self.next_metrics:
            return
        self.next_metrics = now + interval
        el = max(now - self.t_start, 1e-9)
        up = sum(1 for a in self.actors if a.down_since is None and not a.dead)
        log.info("fleet: %d frames, %.1f fps | actors up %d/%d | restarts %d", self.frames, self.frames / el, up,
                 len(self.actors), sum(a.restarts for a in self.actors))

    def _on_signal(self, signum, _frame) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals == 1:
            log.info("%s: draining the fleet (send it again to stop without draining)", name)
            self.stop()
        else:
            for a in self.actors:
                if not a.finished:
                    self.ray.kill(a.handle, no_restart=True)
                    a.dead = a.dead or "stopped without draining (second signal)"

    def stop(self) -> None:
        self.stopping = True
        for a in self.actors:
            if not a.finished and not a.dead:
                a.handle.stop.remote()

    def close(self) -> None:
        self.sinks.close()
        for a in self.actors:
            try:
                self.ray.kill(a.handle, no_restart=True)
            except Exception:  # already gone
                pass

    # -- the summary ----------------------------------------------------------------------------------
    def summary(self, cluster: dict[str, Any], defaults: dict[str, Any], actor_opts: dict[str, Any]) -> dict[str, Any]:
        wall = time.monotonic() - self.t_start
        sources: dict[str, Any] = {}
        for a in self.actors:
            per = (a.summary or {}).get("sources", {})
            for sid in a.sids:
                st = self.streams[sid]
                entry = dict(per.get(sid) or st.stats)
                entry.update(frames=st.delivered, faces=st.faces, actor=a.name,
                             fps=round(st.delivered / wall, 2) if wall > 0 else 0.0)
                if st.live and st.decoded_before:
                    entry["decoded"] = int(entry.get("decoded", 0)) + st.decoded_before
                if a.dead:
                    entry["state"] = "failed"
                    entry["error"] = f"actor {a.name} {a.dead}"
                sources[sid] = entry
        actors = {a.name: {"sources": a.sids, "restarts": a.restarts, "gaps_s": a.gaps_s,
                           "state": "dead" if a.dead else ("finished" if a.finished else "stopped"),
                           "error": a.dead, "pid": a.pid,
                           # the actor's own pipeline metrics (its last incarnation): stages, batches, memory
                           **{k: (a.summary or {}).get(k) for k in ("stages_ms", "batches", "peak_rss_mb")
                              if (a.summary or {}).get(k) is not None}} for a in self.actors}
        dead = [a for a in self.actors if a.dead]
        if dead and self.error is None and self.signals < 2 and len(dead) == len(self.actors):
            self.error = "every pipeline actor died: " + "; ".join(f"{a.name} {a.dead}" for a in dead)
        faces = sum(s.faces for s in self.streams.values())
        return {"frames": self.frames, "faces": faces, "wall_s": round(wall, 3),
                "fps": round(self.frames / wall, 2) if wall > 0 else 0.0,
                "state": "failed" if self.error else "stopped", "error": self.error, "sources": sources,
                "actors": actors, "restarts": sum(a.restarts for a in self.actors), "backend": self.backend,
                "sinks_failed": dict(self.sinks.failed), "defaults": {**defaults, "per": "actor"},
                "ray": {**cluster, "actors": len(self.actors), "cpus_per_actor": actor_opts.get("num_cpus"),
                        "gpus_per_actor": actor_opts.get("num_gpus", 0), "max_restarts": actor_opts["max_restarts"],
                        "startup_s": cluster.get("startup_s")}}


def _actor_error(e: BaseException) -> str:
    import re

    text = str(e)
    m = re.search(r"(\w+(?:Error|Exception): .+)", text)
    if m:
        return m.group(1).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__
