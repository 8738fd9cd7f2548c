"""`--serve HOST:PORT`: a small web server beside the pipeline. Per stream an MJPEG of the annotated
frames, one HTML page with the streams and their live stats (/stats.json), and Prometheus /metrics.

The pipeline never waits for a viewer: the sink only keeps a reference to each stream's latest frame
(runtime.live.LiveBoard). One encoder thread turns the latest frame of each stream that has a viewer
into a JPEG, at most `fps` times a second (scaled down to `max_width`), and each viewer's connection
thread sends the newest JPEG there is when its socket takes it: a slow viewer skips frames, it never
queues them. With no viewer nothing is encoded.

Binds 127.0.0.1 unless told otherwise. With a token every request needs `?token=T` or
`Authorization: Bearer T` (Prometheus' `authorization` / `bearer_token` settings send the latter).
"""
from __future__ import annotations

import hmac
import html
import ipaddress
import json
import logging
import socket
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlparse

import cv2

from edgecv.errors import ConfigError

from .live import LiveBoard

log = logging.getLogger("edgecv.web")

BOUNDARY = "edgecv-frame"


def parse_hostport(text: str, flag: str = "--serve", default_host: str = "127.0.0.1",
                   default_port: int | None = None) -> tuple[str, int]:
    """`PORT`, `HOST:PORT`, `:PORT`, `[v6]:PORT` (or `HOST` alone when default_port is given) ->
    (host, port). Raises ConfigError naming the flag."""
    t = str(text).strip()
    host, port_s = default_host, None
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            raise ConfigError(f"{flag} {text!r}: an IPv6 address needs a closing ]")
        host, rest = t[1:end], t[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"{flag} {text!r}: expected [ADDRESS]:PORT")
            port_s = rest[1:]
    elif t.isdigit():
        port_s = t
    elif t.count(":") == 1:
        h, port_s = t.split(":")
        host = h or default_host
    elif ":" in t:
        raise ConfigError(f"{flag} {text!r}: write an IPv6 address as [ADDRESS]:PORT")
    else:
        host = t or default_host
    if port_s is None:
        if default_port is None:
            raise ConfigError(f"{flag} {text!r}: expected HOST:PORT or PORT, e.g. 127.0.0.1:8080")
        return host, default_port
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ConfigError(f"{flag} {text!r}: the port must be a number from 0 to 65535")
    if not host or any(c in host for c in "/ ?#@"):
        raise ConfigError(f"{flag} {text!r}: not a host name or address")
    return host, int(port_s)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edgecv live</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:1em;background:#111;color:#eee}
