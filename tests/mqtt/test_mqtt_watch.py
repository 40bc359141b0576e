"""`fallwatch watch` against a real broker: `--once --json` with three devices (one online and fine, one with an
active fall, one gone offline through its Last Will: a SIGKILLed daemon stand-in), the live view's data as
messages come, credentials, and an unreachable broker."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import paho.mqtt.publish as publish
import pytest
from fallwatch.daemon.cli.admin.watch import Watcher
from mqtt_testlib import make_event, wait_until, watch_args
from testnet import free_port


def run_watch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fallwatch.daemon.cli.main", "watch", *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
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
    assert sub.wait_for(
        lambda s: all(
            s.on(f"fallwatch/{d}/availability")[-1:] == [b"online"] for d in ("room-ok", "room-fall", "room-gone")
        ),
        10,
    )
    gone.kill()  # no clean stop: the broker publishes its Last Will
    assert sub.wait_for(lambda s: s.on("fallwatch/room-gone/availability")[-1:] == [b"offline"], 10)
    assert sub.wait_for(
        lambda s: len(s.on("fallwatch/room-fall/state")) >= 1 and len(s.on("fallwatch/room-ok/state")) >= 1, 5
    )

    done = run_watch("--host", "127.0.0.1", "--port", str(port), "--once", "--json", "--wait", "5")
    assert done.returncode == 0, done.stderr
    snapshot = json.loads(done.stdout)
    assert snapshot["broker"] == f"127.0.0.1:{port}" and snapshot["prefix"] == "fallwatch"
    devices = snapshot["devices"]
    assert [d["device"] for d in devices] == ["room-fall", "room-gone", "room-ok"]  # fall, down, fine
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


@pytest.mark.slow
def test_watch_unreachable_broker_is_one_line_and_non_zero():
    port = free_port()
    done = run_watch("--host", "127.0.0.1", "--port", str(port), "--once", "--json")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"fallwatch watch: cannot reach the MQTT broker 127.0.0.1:{port}: [Errno 111] Connection refused"
    ]


@pytest.mark.slow
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
    publish.single(
        "fallwatch/room-1/availability",
        "online",
        qos=1,
        retain=True,
        hostname="127.0.0.1",
        port=broker.port,
        auth={"username": "room-1", "password": "pi"},
    )
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


def test_watch_live_view_follows_events_heartbeats_and_a_per_camera_device(mosquitto, mqtt_cfg, publisher, tmp_path):
    """What the live table shows, fed by MQTT as it happens: heartbeats, a fall event and its camera, and the
    per-camera topics of a device that watches several rooms."""
    args = watch_args(mosquitto.port)
    watcher = Watcher(args, None)
    assert watcher.start() is None
    try:
        pub = publisher(
            mqtt_cfg(mosquitto.port, device_id="hall-pi", heartbeat_s=1, state_dir=str(tmp_path / "hall")),
            camera="hall",
        )
        pub.start()
        pub.set_state({"state": "fall", "persons": 1})
        event = make_event("fall")
        pub.publish_event(event)

        def hall() -> dict:
            return next((d for d in watcher.snapshot() if d["device"] == "hall-pi"), {})

        def hall_fall_seen() -> bool:  # the heartbeat can come before the state that lists the camera
            cams = hall().get("cameras") or [{}]
            return hall().get("heartbeat_s") == 1 and cams[0].get("last_event") == "fall"

        assert wait_until(hall_fall_seen, 10), hall()
        cam = hall()["cameras"][0]
        assert (cam["camera"], cam["state"], cam["last_event_id"]) == ("hall", "fall", event["id"])
        assert hall()["alarm"] and not hall()["down"] and hall()["heartbeat_age_s"] < 5

        for topic, payload in (
            ("fallwatch/ward-2/availability", "online"),
            ("fallwatch/ward-2/bath/state", json.dumps({"state": "person_down", "persons": 1})),
            ("fallwatch/ward-2/bed/state", json.dumps({"state": "ok", "persons": 0})),
        ):
            publish.single(topic, payload, qos=1, retain=True, hostname="127.0.0.1", port=mosquitto.port)
        assert wait_until(
            lambda: (
                [d["device"] for d in watcher.snapshot()] == ["hall-pi", "ward-2"]
                and len(watcher.snapshot()[1]["cameras"]) == 2
            ),
            5,
        ), watcher.snapshot()
        ward = watcher.snapshot()[1]
        assert [(c["camera"], c["state"], c["alarm"]) for c in ward["cameras"]] == [
            ("bath", "person_down", True),
            ("bed", "ok", False),
        ]
        pub.stop()  # a clean stop: offline, the fall state stays retained
        assert wait_until(lambda: hall().get("availability") == "offline", 5)
        assert hall()["down"] and hall()["alarm"]
    finally:
        watcher.stop()
