"""How the benchmarks show and write results: the row fields of `benchmark models` (one table that
JSON, CSV and docs/benchmark.md follow), the one table renderer every subcommand prints with, the
progress line, and the JSON / CSV / Markdown / PNG files. matplotlib is imported only for --plot.
"""
from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TextIO

from edgecv.errors import ConfigError

SCHEMA = "edgecv.benchmark/1"
# Harness + backend overhead above this, against the bare engine loop, is flagged in the row.
OVERHEAD_LIMIT_PCT = 5.0

# Every field of a JSON/CSV row, in order, with its meaning. docs/benchmark.md repeats this table;
# a field is never renamed within a schema version (add new ones instead).
FIELDS: tuple[tuple[str, str], ...] = (
    ("artefact", "model file name"),
    ("path", "model file path as given"),
    ("model", "ModelSpec name"),
    ("task", "ModelSpec task (classify, smile, captcha-digits, captcha-ctc)"),
    ("format", "tflite, onnx or keras (from the suffix)"),
    ("quant", "fp32, fp16, dynamic or int8 (from the ModelSpec)"),
    ("size_bytes", "file size in bytes"),
    ("backend", "litert, onnxruntime, openvino or keras"),
    ("device", "device requested: cpu, cuda or tensorrt"),
    ("device_used", "device the backend actually ran on; differs from device after a fallback"),
    ("provider", "execution provider(s) actually used (ONNX Runtime's list, LiteRT CPU, OpenVINO CPU)"),
    ("batch", "images per call"),
    ("threads", "inference threads the engine ran with, read back from it (see threads_source)"),
    ("threads_source", "where threads comes from: the setting read back (ORT intra_op_num_threads, LiteRT "
                       "num_threads, OpenVINO INFERENCE_NUM_THREADS) or the library's documented default"),
    ("threads_requested", "--threads as given (null: not given; LiteRT then gets one thread per usable CPU)"),
    ("input_dtype", "the model's input tensor type (int8 inputs are quantized inside backend.run)"),
    ("status", "ok or error"),
    ("error", "why the configuration could not be measured (null when ok)"),
    ("load_ms", "resolving the model (reading its ModelSpec) and opening the backend (interpreter/session)"),
    ("first_ms", "the first run after loading (lazy allocation included)"),
    ("warmup", "untimed runs before timing"),
    ("duration_s", "requested timed duration"),
    ("rounds", "timed blocks, alternating with blocks of the bare engine loop"),
    ("iters", "timed calls"),
    ("timed_s", "sum of the timed calls, seconds"),
    ("latency_ms_p50", "median time of one call (one batch), ms"),
    ("latency_ms_p90", "90th percentile per call, ms"),
    ("latency_ms_p99", "99th percentile per call, ms"),
    ("latency_ms_mean", "mean per call, ms"),
    ("latency_ms_min", "fastest call, ms"),
    ("latency_ms_max", "slowest call, ms"),
    ("per_image_ms_p50", "latency_ms_p50 / batch"),
    ("per_image_ms_p90", "latency_ms_p90 / batch"),
    ("per_image_ms_p99", "latency_ms_p99 / batch"),
    ("throughput_ips", "images per second: batch x iters / timed_s"),
    ("bare_ms_p50", "median time of one call of the bare engine loop (LiteRT set_tensor/invoke/get_tensor, "
                    "ONNX Runtime session.run, an OpenVINO infer request), inputs prepared beforehand, ms"),
    ("overhead_pct", "latency_ms_p50 vs bare_ms_p50, %: what edgecv's backend.run and the harness add to the engine"),
    ("overhead_ok", f"overhead_pct <= {OVERHEAD_LIMIT_PCT:g}"),
    ("harness_ns", "the timing harness's own cost per call (timing a call that does nothing), ns"),
    ("harness_overhead_pct", "harness_ns as a % of latency_ms_p50"),
    ("peak_rss_mb", "peak resident memory of the measuring process after load, first run, warm-up and "
                    "one timed block (before the bare engine and accuracy data exist), MB"),
    ("baseline_rss_mb", "peak resident memory after importing the runtime library, before loading, MB"),
    ("accuracy", "top-1 accuracy (sequence accuracy for captcha models) on accuracy_data"),
    ("accuracy_n", "images (captchas) scored"),
    ("accuracy_data", "data set and split scored, e.g. mnist[test]"),
    ("source_accuracy", "the source model's accuracy on the same data and split, from the ModelSpec metrics"),
    ("drop_pts", "source_accuracy - accuracy, in percentage points"),
    ("warnings", "warnings raised while measuring (a device fallback above all)"),
)
FIELD_NAMES = tuple(name for name, _ in FIELDS)


