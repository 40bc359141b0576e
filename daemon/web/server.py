"""The local debug web server: live annotated MJPEG stream, health, stats, events and Prometheus metrics (views
of the daemon's Snapshot, daemon/telemetry/snapshot.py), the events view and the answers to alarms.

aiohttp, on an event loop in one thread of its own beside the pipeline ("debug-web"). The routes are one table
(web/routes/); aiohttp parses requests, bounds header and body sizes, closes a connection that has not sent a whole
request head within HEAD_DEADLINE_S (its keep-alive timeout), and streams. The middlewares below add what it does
not have: basic auth, the state-change guard on every POST, a body deadline and the request slots (web/limits.py),
and one-line plain-text errors. Blocking work (waiting for a frame, JPEG encoding, the disk, the offload worker)
runs in a small thread pool, never on the loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Optional, TypeVar

from aiohttp import web
from fallwatch.config.loader import read_secret
from fallwatch.config.schema import DebugConfig
from fallwatch.daemon.telemetry.snapshot import Snapshot
from fallwatch.daemon.telemetry.status_hub import StatusHub
from fallwatch.daemon.web.guard import check_state_change, server_names
from fallwatch.daemon.web.limits import Slots, read_body
from fallwatch.daemon.web.offload import Offload
from fallwatch.daemon.web.responses import DEBUG, BadRequest, NotFound, text
from fallwatch.daemon.web.routes import ROUTES
from fallwatch.daemon.web.routes.static import STATIC_DIR
from fallwatch.daemon.web.routes.stream import BOUNDARY  # noqa: F401  (the stream's boundary, for its readers)

log = logging.getLogger(__name__)

MAX_VIEWERS = 8  # streams at once; each encodes at its own height on a small CPU
WORKERS = MAX_VIEWERS + 8  # threads for the blocking parts of requests (made on demand, kept for reuse)
PLACEHOLDER_CACHE = 4  # 'waiting for frames' JPEGs kept, by height (any height a client asks for is made)
MAX_CONNECTIONS = 32  # requests in progress at once; more get 503 rather than piling up
MAX_PER_CLIENT = 12  # requests in progress from one address (a browser opens 6 per host): more get 429
HEALTH_SLOTS = 4  # /healthz and /metrics have these slots of their own: answered while every other one is busy
MAX_KEPT_OPEN = 48  # open connections (idle keep-alive ones too): past this, an answer closes its connection
MAX_WAITING = 64  # listen backlog: a burst of clients is accepted at once, not retried a second later
HEAD_DEADLINE_S = 5.0  # a connection sends its whole request head within this (from connecting, or its last answer)
BODY_DEADLINE_S = 5.0  # and a POST its whole body within this, before its request takes a slot
MAX_POST_BODY = 16 * 1024  # a POST's body (a label is a few bytes): larger is 413
MAX_LINE = 65536  # the request line and each header line (http.server's limit; a long ?camera= is a 404, not a 400)
LINGER_S = 1.0  # a body not read whole (a 408, 413) is read and dropped this long, then the connection closes
SHUTDOWN_S = 1.0  # requests still running at stop are cancelled after this

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; connect-src 'self'; "
    "style-src 'unsafe-inline'; script-src 'unsafe-inline'",
    "Cache-Control": "no-store",
    "Server": "fallwatch",  # no Python or aiohttp version
}
ERROR_LINES = {404: "not found", 405: "method not allowed", 413: f"body too large (at most {MAX_POST_BODY} bytes)"}

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def parse_bind(bind: str) -> tuple[str, int]:
    """'host:port' (IPv6 as '[::1]:8080') -> (host, port)."""
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"debug.bind must be host:port, got {bind!r}")
    return host.strip("[]"), int(port)


# ---- middlewares, outermost first ------------------------------------------------------------------------------
@web.middleware
async def answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as one plain-text line (never an HTML page); anything a route did not expect is a 500 and one
    log record."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        headers = {"Retry-After": exc.headers["Retry-After"]} if "Retry-After" in exc.headers else {}
        if isinstance(exc, web.HTTPMethodNotAllowed):
            headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        line = ERROR_LINES.get(exc.status) or (exc.text or exc.reason).strip()
        resp = text(exc.status, line, headers)
        if exc.status >= 405:
            resp.force_close()  # what the client sent may not have been read whole
        return resp
    except BadRequest as exc:
        return text(400, str(exc))
    except NotFound as exc:
        return text(404, str(exc))
    except (ConnectionError, asyncio.CancelledError):  # the client left: nobody to answer
        raise
    except Exception:
        log.exception("debug server: %s %s failed", request.method, request.path)
        resp = text(500, "internal error")
        resp.force_close()
        return resp


@web.middleware
async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Basic auth, when configured, before anything else is looked at (a 404 or 405 too)."""
    if request.app[DEBUG].authorized(request.headers.get("Authorization")):
        return await handler(request)
    return text(401, "authentication required", {"WWW-Authenticate": 'Basic realm="fallwatch", charset="UTF-8"'})


