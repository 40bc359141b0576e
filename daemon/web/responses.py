"""What every route of the debug server answers with: one-line plain-text errors, strict JSON, and the query
parameters the image routes take (a bad value is a 400 naming it, an unknown camera a 404 naming the cameras)."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Mapping, Optional

from aiohttp import web
from fallwatch.daemon.telemetry.status_hub import StatusHub

if TYPE_CHECKING:
    from fallwatch.daemon.web.server import DebugServer

DEBUG: "web.AppKey[DebugServer]" = web.AppKey("debug")  # request.app[DEBUG]: the server a route answers for

MAX_HEIGHT = 2160
TEXT = "text/plain; charset=utf-8"


class BadRequest(ValueError):
    """A query parameter is out of range; answered with 400 and the message."""


class NotFound(ValueError):
    """What a request names does not exist (a camera, a record's pose file); answered with 404 and the message."""


def body(status: int, data: bytes, ctype: str, headers: Optional[Mapping[str, str]] = None) -> web.Response:
    return web.Response(status=status, body=data, headers={"Content-Type": ctype, **(headers or {})})


def text(status: int, line: str, headers: Optional[Mapping[str, str]] = None) -> web.Response:
    """A one-line plain-text answer (every error of this server is one)."""
    return body(status, f"{line}\n".encode("utf-8", "replace"), TEXT, headers)


def json_response(obj: Any, status: int = 200) -> web.Response:
    """Strict JSON (no NaN: the callers pass figures through telemetry.jsonsafe.plain first)."""
    return body(status, json.dumps(obj, default=str, allow_nan=False).encode(), "application/json")


def query_float(query: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo:g} and {hi:g}, got {raw!r}")
    return value


def query_height(query: Mapping[str, str]) -> Optional[int]:
    raw = query.get("height", "")
    if raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or not 16 <= int(raw) <= MAX_HEIGHT:  # isdigit() alone takes '²'
        raise BadRequest(f"height must be an integer between 16 and {MAX_HEIGHT}, got {raw!r}")
    return int(raw)


def query_camera(query: Mapping[str, str], hub: StatusHub) -> Optional[str]:
    """``?camera=NAME``: one of the hub's cameras; none (or empty) is the first camera."""
    name = query.get("camera", "")
    if not name:
        return None
    if not hub.has_camera(name):
        raise NotFound(f"no camera {name!r}; the cameras are {', '.join(hub.cameras)}")
    return name
