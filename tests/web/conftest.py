"""Fixtures for the debug web tests: real decoded frames from a shared clip, a feeder thread playing the pipeline's
part, and a DebugServer on a free loopback port."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np
import pytest
from fallwatch.config.schema import DebugConfig
from fallwatch.daemon.status import StatusHub
from fallwatch.daemon.web import DebugServer
from fallwatch.pose.types import Person
from waiting import wait_until

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


def _chromium(
    url: str, tmp_path: Path, profile: str, budget_ms: int, args: list[str], what: str
) -> tuple[str, str, int]:
    """Run headless Chromium on ``url`` once: (stdout, stderr, return code). Its own session, so a hung chromium and
    all its helper processes can be killed together."""
    cmd = [
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
        f"--user-data-dir={tmp_path / profile}",
        "--window-size=1024,768",
        f"--virtual-time-budget={budget_ms}",
        *args,
        url,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not {what} within 120 s")
    return out, stderr, proc.returncode


def _screenshot(url: str, tmp_path: Path, budget_ms: int = 4000) -> np.ndarray:
    shot = tmp_path / "shot.png"
    _, stderr, rc = _chromium(url, tmp_path, "profile", budget_ms, [f"--screenshot={shot}"], "finish its screenshot")
    assert shot.is_file(), f"chromium wrote no screenshot (rc {rc}): {stderr[-2000:]}"
    img = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def _dump_dom(url: str, tmp_path: Path, budget_ms: int = 3000) -> str:
    out, stderr, rc = _chromium(url, tmp_path, "profile-dom", budget_ms, ["--dump-dom"], "dump the page")
    assert "<html" in out, f"chromium dumped no page (rc {rc}): {stderr[-2000:]}"
    return out


@pytest.fixture
def chromium_dom() -> Callable[..., str]:
    """dom(url, tmp_path, budget_ms=3000) -> the page's DOM as HTML after its scripts ran (skips without chromium)."""
    find_chromium()
    return _dump_dom


@pytest.fixture
def chromium_screenshot() -> Callable[..., np.ndarray]:
    """screenshot(url, tmp_path, budget_ms=4000) -> BGR image of the page at 1024x768 (skips without chromium)."""
    find_chromium()
    return _screenshot


def _evaluate(url: str, expression: str, tmp_path: Path) -> object:
    """Open ``url`` in headless Chromium and evaluate ``expression`` (awaited) in the page, over the DevTools
    protocol on a pipe (fd 3: commands in, fd 4: answers out; NUL-separated JSON), so a test can click."""
    r3, w3 = os.pipe()
    r4, w4 = os.pipe()

    def child_fds() -> None:
        os.dup2(r3, 3)
        os.dup2(w4, 4)

    proc = subprocess.Popen(
        [
            find_chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--window-size=1024,768",
            f"--user-data-dir={tmp_path / 'cdp-profile'}",
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
    commands, answers = os.fdopen(w3, "wb", buffering=0), os.fdopen(r4, "rb", buffering=0)
    pending = b""
    count = 0

    def call(method: str, params: dict, session: Optional[str] = None, check: bool = True) -> dict:
        nonlocal pending, count
        count += 1
        message = {"id": count, "method": method, "params": params, **({"sessionId": session} if session else {})}
        commands.write(json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in pending:
                chunk = answers.read(65536)
                assert chunk, "chromium closed its DevTools pipe"
                pending += chunk
            line, pending = pending.split(b"\0", 1)
            reply = json.loads(line)
            if reply.get("id") == count:
                assert not check or "error" not in reply, reply
                return reply.get("result", reply)

    timer = threading.Timer(120, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    try:
        target = call("Target.createTarget", {"url": url})["targetId"]
        session = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

        # wait for the page itself (evaluating in about:blank while it navigates away fails)
        def loaded() -> bool:
            state = call(
                "Runtime.evaluate",
                {"expression": "location.protocol + document.readyState", "returnByValue": True},
                session,
                check=False,
            )
            return state.get("result", {}).get("value") == "http:complete"

        assert wait_until(loaded, 60, step=0.1), f"chromium did not load {url}"
        result = call(
            "Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}, session
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")
    finally:
        timer.cancel()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        commands.close()
        answers.close()


@pytest.fixture
def chromium_eval() -> Callable[..., object]:
    """evaluate(url, expression, tmp_path) -> the value of ``expression`` (awaited) in the loaded page, so a test
    can click and read the page back (skips without chromium)."""
    find_chromium()
    return _evaluate
