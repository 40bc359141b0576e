"""The local debug web server: live annotated MJPEG stream, health, stats, events and Prometheus metrics (views
of the daemon's Snapshot, daemon/telemetry/snapshot.py).

Standard library only (ThreadingHTTPServer). Routes are a fixed table; nothing is ever resolved against the file
system, so no request path can escape to it. Frames are JPEG-encoded only while a client asks for them.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import json
import logging
import math
import socket
import sys
import threading
import time
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

from fallwatch.config.loader import read_secret
from fallwatch.config.schema import DebugConfig
from fallwatch.daemon.telemetry.jsonsafe import plain
from fallwatch.daemon.telemetry.snapshot import Snapshot, metrics
from fallwatch.daemon.telemetry.status_hub import StatusHub
from fallwatch.daemon.web.guard import check_state_change, server_names
from fallwatch.daemon.web.offload import Offload
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

log = logging.getLogger(__name__)

BOUNDARY = "fallwatchframe"
STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_STREAM_FPS = 30.0
MAX_HEIGHT = 2160
KEEPALIVE_S = 1.0  # while no new frame comes, the last part is repeated this often
WRITE_TIMEOUT_S = 10.0  # a client that stops reading is dropped instead of holding a thread forever
IDLE_TIMEOUT_S = 30.0
MAX_VIEWERS = 8  # streams at once; each costs a thread and, at its own height, encodings on a small CPU
PLACEHOLDER_CACHE = 4  # 'waiting for frames' JPEGs kept, by height (any height a client asks for is made)
MAX_CONNECTIONS = 32  # requests served at once (a thread each); more get 503 rather than piling up
# A slot is taken only once a full request head is in. Until then a connection waits in a bounded pool: it has
# HEAD_DEADLINE_S to send its whole head (request line and headers), and when the pool is full the oldest waiting
# connection is dropped for the newcomer. So slow or idle clients cannot hold /healthz shut.
# A request's body is read in the same pool, before the request takes a slot, within BODY_DEADLINE_S: a client
# dripping its body holds no slot either.
MAX_WAITING = 64
MAX_WAITING_PER_CLIENT = 16  # waiting connections from one address; its oldest is dropped for its newest
HEAD_DEADLINE_S = 5.0
BODY_DEADLINE_S = 5.0
MAX_IGNORED_BODY = 64 * 1024  # a GET/HEAD body up to this size is read and ignored; a larger one closes the link
MAX_POST_BODY = 16 * 1024  # a POST's body (a label is a few bytes): larger is 413, never read
MAX_PER_CLIENT = 12  # requests in progress from one address (a browser opens 6 per host): more get 429
# /healthz and /metrics have slots of their own that no other route can take: a watchdog or Prometheus still gets
# an answer while every other slot is busy. They are quick (nothing to wait for), so a few suffice.
HEALTH_ROUTES = ("/healthz", "/metrics")
HEALTH_SLOTS = 4

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; connect-src 'self'; "
    "style-src 'unsafe-inline'; script-src 'unsafe-inline'",
}


class BadRequest(ValueError):
    """A query parameter is out of range; answered with 400 and the message."""


class NotFound(ValueError):
    """What a query names does not exist (a camera); answered with 404 and the message."""


def parse_bind(bind: str) -> tuple[str, int]:
    """'host:port' (IPv6 as '[::1]:8080') -> (host, port)."""
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"debug.bind must be host:port, got {bind!r}")
    return host.strip("[]"), int(port)


def _query_float(query: dict[str, list[str]], name: str, default: float, lo: float, hi: float) -> float:
    if name not in query:
        return default
    try:
        value = float(query[name][-1])
    except ValueError:
        raise BadRequest(f"{name} must be a number, got {query[name][-1]!r}") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo:g} and {hi:g}, got {query[name][-1]!r}")
    return value


def _query_camera(query: dict[str, list[str]], hub: StatusHub) -> Optional[str]:
    """``?camera=NAME``: one of the hub's cameras; none (or empty) is the first camera."""
    name = query.get("camera", [""])[-1]
    if not name:
        return None
    if not hub.has_camera(name):
        raise NotFound(f"no camera {name!r}; the cameras are {', '.join(hub.cameras)}")
    return name


