"""`fallwatch watch --once --json` against a real broker with three devices: one online and fine, one with an
active fall, one gone offline through its Last Will (SIGKILLed daemon stand-in); and an unreachable broker."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import paho.mqtt.publish as publish
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


def test_watch_read_only_user_and_bad_credentials(mosquitto_factory, tmp_path):
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    pwfile, acl = tmp_path / "mosquitto.passwd", tmp_path / "mosquitto.acl"
    pwfile.touch()
    for user, password in (("desk", "n1ght"), ("room-1", "pi")):
        subprocess.run([passwd, "-b", str(pwfile), user, password], check=True, capture_output=True)
    pwfile.chmod(0o600)
    # read-only is enough for the desk: watch never publishes
    acl.write_text("user desk\ntopic read fallwatch/#\n\nuser room-1\ntopic readwrite fallwatch/room-1/#\n")
    broker = mosquitto_factory(f"allow_anonymous false\npassword_file {pwfile}\nacl_file {acl}\n").start()
    publish.single("fallwatch/room-1/availability", "online", qos=1, retain=True, hostname="127.0.0.1",
                   port=broker.port, auth={"username": "room-1", "password": "pi"})
    where = ["--host", "127.0.0.1", "--port", str(broker.port), "--once", "--json"]
    secret = tmp_path / "desk_password"
    secret.write_text("n1ght\n")

    done = run_watch(*where, "--username", "desk", "--password-file", str(secret))
    assert done.returncode == 0, done.stderr
    assert [(d["device"], d["availability"]) for d in json.loads(done.stdout)["devices"]] == [("room-1", "online")]

    wrong = run_watch(*where, "--username", "desk", "--password", "day")
    assert wrong.returncode == 1 and wrong.stdout == "" and len(wrong.stderr.strip().splitlines()) == 1
    assert "refused the connection" in wrong.stderr and "--password" in wrong.stderr and "day" not in wrong.stderr

    missing = run_watch(*where, "--username", "desk", "--password-file", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "--password-file: cannot read" in missing.stderr