.s{display:inline-block;vertical-align:top;margin:0 1em 1em 0;background:#1c1c1c;padding:.5em;border-radius:6px}
.s img{display:block;max-width:min(96vw,960px);background:#000}
table{border-collapse:collapse;margin-top:.4em}td{padding:1px 8px 1px 0}
td.v{font-variant-numeric:tabular-nums;text-align:right}
.ev{font:12px monospace;color:#9c9;white-space:pre;max-height:8em;overflow:auto}
h1{font-size:18px;margin:0 0 .6em 0}
</style></head>
<body><h1>edgecv live <span id="up"></span></h1><div id="streams">__STREAMS__</div>
<script>
const q = new URLSearchParams(location.search); const tok = q.get("token");
const suffix = tok ? "?token=" + encodeURIComponent(tok) : "";
for (const img of document.querySelectorAll("img[data-src]")) img.src = img.dataset.src + suffix;
const fields = ["fps","frames","faces","smiling","tracks","age_ms","dropped","skipped","reconnects"];
async function tick() {
  try {
    const r = await fetch("stats.json" + suffix, {cache: "no-store"});
    const s = await r.json();
    document.getElementById("up").textContent = "(up " + s.uptime_s.toFixed(0) + " s)";
    for (const [sid, st] of Object.entries(s.streams)) {
      const t = document.getElementById("stats-" + sid); if (!t) continue;
      t.innerHTML = fields.map(f => `<tr><td>${f}</td><td class="v" data-f="${f}">${st[f]}</td></tr>`).join("")
        + Object.entries(st.events).map(([k,v]) => `<tr><td>${k}</td><td class="v">${v}</td></tr>`).join("");
      document.getElementById("ev-" + sid).textContent =
        st.recent.slice(-5).map(e => e.event + (e.track_id !== undefined ? " #" + e.track_id : "")
          + " frame " + e.frame).join("\\n");
    }
    document.body.dataset.stats = "ok";
  } catch (e) { document.body.dataset.stats = "error"; }
}
tick(); setInterval(tick, 1000);
</script></body></html>
"""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False  # a port in use is an error, not shared
    request_queue_size = 16


class LiveServer:
    """The server. Binds in the constructor (a port in use is a ConfigError before the model loads);
    `start()` serves on a daemon thread; `close()` stops serving and ends every viewer's stream.

    board: the LiveBoard sink the pipeline writes to. metrics: a callable returning the Prometheus
    text (bytes) or None for no /metrics. fps: the most JPEGs a second per stream; quality: JPEG
    quality; max_width: frames wider than this are scaled down before encoding."""

    def __init__(self, host: str, port: int, board: LiveBoard, *, token: str | None = None, fps: float = 10.0,
                 quality: int = 80, max_width: int = 960, metrics: Callable[[], bytes] | None = None) -> None:
        self.board = board
        self.token = token or None
        self.fps = fps
        self.quality = quality
        self.max_width = max_width
        self.metrics = metrics
        self._closing = threading.Event()
        self._new = threading.Event()
        self._cv = threading.Condition()
        self._jpeg: dict[str, tuple[int, bytes, float, int]] = {}
        self._due: dict[str, float] = {}  # when each stream may be encoded next  # sid -> (seq, jpeg, t_capture, frame)
        self.viewers: dict[str, int] = defaultdict(int)
        self.sent: dict[str, int] = defaultdict(int)
        self.encoded: dict[str, int] = defaultdict(int)
        self._vlock = threading.Lock()
        handler = self._handler_class()
        server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6}) if ":" in host else _Server
        try:
            self.httpd = server_class((host, port), handler)
        except OSError as e:
            why = "the port is in use" if e.errno == 98 else (e.strerror or str(e))
            raise ConfigError(f"--serve {host}:{port}: cannot listen there ({why})") from None
        self.host, self.port = host, self.httpd.server_address[1]
        if not is_loopback(host):
            if self.token:
                log.warning("serving on %s:%d: reachable from other machines; requests need the token",
                            host, self.port)
            else:
                log.warning("serving on %s:%d without a token: anyone who can reach this machine can watch "
                            "the cameras (--serve-token T, or bind 127.0.0.1)", host, self.port)
        board.listeners.append(self._on_frame)
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> "LiveServer":
        for target, name in ((self.httpd.serve_forever, "web"), (self._encode_loop, "web-encode")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("serving the live view on %s (MJPEG per stream, /stats.json, /metrics)", self.url)
        return self

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        self._new.set()
        with self._cv:
            self._cv.notify_all()
        if self._threads:
            self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            t.join(5.0)

    # -- encoding -------------------------------------------------------------------------------
    def _on_frame(self, sid: str) -> None:
        # Wake the encoder only when this stream may send again: at 100 fps in and 10 out, waking it
        # for every frame cost more CPU than the JPEGs.
        if self.viewers.get(sid) and time.monotonic() >= self._due.get(sid, 0.0):
            self._new.set()

    def _encode_loop(self) -> None:
        last_seq: dict[str, int] = {}
        last_t: dict[str, float] = defaultdict(float)
        period = 1.0 / self.fps
        timeout = 0.5
        while not self._closing.is_set():
            self._new.wait(timeout)
            self._new.clear()
            timeout = 0.5
            for sid in list(self.viewers):
                if not self.viewers.get(sid):
                    continue
                wait = last_t[sid] + period - time.monotonic()
                if wait > 0:  # capped fps: come back when this stream may send again
                    timeout = min(timeout, wait)
                    continue
                result, seq = self.board.get(sid)
                if result is None or seq == last_seq.get(sid):
                    continue
                last_seq[sid] = seq
                last_t[sid] = time.monotonic()
                self._due[sid] = last_t[sid] + period
                image = result.annotated_at(self.max_width)
                ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                if not ok:
                    continue
                with self._cv:
                    self._jpeg[sid] = (seq, buf.tobytes(), result.frame.t_capture, result.frame.index)
                    self.encoded[sid] += 1
                    self._cv.notify_all()

    # -- HTTP -----------------------------------------------------------------------------------
    def _authorised(self, req: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> bool:
        if self.token is None:
            return True
        given = (query.get("token") or [""])[0]
        auth = req.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = given or auth[7:].strip()
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _page(self) -> bytes:
        ids = sorted(set(self.board.stream_ids()) | set((self.board.source_stats or dict)()))
        parts = []
        for sid in ids:
            e = html.escape(sid)
            parts.append(f'<div class="s"><b>{e}</b><img id="img-{e}" alt="{e}" data-src="stream/{e}.mjpg">'
                         f'<table id="stats-{e}"></table><div class="ev" id="ev-{e}"></div></div>')
        return PAGE.replace("__STREAMS__", "".join(parts) or "<p>no stream yet</p>").encode()

    def _stream(self, req: BaseHTTPRequestHandler, sid: str) -> None:
        req.send_response(200)
        req.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        req.send_header("Cache-Control", "no-store")
        req.send_header("Connection", "close")
        req.end_headers()
        req.connection.settimeout(10.0)  # a viewer whose socket takes nothing for 10 s is dropped
        with self._vlock:
            self.viewers[sid] += 1
        self._new.set()
        sent_seq = -1
        try:
            while not self._closing.is_set():
                with self._cv:
                    entry = self._jpeg.get(sid)
                    if entry is None or entry[0] == sent_seq:
                        self._cv.wait(1.0)
                        continue
                seq, jpeg, t_capture, index = entry
                # The capture time on the wall clock too, so a viewer on this machine (a browser) can
                # measure capture-to-screen latency.
                wall = time.time() - (time.monotonic() - t_capture)
                head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                        f"X-Frame: {index}\r\nX-Capture-Monotonic: {t_capture:.6f}\r\n"
                        f"X-Capture-Time: {wall:.6f}\r\n\r\n").encode()
                req.wfile.write(head + jpeg + b"\r\n")
                req.wfile.flush()
                sent_seq = seq
                self.sent[sid] += 1
        except (OSError, ValueError):
            pass  # the viewer went away
        finally:
            with self._vlock:
                self.viewers[sid] -= 1

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "edgecv"

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("%s %s", self.address_string(), fmt % args)

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                url = urlparse(self.path)
                query = parse_qs(url.query)
                if not server._authorised(self, query):
                    self._send(401, b"a token is needed: ?token=T or Authorization: Bearer T\n", "text/plain")
                    return
                path = url.path
                try:
                    if path in ("/", "/index.html"):
                        self._send(200, server._page(), "text/html; charset=utf-8")
                    elif path == "/stats.json":
                        stats = server.board.stats()
                        for sid, st in stats["streams"].items():
                            st["viewers"] = server.viewers.get(sid, 0)
                        self._send(200, json.dumps(stats).encode(), "application/json")
                    elif path == "/metrics" and server.metrics is not None:
                        self._send(200, server.metrics(), "text/plain; version=0.0.4; charset=utf-8")
                    elif path.startswith("/stream/") and path.endswith(".mjpg"):
                        sid = path[len("/stream/"):-len(".mjpg")]
                        known = set(server.board.stream_ids()) | set((server.board.source_stats or dict)())
                        if sid not in known:
                            self._send(404, f"no stream {sid!r}\n".encode(), "text/plain")
                        else:
                            server._stream(self, sid)
                    elif path == "/favicon.ico":
                        self._send(204, b"", "image/x-icon")
                    else:
                        self._send(404, b"not found\n", "text/plain")
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler

    def summary(self) -> dict[str, Any]:
        return {"url": self.url, "encoded": dict(self.encoded), "sent": dict(self.sent)}
