"""`fallwatch watch --once --json` against a real broker with three devices: one online and fine, one with an
active fall, one gone offline through its Last Will (SIGKILLed daemon stand-in); and an unreachable broker."""
from __future__ import annotations

import json
import subprocess
import sys

from mqtt_testlib import free_port, make_event


def run_watch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fallwatch.daemon.cli", "watch", *args], capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)


def test_watch_once_json_three_devices(mosquitto, subscriber, mqtt_cfg, publisher, publisher_proc, tmp_path):
    port = mosquitto.port
    sub = subscriber(port, ["fallwatch/+/availability", "fallwatch/+/state"])

    ok = publisher(mqtt_cfg(port, device_id="room-ok", state_dir=str(tmp_path / "ok")), camera="bedroom")
    ok.set_state({"state": "ok", "persons": 1})
    ok.start()
    fall = publisher(mqtt_cfg(port, device_id="room-fall", state_dir=str(tmp_path / "fall")), camera="bath")
    fall.start()
    fall.set_state({"state": "fall", "persons": 1})
    fall.publish_event(make_event("fall"))
    gone = publisher_proc(mqtt_cfg(port, device_id="room-gone", state_dir=str(tmp_path / "gone")))
    assert sub.wait_for(lambda s: all(s.on(f"fallwatch/{d}/availability")[-1:] == [b"online"]
                                      for d in ("room-ok", "room-fall", "room-gone")), 10)
    gone.kill()    # no clean stop: the broker publishes its Last Will
    assert sub.wait_for(lambda s: s.on("fallwatch/room-gone/availability")[-1:] == [b"offline"], 10)
    assert sub.wait_for(lambda s: len(s.on("fallwatch/room-fall/state")) >= 1
                        and len(s.on("fallwatch/room-ok/state")) >= 1, 5)

    done = run_watch("--host", "127.0.0.1", "--port", str(port), "--once", "--json", "--wait", "5")
    assert done.returncode == 0, done.stderr
    snapshot = json.loads(done.stdout)
    assert snapshot["broker"] == f"127.0.0.1:{port}" and snapshot["prefix"] == "fallwatch"
    devices = snapshot["devices"]
    assert [d["device"] for d in devices] == ["room-fall", "room-gone", "room-ok"]   # fall, down, fine
    by = {d["device"]: d for d in devices}
    assert by["room-fall"]["alarm"] and not by["room-fall"]["down"]
    assert [(c["state"], c["persons"]) for c in by["room-fall"]["cameras"]] == [("fall", 1)]
    assert by["room-gone"]["down"] and by["room-gone"]["down_reason"] == "offline"
    assert by["room-gone"]["availability"] == "offline" and not by["room-gone"]["alarm"]
    assert not by["room-ok"]["down"] and not by["room-ok"]["alarm"]
    assert by["room-ok"]["availability"] == "online" and by["room-ok"]["alerts"] == "ON"
    assert [c["state"] for c in by["room-ok"]["cameras"]] == ["ok"]
    # events and heartbeats are not retained: a snapshot only knows what the broker keeps
    assert by["room-fall"]["cameras"][0]["last_event"] is None

    table = run_watch("--host", "127.0.0.1", "--port", str(port), "--once", "--wait", "5")
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if "room-" in line]
    assert [r.split()[1] for r in rows] == ["room-fall", "room-gone", "room-ok"], table.stdout


def test_watch_unreachable_broker_is_one_line_and_non_zero():
    port = free_port()
    done = run_watch("--host", "127.0.0.1", "--port", str(port), "--once", "--json")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"fallwatch watch: cannot reach the MQTT broker 127.0.0.1:{port}: [Errno 111] Connection refused"]
