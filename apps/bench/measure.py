"""The timing harness of `edgecv benchmark models`: one configuration (artefact x backend x device x
batch) measured in the child process the harness started for it.

In this order: import the runtime library (baseline RSS), resolve the model and open the backend
(load time), first inference (lazy allocation included), a fixed number of warm-up runs, then rounds of
  - the timed loop: `backend.run(x)` for a fixed share of the duration, and
  - the bare loop: as many calls straight into the engine (LiteRT `set_tensor` / `invoke` /
    `get_tensor` on a raw interpreter sized to the batch, ONNX Runtime `session.run` on the
    backend's own session, or an infer request of OpenVINO's compiled model) with inputs prepared
    (and quantized) beforehand,
both timed per call with one `time.perf_counter_ns` read. Alternating them in short rounds means a
busy neighbour slows both alike; their medians give what edgecv's `run` adds to the engine
(overhead_pct), and timing a call that does nothing gives what the timing itself costs
(harness_ns). Peak RSS is read after the first timed round, before the bare engine and the
accuracy data exist; accuracy (outputs read by edgecv.decode) runs last. Each row states the
inference threads the engine ran with, read back from the engine (`engine_threads`).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from edgecv import decode
from edgecv.errors import BackendError
from edgecv.spec import ModelSpec

from .harness import own_peak_rss_mb

# Timed and bare loop alternate in blocks of about this many seconds (at least MIN_ROUNDS blocks
# each): short enough that a neighbour's burst of work lands on both loops alike.
BLOCK_S = 0.1
MIN_ROUNDS = 5


@dataclass(frozen=True)
class Scoring:
    """Accuracy data saved by the parent as .npy: preprocessed inputs and integer labels;
    label_map maps data-set class i to model output label_map[i] (None: the same order)."""

    x_path: str
    y_path: str
    label_map: list[int] | None = None


@dataclass(frozen=True)
class BenchConfig:
    """One configuration to measure. threads None leaves the library's default (what it is, the
    row says: engine_threads)."""

    path: str
    backend: str
    device: str
    batch: int
    threads: int | None
    duration_s: float
    warmup: int
    rounds: int | None = None          # None: duration / BLOCK_S, at least MIN_ROUNDS
    scoring: Scoring | None = None
    # Real preprocessed images to time on (the first `batch` rows, tiled); noise when None.
    inputs_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BenchConfig":
        s = d.get("scoring")
        return cls(**{**d, "scoring": Scoring(**s) if s else None})


# -- the two loops --------------------------------------------------------------------------------

def timed_block(run: Callable[[np.ndarray], Any], x: np.ndarray, seconds: float, out: list[int]) -> int:
    """Call run(x) until `seconds` have passed; append each call's ns to `out`; return the count.

    One clock read per call: the end of one call is the start of the next, so the loop adds
    only a subtraction and an append to what it measures.
    """
    clock = time.perf_counter_ns
    append = out.append
    n0 = len(out)
    t_prev = clock()
    deadline = t_prev + int(seconds * 1e9)
    while t_prev < deadline:
        run(x)
        t = clock()
        append(t - t_prev)
        t_prev = t
    return len(out) - n0


def timed_count(call: Callable[[], Any], n: int, out: list[int]) -> None:
    """n calls of call(), each timed exactly as timed_block times its calls (one clock read per call)."""
    clock = time.perf_counter_ns
    append = out.append
    t_prev = clock()
    for _ in range(n):
        call()
        t = clock()
        append(t - t_prev)
        t_prev = t


def harness_cost_ns(n: int = 20000) -> float:
    """What the timing itself adds per call: the median of timing a call that does nothing."""
    out: list[int] = []
    timed_count(lambda: None, n, out)
    return float(np.median(out))


def bare_call(backend: Any, x: np.ndarray, threads: int | None) -> tuple[Callable[[], Any], Any]:
    """A zero-argument call that runs one batch straight on the engine, with inputs prepared
    (and quantized) now; returns (call, keep-alive object)."""
    name = backend.name
    if name == "onnxruntime":
        sess = backend.session
        iname = backend.input_spec.name
        oname = sess.get_outputs()[0].name
        fixed = backend.input_spec.shape[0] if backend.input_spec.shape[0] else None
        chunks = [x[i:i + fixed] for i in range(0, len(x), fixed)] if fixed else [x]
        if getattr(backend, "io_binding", False):
            import onnxruntime as ort

            # What OrtBackend's IO-binding path does, minus edgecv: a device input bound once,
            # one copy in, run, one copy out.
            where = "cpu" if backend.device == "cpu" else "cuda"
            binding = sess.io_binding()
            x_dev = ort.OrtValue.ortvalue_from_shape_and_type(x.shape, np.float32, where, 0)
            binding.bind_ortvalue_input(iname, x_dev)
            binding.bind_output(oname, where)

            def call() -> Any:
                x_dev.update_inplace(x)
                sess.run_with_iobinding(binding)
                return binding.copy_outputs_to_cpu()
            return call, (binding, x_dev)
        run = sess.run
        feeds = [{iname: c} for c in chunks]
        outs = [oname]

        def call() -> Any:
            for f in feeds:
                run(outs, f)
        return call, None
    if name == "litert":
        from edgecv.runtime.backends import _litert_factory, quantize

        it = _litert_factory()(model_content=backend.path.read_bytes(), num_threads=threads)
        inp = it.get_input_details()[0]
        it.resize_tensor_input(inp["index"], [len(x), *[int(d) for d in inp["shape"][1:]]])
        it.allocate_tensors()
        inp = it.get_input_details()[0]
        oidx = it.get_output_details()[0]["index"]
        dtype = np.dtype(inp["dtype"])
        xin = quantize(x, inp["quantization"], dtype) if dtype in (np.int8, np.uint8) else x
        iidx, set_tensor, invoke, get_tensor = inp["index"], it.set_tensor, it.invoke, it.get_tensor

        def call() -> Any:
            set_tensor(iidx, xin)
            invoke()
            return get_tensor(oidx)
        return call, it
    if name == "openvino":
        # A second infer request on the backend's compiled model: the same kernels and thread
        # pool, without edgecv's checks, cast, lock and output copy.
        req = backend.compiled.create_infer_request()
        cast = backend._cast
        feed = {0: x if cast is None else np.clip(np.round(x), 0, 255).astype(cast)}
        infer = req.infer
        return (lambda: infer(feed)), req
    if name == "keras":
        model = backend.model
        return (lambda: model(x, training=False)), None
    raise BackendError(f"no bare loop for backend {name!r}")


def physical_cores() -> int:
    """Physical cores of the machine (not of this process's affinity mask): what ONNX Runtime's
    default intra-op pool is sized to (tests/test_benchmark.py checks it against the threads the
    session starts)."""
    from .env import _cpuinfo

    return _cpuinfo().get("physical_cores") or os.cpu_count() or 1


def engine_threads(backend: Any) -> tuple[int, str]:
    """(inference threads the open backend runs with, where that number comes from), read back
    from the engine rather than echoed from the request."""
    name = backend.name
    if name == "onnxruntime":
        n = int(backend.session.get_session_options().intra_op_num_threads)
        if n > 0:
            return n, "onnxruntime intra_op_num_threads"
        return physical_cores(), "onnxruntime default: one per physical core"
    if name == "litert":
        # LiteRT's interpreter runs one thread unless told otherwise (num_threads None or -1).
        n = backend.threads
        return (int(n), "litert num_threads") if n and n > 0 else (1, "litert default: one thread")
    if name == "openvino":
        return int(backend.compiled.get_property("INFERENCE_NUM_THREADS")), "openvino INFERENCE_NUM_THREADS"
    import tensorflow as tf

    n = int(tf.config.threading.get_intra_op_parallelism_threads())
    if n > 0:
        return n, "tensorflow intra_op_parallelism_threads"
    from edgecv.runtime.machine import usable_cpus

    return usable_cpus(), "tensorflow default: every usable CPU"


# -- accuracy -------------------------------------------------------------------------------------

def score_arrays(run: Callable[[np.ndarray], np.ndarray], spec: ModelSpec, scoring: Scoring,
                 batch: int) -> dict[str, Any]:
    """Top-1 accuracy on the saved arrays; outputs read by edgecv.decode (rows, columns, finiteness
    and probability range checked against the spec, sigmoid thresholded as everywhere else)."""
    x = np.load(scoring.x_path, mmap_mode="r")
    y = np.load(scoring.y_path)
    # Chunks of at least 32: the batch-1 configuration would otherwise spend seconds here.
    step = max(batch, 32)
    pred = np.concatenate([decode.indices(spec, run(np.ascontiguousarray(x[i:i + step])), len(x[i:i + step]))
                           for i in range(0, len(x), step)])
    if scoring.label_map is not None:
        y = np.asarray(scoring.label_map)[y]
    return {"accuracy": float(np.mean(pred == y)), "accuracy_n": int(len(y))}


# -- one configuration ----------------------------------------------------------------------------

class _Collect(logging.Handler):
    """Keeps WARNING+ records: the parent prints them once, beside the row they belong to."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg not in self.messages:
            self.messages.append(msg)


def _inputs(cfg: BenchConfig, shape: tuple[int, ...]) -> np.ndarray:
    if cfg.inputs_path:
        pool = np.load(cfg.inputs_path, mmap_mode="r")
        return np.ascontiguousarray(pool[np.arange(cfg.batch) % len(pool)], dtype=np.float32)
    # No data: uniform noise in [0, 1), the range of the usual scale-to-1 chain.
    return np.random.default_rng(0).random((cfg.batch, *shape), dtype=np.float32)


def measure(config: dict[str, Any]) -> dict[str, Any]:
    """Measure one configuration (BenchConfig.to_dict()) in this process, meant to be a fresh one.
    Raises EdgecvError."""
    cfg = BenchConfig.from_dict(config)
    collect = _Collect()
    logging.getLogger().addHandler(collect)
    logging.getLogger().setLevel(logging.WARNING)
    from edgecv.resolve import resolve
    from edgecv.runtime.backends import open_backend

    # The runtime library is imported before the baseline, so baseline = interpreter + numpy +
    # library, and peak - baseline is what this model and batch cost on top.
    if cfg.backend == "onnxruntime":
        import onnxruntime  # noqa: F401
    elif cfg.backend == "litert":
        try:
            import ai_edge_litert.interpreter  # noqa: F401
        except ImportError:
            pass
    elif cfg.backend == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError:
            pass  # open_backend says which extra to install
    baseline = own_peak_rss_mb()

    t0 = time.perf_counter_ns()
    ref = resolve(cfg.path, cfg.backend)
    backend = open_backend(ref.path, ref.spec, backend=cfg.backend, device=cfg.device, threads=cfg.threads)
    load_ms = (time.perf_counter_ns() - t0) / 1e6
    try:
        threads, threads_source = engine_threads(backend)
        x = _inputs(cfg, tuple(ref.spec.input_shape))
        t0 = time.perf_counter_ns()
        first = backend.run(x)
        first_ms = (time.perf_counter_ns() - t0) / 1e6
        # A model whose output does not fit its spec is an error, not a row of fast wrong answers.
        (decode.texts if ref.spec.output == "ctc" else decode.probabilities)(ref.spec, first, cfg.batch)
        for _ in range(cfg.warmup):
            backend.run(x)

        times: list[int] = []
        bare: list[int] = []
        rounds = cfg.rounds or max(MIN_ROUNDS, int(round(cfg.duration_s / BLOCK_S)))
        share = cfg.duration_s / rounds
        peak = None
        call = None
        for _ in range(rounds):
            n = timed_block(backend.run, x, share, times)
            if peak is None:
                # Read before the bare engine and the accuracy data exist: this is the peak of
                # load + first inference + warm-up + steady running, nothing else.
                peak = own_peak_rss_mb()
                call, _keep = bare_call(backend, x, cfg.threads)
                for _ in range(max(cfg.warmup, 1)):
                    call()
            timed_count(call, n, bare)
        clock_ns = harness_cost_ns()
        ms = np.asarray(times, dtype=np.float64) / 1e6
        p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
        bare_p50 = float(np.median(bare)) / 1e6
        timed_s = float(ms.sum()) / 1e3
        row: dict[str, Any] = {
            "load_ms": round(load_ms, 3), "first_ms": round(first_ms, 3),
            "iters": int(len(ms)), "timed_s": round(timed_s, 3),
            # Nanosecond resolution (6 decimals of a ms): a 0.036 ms call rounded to 4 decimals
            # would lose 0.3 % of itself, and per-image figures would not divide back.
            "latency_ms_p50": round(p50, 6), "latency_ms_p90": round(p90, 6), "latency_ms_p99": round(p99, 6),
            "latency_ms_mean": round(float(ms.mean()), 6), "latency_ms_min": round(float(ms.min()), 6),
            "latency_ms_max": round(float(ms.max()), 6),
            "per_image_ms_p50": round(p50 / cfg.batch, 7), "per_image_ms_p90": round(p90 / cfg.batch, 7),
            "per_image_ms_p99": round(p99 / cfg.batch, 7),
            "throughput_ips": round(cfg.batch * len(ms) / timed_s, 1),
            # Medians, not means: on a shared box a neighbour's burst lands on a few calls of either
            # loop; the median of each is what one call costs.
            "bare_ms_p50": round(bare_p50, 6),
            "overhead_pct": round((p50 / bare_p50 - 1.0) * 100, 2),
            "harness_ns": round(clock_ns, 1),
            "harness_overhead_pct": round(clock_ns / 1e4 / p50, 3),
            "rounds": rounds,
            "peak_rss_mb": peak, "baseline_rss_mb": baseline,
            "input_dtype": backend.input_spec.dtype,
            "threads": threads, "threads_source": threads_source,
            "provider": _provider(backend), "device_used": getattr(backend, "device", "cpu"),
        }
        if cfg.scoring is not None:
            row.update(score_arrays(backend.run, ref.spec, cfg.scoring, cfg.batch))
    finally:
        backend.close()
    row["warnings"] = collect.messages
    return row


def _provider(backend: Any) -> str:
    if backend.name == "onnxruntime":
        return ",".join(backend.providers)
    if backend.name == "litert":
        return "LiteRT CPU"
    if backend.name == "openvino":
        return "OpenVINO " + ",".join(backend.compiled.get_property("EXECUTION_DEVICES"))
    return "Keras " + os.environ.get("KERAS_BACKEND", "tensorflow")
