"""The debug server's events view: the page, its vendored chart library, and the records API.

GET  /events.html                          the page (list, clip, signal plot, label buttons)
GET  /vendor/uPlot.iife.min.js, uPlot.min.css   uPlot, vendored (no network at run time)
GET  /signal_plot.js                       the signal plot (shared with `replay --plot`)
GET  /api/records[?camera=NAME]            every record's event JSON (each names its camera), newest first; or
                                           those of one camera (404 for a name that is neither a camera nor in
                                           any record); "skipped": [{"id", "problem"}] of damaged ones
GET  /api/records/<id>/clip                the clip (Range requests answered, so browsers can seek)
GET  /api/records/<id>/snapshot.jpg        the annotated snapshot
GET  /api/records/<id>/signals             the rule's signals over the clip's span and the thresholds
POST /api/records/<id>/label               {"label": "fall" | "false_alarm"}

Paths are matched against this fixed table and an id pattern; a file name is never taken from a request.
The caller (web/server.py) has already checked the page's auth, and for the POST the state-change guard (web/guard.py).
Signals and first-view clip conversions run in the server's offload worker (web/offload.py: low priority, one at a
time, results kept).
"""

from __future__ import annotations

import errno
import json
import re
from http import HTTPStatus
from pathlib import Path
from typing import Any, Optional

from fallwatch.daemon.records.clips import ClipNotConverted, playable_clip
from fallwatch.daemon.records.store import ID_RE
from fallwatch.daemon.web.offload import Busy
from fallwatch.daemon.web.server import NotFound

STATIC_DIR = Path(__file__).resolve().parent / "static"
VENDOR = {
    "/vendor/uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "/vendor/uPlot.min.css": ("vendor/uPlot.min.css", "text/css; charset=utf-8"),
    "/signal_plot.js": ("signal_plot.js", "text/javascript; charset=utf-8"),
}
RECORD_RE = re.compile(r"^/api/records/([^/]+)/(clip|snapshot\.jpg|signals|label)$")
MAX_BODY = 4096
# The events page loads the vendored script and plays clips from this server, nothing else.
PAGE_CSP = (
    "default-src 'none'; img-src 'self'; media-src 'self'; connect-src 'self'; style-src 'self' "
    "'unsafe-inline'; script-src 'self' 'unsafe-inline'"
)


def handles(path: str) -> bool:
    return path == "/events.html" or path in VENDOR or path == "/api/records" or RECORD_RE.match(path) is not None


def _static(name: str) -> bytes:
    return (STATIC_DIR / name).read_bytes()


def serve(handler: Any, method: str, path: str, head: bool, query: Optional[dict[str, list[str]]] = None) -> None:
    """Answer one request for a path ``handles`` accepted (``query``: its parsed query string)."""
    debug = handler.server.debug
    records = getattr(debug, "records", None)
    if path == "/events.html":
        handler._send(
            HTTPStatus.OK,
            _static("events.html"),
            "text/html; charset=utf-8",
            head,
            {"Content-Security-Policy": PAGE_CSP},
        )
        return
    if path in VENDOR:
        name, ctype = VENDOR[path]
        handler._send(HTTPStatus.OK, _static(name), ctype, head)
        return
    if records is None:
        if path == "/api/records" and method == "GET":
            handler._json(HTTPStatus.OK, {"enabled": False, "records": []}, head)
        else:
            handler._send(
                HTTPStatus.NOT_FOUND,
                b"event records are off (events.enabled: false)\n",
                "text/plain; charset=utf-8",
                head,
            )
        return
    if path == "/api/records":
        if method != "GET":
            return _method_not_allowed(handler, "GET, HEAD")
        camera = (query or {}).get("camera", [""])[-1]
        listing = records.listing()  # damaged event.json files are skipped there and named in "skipped"
        listed = [r for r in listing.records if not camera or r.get("camera") == camera]
        if camera and not listed and not debug.hub.has_camera(camera):  # a camera taken out keeps its records
            handler._send(
                HTTPStatus.NOT_FOUND,
                f"no camera {camera!r}; the cameras are {', '.join(debug.hub.cameras)}\n".encode(),
                "text/plain; charset=utf-8",
                head,
            )
            return
        handler._json(HTTPStatus.OK, {"enabled": True, "records": listed, "skipped": listing.skipped}, head)
        return
    match = RECORD_RE.match(path)
    assert match is not None  # every other path handles() accepts was answered above
    event_id, what = match.groups()
    if (what == "label") != (method == "POST"):
        return _method_not_allowed(handler, "POST" if what == "label" else "GET, HEAD")
    if what == "label":
        return _label(handler, records, event_id)
    folder = records.record_dir(event_id) if ID_RE.match(event_id) else None
    if folder is None:
        handler._send(HTTPStatus.NOT_FOUND, b"no such event record\n", "text/plain; charset=utf-8", head)
        return
    meta = json.loads((folder / "event.json").read_text())
    if what == "snapshot.jpg":
        _file(handler, folder / "snapshot.jpg", "image/jpeg", head)
    elif what == "clip":
        try:
            clip = playable_clip(folder, debug.offload) if meta.get("clip") else None
        except Busy as exc:
            _busy(handler, exc, head)
            return
        except ClipNotConverted as exc:
            status = HTTPStatus.INSUFFICIENT_STORAGE if exc.errno == errno.ENOSPC else HTTPStatus.INTERNAL_SERVER_ERROR
            text = f"clip not converted for the browser: {exc.strerror}\n"
            handler._send(status, text.encode(), "text/plain; charset=utf-8", head)
            return
        if clip is None:
            handler._send(HTTPStatus.NOT_FOUND, b"this record has no clip\n", "text/plain; charset=utf-8", head)
            return
        _file(handler, clip[0], clip[1], head)
    else:
        try:
            handler._send(HTTPStatus.OK, _signals(debug, folder, meta), "application/json", head)
        except Busy as exc:
            _busy(handler, exc, head)


