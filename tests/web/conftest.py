"""Fixtures for the debug web tests: real decoded frames from a shared clip, a feeder thread playing the pipeline's
part, and a DebugServer on a free loopback port."""

from __future__ import annotations

import base64
import http.client
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import cv2
import numpy as np
import pytest
from fallwatch.config.schema import DebugConfig
from fallwatch.daemon.telemetry.status_hub import StatusHub
from fallwatch.daemon.web.server import DebugServer
from fallwatch.pose.types import Person
from waiting import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the test modules import records_testlib

CLIP = "Subject 1/Fall/13.mp4"  # a fall clip from the GMDCSA24 excerpt in ../shared/data


@pytest.fixture(scope="session")
def clip_path(data_dir: Path) -> Path:
    path = data_dir / "gmdcsa24-dev" / CLIP
    if not path.is_file():
        pytest.fail(f"test clip missing: {path}")
    return path


@pytest.fixture(scope="session")
def clip_frames(clip_path: Path) -> list[np.ndarray]:
    """The first 40 frames of the clip, decoded by OpenCV, as RGB (what the pipeline hands the hub)."""
    cap = cv2.VideoCapture(str(clip_path))
    frames = []
    while len(frames) < 40:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(frames) >= 20, f"could not decode {clip_path}"
    return frames


def make_person(track: int, width: int, height: int, lean_deg: float = 0.0) -> Person:
    """A plausible standing (or leaning) skeleton near the frame centre, keypoints in pixels."""
    cx, top, scale = width / 2, height * 0.15, height / 600
    # offsets (dx, dy) from the neck for COCO-17, a person ~450 px tall at 600 px frame height
    offsets = [
        (0, -40),
        (-8, -50),
        (8, -50),
        (-18, -45),
        (18, -45),
        (-45, 20),
        (45, 20),
        (-60, 110),
        (60, 110),
        (-65, 190),
        (65, 190),
        (-30, 190),
        (30, 190),
        (-32, 300),
        (32, 300),
        (-34, 400),
        (34, 400),
    ]
    rot = np.deg2rad(lean_deg)
    kps = np.zeros((17, 3), np.float32)
    for i, (dx, dy) in enumerate(offsets):
        x = dx * np.cos(rot) - dy * np.sin(rot)
        y = dx * np.sin(rot) + dy * np.cos(rot)
        kps[i] = (cx + x * scale, top + 50 * scale + y * scale, 0.8)
    x0, y0 = kps[:, 0].min() - 10, kps[:, 1].min() - 10
    x1, y1 = kps[:, 0].max() + 10, kps[:, 1].max() + 10
    return Person(
        track_id=track, box=(float(x0), float(y0), float(x1), float(y1)), score=0.9, keypoints=kps, detected=True
    )


def set_figures(hub: StatusHub, device: Optional[dict] = None, **camera) -> None:
    """Plays the daemon's report: the hub's Snapshot with these device-level and camera figures changed."""
    snap = hub.current()
    hub.publish_stats(snap.replace(**(device or {})).replace_camera(snap.camera.name, **camera))


