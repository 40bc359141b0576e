"""Load the debug page in real headless Chromium and check from its screenshot that the stream shows a frame."""
from __future__ import annotations

import time

import cv2
import numpy as np

# Where index.html lays out the 640x480 stream at 1024x768: 14 px margin, below the 40 px header.
STREAM_REGION = (slice(54, 534), slice(14, 654))


def _stream_region(shot: np.ndarray) -> np.ndarray:
    return shot[STREAM_REGION]


def test_page_in_headless_chromium_shows_the_stream(start_server, feeders, clip_frames, tmp_path,
                                                   chromium_screenshot):
    run = start_server()
    run.hub.add_event({"event": "fall", "id": "e1", "ts": "2026-11-23T18:00:00Z", "track": 2, "confidence": 0.9})
    feeders(run.hub, clip_frames, fps=10)
    deadline = time.monotonic() + 5
    while run.hub.seq == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    shot = chromium_screenshot(f"http://127.0.0.1:{run.port}/", tmp_path)
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


def test_chromium_shows_the_waiting_card_before_any_frame(start_server, clip_frames, tmp_path,
                                                          chromium_screenshot):
    """The check above can fail: without frames the same region holds the dark 'waiting' card, not the clip."""
    run = start_server()
    shot = chromium_screenshot(f"http://127.0.0.1:{run.port}/", tmp_path, budget_ms=2000)
    region = cv2.cvtColor(_stream_region(shot), cv2.COLOR_BGR2RGB)
    assert float(np.median(region)) < 50  # the card's dark grey
    diffs = [float(np.abs(region.astype(np.int16) - f.astype(np.int16)).mean()) for f in clip_frames]
    assert min(diffs) > 40