def _query_height(query: dict[str, list[str]]) -> Optional[int]:
    if "height" not in query or query["height"][-1] == "":
        return None
    raw = query["height"][-1]
    if not (raw.isascii() and raw.isdigit()) or not 16 <= int(raw) <= MAX_HEIGHT:  # isdigit() alone takes '²'
        raise BadRequest(f"height must be an integer between 16 and {MAX_HEIGHT}, got {raw!r}")
    return int(raw)


# ---- the handler -----------------------------------------------------------------------------------------------
class _DeadlineReader(io.RawIOBase):
    """The connection's reads, bounded in total (not per recv) while ``deadline`` is set: a client dripping one
    byte every few seconds still runs out of time (``what`` names the part being read, for the message)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.deadline: Optional[float] = None
        self.what = "request head"
        self.limit_s = HEAD_DEADLINE_S

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is None:
            return self.sock.recv_into(buffer)
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{self.what} not complete within {self.limit_s:g} s")
        before = self.sock.gettimeout()
        self.sock.settimeout(left)
        try:
            return self.sock.recv_into(buffer)
        finally:
            self.sock.settimeout(before)


class _Handler(BaseHTTPRequestHandler):
    server_version = "fallwatch"
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S  # idle keep-alive connections are closed instead of holding a thread
    server: "_Server"

    # Route table: exact paths only (no prefixes, no file-system lookups).
    ROUTES: dict[str, str] = {
        "/": "page",
        "/index.html": "page",
        "/stream.mjpg": "stream",
        "/latest.jpg": "latest",
        "/healthz": "healthz",
        "/api/stats": "stats",
        "/api/events": "events",
        "/api/alarms": "alarms",
        "/metrics": "metrics",
    }

    def version_string(self) -> str:  # no Python version in the Server header
        return self.server_version

    def setup(self) -> None:
        super().setup()
        self._reader = _DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)
        self._slot: Optional[str] = None
        self.body = b""

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError) as exc:  # the client left or stalled: nobody to answer, no traceback
            log.debug("debug server: %s: %s", self.client_address[0], exc)

    def handle_one_request(self) -> None:
        self._reader.deadline = time.monotonic() + HEAD_DEADLINE_S
        self._reader.what, self._reader.limit_s = "request head", HEAD_DEADLINE_S
        self.server.waiting(self.connection, self.client_address[0])
        try:
            super().handle_one_request()
        finally:
            if self._slot is not None:
                self.server.release_slot(self._slot, self.client_address[0])
                self._slot = None

    def parse_request(self) -> bool:
        """The head is in: read the body (a POST's is kept for its route, any other is read and ignored: left
        unread, it would be parsed as the next request), still in the waiting pool and within BODY_DEADLINE_S; then
        leave the pool and take a slot."""
        ok = super().parse_request()
        try:
            if ok:
                self._reader.deadline = time.monotonic() + BODY_DEADLINE_S
                self._reader.what, self._reader.limit_s = "request body", BODY_DEADLINE_S
                ok = self._read_post_body() if self.command == "POST" else self._skip_body()
        finally:
            self.server.head_done(self.connection)
            self._reader.deadline = None
        if not ok:
            return False
        refused = self.server.take_slot(urlsplit(self.path).path, self.client_address[0])
        if isinstance(refused, str):
            self._slot = refused
            return True
        status, text = refused
        self.close_connection = True
        self._send(
            status,
            f"{text}\n".encode(),
            "text/plain; charset=utf-8",
            self.command == "HEAD",
            {"Connection": "close", "Retry-After": "1"},
        )
        return False

    def _read_post_body(self) -> bool:
        """A POST's body into ``self.body``: by Content-Length, at most MAX_POST_BODY. False once answered."""
        refusal = None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if self.headers.get("Transfer-Encoding"):
            refusal = HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length, not chunked"
        elif length < 0:
            refusal = HTTPStatus.BAD_REQUEST, "Content-Length is not a number"
        elif length > MAX_POST_BODY:
            refusal = HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body too large (at most {MAX_POST_BODY} bytes)"
        else:
            try:
                self.body = self.rfile.read(length)
            except TimeoutError as exc:
                refusal = HTTPStatus.REQUEST_TIMEOUT, str(exc)
            else:
                if len(self.body) < length:
                    return False  # the client closed before its body was in: nobody to answer
        if refusal is None:
            return True
        self.close_connection = True
        self._send(refusal[0], f"{refusal[1]}\n".encode(), "text/plain; charset=utf-8", False, {"Connection": "close"})
        return False

    def _skip_body(self) -> bool:
        """Reads and drops the body of a request other than POST; False when the client went away meanwhile."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # not worth decoding chunks to throw them away: answer, then close
            return True
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_IGNORED_BODY:
            self.close_connection = True
            return True
        while length > 0:
            chunk = self.rfile.read(min(length, 16384))  # TimeoutError past the deadline: closed quietly
            if not chunk:
                self.close_connection = True
                return False
            length -= len(chunk)
        return True

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """Errors the base class answers itself (a malformed request line, an unknown method) in plain text like
        every other answer, never its HTML page."""
        if code == HTTPStatus.NOT_IMPLEMENTED and getattr(self, "command", None):
            self._not_allowed()  # a method nobody implements is answered like POST: 405 after auth
            return
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") in ("HTTP/0.9", ""):
            self.request_version = "HTTP/1.1"  # a status line and headers even for a garbled request line
        text = message or HTTPStatus(code).phrase
        self._send(
            code,
            f"{text}\n".encode("utf-8", "replace"),
            "text/plain; charset=utf-8",
            getattr(self, "command", "") == "HEAD",
            {"Connection": "close"},
        )

    def log_message(self, format: str, *args: Any) -> None:  # (the base class names it format)
        log.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def _not_allowed(self) -> None:
        """Every other method: 405 (after auth), never the base class's 501 HTML page."""
        self.close_connection = True
        if self._authorized(head=False):
            self._send(
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"method not allowed\n",
                "text/plain; charset=utf-8",
                headers={"Allow": "GET, HEAD", "Connection": "close"},
            )

    def do_POST(self) -> None:
        """Every POST route (the events view's labels, answers to alarms: web/alarms_api.py) passes auth, then the
        state-change guard (Host, Origin, JSON: web/guard.py) before its route runs."""
        from fallwatch.daemon.web import records_api as events_web

        path = urlsplit(self.path).path
        if not (events_web.handles(path) or path == "/api/alarms"):
            self._not_allowed()
        elif self._authorized(head=False) and self._state_change_allowed():
            self._dispatch(head=False)

    def _state_change_allowed(self) -> bool:
        refused = check_state_change(self.headers, self.server.debug.names, self.connection.getsockname()[0])
        if refused is None:
            return True
        log.debug("debug server: %s %s from %s: %s", self.command, self.path, self.client_address[0], refused[1])
        self.close_connection = True
        self._send(refused[0], f"{refused[1]}\n".encode(), "text/plain; charset=utf-8", False, {"Connection": "close"})
        return False

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def _authorized(self, head: bool) -> bool:
        if self.server.debug.authorized(self.headers.get("Authorization")):
            return True
        extra = {"WWW-Authenticate": 'Basic realm="fallwatch", charset="UTF-8"'}
        if self.close_connection:
            extra["Connection"] = "close"
        self._send(HTTPStatus.UNAUTHORIZED, b"authentication required\n", "text/plain; charset=utf-8", head, extra)
        return False

    def _dispatch(self, head: bool) -> None:
        self._responded = False
        if not self._authorized(head):
            return
        split = urlsplit(self.path)
        route = self.ROUTES.get(split.path)
        if route is None and split.path.startswith(("/events.html", "/vendor/", "/api/records", "/signal_plot.js")):
            route = "records"
        if route is None or (self.command == "POST" and route not in ("records", "alarms")):
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", head)
            return
        query = parse_qs(split.query, keep_blank_values=True)
        try:
            getattr(self, "_r_" + route)(query, head)
        except BadRequest as e:
            self._send(HTTPStatus.BAD_REQUEST, f"{e}\n".encode(), "text/plain; charset=utf-8", head)
        except NotFound as e:
            self._send(HTTPStatus.NOT_FOUND, f"{e}\n".encode(), "text/plain; charset=utf-8", head)
        except (ConnectionError, TimeoutError):  # the client left or stopped reading: nobody to answer
            self.close_connection = True
        except Exception:
            log.exception("debug server: %s %s failed", self.command, split.path)
            self.close_connection = True
            if not self._responded:  # else the client sees the response end early
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n", "text/plain; charset=utf-8", head)

    def send_response(self, code: int, message: Optional[str] = None) -> None:
        self._responded = True
        super().send_response(code, message)

    def _send(
        self, status: int, body: bytes, ctype: str, head: bool = False, headers: Optional[dict[str, str]] = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in {**_SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, head: bool) -> None:
        body = json.dumps(obj, default=str, allow_nan=False).encode()
        self._send(status, body, "application/json", head)

    # ---- routes ----
    def _r_records(self, query: dict, head: bool) -> None:
        from fallwatch.daemon.web import records_api as events_web

        path = urlsplit(self.path).path
        if not events_web.handles(path):
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", head)
            return
        events_web.serve(self, self.command, path, head, query)

    def _r_alarms(self, query: dict, head: bool) -> None:
        from fallwatch.daemon.web import alarms_api as alarms_web

        alarms_web.serve(self, head)

    def _r_page(self, query: dict, head: bool) -> None:
        self._send(HTTPStatus.OK, self.server.debug.page, "text/html; charset=utf-8", head)

    def _r_healthz(self, query: dict, head: bool) -> None:
        ok, body = self.server.debug.health()
        self._json(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, body, head)

    def _r_stats(self, query: dict, head: bool) -> None:
        self._json(HTTPStatus.OK, plain(self.server.debug.stats()), head)

    def _r_events(self, query: dict, head: bool) -> None:
        hub = self.server.debug.hub
        self._json(HTTPStatus.OK, plain({"events": hub.recent_events(_query_camera(query, hub))}), head)

    def _r_metrics(self, query: dict, head: bool) -> None:
        self._send(HTTPStatus.OK, metrics(self.server.debug.snapshot()), CONTENT_TYPE_PLAIN_0_0_4, head)

    def _r_latest(self, query: dict, head: bool) -> None:
        hub = self.server.debug.hub
        camera = _query_camera(query, hub)
        height = _query_height(query)
        jpeg = hub.latest_jpeg(height, camera)
        if jpeg is None:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"no frame yet\n", "text/plain; charset=utf-8", head)
        else:
            self._send(HTTPStatus.OK, jpeg, "image/jpeg", head)

    def _r_stream(self, query: dict, head: bool) -> None:
        debug = self.server.debug
        fps = _query_float(query, "fps", debug.cfg.stream_fps, 0.1, MAX_STREAM_FPS)
        height = _query_height(query)
        camera = _query_camera(query, debug.hub)
        if not debug.viewer_joined():
            self._send(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"too many viewers (at most {MAX_VIEWERS})\n".encode(),
                "text/plain; charset=utf-8",
                head,
            )
            return
        try:
            self._stream(fps, height, camera, head)
        finally:
            debug.viewer_left()

    def _stream(self, fps: float, height: Optional[int], camera: Optional[str], head: bool) -> None:
        debug = self.server.debug
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        for k, v in _SECURITY_HEADERS.items():
            self.send_header(k, v)
        self.end_headers()
        self.close_connection = True
        if head:
            return
        self.connection.settimeout(WRITE_TIMEOUT_S)
        self.wfile.write(f"--{BOUNDARY}\r\n".encode())
        period = 1.0 / fps
        last_seq, last_jpeg, last_write = 0, debug.placeholder(height), 0.0
        while not debug.stopping.is_set():
            snap = debug.hub.wait_frame(last_seq, KEEPALIVE_S / 2, camera)
            if debug.stopping.is_set():
                break
            if snap is None:
                # No new frame (none yet, or the source stopped): repeat the last part now and then. The
                # bytes are cached, so this costs no encoding, and a client that went away is noticed.
                if time.monotonic() - last_write >= KEEPALIVE_S or last_seq == 0:
                    self._write_part(last_jpeg)
                    last_write = time.monotonic()
                continue
            sent_at = time.monotonic()
            last_seq = snap[0]
            last_jpeg = debug.hub.jpeg_for(snap, height)
            self._write_part(last_jpeg)
            last_write = time.monotonic()
            # pace to the requested fps; frames published meanwhile are skipped, not queued
            debug.stopping.wait(max(0.0, period - (time.monotonic() - sent_at)))

    def _write_part(self, jpeg: bytes) -> None:
        # Each part is followed at once by the next boundary: browsers show a part only when they see the
        # boundary after it, so a trailing one avoids lagging a frame behind (or never showing a lone frame).
        self.wfile.write(
            f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
            + jpeg
            + f"\r\n--{BOUNDARY}\r\n".encode()
        )
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # stream handlers end on their own once `stopping` is set; never block shutdown
    allow_reuse_address = True
    request_queue_size = MAX_WAITING  # listen backlog (socketserver's 5 made a burst of clients wait 1 s each)
    debug: "DebugServer"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._free = {"any": MAX_CONNECTIONS, "health": HEALTH_SLOTS}  # slots left, per kind
        self._per_client: dict[str, int] = {}  # requests in progress per address (health slots not counted)
        self._slots_lock = threading.Lock()
        # connections without a full request yet: id -> (socket, client address)
        self._waiting: OrderedDict[int, tuple[socket.socket, str]] = OrderedDict()
        self._waiting_lock = threading.Lock()
        self._full_logged = False
        self._client_logged = False
        self._evict_logged = False

    def process_request(self, request: Any, client_address: Any) -> None:
        self.waiting(request, client_address[0] if client_address else "?")
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.head_done(request)

    def waiting(self, conn: socket.socket, client: str) -> None:
        """``conn`` waits for its request; the oldest waiting connection makes room when the pool is full, and
        the client's own oldest one when it has MAX_WAITING_PER_CLIENT waiting (so one address cannot fill it)."""
        evicted = []
        with self._waiting_lock:
            self._waiting[id(conn)] = (conn, client)
            self._waiting.move_to_end(id(conn))
            mine = [key for key, (_, c) in self._waiting.items() if c == client]
            for key in mine[: max(0, len(mine) - MAX_WAITING_PER_CLIENT)]:
                evicted.append(self._waiting.pop(key)[0])
            while len(self._waiting) > MAX_WAITING:
                evicted.append(self._waiting.popitem(last=False)[1][0])
        for old in evicted:
            try:
                old.shutdown(socket.SHUT_RDWR)  # its thread reads EOF and ends
            except OSError:
                pass
        if evicted and not self._evict_logged:
            log.warning(
                "debug server: more than %d connections without a complete request; dropping the oldest", MAX_WAITING
            )
            self._evict_logged = True

    def head_done(self, conn: socket.socket) -> None:
        with self._waiting_lock:
            self._waiting.pop(id(conn), None)

    def take_slot(self, path: str, client: str) -> "str | tuple[int, str]":
        """A slot for a request to ``path`` from ``client``: its kind (give it back with release_slot), or the
        refusal (status, line). /healthz and /metrics take their own slots first, and count against no client."""
        with self._slots_lock:
            if path in HEALTH_ROUTES and self._free["health"] > 0:
                self._free["health"] -= 1
                return "health"
            if path not in HEALTH_ROUTES and self._per_client.get(client, 0) >= MAX_PER_CLIENT:
                refused: tuple[int, str] = (
                    HTTPStatus.TOO_MANY_REQUESTS,
                    f"too many requests at once from your address (at most {MAX_PER_CLIENT})",
                )
                first, self._client_logged = not self._client_logged, True
            elif self._free["any"] > 0:
                self._free["any"] -= 1
                if path not in HEALTH_ROUTES:
                    self._per_client[client] = self._per_client.get(client, 0) + 1
                return "any" if path in HEALTH_ROUTES else "client"
            else:
                refused = HTTPStatus.SERVICE_UNAVAILABLE, "busy, try again"
                first, self._full_logged = not self._full_logged, True
        if first and refused[0] == HTTPStatus.TOO_MANY_REQUESTS:
            log.warning("debug server: %s has %d requests in progress; answering 429 to more", client, MAX_PER_CLIENT)
        elif first:
            log.warning("debug server: %d requests in progress; answering 503 until some finish", MAX_CONNECTIONS)
        return refused

    def release_slot(self, kind: str, client: str) -> None:
        with self._slots_lock:
            if kind == "health":
                self._free["health"] += 1
                return
            self._free["any"] += 1
            if kind == "client":
                left = self._per_client.pop(client) - 1
                if left:
                    self._per_client[client] = left

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Through logging (the journal, with a priority), not socketserver's traceback on stderr; a client that
        # went away is no error of ours.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        log.exception("debug server: request from %s failed", client_address[0] if client_address else "?")


