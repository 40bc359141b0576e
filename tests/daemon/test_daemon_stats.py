"""The Snapshot's views: /api/stats JSON, the heartbeat, systemd's STATUS= line and Prometheus /metrics."""

from __future__ import annotations

import math

from fallwatch.daemon.telemetry.snapshot import (
    CameraCounters,
    CameraStats,
    MqttStats,
    Snapshot,
    heartbeat,
    metrics,
    status_line,
)
from prometheus_client.parser import text_string_to_metric_families


def snapshot(**kw) -> Snapshot:
    cam = CameraStats(
        "hall",
        source="/dev/video0",
        capture="running",
        fps=9.5,
        frames=120,
        persons=1,
        state="fall",
        stage_ms={"pose": 40.0},
        dropped_frames=3,
        corrupt_frames=1,
        events=2,
    )
    return Snapshot(
        version="1.2.3",
        cameras={"hall": cam},
        backend="cpu",
        ready=True,
        uptime_s=12.5,
        mqtt=MqttStats(enabled=True, connected=True, events_sent=2, events_queued=1),
        **kw,
    )


def test_json_keeps_the_flat_keys_of_the_one_camera_and_adds_cameras() -> None:
    data = snapshot(settings={"rules": {"fall_angle_deg": 45}}).to_json()
    assert (data["camera_name"], data["camera"], data["fps"], data["frames"], data["state"]) == (
        "hall",
        "running",
        9.5,
        120,
        "fall",
    )
    assert data["events"] == {"sent": 2, "queued": 1, "recent": 0, "raised": 2}
    assert data["mqtt"]["connected"] is True and data["rules"] == {"fall_angle_deg": 45}
    assert data["cameras"]["hall"]["dropped_frames"] == 3 and "healthy" not in data


def test_heartbeat_and_status_line() -> None:
    snap = snapshot()
    hb = heartbeat(snap)
    assert (hb["backend"], hb["camera"], hb["fps"], hb["persons"], hb["state"]) == ("cpu", "running", 9.5, 1, "fall")
    assert hb["cameras"]["hall"]["state"] == "fall"
    assert status_line(snap) == "9.5 fps on cpu, 1 in view, state fall, camera running"
    waiting = snap.replace(ready=False).replace_camera("hall", capture="reopening", capture_error="no frames")
    assert status_line(waiting) == "waiting for /dev/video0: reopening (no frames)"


def test_metrics_are_labelled_per_camera_and_counters_end_in_total() -> None:
    families = {f.name: f for f in text_string_to_metric_families(metrics(snapshot()).decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("fallwatch_fps", (("camera", "hall"),))] == 9.5
    assert samples[("fallwatch_frames_total", (("camera", "hall"),))] == 120
    assert samples[("fallwatch_stage_ms", (("camera", "hall"), ("stage", "pose")))] == 40.0
    assert samples[("fallwatch_events_sent_total", ())] == 2
    assert samples[("fallwatch_backend_info", (("backend", "cpu"),))] == 1
    assert math.isnan(samples[("fallwatch_last_frame_age_seconds", (("camera", "hall"),))])
    assert all(f.type != "counter" or all(s.name.endswith("_total") for s in f.samples) for f in families.values())
    assert not any(name.startswith(("process_", "python_")) for name in families), "a private registry"


def test_counters_measure_fps_and_read_zero_when_frames_stop() -> None:
    counters = CameraCounters()
    for i in range(11):
        counters.frame_done(100.0 + i * 0.1, 100.0 + i * 0.1 - 0.05, persons=1, stage_ms={"pose": 1.0})
    assert abs(counters.fps(101.0) - 10.0) < 1e-6 and counters.frames == 11
    assert abs(counters.latency_ms - 50.0) < 1e-6
    assert counters.fps(104.0) == 0.0  # stale


def test_open_alarms_in_every_view() -> None:
    alarm = {"id": "ev-1", "camera": "hall", "kind": "fall", "opened": "2027-01-15T08:00:00.000Z", "level": 1}
    snap = snapshot(alarms=({**alarm, "acknowledged": False},))
    assert snap.to_json()["alarms"] == [{**alarm, "acknowledged": False}]
    assert heartbeat(snap)["alarms"] == [{**alarm, "acknowledged": False}]
    assert snapshot().to_json()["alarms"] == [] and heartbeat(snapshot())["alarms"] == []
    families = {f.name: f for f in text_string_to_metric_families(metrics(snap).decode())}
    assert families["fallwatch_open_alarms"].samples[0].value == 1
