"""The machine's figures (telemetry/system.py) reach every view of the Snapshot, not only the MQTT heartbeat."""

from __future__ import annotations

from fallwatch.daemon.telemetry.snapshot import CameraStats, Snapshot, heartbeat, metrics
from fallwatch.daemon.telemetry.system import cpu_temp_c


def test_cpu_temperature_in_stats_heartbeat_and_metrics(tmp_path):
    sensor = tmp_path / "temp"
    sensor.write_text("51234\n")
    snap = Snapshot(version="1", cameras={"hall": CameraStats("hall")}, cpu_temp_c=cpu_temp_c(sensor))
    assert snap.to_json()["cpu_temp_c"] == 51.2 and heartbeat(snap)["cpu_temp_c"] == 51.2
    assert b"fallwatch_cpu_temperature_celsius 51.2" in metrics(snap)
    none = Snapshot(version="1", cameras={"hall": CameraStats("hall")}, cpu_temp_c=cpu_temp_c(tmp_path / "missing"))
    assert none.to_json()["cpu_temp_c"] is None and b"cpu_temperature" not in metrics(none)
