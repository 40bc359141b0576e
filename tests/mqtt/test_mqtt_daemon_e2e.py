"""The real daemon (`fallwatch run` on a real fall clip, real models) over a real broker: the fall event arrives
with the MQTT schema, then SIGKILL of the daemon process turns availability `offline` through the Last Will."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

EVENT_KEYS = {
    "event",
    "id",
    "source",
    "t",
    "frame",
    "ts",
    "track",
    "confidence",
    "spine_angle_deg",
    "angle_change_deg",
    "descent_rate",
    "box",
    "device",
    "camera",
    "backend",
}


def test_mqtt_daemon_fall_event_then_last_will_on_sigkill(mosquitto, subscriber, model_dir, data_dir, tmp_path):
    clip = data_dir / "gmdcsa24-dev" / "Subject 1" / "Fall" / "13.mp4"
    assert clip.is_file(), f"{clip} is missing"
    prefix = "fallwatch/e2e"
    config = tmp_path / "fallwatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "camera": {"name": "hall", "realtime": True, "loop": True},  # a camera that never ends
                "mqtt": {
                    "host": "127.0.0.1",
                    "port": mosquitto.port,
                    "device_id": "e2e",
                    "heartbeat_s": 1,
                    "state_dir": str(tmp_path / "state"),
                    "reconnect_max_s": 1,
                },
                "debug": {"enabled": False},
            }
        )
    )
    sub = subscriber(mosquitto.port, [f"{prefix}/#"])
    log_file = tmp_path / "daemon.log"
    env = dict(os.environ, FALLWATCH_MODEL_DIR=str(model_dir))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fallwatch.daemon.cli", "run", "--config", str(config), "--source", str(clip)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log_file, "wb"),
    )
    try:

        def daemon_log() -> str:
            return log_file.read_text(errors="replace")[-2000:]

        assert sub.wait_for(lambda s: s.on(f"{prefix}/availability")[-1:] == [b"online"], 20), daemon_log()
        assert sub.wait_for(lambda s: any(json.loads(p)["event"] == "fall" for p in s.on(f"{prefix}/event")), 30), (
            daemon_log()
        )
        fall = next(e for e in sub.json_on(f"{prefix}/event") if e["event"] == "fall")
        assert set(fall) >= EVENT_KEYS, f"missing {EVENT_KEYS - set(fall)}"
        assert (fall["device"], fall["camera"]) == ("e2e", "hall") and fall["backend"] in ("cpu", "edgetpu")
        assert sub.wait_for(
            lambda s: any(json.loads(p)["state"] in ("fall", "person_down") for p in s.on(f"{prefix}/state")), 5
        )
        assert sub.wait_for(lambda s: any(h["events_sent"] >= 1 for h in s.json_on(f"{prefix}/heartbeat")), 4)
        hb = sub.json_on(f"{prefix}/heartbeat")[-1]
        assert hb["camera"] and hb["fps"] > 0 and hb["backend"] == fall["backend"] and hb["events_queued"] == 0
        assert proc.poll() is None, "the daemon exited on its own"
        proc.kill()
        proc.wait(10)
        assert sub.wait_for(lambda s: s.on(f"{prefix}/availability")[-1:] == [b"offline"], 5), (
            "no Last Will after SIGKILL"
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
