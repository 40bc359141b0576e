"""The live picture: ``/stream.mjpg`` (MJPEG, multipart/x-mixed-replace) and ``/latest.jpg``. Frames are
JPEG-encoded only while a client asks for them, once per frame and height however many watch (StatusHub caches
them); waiting for a frame and encoding run in the server's threads, never on the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Optional

from aiohttp import web
from fallwatch.daemon.web.responses import DEBUG, body, query_camera, query_float, query_height, text

BOUNDARY = "fallwatchframe"
MAX_STREAM_FPS = 30.0
KEEPALIVE_S = 1.0  # while no new frame comes, the last part is repeated this often
WRITE_TIMEOUT_S = 10.0  # a client that stops reading is dropped instead of holding its viewer place forever


async def latest(request: web.Request) -> web.Response:
    debug = request.app[DEBUG]
    camera, height = query_camera(request.query, debug.hub), query_height(request.query)
    jpeg = await debug.in_thread(debug.hub.latest_jpeg, height, camera)
    if jpeg is None:
        return text(503, "no frame yet")
    return body(200, jpeg, "image/jpeg")


async def stream(request: web.Request) -> web.StreamResponse:
    debug = request.app[DEBUG]
    fps = query_float(request.query, "fps", debug.cfg.stream_fps, 0.1, MAX_STREAM_FPS)
    height = query_height(request.query)
    camera = query_camera(request.query, debug.hub)
    if not debug.viewer_joined():
        return text(503, f"too many viewers (at most {debug.max_viewers})")
    try:
        resp = web.StreamResponse(headers={"Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}"})
        resp.force_close()  # a stream ends with its connection
        await resp.prepare(request)
        if request.method != "HEAD":
            try:
                await _Parts(request, resp, height, camera).run(fps)
            except (ConnectionError, asyncio.TimeoutError):  # the client left or stopped reading: nobody to answer
                pass
        return resp
    finally:
        debug.viewer_left()


class _Parts:
    """One viewer's parts: the frame thread's side (``next_frame``) and the event loop's (``run``)."""

    def __init__(self, request: web.Request, resp: web.StreamResponse, height: Optional[int], camera: Optional[str]):
        self.debug, self.resp, self.height, self.camera = request.app[DEBUG], resp, height, camera
        self.gone = threading.Event()  # the client left: a frame thread still waiting for it encodes nothing more
        self.encoding = threading.Lock()

    def next_frame(self, after: int, not_before: float) -> Optional[tuple[int, bytes]]:
        """In a thread: at ``not_before`` at the earliest (pacing to the requested fps: frames published meanwhile
        are skipped, not queued), a frame newer than ``after`` as (seq, JPEG); None for none within a while."""
        debug, hub = self.debug, self.debug.hub
        if debug.stopping.wait(max(0.0, not_before - time.monotonic())):
            return None
        snap = hub.wait_frame(after, KEEPALIVE_S / 2, self.camera)
        with self.encoding:
            if snap is None or debug.stopping.is_set() or self.gone.is_set():
                return None
            return snap.seq, hub.jpeg_for(snap, self.height)

    async def write(self, jpeg: bytes) -> None:
        # Each part is followed at once by the next boundary: browsers show a part only when they see the
        # boundary after it, so a trailing one avoids lagging a frame behind (or never showing a lone frame).
        part = f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await self.resp.write(part + f"\r\n--{BOUNDARY}\r\n".encode())

    async def run(self, fps: float) -> None:
        try:
            await self._run(fps)
        finally:
            with self.encoding:  # (waits for an encoding under way: at most one frame's, only as a viewer leaves)
                self.gone.set()

    async def _run(self, fps: float) -> None:
        debug = self.debug
        await self.resp.write(f"--{BOUNDARY}\r\n".encode())
        period = 1.0 / fps
        last_seq, last_jpeg, last_write, next_at = 0, await debug.in_thread(debug.placeholder, self.height), 0.0, 0.0
        while not debug.stopping.is_set():
            got = await debug.in_thread(self.next_frame, last_seq, next_at)
            if debug.stopping.is_set():
                break
            if got is None:
                # No new frame (none yet, or the source stopped): repeat the last part now and then. The bytes are
                # kept, so this costs no encoding, and a client that went away is noticed.
                if time.monotonic() - last_write >= KEEPALIVE_S or last_seq == 0:
                    await self.write(last_jpeg)
                    last_write = time.monotonic()
                continue
            next_at = time.monotonic() + period
            last_seq, last_jpeg = got
            await self.write(last_jpeg)
            last_write = time.monotonic()
