"""How `edgecv benchmark` shows and writes its results: the row fields (one table that the JSON,
CSV and docs all follow), the terminal table and progress line, Markdown, CSV and the PNG plot.

matplotlib is imported only when a plot is asked for (it comes with the [train] extra).
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
from edgecv.spec import atomic_write_text

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
    ("backend", "litert, onnxruntime or keras"),
    ("device", "device requested: cpu, cuda or tensorrt"),
    ("device_used", "device the backend actually ran on; differs from device after a fallback"),
    ("provider", "execution provider(s) actually used (ONNX Runtime's list, or LiteRT CPU)"),
    ("batch", "images per call"),
    ("threads", "threads requested (null: the library's default)"),
    ("input_dtype", "the model's input tensor type (int8 inputs are quantized inside backend.run)"),
    ("status", "ok or error"),
    ("error", "why the configuration could not be measured (null when ok)"),
    ("load_ms", "opening the backend: reading the ModelSpec and building the interpreter/session"),
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
                    "ONNX Runtime session.run), inputs prepared beforehand, ms"),
    ("overhead_pct", "latency_ms_p50 vs bare_ms_p50, %: what edgecv's backend.run and the harness add to the engine"),
    ("overhead_ok", f"overhead_pct <= {OVERHEAD_LIMIT_PCT:g}"),
    ("harness_ns", "the timing harness's own cost per call (timing a call that does nothing), ns"),
    ("harness_overhead_pct", "harness_ns as a % of latency_ms_p50"),
    ("peak_rss_mb", "peak resident memory of the measuring process after load, first run, warm-up and "
                    "one timed block (before the bare engine and accuracy data exist), MB"),
    ("baseline_rss_mb", "resident memory after importing the runtime library, before loading, MB"),
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


# -- terminal -----------------------------------------------------------------------------------

def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "-"
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)


def _where(row: Mapping[str, Any]) -> str:
    dev, used = row.get("device"), row.get("device_used")
    where = dev if not used or used == dev else f"{dev}->{used}!"
    return f"{row.get('backend')}/{where}"


COLUMNS: tuple[tuple[str, Any], ...] = (
    ("artefact", lambda r: r["artefact"]),
    ("backend/device", _where),
    ("batch", lambda r: str(r["batch"])),
    ("MB", lambda r: _fmt(r["size_bytes"] / 1e6 if r.get("size_bytes") is not None else None, ".2f")),
    ("load ms", lambda r: _fmt(r.get("load_ms"), ".1f")),
    ("1st ms", lambda r: _fmt(r.get("first_ms"), ".2f")),
    ("p50 ms", lambda r: _fmt(r.get("latency_ms_p50"), ".3f")),
    ("p90 ms", lambda r: _fmt(r.get("latency_ms_p90"), ".3f")),
    ("p99 ms", lambda r: _fmt(r.get("latency_ms_p99"), ".3f")),
    ("ms/img", lambda r: _fmt(r.get("per_image_ms_p50"), ".4f")),
    ("img/s", lambda r: _fmt(r.get("throughput_ips"), ",.0f")),
    ("RSS MB", lambda r: _fmt(r.get("peak_rss_mb"), ".0f")),
    ("acc %", lambda r: _fmt(100 * r["accuracy"] if r.get("accuracy") is not None else None, ".2f")),
    ("drop", lambda r: _fmt(r.get("drop_pts"), "+.2f")),
    ("ovh %", lambda r: _fmt(r.get("overhead_pct"), "+.1f") + ("" if r.get("overhead_ok") in (True, None) else "!")),
)


def table_cells(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = [c for c, _ in COLUMNS]
    body = []
    for r in rows:
        if r.get("status") == "error":
            body.append([r["artefact"], _where(r), str(r["batch"]), "error: " + str(r.get("error"))[:80]]
                        + [""] * (len(COLUMNS) - 4))
        else:
            body.append([f(r) for _, f in COLUMNS])
    return head, body


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table, columns aligned (numbers right, names left)."""
    head, body = table_cells(rows)
    # Error rows span the numeric columns with their message: they do not set the widths.
    fine = [b for b in body if not b[3].startswith("error")]
    widths = [max([len(head[i])] + [len(b[i]) for b in fine]) for i in range(len(head))]
    left = {0, 1}

    def line(cells: Sequence[str]) -> str:
        if cells[3].startswith("error"):
            return "  ".join([cells[0].ljust(widths[0]), cells[1].ljust(widths[1]), cells[2].rjust(widths[2]),
                              cells[3]])
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(head), "  ".join("-" * w for w in widths)]
    out += [line(b) for b in body]
    return "\n".join(out)


