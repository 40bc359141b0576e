"""The debug server's one route table: every path it answers and the methods each takes (a GET route answers HEAD
too). Exact paths and one record-id segment; nothing is resolved against the file system. aiohttp answers a path
not here with 404 and a method not listed for a path with 405 (web/server.py words both in one line)."""

from __future__ import annotations

from aiohttp import web
from fallwatch.daemon.web.routes import alarms, records, static, status, stream

ROUTES = [
    web.get("/", static.page),
    web.get("/index.html", static.page),
    *(web.get(path, static.packaged_file) for path in static.FILES),  # the events page and what it loads
    web.get("/stream.mjpg", stream.stream),
    web.get("/latest.jpg", stream.latest),
    web.get("/healthz", status.healthz),
    web.get("/metrics", status.metrics),
    web.get("/api/stats", status.stats),
    web.get("/api/events", status.events),
    web.get("/api/alarms", alarms.open_alarms),
    web.post("/api/alarms", alarms.answer),
    web.get("/api/records", records.listing),
    web.get("/api/records/{id}/clip", records.clip),
    web.get("/api/records/{id}/snapshot.jpg", records.snapshot),
    web.get("/api/records/{id}/signals", records.signals),
    web.post("/api/records/{id}/label", records.label),
]
