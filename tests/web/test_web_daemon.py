"""The debug server inside a real `fallwatch run` (real models, real video decoding), over real HTTP."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import pytest
import yaml
from fallwatch.config.schema import DebugConfig
from fallwatch.daemon.web.server import DebugServer
from testnet import free_port
from waiting import wait_until

# 8.9 s at 15 fps, 640x480: time to look while it plays (the checks take ~2 s), and it ends soon after.
PLAYED_CLIP = "Subject 2/Fall/13.mp4"


def _decode_small(path: Path, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """Every frame of a clip, downscaled, RGB: to recognise streamed frames."""
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    cap.release()
    assert out, f"could not decode {path}"
    return np.stack(out)


@pytest.fixture(scope="module")
def played_clip(data_dir: Path) -> tuple[Path, np.ndarray]:
    """PLAYED_CLIP and its frames, downscaled (decoded once for the module)."""
    clip = data_dir / "gmdcsa24-dev" / PLAYED_CLIP
    return clip, _decode_small(clip)


class Daemon:
    """`fallwatch run` as a subprocess with its debug server on a free loopback port."""

    def __init__(self, tmp_path: Path, model_dir: Path, source: str, camera: dict, debug: dict | None = None):
        self.port = free_port()
        cfg = {
            "camera": {"name": "webtest", **camera},
            "mqtt": {"enabled": False},
            "debug": {"enabled": True, "bind": f"127.0.0.1:{self.port}", **(debug or {})},
            "log": {"level": "INFO"},
        }
        self.config = tmp_path / "fallwatch.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.stderr = tmp_path / "daemon.log"
        env = dict(os.environ, FALLWATCH_MODEL_DIR=str(model_dir), PYTHONUNBUFFERED="1")
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "FALLWATCH_CONFIG"):
            env.pop(var, None)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fallwatch.daemon.cli.main",
                "run",
                "--config",
                str(self.config),
                "--source",
                source,
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.stderr, "wb"),
            env=env,
        )
        self.auth: dict = {}

    @property
    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def request(
        self, path: str, headers: Optional[dict] = None, timeout: float = 10
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers={**self.auth, **(headers or {})})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def health(self) -> Optional[int]:
        """/healthz status, or None when nothing listens."""
        try:
            return self.request("/healthz", timeout=2)[0]
        except OSError:
            return None

    def wait_health(self, want: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.health() == want:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"/healthz never answered {want} (rc={self.proc.poll()}):\n{self.log[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def daemons():
    made: list[Daemon] = []

    def make(*args, **kw) -> Daemon:
        d = Daemon(*args, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


@pytest.mark.slow
def test_daemon_on_a_video_file_serves_stream_stats_metrics_and_ends_unhealthy(
    tmp_path, model_dir, played_clip, daemons, mjpeg_parts
):
    clip, frames = played_clip
    secret = tmp_path / "debug_password"
    secret.write_text("open-sesame\n")
    d = daemons(
        tmp_path,
        model_dir,
        str(clip),
        camera={"realtime": True, "loop": False},
        debug={"username": "carer", "password_file": str(secret)},
    )
    deadline = time.monotonic() + 60
    while d.health() is None and time.monotonic() < deadline and d.proc.poll() is None:
        time.sleep(0.1)
    # auth is enforced before anything else is revealed
    for path in ("/healthz", "/", "/stream.mjpg", "/api/stats", "/metrics"):
        status, headers, _ = d.request(path)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic"), path
    d.auth = {"Authorization": "Basic " + base64.b64encode(b"carer:open-sesame").decode()}
    d.wait_health(200)

    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
    conn.request("GET", "/stream.mjpg?fps=10", headers=d.auth)
    resp = conn.getresponse()
    try:
        assert resp.status == 200 and resp.headers.get_content_type() == "multipart/x-mixed-replace"
        parts = mjpeg_parts(resp, resp.headers.get_param("boundary"), 3)
    finally:
        resp.close()
        conn.close()
    for headers, payload in parts:
        assert headers["content-type"] == "image/jpeg" and payload[:2] == b"\xff\xd8"
        img = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (480, 640, 3)
        small = cv2.cvtColor(cv2.resize(img, (160, 120), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        diff = np.abs(frames.astype(np.int16) - small.astype(np.int16)).mean(axis=(1, 2, 3))
        assert diff.min() < 12, f"streamed frame is not from the clip (best {diff.min():.1f})"

    # the daemon refreshes its figures once a second
    wait_until(lambda: json.loads(d.request("/api/stats")[2])["fps"], 30, step=0.1)
    status, _, body = d.request("/api/stats")
    stats = json.loads(body)
    assert status == 200 and stats["backend"] in ("cpu", "edgetpu") and stats["fps"] > 0
    assert stats["camera"] == "running" and stats["frames"] > 0 and stats["healthy"] is True
    assert stats["mqtt"]["connected"] is False and stats["mqtt"]["enabled"] is False  # mqtt.enabled: false
    # the night enhancement's figures: a daylight clip is measured and left alone
    assert stats["enhance"]["mode"] == "auto" and stats["enhance"]["on"] is False
    assert stats["enhance"]["luma"] > 80 and stats["enhance"]["enhanced_fraction"] == 0.0
    status, _, body = d.request("/metrics")
    text = body.decode()
    assert status == 200 and f'fallwatch_backend_info{{backend="{stats["backend"]}"}} 1' in text
    assert f'fallwatch_fps{{camera="{stats["camera_name"]}"}} ' in text and "fallwatch_uptime_seconds " in text
    status, _, body = d.request("/latest.jpg")
    assert status == 200 and cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR) is not None
    for path in ("/nope", "/../../etc/passwd", "/static/../../pyproject.toml", "/%2e%2e/%2e%2e/etc/passwd"):
        status, _, body = d.request(path)
        assert status == 404 and b"root:" not in body and b"[project]" not in body, path

    # At the end of the file the daemon stops: /healthz must not answer 200 again once it stopped doing so.
    seen: list[Optional[int]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        code = d.health()
        seen.append(code)
        if code is None and d.proc.poll() is not None:
            break
        time.sleep(0.02)
    assert d.proc.wait(10) == 0, d.log[-3000:]
    assert "source ended" in d.log
    first_bad = next(i for i, c in enumerate(seen) if c != 200)
    assert all(c != 200 for c in seen[first_bad:]), seen
    assert set(seen[first_bad:]) <= {503, None}, seen


@pytest.mark.slow
def test_daemon_healthz_503_while_the_camera_is_gone_and_200_when_it_is_back(
    tmp_path, model_dir, start_server, feeders, clip_frames, daemons
):
    # An IP camera: an MJPEG stream over HTTP of real decoded frames (served by a second DebugServer, no persons).
    camera = start_server()
    feeders(camera.hub, clip_frames, fps=15, persons=False)
    cam_port = camera.port
    d = daemons(tmp_path, model_dir, f"http://127.0.0.1:{cam_port}/stream.mjpg?fps=15", camera={"reopen_max_s": 1})
    d.wait_health(200)
    assert json.loads(d.request("/api/stats")[2])["camera"] == "running"

    camera.server.stop()  # the camera disappears
    t0 = time.monotonic()
    d.wait_health(503, timeout=20)
    took = time.monotonic() - t0
    status, _, body = d.request("/healthz")
    assert status == 503 and json.loads(body)["status"] == "unhealthy"
    print("camera gone -> 503 after", round(took, 2), "s:", body.decode())
    # the daemon refreshes its figures once a second
    wait_until(lambda: json.loads(d.request("/api/stats")[2])["camera"] != "running", 30, step=0.1)
    assert json.loads(d.request("/api/stats")[2])["camera"] == "reopening"
    assert d.proc.poll() is None, "the daemon must keep running while the camera is away"
    assert took < 15

    back = DebugServer(DebugConfig(bind=f"127.0.0.1:{cam_port}"), camera.hub)  # the camera comes back
    back.start()
    try:
        d.wait_health(200, timeout=30)
        wait_until(lambda: json.loads(d.request("/api/stats")[2])["camera"] == "running", 30, step=0.1)
        assert json.loads(d.request("/api/stats")[2])["camera"] == "running"
    finally:
        assert d.stop() == 0, d.log[-3000:]
        back.stop()
    assert "reopen" in d.log


@pytest.mark.slow
def test_daemon_page_in_headless_chromium_shows_the_video(
    tmp_path, model_dir, played_clip, daemons, chromium_screenshot
):
    clip, frames = played_clip
    d = daemons(tmp_path, model_dir, str(clip), camera={"realtime": True, "loop": True})
    d.wait_health(200)
    shot = chromium_screenshot(f"http://127.0.0.1:{d.port}/", tmp_path)
    region = shot[54:534, 14:654]  # where index.html lays out a 640x480 stream in a 1024x768 window
    assert float(region.std()) > 20, "stream area is uniform: no frame shown"
    small = cv2.cvtColor(cv2.resize(region, (160, 120), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    diff = np.abs(frames.astype(np.int16) - small.astype(np.int16)).mean(axis=(1, 2, 3))
    assert diff.min() < 15, f"the page's stream matches no frame of the clip (best {diff.min():.1f})"
    assert d.proc.poll() is None
    assert d.stop() == 0
