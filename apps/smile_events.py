"""Per-person smile state for `edgecv smile`: hysteresis on each track's smile probability, the
`smile_start` / `smile_end` events, and the smile shutter (save the frame when everyone smiles).

A pipeline hook that runs after runtime.identity (it needs track ids), in each stream's frame order.
A person starts smiling after `on_frames` frames in a row with p(smiling) >= `on`, and stops after
`off_frames` frames in a row with p < `off`: one frame's score never flips the state. A track that
ends (the person left) while smiling gets its `smile_end` with `"reason": "lost"`; a smile still on
when the run ends (the video's end, Ctrl+C, SIGTERM) gets one with `"reason": "ended"` from
`end_of_run`, so a consumer never keeps a person smiling forever.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from edgecv.errors import ConfigError
from edgecv.runtime.results import FrameResult
from edgecv.safeio import atomic_write_bytes

log = logging.getLogger("edgecv.smile")


@dataclass
class _Person:
    smiling: bool = False
    run: int = 0             # frames in a row that argue for the other state
    since_frame: int = 0
    since_t: float = 0.0     # t_capture when the smile started
    since_wall: float = 0.0
    peak: float = 0.0


def check_shutter_dir(path: str | os.PathLike) -> Path:
    """Make the --shutter folder and prove a file can be written there (ConfigError otherwise): a
    shutter that cannot save is refused before the run, not discovered at the first smile."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--shutter {p}: not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".edgecv-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--shutter {p}: cannot write there ({e.strerror or e})") from None
    return p


class SmileEvents:
    """The hook. smile_index: the label index that means smiling (1 for the shipped model).

    shutter: a folder (checked with check_shutter_dir) or None; the shutter fires when every live
    track of a stream (seen within the identity tracker's max_missed frames) has been smiling for
    `shutter_frames` frames, at most once per `shutter_interval` seconds per stream, and saves the
    frame as it came from the camera (no boxes) as STREAM-FRAME.jpg."""

    name = "smile_events"

    def __init__(self, smile_index: int = 1, on: float = 0.6, off: float = 0.4, on_frames: int = 3,
                 off_frames: int = 3, shutter: str | os.PathLike | None = None, shutter_frames: int = 5,
                 shutter_interval: float = 10.0, jpeg_quality: int = 95) -> None:
        if not 0 <= off <= on <= 1:
            raise ConfigError(f"smile thresholds need 0 <= off <= on <= 1; got on={on}, off={off}")
        self.smile_index = smile_index
        self.on, self.off, self.on_frames, self.off_frames = on, off, on_frames, off_frames
        self.shutter = Path(shutter) if shutter is not None else None
        self.shutter_frames = shutter_frames
        self.shutter_interval = shutter_interval
        self.jpeg_quality = jpeg_quality
        self._people: dict[tuple[str, int], _Person] = {}
        self._all_smiling: dict[str, int] = {}
        self._last_shot: dict[str, float] = {}
        self._last_frame: dict[str, tuple[int, float]] = {}  # stream -> (frame index, t_capture) last seen
        self.counts: dict[str, int] = {"smile_start": 0, "smile_end": 0, "shutter": 0, "shutter_failed": 0}
        self.shots: list[str] = []

    def _p_smile(self, d) -> float:
        return d.score if d.label_index == self.smile_index else 1.0 - d.score

    def _event(self, kind: str, result: FrameResult, tid: int | None, **extra: Any) -> dict[str, Any]:
        ev = {"event": kind, "stream": result.source_id, "frame": result.frame.index,
              "t_capture": round(result.frame.t_capture, 6), "time": round(time.time(), 3)}
        if tid is not None:
            ev["track_id"] = tid
        ev.update(extra)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        result.events.append(ev)
        return ev

    def _end_fields(self, person: _Person, reason: str, frame: int, t_capture: float) -> dict[str, Any]:
        return {"reason": reason, "duration_s": round(t_capture - person.since_t, 3),
                "frames": frame - person.since_frame, "started_frame": person.since_frame,
                "peak": round(person.peak, 4)}

    def _end(self, result: FrameResult, tid: int, person: _Person, reason: str) -> None:
        self._event("smile_end", result, tid,
                    **self._end_fields(person, reason, result.frame.index, result.frame.t_capture))
        person.smiling, person.run = False, 0

    def end_of_run(self) -> list[dict[str, Any]]:
        """The pipeline's last call, after the last frame: a `smile_end` ("reason": "ended") for each
        person still smiling, dated at the last frame their stream delivered."""
        events = []
        for (sid, tid), person in sorted(self._people.items()):
            if not person.smiling:
                continue
            frame, t = self._last_frame[sid]
            events.append({"event": "smile_end", "stream": sid, "frame": frame, "t_capture": round(t, 6),
                           "time": round(time.time(), 3), "track_id": tid,
                           **self._end_fields(person, "ended", frame, t)})
            self.counts["smile_end"] += 1
        self._people.clear()
        return events

    def __call__(self, result: FrameResult) -> None:
        sid = result.source_id
        self._last_frame[sid] = (result.frame.index, result.frame.t_capture)
        seen = set()
        for d in result.detections:
            if d.track_id is None:
                continue
            key = (sid, d.track_id)
            seen.add(d.track_id)
            p = self._p_smile(d)
            person = self._people.setdefault(key, _Person())
            if person.smiling:
                person.peak = max(person.peak, p)
                person.run = person.run + 1 if p < self.off else 0
                if person.run >= self.off_frames:
                    self._end(result, d.track_id, person, "stopped")
            else:
                person.run = person.run + 1 if p >= self.on else 0
                if person.run >= self.on_frames:
                    person.smiling, person.run, person.peak = True, 0, p
                    person.since_frame, person.since_t = result.frame.index, result.frame.t_capture
                    self._event("smile_start", result, d.track_id, score=round(p, 4))
        live = set(result.live.get("tracks", seen))
        for (s, tid), person in list(self._people.items()):
            if s == sid and tid not in live:
                if person.smiling:
                    self._end(result, tid, person, "lost")
                del self._people[(s, tid)]
        smiling = [tid for tid in live if self._people.get((sid, tid), _Person()).smiling]
        result.live["smiling"] = len(smiling)
        if self.shutter is not None:
            self._shutter(result, live, len(smiling))

    def _shutter(self, result: FrameResult, live: set[int], smiling: int) -> None:
        sid = result.source_id
        everyone = bool(live) and smiling == len(live)
        self._all_smiling[sid] = self._all_smiling.get(sid, 0) + 1 if everyone else 0
        if self._all_smiling[sid] < self.shutter_frames:
            return
        t = result.frame.t_capture
        last = self._last_shot.get(sid)
        if last is not None and t - last < self.shutter_interval:
            return
        self._last_shot[sid] = t
        path = self.shutter / f"{sid}-{result.frame.index:06d}.jpg"
        try:
            ok, buf = cv2.imencode(".jpg", result.frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:
                raise OSError("JPEG encoding failed")
            atomic_write_bytes(path, buf.tobytes())
        except OSError as e:  # the folder went away or filled up mid-run: say so, keep running
            self.counts["shutter_failed"] += 1
            log.warning("shutter: cannot save %s (%s); the run goes on", path, e.strerror or e)
            return
        self.shots.append(str(path))
        self._event("shutter", result, None, path=str(path), people=len(live))
        log.info("shutter: everyone smiles in %s, saved %s", sid, path)

    def summary(self) -> dict[str, Any]:
        return {**self.counts, "shots": list(self.shots)}