class Feeder:
    """Plays the pipeline thread: publishes frames to the hub at `fps` until stopped."""

    def __init__(self, hub: StatusHub, frames: list[np.ndarray], fps: float = 15.0, persons: bool = True):
        self.hub, self.frames, self.fps, self.with_persons = hub, frames, fps, persons
        self.published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            frame = self.frames[i % len(self.frames)]
            h, w = frame.shape[:2]
            persons = [make_person(1, w, h), make_person(2, w, h, lean_deg=50)] if self.with_persons else []
            states = {1: "upright", 2: "falling"} if self.with_persons else {}
            self.hub.publish_frame(frame, persons, states)
            set_figures(
                self.hub,
                {"backend": "cpu"},
                fps=self.fps,
                persons=len(persons),
                frames=self.published + 1,
                stage_ms={"detect": 4.5, "pose": 7.25},
            )
            self.published += 1
            i += 1
            self._stop.wait(1.0 / self.fps)

    def start(self) -> "Feeder":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class Running:
    """A hub, its DebugServer on a free loopback port, and helpers to talk HTTP to it."""

    def __init__(self, hub: StatusHub, server: DebugServer):
        self.hub, self.server = hub, server

    @property
    def port(self) -> int:
        return self.server.port

    def request(
        self, path: str, method: str = "GET", headers: Optional[dict] = None, timeout: float = 10
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """Sends `path` byte for byte (no client-side normalisation), returns status, headers, body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def set_figures(self, device: Optional[dict] = None, **camera) -> None:
        set_figures(self.hub, device, **camera)

    def json(self, path: str, headers: Optional[dict] = None) -> tuple[int, dict]:
        status, _, body = self.request(path, headers=headers)
        return status, json.loads(body)


@pytest.fixture
def start_server() -> Callable[..., Running]:
    servers: list[DebugServer] = []

    def start(health_max_age_s: float = 5.0, **cfg) -> Running:
        cfg.setdefault("bind", "127.0.0.1:0")
        hub = StatusHub(version="9.8.7", camera="test-cam")
        server = DebugServer(DebugConfig(**cfg), hub, health_max_age_s=health_max_age_s)
        server.start()
        servers.append(server)
        return Running(hub, server)

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def feeders() -> Callable[..., Feeder]:
    made: list[Feeder] = []

    def make(hub: StatusHub, frames: list[np.ndarray], **kw) -> Feeder:
        f = Feeder(hub, frames, **kw).start()
        made.append(f)
        return f

    yield make
    for f in made:
        f.stop()


def read_mjpeg_parts(resp: http.client.HTTPResponse, boundary: str, count: int) -> list[tuple[dict, bytes]]:
    """Reads `count` parts of a multipart/x-mixed-replace body: [(part headers, payload)]."""
    parts = []
    while len(parts) < count:
        line = resp.readline()
        if not line:
            raise AssertionError(f"stream ended after {len(parts)} parts")
        if line.strip() == b"":
            continue
        assert line.rstrip(b"\r\n") == f"--{boundary}".encode(), f"expected boundary, got {line[:80]!r}"
        headers = {}
        while True:
            h = resp.readline().rstrip(b"\r\n")
            if not h:
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        payload = resp.read(int(headers["content-length"]))
        parts.append((headers, payload))
    return parts


@pytest.fixture
def mjpeg_parts() -> Callable[..., list[tuple[dict, bytes]]]:
    return read_mjpeg_parts


@pytest.fixture
def person_factory() -> Callable[..., Person]:
    return make_person


def find_chromium() -> str:
    found = next(
        (
            p
            for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
            if p and os.access(p, os.X_OK)
        ),
        None,
    )
    if not found:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run does this)")
    return found


class _Browser:
    """One headless Chromium for the whole session, driven over the DevTools protocol on a pipe (fd 3: commands in,
    fd 4: answers out; NUL-separated JSON). Each page gets a tab of its own, closed after use: starting Chromium
    costs about 1.5 s, a tab a few milliseconds. Pages load under a virtual time budget, as --virtual-time-budget
    does on the command line: the page's timers run ahead without waiting in real time."""

    def __init__(self, profile: Path):
        r3, w3 = os.pipe()
        r4, w4 = os.pipe()

        def child_fds() -> None:
            os.dup2(r3, 3)
            os.dup2(w4, 4)

        self.proc = subprocess.Popen(
            [
                find_chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--autoplay-policy=no-user-gesture-required",
                "--window-size=1024,768",
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            pass_fds=(3, 4),
            preexec_fn=child_fds,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(r3)
        os.close(w4)
        self._commands, self._answers = os.fdopen(w3, "wb", buffering=0), os.fdopen(r4, "rb", buffering=0)
        self._pending = b""
        self._count = 0
        self._events: list[dict] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._commands.close()
        self._answers.close()

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._pending:
            ready, _, _ = select.select([self._answers], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._answers.fileno(), 65536)
            assert chunk, "chromium closed its DevTools pipe"
            self._pending += chunk
        line, self._pending = self._pending.split(b"\0", 1)
        return json.loads(line)

    def call(self, method: str, params: dict, session: Optional[str] = None, check: bool = True) -> dict:
        self._count += 1
        message = {"id": self._count, "method": method, "params": params, **({"sessionId": session} if session else {})}
        self._commands.write(json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(60)
            if reply.get("id") == self._count:
                assert not check or "error" not in reply, reply
                return reply.get("result", reply)
            if "method" in reply:
                self._events.append(reply)

    def _wait_event(self, method: str, session: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self._events):
                if event["method"] == method and event.get("sessionId") == session:
                    del self._events[i]
                    return
            reply = self._read(max(0.0, deadline - time.monotonic()))
            if "method" in reply:
                self._events.append(reply)

    def page(self, url: str, budget_ms: int, use: Callable[[str], object]) -> object:
        """Load ``url`` in a new tab, let its scripts run for ``budget_ms`` of virtual time (0: until the page has
        loaded, in real time), then ``use(session)``."""
        with self._lock:
            target = self.call("Target.createTarget", {"url": url})["targetId"]
            session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            try:
                self.call(  # the page at 1024x768, as --window-size gives a screenshot on the command line
                    "Emulation.setDeviceMetricsOverride",
                    {"width": 1024, "height": 768, "deviceScaleFactor": 1, "mobile": False},
                    session,
                )
                # the page itself, loaded (evaluating in about:blank while it navigates away fails)
                assert wait_until(lambda: _loaded(self, session), 60, step=0.05), f"chromium did not load {url}"
                if budget_ms:
                    self.call(
                        "Emulation.setVirtualTimePolicy",
                        {"policy": "pauseIfNetworkFetchesPending", "budget": budget_ms},
                        session,
                    )
                    self._wait_event("Emulation.virtualTimeBudgetExpired", session, 60)
                return use(session)
            finally:
                self.call("Target.closeTarget", {"targetId": target}, check=False)
                self._events = [e for e in self._events if e.get("sessionId") != session]


def _loaded(browser: _Browser, session: str) -> bool:
    state = browser.call(
        "Runtime.evaluate",
        {"expression": "location.protocol + document.readyState", "returnByValue": True},
        session,
        check=False,
    )
    return state.get("result", {}).get("value") == "http:complete"


_BROWSER: Optional[_Browser] = None


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Browser]:
    """The session's headless Chromium (skips without chromium)."""
    global _BROWSER
    find_chromium()
    _BROWSER = _Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield _BROWSER
    finally:
        _BROWSER.close()
        _BROWSER = None


def _js(browser: _Browser, session: str, expression: str) -> object:
    result = browser.call(
        "Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}, session
    )
    assert "exceptionDetails" not in result, result
    return result["result"].get("value")


@pytest.fixture
def chromium_dom(browser: _Browser) -> Callable[..., str]:
    """dom(url, tmp_path, budget_ms=3000) -> the page's DOM as HTML after its scripts ran."""

    def dom(url: str, tmp_path: Optional[Path] = None, budget_ms: int = 3000) -> str:
        out = browser.page(url, budget_ms, lambda s: _js(browser, s, "document.documentElement.outerHTML"))
        assert isinstance(out, str) and out.startswith("<html"), out
        return out

    return dom


@pytest.fixture
def chromium_screenshot(browser: _Browser) -> Callable[..., np.ndarray]:
    """screenshot(url, tmp_path, budget_ms=4000) -> BGR image of the page at 1024x768."""

    def shot(session: str) -> np.ndarray:
        data = browser.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
        img = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None
        return img

    def screenshot(url: str, tmp_path: Optional[Path] = None, budget_ms: int = 4000) -> np.ndarray:
        img = browser.page(url, budget_ms, shot)
        assert isinstance(img, np.ndarray)
        return img

    return screenshot


@pytest.fixture
def chromium_eval(browser: _Browser) -> Callable[..., object]:
    """evaluate(url, expression, tmp_path) -> the value of ``expression`` (awaited) in the loaded page, so a test
    can click and read the page back. Real time here: the expression waits for what it needs."""

    def evaluate(url: str, expression: str, tmp_path: Optional[Path] = None) -> object:
        return browser.page(url, 0, lambda s: _js(browser, s, expression))

    return evaluate
