"""The real daemon (`fallwatch run` on a real fall clip, real models) over a real broker: the fall event arrives
with the MQTT schema, then SIGKILL of the daemon process turns availability `offline` through the Last Will."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from event_schema import PUBLISHED_EVENT_KEYS as EVENT_KEYS


@pytest.mark.slow
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
        [sys.executable, "-m", "fallwatch.daemon.cli.main", "run", "--config", str(config), "--source", str(clip)],
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


@pytest.mark.slow
def test_two_cameras_in_one_daemon_each_on_its_own_topics(mosquitto, subscriber, model_dir, data_dir, tmp_path):
    """Issue 16's done-when: two dev clips as two cameras of one daemon (real engine, real broker). The fall clip's
    camera reports its fall on its own topics; the other room stays `ok`; the page's stats list both cameras."""
    import signal
    import urllib.request

    from mqtt_testlib import wait_until
    from testnet import free_port

    clips = data_dir / "gmdcsa24-dev"
    prefix, bind = "fallwatch/e2e2", f"127.0.0.1:{free_port()}"
    config = tmp_path / "fallwatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cameras": {
                    # the fall clip as fast as the engine goes; the quiet room paced and looping (the daemon runs on)
                    "hall": {"source": str(clips / "Subject 2" / "Fall" / "12.mp4"), "realtime": False},
                    "bedroom": {"source": str(clips / "Subject 2" / "ADL" / "24.mp4"), "loop": True},
                },
                "mqtt": {
                    "host": "127.0.0.1",
                    "port": mosquitto.port,
                    "device_id": "e2e2",
                    "state_dir": str(tmp_path / "state"),
                    "reconnect_max_s": 1,
                },
                "debug": {"enabled": True, "bind": bind},
                "events": {"enabled": False},
            },
            sort_keys=False,
        )
    )
    sub = subscriber(mosquitto.port, [f"{prefix}/#"])
    log_file = tmp_path / "daemon.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fallwatch.daemon.cli.main", "run", "--config", str(config)],
        env=dict(os.environ, FALLWATCH_MODEL_DIR=str(model_dir)),
        stdout=subprocess.DEVNULL,
        stderr=open(log_file, "wb"),
    )
    try:

        def daemon_log() -> str:
            return log_file.read_text(errors="replace")[-3000:]

        def fall_on(s) -> bool:
            return any(e["event"] == "fall" for e in s.json_on(f"{prefix}/hall/event"))

        assert sub.wait_for(fall_on, 60), daemon_log()
        fall = next(e for e in sub.json_on(f"{prefix}/hall/event") if e["event"] == "fall")
        assert set(fall) >= EVENT_KEYS and (fall["device"], fall["camera"], fall["source"]) == ("e2e2", "hall", "hall")
        assert sub.wait_for(lambda s: any(st["state"] == "fall" for st in s.json_on(f"{prefix}/hall/state")), 5)
        bedroom = sub.json_on(f"{prefix}/bedroom/state")
        assert bedroom and {st["state"] for st in bedroom} == {"ok"}, bedroom
        assert not sub.on(f"{prefix}/bedroom/event") and not sub.on(f"{prefix}/event") and not sub.on(f"{prefix}/state")

        def stats() -> dict:
            with urllib.request.urlopen(f"http://{bind}/api/stats", timeout=5) as resp:
                return json.loads(resp.read())

        # (the figures are refreshed once a second: wait for those that have seen the fall)
        assert wait_until(lambda: stats()["cameras"]["hall"]["events"] >= 1, 10)
        got = stats()
        assert got["camera_names"] == ["hall", "bedroom"] and list(got["cameras"]) == ["hall", "bedroom"]
        assert all(c["frames"] > 0 for c in got["cameras"].values()) and got["cameras"]["bedroom"]["state"] == "ok"
        assert proc.poll() is None, "the daemon ended with the hall's file: the bedroom still runs"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