@web.middleware
async def admit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A POST to a route that takes one passes the state-change guard (web/guard.py) and sends its body within
    BODY_DEADLINE_S; then every request takes a slot (web/limits.py) for as long as it runs."""
    debug = request.app[DEBUG]
    if request.method == "POST" and request.match_info.http_exception is None:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        refused = check_state_change(request.headers, debug.names, sockname[0] if sockname else "")
        if refused is not None:
            log.debug("debug server: POST %s from %s: %s", request.path, request.remote, refused[1])
            resp = text(*refused)
            resp.force_close()
            return resp
        await read_body(request, BODY_DEADLINE_S)
    client = request.remote or "?"
    kind = debug.slots.take(request.path, client)
    if not isinstance(kind, str):
        resp = text(kind[0], kind[1], {"Retry-After": "1"})
        resp.force_close()
        return resp
    try:
        return await handler(request)
    finally:
        debug.slots.release(kind, client)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)  # a page may set its own Content-Security-Policy
    response.headers["Server"] = SECURITY_HEADERS["Server"]  # (aiohttp has set its own by now)


async def _keep_alive_within_cap(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp closes an idle keep-alive connection after keepalive_timeout but caps not how many stay open: past
    MAX_KEPT_OPEN, an answer says ``Connection: close`` and its connection ends with it (aiohttp's force_close)."""
    if request.app[DEBUG].open_connections() > MAX_KEPT_OPEN:
        response.force_close()
        response.headers["Connection"] = "close"  # (the hook runs after aiohttp wrote its headers' values)


class _QuietLog(logging.LoggerAdapter):
    """aiohttp's own log of a malformed request or a client that left: debug, not an error with a traceback
    (anyone can send those; what they get is a one-line 400)."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("exc_info", None)
        super().log(logging.DEBUG, msg, *args, **kwargs)


class DebugServer:
    """The debug HTTP server in a background thread. ``port`` is the bound port (bind to port 0 in tests)."""

    def __init__(self, cfg: DebugConfig, hub: StatusHub, health_max_age_s: float = 5.0):
        self.cfg = cfg
        self.hub = hub
        self.health_max_age_s = health_max_age_s
        self.stopping = threading.Event()
        self.max_viewers = MAX_VIEWERS
        self._host, self._port = parse_bind(cfg.bind)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._runner: Optional[web.AppRunner] = None
        self._thread: Optional[threading.Thread] = None
        self._pool: Optional[ThreadPoolExecutor] = None
        self._viewers = 0
        self._viewers_lock = threading.Lock()
        self._credentials: Optional[bytes] = None
        self._placeholders: dict[Optional[int], bytes] = {}
        self.page = b""
        self.slots = Slots(MAX_CONNECTIONS, HEALTH_SLOTS, MAX_PER_CLIENT)
        self.records: Any = None  # the EventRecorder behind the events view, when events.enabled
        self.rule_settings: Any = None  # (camera) -> RuleSettings of the running configuration (signal plots)
        self.answer: Any = None  # (posted JSON) -> alarms closed; ValueError says why none (web/routes/alarms.py)
        self.names = server_names(self._host, cfg.hosts)  # the Host names a state-changing request may use
        self.offload = Offload()  # signal plots and clip conversions: a low-priority process, one at a time

    # ---- lifecycle ----
    def start(self) -> None:
        if self._thread is not None:
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
        self.slots = Slots(MAX_CONNECTIONS, HEALTH_SLOTS, MAX_PER_CLIENT)  # (the limits as they are now)
        self.stopping.clear()
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="debug-web-work")
        self._loop = asyncio.new_event_loop()
        started: Future[None] = Future()
        self._thread = threading.Thread(target=self._serve, args=(started,), name="debug-web", daemon=True)
        self._thread.start()
        try:
            started.result()
        except BaseException:
            self._thread.join()
            self._thread = None
            self._pool.shutdown(wait=False)
            raise
        host = f"[{self._host}]" if ":" in self._host else self._host
        log.info("debug stream on http://%s:%d/%s", host, self.port, " (basic auth)" if self._credentials else "")

    def _serve(self, started: "Future[None]") -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open())
        except BaseException as exc:
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _open(self) -> None:
        app = web.Application(middlewares=[answer_errors, authorize, admit], client_max_size=MAX_POST_BODY)
        app[DEBUG] = self
        app.router.add_routes(ROUTES)
        app.on_response_prepare.append(_security_headers)
        app.on_response_prepare.append(_keep_alive_within_cap)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_S,
            access_log=None,
            logger=_QuietLog(logging.getLogger(__name__ + ".http"), {}),
            keepalive_timeout=HEAD_DEADLINE_S,
            max_line_size=MAX_LINE,
            max_field_size=MAX_LINE,
            lingering_time=LINGER_S,  # (so the client reads the answer before the close, not a reset)
            handler_cancellation=True,  # a client that leaves ends its request (a stream frees its viewer place)
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, backlog=MAX_WAITING, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise OSError(f"debug server cannot bind {self.cfg.bind}: {e.strerror or e}") from None
        self._runner = runner

    def open_connections(self) -> int:
        """Connections open now: with a request in progress, streaming, or idle between requests (event loop only)."""
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0

    async def _close(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()  # stops listening, lets requests finish for SHUTDOWN_S, then cancels them

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or self._runner is None:
            return
        self.stopping.set()
        self.hub.wake_all()  # streams waiting for a frame notice at once
        try:
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(SHUTDOWN_S + 2)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=2)
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            self.offload.shutdown()
            self._thread = self._runner = None
        log.info("debug stream stopped")

    @property
    def port(self) -> int:
        if self._runner is None or not self._runner.addresses:
            return self._port
        return int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/"

    # ---- used by the routes ----
    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the server's thread pool (it blocks: waits, encodes, reads the disk)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

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
            if self._viewers >= self.max_viewers:
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

    @property
    def placeholders_kept(self) -> int:
        """How many 'waiting for frames' cards are kept (at most PLACEHOLDER_CACHE)."""
        with self._viewers_lock:
            return len(self._placeholders)

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