def order_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row with every documented field, in documented order (missing ones None)."""
    return {k: row.get(k) for k in FIELD_NAMES}


def fmt(v: Any, spec: str = "") -> str:
    """A cell: "-" for None, else format(v, spec)."""
    if v is None:
        return "-"
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)


# -- the one table renderer -----------------------------------------------------------------------

def render_table(head: Sequence[str], body: Sequence[Sequence[str]], *, left: int = 1,
                 markdown: bool = False) -> str:
    """Rows of cells as an aligned text table or a Markdown table. The first `left` columns are
    names (left-aligned), the rest numbers. A row with fewer cells than `head` ends in a cell that
    spans the rest (an error message): it does not set the column widths."""
    n = len(head)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < left else "---:" for i in range(n)) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in [*b, *[""] * (n - len(b))]) + " |" for b in body]
        return "\n".join(lines)
    full = [b for b in body if len(b) == n]
    widths = [max([len(head[i])] + [len(b[i]) for b in full]) for i in range(n)]

    def line(cells: Sequence[str]) -> str:
        last = len(cells) - 1 if len(cells) < n else n
        out = [c.ljust(widths[i]) if i < left else c.rjust(widths[i]) for i, c in enumerate(cells[:last])]
        return "  ".join(out + list(cells[last:]))

    return "\n".join([line(head), "  ".join("-" * w for w in widths)] + [line(b) for b in body])


# -- benchmark models: rows -----------------------------------------------------------------------

def _where(row: Mapping[str, Any]) -> str:
    dev, used = row.get("device"), row.get("device_used")
    where = dev if not used or used == dev else f"{dev}->{used}!"
    return f"{row.get('backend')}/{where}"


COLUMNS: tuple[tuple[str, Any], ...] = (
    ("artefact", lambda r: r["artefact"]),
    ("backend/device", _where),
    ("batch", lambda r: str(r["batch"])),
    ("thr", lambda r: fmt(r.get("threads"))),
    ("MB", lambda r: fmt(r["size_bytes"] / 1e6 if r.get("size_bytes") is not None else None, ".2f")),
    ("load ms", lambda r: fmt(r.get("load_ms"), ".1f")),
    ("1st ms", lambda r: fmt(r.get("first_ms"), ".2f")),
    ("p50 ms", lambda r: fmt(r.get("latency_ms_p50"), ".3f")),
    ("p90 ms", lambda r: fmt(r.get("latency_ms_p90"), ".3f")),
    ("p99 ms", lambda r: fmt(r.get("latency_ms_p99"), ".3f")),
    ("ms/img", lambda r: fmt(r.get("per_image_ms_p50"), ".4f")),
    ("img/s", lambda r: fmt(r.get("throughput_ips"), ",.0f")),
    ("RSS MB", lambda r: fmt(r.get("peak_rss_mb"), ".0f")),
    ("acc %", lambda r: fmt(100 * r["accuracy"] if r.get("accuracy") is not None else None, ".2f")),
    ("drop", lambda r: fmt(r.get("drop_pts"), "+.2f")),
    ("ovh %", lambda r: fmt(r.get("overhead_pct"), "+.1f") + ("" if r.get("overhead_ok") in (True, None) else "!")),
)


def rows_table(rows: Sequence[Mapping[str, Any]], markdown: bool = False) -> str:
    """The `benchmark models` table; an error row shows its message across the numeric columns."""
    body = [[r["artefact"], _where(r), str(r["batch"]), "error: " + str(r.get("error"))[:80]]
            if r.get("status") == "error" else [f(r) for _, f in COLUMNS] for r in rows]
    return render_table([c for c, _ in COLUMNS], body, left=2, markdown=markdown)


def notes_for(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Warnings worth a line under the table: fallbacks and overhead past the limit."""
    notes: list[str] = []
    for r in rows:
        if r.get("status") == "ok" and r.get("device_used") and r["device_used"] != r["device"]:
            msg = (f"{r['artefact']} {r['backend']}: --device {r['device']} requested, ran on {r['device_used']} "
                   f"({r.get('provider')})")
            if msg not in notes:
                notes.append(msg)
        if r.get("overhead_ok") is False:
            notes.append(f"{r['artefact']} {r['backend']} batch {r['batch']}: backend.run p50 "
                         f"{r['latency_ms_p50']:.4f} ms is {r['overhead_pct']:+.1f}% over the bare engine loop "
                         f"({r['bare_ms_p50']:.4f} ms); the timing harness itself costs "
                         f"{fmt(r.get('harness_ns'), '.0f')} ns a call")
    return notes


