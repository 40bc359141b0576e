"""The debug page's answers to open alarms: ``POST /api/alarms`` with ``{"ack": "<id>"}`` or
``{"false_alarm": "<id>"}`` (``"all"`` and ``"camera"`` as in the MQTT command); answered by "page". Only the page
itself may post: the server passes every POST through the state-change guard (web/guard.py: Host, Origin, JSON)
and reads its body within a deadline first. ``GET /api/alarms`` lists the open alarms.
"""

from __future__ import annotations

import json

from aiohttp import web
from fallwatch.daemon.web.responses import DEBUG, json_response, text

MAX_BODY = 4096


async def open_alarms(request: web.Request) -> web.Response:
    return json_response({"alarms": request.app[DEBUG].snapshot().to_json()["alarms"]})


async def answer(request: web.Request) -> web.Response:
    debug = request.app[DEBUG]
    data = await request.read()  # already read by the server, within its deadline
    if not 0 < len(data) <= MAX_BODY:
        return text(400, 'expected a JSON body {"ack": "<id>"}')
    try:
        posted = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return text(400, "body is not JSON")
    if debug.answer is None:
        return text(503, "no alarms are kept here")
    try:
        closed = await debug.in_thread(debug.answer, posted)  # publishes over MQTT, writes the alarms' state
    except ValueError as exc:
        return text(404 if str(exc).startswith("no open alarm") else 400, str(exc))
    return json_response({"closed": closed})