class _Server6(_Server):
    address_family = socket.AF_INET6


class DebugServer:
    """The debug HTTP server in a background thread. ``port`` is the bound port (bind to port 0 in tests)."""

    def __init__(self, cfg: DebugConfig, hub: StatusHub, health_max_age_s: float = 5.0):
        self.cfg = cfg
        self.hub = hub
        self.health_max_age_s = health_max_age_s
        self.stopping = threading.Event()
        self._host, self._port = parse_bind(cfg.bind)
        self._httpd: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._viewers = 0
        self._viewers_lock = threading.Lock()
        self._credentials: Optional[bytes] = None
        self._placeholders: dict[Optional[int], bytes] = {}
        self.page = b""
        self.records: Any = None  # the EventRecorder behind the events view, when events.enabled
        self.rule_settings: Any = None  # () -> RuleSettings of the running configuration (signal plots)
        self.answer: Any = None  # (posted JSON) -> alarms closed; ValueError says why none (daemon/web/alarms_api.py)
        self.names = server_names(self._host, cfg.hosts)  # the Host names a state-changing request may use
        self.offload = Offload()  # signal plots and clip conversions: a low-priority process, one at a time

    # ---- lifecycle ----
    def start(self) -> None:
        if self._httpd is not None:
            raise RuntimeError("DebugServer already started")
        if self.cfg.username:
            try:
                password = read_secret(self.cfg.password, self.cfg.password_file)
            except OSError as e:
                raise OSError(f"debug.password_file {self.cfg.password_file}: {e.strerror or e}") from None
            if not password:
                raise ValueError("debug.username is set but no password (debug.password or debug.password_file)")
            self._credentials = f"{self.cfg.username}:{password}".encode("utf-8")
        index = STATIC_DIR / "index.html"
        try:
            self.page = index.read_bytes()
        except OSError as e:
            raise RuntimeError(f"debug page missing from the installed package: {index}: {e}") from None
        cls = _Server6 if ":" in self._host else _Server
        try:
            httpd = cls((self._host, self._port), _Handler)
        except OSError as e:
            raise OSError(f"debug server cannot bind {self.cfg.bind}: {e.strerror or e}") from None
        httpd.debug = self
        self._httpd = httpd
        self.stopping.clear()
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.25}, name="debug-web", daemon=True
        )
        self._thread.start()
        host = f"[{self._host}]" if ":" in self._host else self._host
        log.info("debug stream on http://%s:%d/%s", host, self.port, " (basic auth)" if self._credentials else "")

    def stop(self) -> None:
        httpd = self._httpd
        if httpd is None:
            return
        self.stopping.set()
        self.hub.wake_all()  # stream handlers waiting for a frame notice at once
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.offload.shutdown()
        self._httpd = None
        log.info("debug stream stopped")

    @property
    def port(self) -> int:
        if self._httpd is None:
            return self._port
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/"

    # ---- used by the handler ----
    def authorized(self, header: Optional[str]) -> bool:
        if self._credentials is None:
            return True
        if not header:
            return False
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self._credentials)

    def viewer_joined(self) -> bool:
        """Count a new stream viewer; False when there are already MAX_VIEWERS."""
        with self._viewers_lock:
            if self._viewers >= MAX_VIEWERS:
                return False
            self._viewers += 1
            return True

    def viewer_left(self) -> None:
        with self._viewers_lock:
            self._viewers -= 1

    @property
    def viewers(self) -> int:
        with self._viewers_lock:
            return self._viewers

    def placeholder(self, height: Optional[int]) -> bytes:
        """The 'waiting for frames' card as JPEG, made once per height."""
        from fallwatch.daemon.web.overlay import encode_jpeg, placeholder_bgr

        with self._viewers_lock:
            jpeg = self._placeholders.get(height)
            if jpeg is None:
                h = height or 480
                jpeg = encode_jpeg(placeholder_bgr("waiting for frames...", h * 4 // 3, h))
                while len(self._placeholders) >= PLACEHOLDER_CACHE:  # the oldest made goes first
                    del self._placeholders[next(iter(self._placeholders))]
                self._placeholders[height] = jpeg
            return jpeg

    def health(self) -> tuple[bool, dict]:
        """Healthy while every camera delivers frames through inference and MQTT (when enabled) can deliver
        alerts. The body: ``status``, the first camera's ``last_frame_age_s``, and when unhealthy the ``reason``
        (with several cameras, each failing camera's, named; MQTT's as ``mqtt: ...``) and ``unhealthy`` (their
        names, ``mqtt`` among them); ``cameras`` has every camera's own, ``mqtt`` MQTT's."""
        cameras = self.hub.health(self.health_max_age_s)
        bad = [name for name, c in cameras.items() if not c["healthy"]]
        reasons = [cameras[bad[0]]["reason"]] if len(cameras) == 1 and bad else []
        reasons += [f"camera {name}: {cameras[name]['reason']}" for name in bad if len(cameras) > 1]
        mqtt = self.hub.current().mqtt
        mqtt_down = mqtt.enabled and not mqtt.healthy
        if mqtt_down:
            why = f" ({mqtt.down_reason})" if mqtt.down_reason else ""
            reasons.append(f"mqtt: cannot deliver alerts, disconnected for {mqtt.down_s or 0:.0f} s{why}")
        body: dict[str, Any] = {
            "status": "unhealthy" if reasons else "ok",
            "last_frame_age_s": next(iter(cameras.values()))["last_frame_age_s"],
        }
        if reasons:
            body["reason"] = "; ".join(reasons)
            body["unhealthy"] = bad + (["mqtt"] if mqtt_down else [])
        body["cameras"] = cameras
        if mqtt.enabled:
            body["mqtt"] = {"healthy": mqtt.healthy, "connected": mqtt.connected, "down_s": mqtt.down_s}
        return not reasons, body

    def snapshot(self) -> Snapshot:
        """The hub's Snapshot with the server's own figures: health and viewers."""
        return self.hub.current().replace(healthy=self.hub.healthy(self.health_max_age_s), viewers=self.viewers)

    def stats(self) -> dict:
        return self.snapshot().to_json()
