"""The debug server with several cameras: `?camera=` picks the camera of the stream, the latest frame and the
events (none: the first camera), an unknown camera is 404 naming the known ones, /healthz is 503 while any camera
delivers nothing and says which, /api/stats names the cameras in configuration order."""

from __future__ import annotations

import http.client
import json

import numpy as np
import pytest
from fallwatch.config.schema import DebugConfig
from fallwatch.daemon.telemetry.status_hub import StatusHub, UnknownCamera
from fallwatch.daemon.web.server import BOUNDARY, DebugServer

CAMERAS = ["hall", "bedroom"]


@pytest.fixture
def server():
    hub = StatusHub("9.8.7", cameras=CAMERAS)
    srv = DebugServer(DebugConfig(bind="127.0.0.1:0"), hub)
    srv.start()
    yield srv
    srv.stop()


def request(srv: DebugServer, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def frame(value: int) -> np.ndarray:
    return np.full((48, 64, 3), value, np.uint8)


def test_hub_keeps_each_cameras_frame_and_events_apart():
    hub = StatusHub("1", cameras=CAMERAS)
    assert hub.cameras == CAMERAS and hub.camera_name == "hall"
    hub.publish_frame(frame(10), [], {}, camera="bedroom")
    assert hub.snapshot() is None, "camera=None is the first camera, which has no frame yet"
    shown = hub.snapshot("bedroom")
    assert shown is not None and shown.image[0, 0, 0] == 10
    assert hub.wait_frame(shown.seq, 0.05, camera="bedroom") is None
    hub.publish_frame(frame(20), [], {}, camera="hall")
    assert hub.wait_frame(0, 1, camera="hall").image[0, 0, 0] == 20
    assert hub.wait_frame(shown.seq, 0.05, camera="bedroom") is None, "a hall frame is not news for the bedroom"
    assert hub.healthy(30) and hub.healthy(30, camera="bedroom")
    hub.mark_source_stopped("bedroom")
    assert not hub.healthy(30) and hub.healthy(30, camera="hall")
    snap = hub.current()
    assert list(snap.cameras) == CAMERAS and snap.cameras["bedroom"].source_stopped
    assert not snap.cameras["hall"].source_stopped and snap.cameras["hall"].last_frame_age_s is not None
    # each camera's newest frame keeps its encodings: two viewers of two cameras do not evict each other's
    hall, bedroom = hub.latest_jpeg(camera="hall"), hub.latest_jpeg(camera="bedroom")
    assert hall != bedroom and hub.encode_count == 2
    assert hub.latest_jpeg(camera="hall") is hall and hub.latest_jpeg(camera="bedroom") is bedroom
    assert hub.encode_count == 2
    hub.add_event({"event": "fall", "id": "1", "camera": "bedroom"})
    hub.add_event({"event": "test", "id": "2"})  # names no camera: the first camera's
    assert [e["id"] for e in hub.recent_events("bedroom")] == ["1"]
    assert [e["camera"] for e in hub.recent_events()] == ["bedroom", "hall"]
    with pytest.raises(UnknownCamera, match="no camera 'attic'; the cameras are hall, bedroom"):
        hub.snapshot("attic")


def test_camera_query_on_latest_stream_and_events(server):
    hub = server.hub
    hub.publish_frame(frame(200), [], {}, camera="bedroom")
    assert request(server, "/latest.jpg")[0] == 503  # the first camera (hall) has no frame yet
    status, jpeg = request(server, "/latest.jpg?camera=bedroom")
    assert status == 200 and jpeg[:2] == b"\xff\xd8"
    for path in ("/latest.jpg?camera=attic", "/stream.mjpg?camera=attic", "/api/events?camera=attic"):
        status, body = request(server, path)
        assert (status, body) == (404, b"no camera 'attic'; the cameras are hall, bedroom\n"), path

    hub.add_event({"event": "fall", "id": "a", "camera": "bedroom"})
    hub.add_event({"event": "fall", "id": "b", "camera": "hall"})
    events = lambda q="": json.loads(request(server, f"/api/events{q}")[1])["events"]  # noqa: E731
    assert [e["id"] for e in events()] == ["a", "b"] and [e["id"] for e in events("?camera=hall")] == ["b"]
    assert [e["camera"] for e in events("?camera=bedroom")] == ["bedroom"]

    # the stream of one camera shows that camera's frames
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/stream.mjpg?camera=bedroom&fps=10")
        resp = conn.getresponse()
        assert resp.status == 200 and BOUNDARY in resp.headers["Content-Type"]
        assert resp.readline().strip() == f"--{BOUNDARY}".encode()
        headers = {}
        while line := resp.readline().strip():
            k, _, v = line.decode().partition(":")
            headers[k.lower()] = v.strip()
        assert resp.read(int(headers["content-length"])) == jpeg, "the bedroom's frame, not the placeholder"
    finally:
        conn.close()


def test_healthz_and_stats_name_every_camera(server):
    hub = server.hub
    hub.publish_frame(frame(1), [], {}, camera="hall")
    status, body = request(server, "/healthz")
    health = json.loads(body)
    assert status == 503 and health["unhealthy"] == ["bedroom"] and health["reason"] == "camera bedroom: no frame yet"
    assert health["cameras"]["hall"]["healthy"] and not health["cameras"]["bedroom"]["healthy"]
    hub.publish_frame(frame(2), [], {}, camera="bedroom")
    status, body = request(server, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    hub.mark_source_stopped("hall")  # e.g. its file ended
    status, body = request(server, "/healthz")
    assert status == 503 and json.loads(body)["reason"] == "camera hall: source stopped"

    stats = json.loads(request(server, "/api/stats")[1])
    assert stats["camera_names"] == CAMERAS and list(stats["cameras"]) == CAMERAS
    assert stats["camera_name"] == "hall" and stats["source_stopped"] is True  # the flat keys: the first camera
    assert stats["cameras"]["bedroom"]["source_stopped"] is False


def test_records_name_their_camera_and_filter_by_it(server, tmp_path):
    from fallwatch.config.schema import EventsConfig
    from fallwatch.daemon.records.recorder import EventRecorder

    for n, camera in enumerate(["hall", "bedroom", "attic"]):  # attic: a camera taken out since
        folder = tmp_path / f"rec-{n}"
        folder.mkdir()
        meta = {"id": folder.name, "event": "fall", "t": 5.0, "camera": camera, "recorded": 1000.0 + n}
        (folder / "event.json").write_text(json.dumps(meta))
    server.records = EventRecorder(EventsConfig(), tmp_path)
    listed = lambda q="": json.loads(request(server, f"/api/records{q}")[1])["records"]  # noqa: E731
    assert [r["camera"] for r in listed()] == ["attic", "bedroom", "hall"]  # newest first, each names its camera
    assert [r["id"] for r in listed("?camera=bedroom")] == ["rec-1"]
    assert [r["id"] for r in listed("?camera=attic")] == ["rec-2"], "its records stay reachable"


def test_status_line_names_every_camera():
    from fallwatch.daemon.telemetry.snapshot import CameraStats, Snapshot, status_line

    cams = {
        "hall": CameraStats("hall", capture="running", fps=10.0, persons=1, state="fall"),
        "door": CameraStats("door", capture="reopening", capture_error="cannot open rtsp://door"),
    }
    snap = Snapshot("1", cameras=cams, backend="cpu")
    assert status_line(snap) == "waiting for a first frame: hall running, door reopening"
    assert (
        status_line(snap.replace(ready=True)) == "10.0 fps on cpu, 1 in view, state fall, hall running, door reopening"
    )
