"""The two limits aiohttp does not have: requests in progress counted per kind and per client address (with slots
kept for /healthz and /metrics), and a POST body read within a deadline before its request takes a slot.

aiohttp itself bounds the rest (web/server.py configures it): a connection must send its whole request head within
the keep-alive timeout (HEAD_DEADLINE_S), header and line sizes, the body size (client_max_size). No thread is held
by a waiting or slow connection, so a slot is only ever taken by a request the server is working on.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Union

from aiohttp import web

log = logging.getLogger(__name__)

HEALTH_ROUTES = ("/healthz", "/metrics")


@dataclass
class Slots:
    """Requests in progress. ``total`` at once (any route), ``per_client`` of them from one address; /healthz and
    /metrics first take one of their own ``health`` slots and count against no client, so a watchdog or Prometheus
    still gets an answer while every other slot is busy. Used from the event loop only (no lock)."""

    total: int
    health: int
    per_client: int
    _per_client: dict[str, int] = field(default_factory=dict)
    _logged: set[int] = field(default_factory=set)

    def take(self, path: str, client: str) -> Union[str, tuple[int, str]]:
        """The kind of slot taken (give it back with ``release``), or the refusal (status, one line)."""
        if path in HEALTH_ROUTES and self.health > 0:
            self.health -= 1
            return "health"
        if path not in HEALTH_ROUTES and self._per_client.get(client, 0) >= self.per_client:
            refused: tuple[int, str] = (
                HTTPStatus.TOO_MANY_REQUESTS,
                f"too many requests at once from your address (at most {self.per_client})",
            )
            self._log_once(
                refused[0],
                "debug server: %s has %d requests in progress; answering 429 to more",
                client,
                self.per_client,
            )
            return refused
        if self.total > 0:
            self.total -= 1
            if path in HEALTH_ROUTES:
                return "any"
            self._per_client[client] = self._per_client.get(client, 0) + 1
            return "client"
        self._log_once(
            HTTPStatus.SERVICE_UNAVAILABLE, "debug server: every slot is busy; answering 503 until some finish"
        )
        return HTTPStatus.SERVICE_UNAVAILABLE, "busy, try again"

    def release(self, kind: str, client: str) -> None:
        if kind == "health":
            self.health += 1
            return
        self.total += 1
        if kind == "client":
            left = self._per_client.pop(client) - 1
            if left:
                self._per_client[client] = left

    def _log_once(self, status: int, message: str, *args: object) -> None:
        if status not in self._logged:  # a flood of refusals is one warning, not one per request
            self._logged.add(status)
            log.warning(message, *args)


async def read_body(request: web.Request, deadline_s: float) -> bytes:
    """The request's body (aiohttp keeps it: the route's ``await request.read()`` gets the same bytes), within
    ``deadline_s`` in total: a client dripping its body byte by byte runs out of time. Raises HTTPRequestTimeout,
    or aiohttp's HTTPRequestEntityTooLarge past the application's client_max_size."""
    try:
        return await asyncio.wait_for(request.read(), deadline_s)
    except asyncio.TimeoutError:
        raise web.HTTPRequestTimeout(text=f"request body not complete within {deadline_s:g} s") from None