def _busy(handler: Any, exc: Exception, head: bool) -> None:
    handler._send(
        HTTPStatus.SERVICE_UNAVAILABLE,
        f"{exc}; try again\n".encode(),
        "text/plain; charset=utf-8",
        head,
        {"Retry-After": "5"},
    )


def _signals(debug: Any, folder: Path, meta: dict) -> bytes:
    """The record's signal plot as JSON, made once per record and rule settings by the offload worker (and kept
    as the bytes sent: pollers cost no serialising either)."""
    # the rules of the record's own camera (each camera may have its own)
    settings = debug.rule_settings(meta.get("camera")) if getattr(debug, "rule_settings", None) else None
    if settings is None:
        from fallwatch.rules.base import RuleSettings

        settings = RuleSettings()
    pose = folder / "pose.jsonl"
    try:
        stat = pose.stat()
    except FileNotFoundError:
        raise NotFound("this record has no pose recording") from None
    extra = {"event_t": meta.get("t"), "event": meta.get("event")}
    key = ("signals", str(pose), stat.st_mtime_ns, stat.st_size, repr(settings), meta.get("track"), repr(extra))
    return debug.offload.run(key, record_signals, str(pose), settings, meta.get("track"), extra)


def record_signals(pose_path: str, settings: Any, track: Optional[int], extra: dict) -> bytes:
    """The rule's signals over a record's pose recording and ``extra``, as JSON (runs in the offload worker)."""
    from fallwatch.rules.recording import read_recording
    from fallwatch.rules.signals import fall_signals

    out = {**fall_signals(list(read_recording(Path(pose_path))), settings, track=track), **extra}
    return json.dumps(out, default=str, allow_nan=False).encode()


def _label(handler: Any, records: Any, event_id: str) -> None:
    if not 0 < len(handler.body) <= MAX_BODY:  # the body was read by web/server.py, within its deadline
        handler._send(HTTPStatus.BAD_REQUEST, b'expected a JSON body {"label": ...}\n', "text/plain; charset=utf-8")
        return
    try:
        body = json.loads(handler.body.decode("utf-8"))
        label = body.get("label") if isinstance(body, dict) else None
    except (ValueError, UnicodeDecodeError):
        handler._send(HTTPStatus.BAD_REQUEST, b"body is not JSON\n", "text/plain; charset=utf-8")
        return
    if records.record_dir(event_id) is None:
        handler._send(HTTPStatus.NOT_FOUND, b"no such event record\n", "text/plain; charset=utf-8")
        return
    try:
        records.label(event_id, label)
    except ValueError as exc:
        handler._send(HTTPStatus.BAD_REQUEST, f"{exc}\n".encode(), "text/plain; charset=utf-8")
        return
    except OSError as exc:
        handler._send(
            HTTPStatus.INSUFFICIENT_STORAGE,
            f"label not stored: {exc.strerror or exc}\n".encode(),
            "text/plain; charset=utf-8",
        )
        return
    handler._json(HTTPStatus.OK, {"id": event_id, "label": label}, False)


def _method_not_allowed(handler: Any, allow: str) -> None:
    handler.close_connection = True
    handler._send(
        HTTPStatus.METHOD_NOT_ALLOWED,
        b"method not allowed\n",
        "text/plain; charset=utf-8",
        headers={"Allow": allow, "Connection": "close"},
    )


def _file(handler: Any, path: Path, ctype: str, head: bool) -> None:
    """A whole file, or the one byte range asked for (video elements seek with Range requests)."""
    try:
        data = path.read_bytes()
    except OSError:
        handler._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", head)
        return
    extra = {"Accept-Ranges": "bytes"}
    match = re.match(r"^bytes=(\d*)-(\d*)$", (handler.headers.get("Range") or "").strip())
    if match and (match.group(1) or match.group(2)) and data:
        first, last = match.groups()
        if first:
            start, end = _offset(first), min(_offset(last) if last else len(data) - 1, len(data) - 1)
        else:
            start, end = max(0, len(data) - _offset(last)), len(data) - 1
        if start >= len(data) or start > end:
            handler._send(
                HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"", ctype, head, {"Content-Range": f"bytes */{len(data)}"}
            )
            return
        extra["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        handler._send(HTTPStatus.PARTIAL_CONTENT, data[start : end + 1], ctype, head, extra)
        return
    handler._send(HTTPStatus.OK, data, ctype, head, extra)


def _offset(digits: str) -> int:
    """A byte offset of a Range header; one past any file for more digits than a file size has (int() refuses
    strings of more than 4300 digits, and a number that long means nothing here)."""
    return int(digits) if len(digits) <= 18 else 10**18
