"""The debug page's answers to open alarms: ``POST /api/alarms`` with ``{"ack": "<id>"}`` or
``{"false_alarm": "<id>"}`` (``"all"`` and ``"camera"`` as in the MQTT command); answered by "page".

Only the page itself may post: the body must be JSON (``Content-Type: application/json``, which a cross-site form
cannot send without a CORS preflight this server never grants), and a browser's ``Origin`` / ``Sec-Fetch-Site``,
when present, must be this server's own origin. ``GET /api/alarms`` lists the open alarms.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, Optional
from urllib.parse import urlsplit

MAX_BODY = 4096
PATH = "/api/alarms"


def cross_site(headers: Any) -> Optional[str]:
    """Why a POST does not come from this server's own page, or None when it does."""
    ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return f"expected Content-Type: application/json, got {ctype or 'none'}"
    site = headers.get("Sec-Fetch-Site")
    if site and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = headers.get("Origin")
    if origin:
        host = (headers.get("Host") or "").lower()
        if urlsplit(origin).netloc.lower() != host:
            return f"cross-origin request refused (Origin {origin[:80]} is not this server, {host[:80]})"
    return None


def serve(handler: Any, head: bool) -> None:
    debug = handler.server.debug
    if handler.command != "POST":
        handler._json(HTTPStatus.OK, {"alarms": debug.snapshot().to_json()["alarms"]}, head)
        return
    refused = cross_site(handler.headers)
    if refused:
        handler.close_connection = True
        handler._send(HTTPStatus.FORBIDDEN, f"{refused}\n".encode(), "text/plain; charset=utf-8")
        return
    try:
        length = int(handler.headers.get("Content-Length") or 0)
    except ValueError:
        length = -1
    if not 0 < length <= MAX_BODY:
        handler.close_connection = True
        handler._send(HTTPStatus.BAD_REQUEST, b'expected a JSON body {"ack": "<id>"}\n', "text/plain; charset=utf-8")
        return
    try:
        body = json.loads(handler.rfile.read(length).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        handler._send(HTTPStatus.BAD_REQUEST, b"body is not JSON\n", "text/plain; charset=utf-8")
        return
    if debug.answer is None:
        handler._send(HTTPStatus.SERVICE_UNAVAILABLE, b"no alarms are kept here\n", "text/plain; charset=utf-8")
        return
    try:
        closed = debug.answer(body)
    except ValueError as exc:
        status = HTTPStatus.NOT_FOUND if str(exc).startswith("no open alarm") else HTTPStatus.BAD_REQUEST
        handler._send(status, f"{exc}\n".encode(), "text/plain; charset=utf-8")
        return
    handler._json(HTTPStatus.OK, {"closed": closed}, False)
