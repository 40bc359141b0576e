"""How the daemon is doing, as views of its one Snapshot (daemon/telemetry/snapshot.py): ``/healthz`` for
watchdogs, ``/api/stats`` and ``/api/events`` for the page, ``/metrics`` for Prometheus."""

from __future__ import annotations

from aiohttp import web
from fallwatch.daemon.telemetry.jsonsafe import plain
from fallwatch.daemon.telemetry.snapshot import metrics as metrics_text
from fallwatch.daemon.web.responses import DEBUG, body, json_response, query_camera
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4


async def healthz(request: web.Request) -> web.Response:
    ok, answer = request.app[DEBUG].health()
    return json_response(answer, 200 if ok else 503)


async def stats(request: web.Request) -> web.Response:
    return json_response(plain(request.app[DEBUG].stats()))


async def events(request: web.Request) -> web.Response:
    hub = request.app[DEBUG].hub
    return json_response(plain({"events": hub.recent_events(query_camera(request.query, hub))}))


async def metrics(request: web.Request) -> web.Response:
    return body(200, metrics_text(request.app[DEBUG].snapshot()), CONTENT_TYPE_PLAIN_0_0_4)
