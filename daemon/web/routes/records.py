"""The events view's records API (the page is routes/static.py's ``/events.html``):

GET  /api/records[?camera=NAME]            every record's event JSON (each names its camera), newest first; or
                                           those of one camera (404 for a name that is neither a camera nor in
                                           any record); "skipped": [{"id", "problem"}] of damaged ones
GET  /api/records/<id>/clip                the clip (Range requests answered, so browsers can seek)
GET  /api/records/<id>/snapshot.jpg        the annotated snapshot
GET  /api/records/<id>/signals             the rule's signals over the clip's span and the thresholds
POST /api/records/<id>/label               {"label": "fall" | "false_alarm"}

An id must match the recorder's id pattern; a file name is never taken from a request. Everything here reads the
disk or waits for the offload worker (web/offload.py: signals and first-view clip conversions, low priority, one
at a time, results kept), so it runs in the server's threads, never on the event loop.
"""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path
from typing import Any, Callable, Optional

from aiohttp import web
from fallwatch.daemon.records.clips import ClipNotConverted, playable_clip
from fallwatch.daemon.records.store import ID_RE
from fallwatch.daemon.web.offload import Busy
from fallwatch.daemon.web.responses import DEBUG, NotFound, body, json_response, text
from fallwatch.daemon.web.signal_plot import record_signals

MAX_BODY = 4096
RECORDS_OFF = "event records are off (events.enabled: false)"


async def listing(request: web.Request) -> web.Response:
    debug = request.app[DEBUG]
    if debug.records is None:
        return json_response({"enabled": False, "records": []})
    camera = request.query.get("camera", "")
    listed = await debug.in_thread(debug.records.listing)  # damaged event.json files are named in "skipped"
    records = [r for r in listed.records if not camera or r.get("camera") == camera]
    if camera and not records and not debug.hub.has_camera(camera):  # a camera taken out keeps its records
        return text(404, f"no camera {camera!r}; the cameras are {', '.join(debug.hub.cameras)}")
    return json_response({"enabled": True, "records": records, "skipped": listed.skipped})


async def clip(request: web.Request) -> web.Response:
    return await _in_record(request, _clip)


async def snapshot(request: web.Request) -> web.Response:
    return await _in_record(request, lambda debug, folder, meta, range_: _file(folder / "snapshot.jpg", "image/jpeg"))


async def signals(request: web.Request) -> web.Response:
    return await _in_record(request, _signals)


async def label(request: web.Request) -> web.Response:
    debug, event_id = request.app[DEBUG], request.match_info["id"]
    if debug.records is None:
        return text(404, RECORDS_OFF)
    data = await request.read()  # already read by the server, within its deadline
    if not 0 < len(data) <= MAX_BODY:
        return text(400, 'expected a JSON body {"label": ...}')
    try:
        posted = json.loads(data.decode("utf-8"))
        value = posted.get("label") if isinstance(posted, dict) else None
    except (ValueError, UnicodeDecodeError):
        return text(400, "body is not JSON")
    return await debug.in_thread(_label, debug.records, event_id, value)


def _label(records: Any, event_id: str, value: Any) -> web.Response:
    if not ID_RE.match(event_id) or records.record_dir(event_id) is None:
        return text(404, "no such event record")
    try:
        records.label(event_id, value)
    except ValueError as exc:
        return text(400, str(exc))
    except OSError as exc:
        return text(507, f"label not stored: {exc.strerror or exc}")
    return json_response({"id": event_id, "label": value})


Answer = Callable[[Any, Path, dict, Optional[str]], web.Response]


async def _in_record(request: web.Request, answer: Answer) -> web.Response:
    """``answer(debug, folder, event meta, Range header)`` in a thread, for the record the path names."""
    debug, event_id = request.app[DEBUG], request.match_info["id"]
    if debug.records is None:
        return text(404, RECORDS_OFF)

    def run() -> web.Response:
        folder = debug.records.record_dir(event_id) if ID_RE.match(event_id) else None
        if folder is None:
            return text(404, "no such event record")
        meta = json.loads((folder / "event.json").read_text())
        try:
            return answer(debug, folder, meta, request.headers.get("Range"))
        except Busy as exc:
            return text(503, f"{exc}; try again", {"Retry-After": "5"})

    return await debug.in_thread(run)


def _clip(debug: Any, folder: Path, meta: dict, range_: Optional[str]) -> web.Response:
    try:
        found = playable_clip(folder, debug.offload) if meta.get("clip") else None
    except ClipNotConverted as exc:
        status = 507 if exc.errno == errno.ENOSPC else 500
        return text(status, f"clip not converted for the browser: {exc.strerror}")
    if found is None:
        return text(404, "this record has no clip")
    return _file(found[0], found[1], range_)


def _signals(debug: Any, folder: Path, meta: dict, range_: Optional[str]) -> web.Response:
    """The record's signal plot as JSON, made once per record and rule settings by the offload worker (and kept
    as the bytes sent: pollers cost no serialising either)."""
    # the rules of the record's own camera (each camera may have its own)
    settings = debug.rule_settings(meta.get("camera")) if debug.rule_settings is not None else None
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
    plot = debug.offload.run(key, record_signals, str(pose), settings, meta.get("track"), extra)
    return body(200, plot, "application/json")


def _file(path: Path, ctype: str, range_: Optional[str] = None) -> web.Response:
    """A whole file, or the one byte range asked for (video elements seek with Range requests). Not aiohttp's
    FileResponse: a Range of thousands of digits must be a 416 or the file's end, not int()'s ValueError."""
    try:
        data = path.read_bytes()
    except OSError:
        return text(404, "not found")
    headers = {"Accept-Ranges": "bytes"}
    match = re.match(r"^bytes=(\d*)-(\d*)$", (range_ or "").strip())
    if match and (match.group(1) or match.group(2)) and data:
        first, last = match.groups()
        if first:
            start, end = _offset(first), min(_offset(last) if last else len(data) - 1, len(data) - 1)
        else:
            start, end = max(0, len(data) - _offset(last)), len(data) - 1
        if start >= len(data) or start > end:
            return body(416, b"", ctype, {"Content-Range": f"bytes */{len(data)}"})
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return body(206, data[start : end + 1], ctype, headers)
    return body(200, data, ctype, headers)


def _offset(digits: str) -> int:
    """A byte offset of a Range header; one past any file for more digits than a file size has (int() refuses
    strings of more than 4300 digits, and a number that long means nothing here)."""
    return int(digits) if len(digits) <= 18 else 10**18
