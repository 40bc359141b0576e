"""The debug page's answers to open alarms: ``POST /api/alarms`` with ``{"ack": "<id>"}`` or
``{"false_alarm": "<id>"}`` (``"all"`` and ``"camera"`` as in the MQTT command); answered by "page". Only the page
itself may post: server.py passes every POST through the state-change guard (guard.py: Host, Origin, JSON) first.
``GET /api/alarms`` lists the open alarms.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

MAX_BODY = 4096
PATH = "/api/alarms"


def serve(handler: Any, head: bool) -> None:
    debug = handler.server.debug
    if handler.command != "POST":
        handler._json(HTTPStatus.OK, {"alarms": debug.snapshot().to_json()["alarms"]}, head)
        return
    if not 0 < len(handler.body) <= MAX_BODY:  # the body was read by web/server.py, within its deadline
        handler._send(HTTPStatus.BAD_REQUEST, b'expected a JSON body {"ack": "<id>"}\n', "text/plain; charset=utf-8")
        return
    try:
        body = json.loads(handler.body.decode("utf-8"))
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
