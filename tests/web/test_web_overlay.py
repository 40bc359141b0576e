"""Overlay drawing, JPEG encoding and the StatusHub, on real decoded frames."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from fallwatch.daemon.telemetry.snapshot import MqttStats, Snapshot
from fallwatch.daemon.telemetry.status_hub import StatusHub
from fallwatch.daemon.web.overlay import STATE_COLOURS, draw_overlay, encode_jpeg, enhance_badge, spine
from waiting import wait_until


def test_spine_angle_from_vertical(person_factory):
    upright = person_factory(1, 640, 480)
    mid_sh, mid_hip, angle = spine(upright.keypoints)
    assert mid_sh[1] < mid_hip[1] and angle == pytest.approx(0, abs=0.5)
    for lean in (30, 60, 90, -45, 135):
        _, _, angle = spine(person_factory(1, 640, 480, lean_deg=lean).keypoints)
        assert angle == pytest.approx(abs(lean), abs=0.5)
    kps = upright.keypoints.copy()
    kps[11, 2] = 0.05  # left hip unseen: the right side's shoulder -> hip, as the rules measure it
    top, bottom, angle = spine(kps)
    assert top == (float(kps[6, 0]), float(kps[6, 1])) and bottom == (float(kps[12, 0]), float(kps[12, 1]))
    assert angle < 10  # one side's line: upright, though shoulders are wider than hips
    kps[12, 2] = 0.05  # both hips unseen: no spine rather than a guess
    assert spine(kps) is None
    assert spine(np.zeros((5, 3))) is None


def test_overlay_draws_state_colours_and_leaves_the_frame_alone(clip_frames, person_factory):
    frame = clip_frames[0]
    original = frame.copy()
    h, w = frame.shape[:2]
    people = [person_factory(1, w, h), person_factory(2, w, h, lean_deg=70)]
    plain = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    for state in ("upright", "falling", "down"):
        out = draw_overlay(frame, people[:1], {1: state})
        assert out.shape == plain.shape and out.dtype == np.uint8
        colour = np.array(STATE_COLOURS[state])
        x0, y0, x1, y1 = (int(round(v)) for v in people[0].box)
        # the box edge carries the state's colour
        edge = out[y0 + 5 : y1 - 5, x0]
        assert np.abs(edge.astype(int) - colour).max(axis=1).min() <= 10, state
    assert np.array_equal(frame, original)  # the pipeline's frame is never drawn on
    out = draw_overlay(frame, people, {1: "upright", 2: "down"}, extra={2: {"spine_angle_deg": 71.0}})
    changed = np.any(out != plain, axis=2)
    assert 0.005 < changed.mean() < 0.3  # overlays drawn, picture still visible
    assert np.array_equal(draw_overlay(frame, [], {}), plain)
    stamped = draw_overlay(frame, [], {}, extra={"t": 1.5, "frame": 12})  # the daemon's frame number and time
    changed = np.any(stamped != plain, axis=2)
    assert changed[h - 40 :, :200].any() and not changed[: h // 2].any()
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        draw_overlay(frame[:, :, 0], [], {})


def test_encode_jpeg(clip_frames):
    bgr = cv2.cvtColor(clip_frames[3], cv2.COLOR_RGB2BGR)
    data = encode_jpeg(bgr)
    assert data[:2] == b"\xff\xd8"
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == bgr.shape
    small = cv2.imdecode(np.frombuffer(encode_jpeg(bgr, height=120), np.uint8), cv2.IMREAD_COLOR)
    assert small.shape == (120, 160, 3)
    assert len(encode_jpeg(bgr, quality=30)) < len(encode_jpeg(bgr, quality=95))
    for bad in ({"height": 0}, {"height": 100000}, {"quality": 0}):
        with pytest.raises(ValueError):
            encode_jpeg(bgr, **bad)


def test_hub_publish_is_cheap_and_encodes_nothing(clip_frames, person_factory):
    hub = StatusHub("1.2.3", camera="hall")
    people = [person_factory(1, 640, 480)]
    t0 = time.perf_counter()
    for i in range(2000):
        hub.publish_frame(clip_frames[i % len(clip_frames)], people, {1: "upright"})
    per_call = (time.perf_counter() - t0) / 2000
    assert per_call < 0.001, f"publish_frame takes {per_call * 1e3:.2f} ms"
    assert hub.encode_count == 0 and hub.seq == 2000
    jpeg = hub.latest_jpeg()
    assert jpeg[:2] == b"\xff\xd8" and hub.encode_count == 1
    assert hub.latest_jpeg() is jpeg and hub.encode_count == 1  # cached per seq
    hub.latest_jpeg(height=240)
    assert hub.encode_count == 2
    hub.publish_frame(clip_frames[0], [], {})
    hub.latest_jpeg()
    assert hub.encode_count == 3


def test_hub_wait_frame_and_health():
    hub = StatusHub("1.2.3")
    assert hub.latest_jpeg() is None and not hub.healthy() and hub.wait_frame(0, 0.05) is None
    frame = np.zeros((48, 64, 3), np.uint8)
    got = []
    waiter = threading.Thread(target=lambda: got.append(hub.wait_frame(0, 5)))
    waiter.start()
    assert wait_until(lambda: hub.waiting == 1, 5)  # blocked, waiting for the frame
    hub.publish_frame(frame, [], {}, extra={7: {"spine_angle_deg": 3}})
    waiter.join(2)
    assert hub.waiting == 0
    shown = got[0]
    assert shown.seq == 1 and shown.image is frame and shown.extra == {7: {"spine_angle_deg": 3}}
    assert hub.wait_frame(1, 0.05) is None  # nothing newer
    assert hub.healthy(max_age_s=30.0)
    assert wait_until(lambda: not hub.healthy(max_age_s=0.2), 10), "a frame older than max_age_s counts as healthy"
    hub.publish_frame(frame, [], {})
    hub.mark_source_stopped()
    assert not hub.healthy() and hub.stats()["source_stopped"]


def test_hub_stats_and_events():
    hub = StatusHub("1.2.3", camera="hall")
    hub.publish_stats(
        Snapshot.starting(
            "1.2.3",
            "hall",
            backend="edgetpu",
            settings={"model": "movenet"},
            mqtt=MqttStats(enabled=True, connected=True, events_sent=4),
        ).replace_camera("hall", fps=9.5, stage_ms={"pose": 3.0})
    )
    s = hub.stats()
    assert s["version"] == "1.2.3" and s["backend"] == "edgetpu" and s["fps"] == 9.5
    assert s["mqtt"]["connected"] is True and s["events"]["sent"] == 4 and s["model"] == "movenet"
    assert s["last_frame_age_s"] is None and s["frames"] == 0
    for i in range(60):
        hub.add_event({"event": "fall", "id": str(i)})
    events = hub.recent_events()
    assert len(events) == 50 and events[0]["id"] == "10" and events[-1]["id"] == "59"
    assert all("received_at" in e for e in events)


@pytest.mark.parametrize(
    "box", [(float("nan"), 0.0, 10.0, 10.0), (0.0, 0.0, float("inf"), 10.0), (-5e9, 0.0, 1e12, 1e12)]
)
def test_overlay_survives_non_finite_and_far_off_coordinates(clip_frames, person_factory, box):
    # A box of NaN/inf or beyond int32 raised inside cv2 (ValueError, OverflowError, cv2.error): every MJPEG
    # viewer's handler died on that frame and the MQTT snapshot was lost. The person's valid parts still show.
    frame = clip_frames[0]
    h, w = frame.shape[:2]
    person = person_factory(3, w, h)
    person.box = box
    far = person_factory(4, w, h)
    far.keypoints = far.keypoints.copy()
    far.keypoints[0, :2] = (1e12, -1e12)  # a wild keypoint, above the score threshold
    out = draw_overlay(frame, [person, far], {3: "down", 4: "upright"})
    assert out.shape == (h, w, 3)
    assert not np.array_equal(out, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)), "the skeletons are drawn"
    assert encode_jpeg(out)[:2] == b"\xff\xd8"


def test_jpeg_cache_is_bounded_when_frames_stop(clip_frames):
    # Only older sequence numbers were evicted: while no new frame came (a camera down), every ?height= asked of
    # /latest.jpg stayed cached, growing without bound. One frame's encodings are now capped as well.
    from fallwatch.daemon.telemetry.status_hub import JPEG_CACHE

    hub = StatusHub("1")
    hub.publish_frame(clip_frames[0], [], {})
    for height in range(100, 100 + 3 * JPEG_CACHE):
        jpeg = hub.latest_jpeg(height)
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape[0] == height
    # bounded: the newest JPEG_CACHE heights are served from the cache, the one before them was evicted
    newest = range(100 + 2 * JPEG_CACHE, 100 + 3 * JPEG_CACHE)
    encoded = hub.encode_count
    for height in newest:
        hub.latest_jpeg(height)
    assert hub.encode_count == encoded, "the newest heights were not cached"
    hub.latest_jpeg(newest[0] - 1)
    assert hub.encode_count == encoded + 1, f"more than JPEG_CACHE={JPEG_CACHE} encodings kept for one frame"
    assert hub.latest_jpeg(100 + 3 * JPEG_CACHE - 1) is hub.latest_jpeg(100 + 3 * JPEG_CACHE - 1), "still cached"


def test_overlay_says_when_the_models_saw_an_enhanced_picture(clip_frames):
    frame = clip_frames[0]
    on = {"mode": "auto", "on": True, "luma": 38.4, "contrast": 12.2, "enhanced_fraction": 1.0}
    assert enhance_badge(on) == "night enhancement on (luma 38, contrast 12)"
    assert enhance_badge({**on, "on": False}) == "" and enhance_badge(None) == ""
    plain = draw_overlay(frame, [], {}, {})
    badged = draw_overlay(frame, [], {}, {"enhance": on})
    h, w = frame.shape[:2]
    assert np.array_equal(plain[h // 4 :, :], badged[h // 4 :, :]), "only the top-left corner carries the badge"
    assert not np.array_equal(plain[: h // 4, : w // 2], badged[: h // 4, : w // 2])
    assert np.array_equal(draw_overlay(frame, [], {}, {"enhance": {**on, "on": False}}), plain)
