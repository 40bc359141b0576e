"""Load the debug page in real headless Chromium and check from its screenshot that the stream shows a frame."""

from __future__ import annotations

import os
import time

import cv2
import numpy as np
import pytest

# Where index.html lays out the 640x480 stream at 1024x768: 14 px margin, below the 40 px header.
STREAM_REGION = (slice(54, 534), slice(14, 654))


def _stream_region(shot: np.ndarray) -> np.ndarray:
    return shot[STREAM_REGION]


@pytest.mark.slow
def test_page_in_headless_chromium_shows_the_stream(start_server, feeders, clip_frames, tmp_path, chromium_screenshot):
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


def test_chromium_shows_the_waiting_card_before_any_frame(start_server, clip_frames, tmp_path, chromium_screenshot):
    """The check above can fail: without frames the same region holds the dark 'waiting' card, not the clip."""
    run = start_server()
    shot = chromium_screenshot(f"http://127.0.0.1:{run.port}/", tmp_path, budget_ms=2000)
    region = cv2.cvtColor(_stream_region(shot), cv2.COLOR_BGR2RGB)
    assert float(np.median(region)) < 50  # the card's dark grey
    diffs = [float(np.abs(region.astype(np.int16) - f.astype(np.int16)).mean()) for f in clip_frames]
    assert min(diffs) > 40


BED = {"name": "bed", "kind": "rest", "points": [[0.5, 0.5], [0.95, 0.5], [0.95, 0.95], [0.5, 0.95]]}
TV = {"name": "tv", "kind": "ignore", "points": [[0.05, 0.05], [0.3, 0.05], [0.3, 0.3], [0.05, 0.3]]}


@pytest.mark.slow
def test_chromium_draws_the_zones_over_the_frame(start_server, feeders, clip_frames, tmp_path, chromium_screenshot):
    run = start_server()
    run.set_figures({"settings": {"zones": [BED, TV]}})
    feeders(run.hub, clip_frames, fps=10, persons=False)
    deadline = time.monotonic() + 5
    while run.hub.seq == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    # a new zone being drawn: three corners given in the address, as if clicked
    shot = chromium_screenshot(f"http://127.0.0.1:{run.port}/#draw=0.4,0.1;0.45,0.1;0.45,0.2", tmp_path)
    if os.environ.get("FALLWATCH_ZONES_SHOT"):  # where to keep the screenshot (the README's picture)
        cv2.imwrite(os.environ["FALLWATCH_ZONES_SHOT"], shot)
    region = cv2.cvtColor(_stream_region(shot), cv2.COLOR_BGR2RGB).astype(float)
    frame = np.mean(clip_frames, axis=0)
    inner = (slice(264, 432), slice(344, 584))  # inside the bed's polygon at 640x480, away from its label
    blue_gain = (region[inner][..., 2] - region[inner][..., 0]).mean() - (
        frame[inner][..., 2] - frame[inner][..., 0]
    ).mean()
    assert blue_gain > 20, f"the rest zone is not tinted blue over the frame (blue-red gain {blue_gain:.1f})"
    outside = (slice(200, 230), slice(400, 600))  # between the zones: the frame as it is
    assert abs((region[outside] - frame[outside]).mean()) < 15
    tv = (slice(60, 130), slice(60, 180))
    grey = np.abs(region[tv] - region[tv].mean(axis=2, keepdims=True)).mean()
    assert grey < np.abs(frame[tv] - frame[tv].mean(axis=2, keepdims=True)).mean(), "ignore zone not greyed"
    # the new zone's corners are marked in yellow
    corner = region[44:52, 252:260]  # around (0.4, 0.1) of 640x480
    yellow = (corner[..., 0] > 180) & (corner[..., 1] > 160) & (corner[..., 2] < 90)
    assert yellow.any(), "no yellow corner marker where the new zone's first corner is"


def test_chromium_zone_tool_gives_the_yaml_to_paste(start_server, tmp_path, chromium_dom):
    import yaml
    from fallwatch.config.loader import parse_config

    run = start_server()
    run.set_figures({"settings": {"zones": [BED]}})
    dom = chromium_dom(f"http://127.0.0.1:{run.port}/#draw=0.1,0.2;0.3,0.2;0.3,0.4;0.1,0.4", tmp_path)
    text = dom.split('id="zone-yaml"', 1)[1].split(">", 1)[1].split("</pre>", 1)[0]
    import html

    text = html.unescape(text)
    cfg = parse_config(text)  # valid configuration as it stands
    assert [z.model_dump(mode="json") for z in cfg.zones] == [
        BED,
        {"name": "bed", "kind": "rest", "points": [[0.1, 0.2], [0.3, 0.2], [0.3, 0.4], [0.1, 0.4]]},
    ]
    assert yaml.safe_load(text)["zones"][0]["name"] == "bed"


def test_chromium_panel_shows_the_snapshots_cpu_temperature_and_delivery_figures(start_server, tmp_path, chromium_dom):
    from fallwatch.daemon.telemetry.snapshot import MqttStats

    run = start_server()
    run.set_figures(
        {"cpu_temp_c": 51.2, "mqtt": MqttStats(enabled=True, connected=True, events_sent=3, events_queued=2)}
    )
    dom = chromium_dom(f"http://127.0.0.1:{run.port}/", tmp_path)
    assert '<td id="cputemp">51.2 °C</td>' in dom, "the snapshot's figure, as /api/stats and the heartbeat have it"
    assert '<td id="evcount">3 / 2</td>' in dom