class Progress:
    """A one-line bar on a terminal; otherwise one line per measured configuration (logs, CI)."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()

    def start(self, label: str) -> None:
        if self.tty:
            self._bar(label)

    def finish(self, label: str, row: Mapping[str, Any]) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.tty:
            self._bar(label)
        elif row.get("status") == "ok":
            # An error row says why in the table (and, when nothing could be measured, in the one
            # error line the command ends with): no second line for it here.
            self.stream.write(f"[{self.done}/{self.total}] {label}: p50 {fmt(row.get('latency_ms_p50'), '.3f')} ms, "
                              f"{fmt(row.get('throughput_ips'), ',.0f')} img/s\n")
            self.stream.flush()

    def _bar(self, label: str) -> None:
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        elapsed = time.monotonic() - self.t0
        eta = "" if not self.done else f" eta {elapsed / self.done * (self.total - self.done):.0f}s"
        text = f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {label}{eta}"
        self.stream.write(text[:160].ljust(100))
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 160 + "\r")
            self.stream.flush()


# -- files ----------------------------------------------------------------------------------------

def to_json(rows: Sequence[Mapping[str, Any]], env: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    doc = {"schema": SCHEMA, "env": dict(env), "settings": dict(settings), "rows": [order_row(r) for r in rows]}
    return json.dumps(doc, indent=1) + "\n"


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(FIELD_NAMES), lineterminator="\n")
    w.writeheader()
    for r in rows:
        row = order_row(r)
        row["warnings"] = "; ".join(row["warnings"] or [])
        w.writerow(row)
    return buf.getvalue()


def to_markdown(rows: Sequence[Mapping[str, Any]], command: str, env_line: str) -> str:
    out = [f"`{command}`", "", env_line, "", rows_table(rows, markdown=True), ""]
    notes = notes_for(rows)
    return "\n".join(out + ([f"- {n}" for n in notes] + [""] if notes else []))


def check_plot_available() -> None:
    """Fail before measuring, not after, when --plot cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'edgecv[train]' (or pip install matplotlib)") from None


def _mb(row: Mapping[str, Any]) -> float:
    return row["size_bytes"] / 1e6


def tradeoff_points(rows: Sequence[Mapping[str, Any]], batch: int | None = None) -> dict[str, Any]:
    """What the accuracy-vs-latency panel shows: one point per artefact x backend x device at
    `batch` (default: the largest batch measured ok), with its per-image latency (p50), accuracy,
    file size and threads; rows without accuracy are listed as `unscored`."""
    ok = [r for r in rows if r.get("status") == "ok"]
    if batch is None:
        batch = max((r["batch"] for r in ok), default=None)
    points, unscored = [], []
    for r in ok:
        if r["batch"] != batch:
            continue
        label = f"{r['artefact']} {_where(r)}, {_mb(r):.1f} MB, {fmt(r.get('threads'))} thr"
        if r.get("accuracy") is None:
            unscored.append(label)
            continue
        points.append({"label": label, "artefact": r["artefact"], "backend": r["backend"],
                       "device": r.get("device_used") or r["device"], "threads": r.get("threads"),
                       "mb": round(_mb(r), 3), "per_image_ms": r["per_image_ms_p50"],
                       "accuracy_pct": 100 * r["accuracy"], "accuracy_data": r.get("accuracy_data")})
    return {"batch": batch, "points": points, "unscored": unscored}


