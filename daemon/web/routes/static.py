"""The pages and the files they load, from the package's static/ folder by a fixed table: a file name is never
taken from a request."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from aiohttp import web
from fallwatch.daemon.web.responses import DEBUG, body

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# The events page loads the vendored script and plays clips from this server, nothing else.
EVENTS_PAGE_CSP = (
    "default-src 'none'; img-src 'self'; media-src 'self'; connect-src 'self'; style-src 'self' "
    "'unsafe-inline'; script-src 'self' 'unsafe-inline'"
)
FILES = {  # path -> (file under static/, content type)
    "/events.html": ("events.html", "text/html; charset=utf-8"),
    "/vendor/uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "/vendor/uPlot.min.css": ("vendor/uPlot.min.css", "text/css; charset=utf-8"),
    "/signal_plot.js": ("signal_plot.js", "text/javascript; charset=utf-8"),
}


@lru_cache(maxsize=None)
def _read(name: str) -> bytes:
    return (STATIC_DIR / name).read_bytes()


async def page(request: web.Request) -> web.Response:
    """The live page (read once at start: a missing page stops the server from starting, not a request)."""
    return body(200, request.app[DEBUG].page, "text/html; charset=utf-8")


async def packaged_file(request: web.Request) -> web.Response:
    name, ctype = FILES[request.path]
    headers = {"Content-Security-Policy": EVENTS_PAGE_CSP} if name == "events.html" else {}
    return body(200, _read(name), ctype, headers)