def format_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    head, body = table_cells(rows)
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(c.replace("|", "/") for c in b) + " |" for b in body]
    return "\n".join(out)


class Progress:
    """A one-line bar on a terminal; one line per finished configuration otherwise (logs, CI)."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = total
        self.done = 0
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
        if row.get("status") == "error":
            result = "error"
        else:
            result = (f"p50 {_fmt(row.get('latency_ms_p50'), '.3f')} ms, "
                      f"{_fmt(row.get('throughput_ips'), ',.0f')} img/s")
        if self.tty:
            self._bar(label)
        else:
            self.stream.write(f"[{self.done}/{self.total}] {label}: {result}\n")
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


def to_markdown(rows: Sequence[Mapping[str, Any]], env: Mapping[str, Any], command: str,
                env_line: str) -> str:
    out = [f"`{command}`", "", f"{env_line}", "", format_markdown(rows), ""]
    notes = notes_for(rows)
    if notes:
        out += [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


def notes_for(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Warnings worth a line under the table: fallbacks and overhead past the limit."""
    notes: list[str] = []
    for r in rows:
        label = f"{r['artefact']} {r['backend']} batch {r['batch']}"
        if r.get("status") == "ok" and r.get("device_used") and r["device_used"] != r["device"]:
            msg = f"{r['artefact']} {r['backend']}: --device {r['device']} requested, ran on {r['device_used']} ({r.get('provider')})"
            if msg not in notes:
                notes.append(msg)
        if r.get("overhead_ok") is False:
            notes.append(f"{label}: backend.run p50 {r['latency_ms_p50']:.4f} ms is {r['overhead_pct']:+.1f}% over the "
                         f"bare engine loop ({r['bare_ms_p50']:.4f} ms); the timing harness itself costs "
                         f"{_fmt(r.get('harness_ns'), '.0f')} ns a call")
    return notes


def check_plot_available() -> None:
    """Fail before measuring, not after, when --plot cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'edgecv[train]' (or pip install matplotlib)") from None


def plot(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Per-image latency (p50) against batch, one line per artefact and backend; throughput bars
    at each configuration's best batch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("status") == "ok"]
    series: dict[str, list[tuple[int, float, float]]] = {}
    for r in ok:
        key = f"{r['artefact']} ({_where(r)})"
        series.setdefault(key, []).append((r["batch"], r["per_image_ms_p50"], r["throughput_ips"]))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, max(4.5, 0.32 * len(series) + 2)))
    for key, pts in series.items():
        pts.sort()
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key)
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("batch")
    ax1.set_ylabel("ms per image (p50)")
    ax1.set_title("latency vs batch")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=7)
    names = list(series)
    best = [max(series[k], key=lambda p: p[2]) for k in names]
    ax2.barh(range(len(names)), [b[2] for b in best], color="tab:blue")
    ax2.set_yticks(range(len(names)))
    ax2.set_yticklabels([f"{k} b{b[0]}" for k, b in zip(names, best)], fontsize=7)
    ax2.invert_yaxis()
    ax2.set_xlabel("images/s (best batch)")
    ax2.set_title("throughput")
    ax2.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    atomic_write_text(path, text)
    return path