def plot(rows: Sequence[Mapping[str, Any]], path: str | Path, batch: int | None = None) -> dict[str, Any]:
    """The trade-off the benchmark exists to show, written atomically to path (.png, .svg, .pdf):
    accuracy against per-image latency, one point per artefact and backend at one batch size, its
    marker area proportional to the file size and its label giving size and threads; below it,
    per-image latency against batch and throughput at each configuration's best batch. Returns
    the accuracy-vs-latency data as plotted (tradeoff_points)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = tradeoff_points(rows, batch)
    series: dict[str, list[tuple[int, float, float]]] = {}
    for r in rows:
        if r.get("status") == "ok":
            series.setdefault(f"{r['artefact']} ({_where(r)}, {fmt(r.get('threads'))} thr)", []).append(
                (r["batch"], r["per_image_ms_p50"], r["throughput_ips"]))
    # Text stays text in an SVG (searchable, and the labels can be checked against the rows).
    with plt.rc_context({"svg.fonttype": "none"}):
        fig = plt.figure(figsize=(13, 6 + max(4.5, 0.32 * len(series) + 2)))
        grid = fig.add_gridspec(2, 2, height_ratios=[1.3, 1])
        ax0 = fig.add_subplot(grid[0, :])
        pts = data["points"]
        # Labels alternate above and below their points, in order of latency, with a leader line:
        # artefacts of equal accuracy and close latency would otherwise print over each other.
        tiers = (14, -22, 30, -38)
        for rank, k in enumerate(sorted(range(len(pts)), key=lambda i: pts[i]["per_image_ms"])):
            p = pts[k]
            ax0.scatter(p["per_image_ms"], p["accuracy_pct"], s=40 + 60 * p["mb"], alpha=0.6, color=f"C{k % 10}",
                        edgecolors="black", linewidths=0.5)
            ax0.annotate(p["label"], (p["per_image_ms"], p["accuracy_pct"]), xytext=(8, tiers[rank % len(tiers)]),
                         textcoords="offset points", fontsize=8, color=f"C{k % 10}",
                         arrowprops={"arrowstyle": "-", "color": "0.5", "linewidth": 0.6})
        if pts:
            xs = [p["per_image_ms"] for p in pts]
            if max(xs) > 10 * min(xs):
                ax0.set_xscale("log")
            else:  # from zero: the eye reads the ratio of two latencies off the axis
                ax0.set_xlim(0, max(xs) * 1.35)
            ys = [p["accuracy_pct"] for p in pts]
            pad = max(0.3, 0.25 * (max(ys) - min(ys)))
            ax0.set_ylim(min(ys) - pad, max(ys) + pad)
        else:
            ax0.text(0.5, 0.5, "no accuracy scored (--data none, or no data set in the ModelSpecs)",
                     ha="center", va="center", transform=ax0.transAxes)
        scored = pts[0]["accuracy_data"] if pts else None
        ax0.set(xlabel=f"ms per image (p50) at batch {data['batch']}",
                ylabel=f"accuracy % ({scored})" if scored else "accuracy %",
                title=f"accuracy vs latency at batch {data['batch']} (marker area ~ file size)")
        ax0.grid(True, which="both", alpha=0.3)

        ax1, ax2 = fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])
        for key, s in series.items():
            s.sort()
            ax1.plot([p[0] for p in s], [p[1] for p in s], marker="o", label=key)
        ax1.set_xscale("log", base=2)
        ax1.set_yscale("log")
        ax1.set(xlabel="batch", ylabel="ms per image (p50)", title="latency vs batch")
        ax1.grid(True, which="both", alpha=0.3)
        ax1.legend(fontsize=7)
        names = list(series)
        best = [max(series[k], key=lambda p: p[2]) for k in names]
        ax2.barh(range(len(names)), [b[2] for b in best], color="tab:blue")
        ax2.set_yticks(range(len(names)))
        ax2.set_yticklabels([f"{k} b{b[0]}" for k, b in zip(names, best)], fontsize=7)
        ax2.invert_yaxis()
        ax2.set(xlabel="images/s (best batch)", title="throughput")
        ax2.grid(True, axis="x", alpha=0.3)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        try:
            fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".").lower())
            tmp.replace(path)
        finally:
            plt.close(fig)
            tmp.unlink(missing_ok=True)
    return data


def write_text(path: str | Path, text: str) -> Path:
    from edgecv.spec import atomic_write_text

    atomic_write_text(Path(path), text)
    return Path(path)
