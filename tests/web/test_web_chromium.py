"""Load the debug page in real headless Chromium and check from its screenshot that the stream shows a frame."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest


def _chromium() -> str:
    found = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
                  if p and os.access(p, os.X_OK)), None)
    if not found:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run does this)")
    return found


def _screenshot(url: str, tmp_path: Path, budget_ms: int = 4000) -> np.ndarray:
    shot = tmp_path / "shot.png"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1024,768", f"--virtual-time-budget={budget_ms}", url]
    # its own session, so a hung chromium and all its helper processes can be killed together
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("chromium did not finish its screenshot within 120 s")
    assert shot.is_file(), f"chromium wrote no screenshot (rc {proc.returncode}): {stderr[-2000:]}"
    img = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def _stream_region(shot: np.ndarray) -> np.ndarray:
    """Where index.html lays out the 640x480 stream at 1024x768: 14 px margin, below the 40 px header."""
    return shot[54:534, 14:654]


def test_page_in_headless_chromium_shows_the_stream(start_server, feeders, clip_frames, tmp_path):
    run = start_server()
    run.hub.add_event({"event": "fall", "id": "e1", "ts": "2026-11-23T18:00:00Z", "track": 2, "confidence": 0.9})
    feeders(run.hub, clip_frames, fps=10)
    deadline = time.monotonic() + 5
    while run.hub.seq == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    shot = _screenshot(f"http://127.0.0.1:{run.port}/", tmp_path)
    assert shot.shape[:2] == (768, 1024)
    region = cv2.cvtColor(_stream_region(shot), cv2.COLOR_BGR2RGB)
    # a real picture, not the black placeholder of an image that never loaded
    assert float(region.std()) > 20, f"stream area is uniform (std {region.std():.1f}): no frame shown"
    # and it is the clip: close to one of the frames that were fed (overlays cover only a small part)
    diffs = [float(np.abs(region.astype(np.int16) - f.astype(np.int16)).mean()) for f in clip_frames]
    assert min(diffs) < 15, f"stream area matches no fed frame (best mean difference {min(diffs):.1f})"
    assert np.abs(region.reshape(-1, 3).mean(0) - np.mean(clip_frames, axis=(0, 1, 2))).max() < 20
    # the panel outside the stream is the page's dark background, i.e. the page itself rendered
    panel = shot[600:760, 700:1000]
    assert float(panel.mean()) < 60
    assert run.server.viewers in (0, 1)  # chromium may still be closing its connection


def test_chromium_shows_the_waiting_card_before_any_frame(start_server, clip_frames, tmp_path):
    """The check above can fail: without frames the same region holds the dark 'waiting' card, not the clip."""
    run = start_server()
    shot = _screenshot(f"http://127.0.0.1:{run.port}/", tmp_path, budget_ms=2000)
    region = cv2.cvtColor(_stream_region(shot), cv2.COLOR_BGR2RGB)
    assert float(np.median(region)) < 50  # the card's dark grey
    diffs = [float(np.abs(region.astype(np.int16) - f.astype(np.int16)).mean()) for f in clip_frames]
    assert min(diffs) > 40
