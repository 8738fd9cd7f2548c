"""Builders: names and CLI strings -> the objects `Pipeline` takes (STYLE.md 18).

`open_pipeline(ref, ["video:smile.mp4"], detector="yunet")` is the Python road from a resolved
model (edgecv.resolve) to a pipeline ready to start; `edgecv run` and `edgecv smile` take it too.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

from edgecv.errors import ConfigError, unknown
from edgecv.resolve import ModelRef

from .backends import open_backend
from .detect import DETECTORS, make_detector
from .pipeline import DetectorFactory, Pipeline, PipelineOptions
from .sinks import Sink
from .sources import Source, parse_source


def detector_factory(name: str | None, **options: Any) -> DetectorFactory | None:
    """A zero-argument factory for a named detector ("haar", "yunet", or one registered with
    runtime.detect.register_detector); None or "none" classifies whole frames."""
    if name is None or name == "none":
        return None
    if name not in DETECTORS:
        raise ConfigError(unknown("detector", name, [*DETECTORS, "none"]))
    return functools.partial(make_detector, name, **options)


def build_sources(texts: Sequence[str], *, policy: str | None = None, max_fps: float | None = None,
                  source_options: Sequence[dict[str, Any]] | None = None, queue_size: int = 4,
                  decode: str = "cpu") -> list[Source]:
    """Sources s0, s1, ... for source strings (runtime.sources); source_options holds one dict per
    source whose `policy` / `max_fps` override the shared ones for it. decode: cpu | nvdec | auto for
    video files (runtime.nvdec: nvdec where it cannot run decodes on the CPU, with one warning)."""
    if not texts:
        raise ConfigError("at least one source is needed")
    per = list(source_options) if source_options is not None else [{}] * len(texts)
    if len(per) != len(texts):
        raise ConfigError("source_options needs one entry per source")
    from .nvdec import resolve_decode

    decode = resolve_decode(decode)
    return [parse_source(t, f"s{i}", o.get("policy", policy), queue_size, max_fps=o.get("max_fps", max_fps),
                         decode=decode) for i, (t, o) in enumerate(zip(texts, per))]


def open_pipeline(ref: ModelRef, sources: Sequence[str], *, detector: str | None = "none",
                  detector_options: dict[str, Any] | None = None, backend: str | None = None,
                  device: str = "cpu", threads: int | None = None, cuda_graph: bool = False,
                  policy: str | None = None, max_fps: float | None = None,
                  source_options: Sequence[dict[str, Any]] | None = None, queue_size: int = 4,
                  decode: str = "cpu", sinks: Sequence[Sink] = (), options: PipelineOptions | None = None) -> Pipeline:
    """A pipeline for a resolved model on source strings, owning its backend (closed at the end).
    Everything is checked before the model is opened, so a bad option costs no model load."""
    factory = detector_factory(detector, **(detector_options or {}))
    srcs = build_sources(sources, policy=policy, max_fps=max_fps, source_options=source_options,
                         queue_size=queue_size, decode=decode)
    options = options or PipelineOptions()
    b = open_backend(ref.path, ref.spec, backend=backend, device=device, threads=threads, cuda_graph=cuda_graph)
    try:
        return Pipeline(b, srcs, factory, sinks, options, owns_backend=True)
    except BaseException:
        b.close()
        raise
