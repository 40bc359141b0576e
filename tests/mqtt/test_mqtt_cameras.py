"""Several cameras on one device, against a real broker: per-camera event and state topics, the device-level ones
unchanged, queued events to their camera's topic after a restart, one Home Assistant device per camera, and what
`fallwatch watch` makes of it. Without `cameras` the topics stay those of one camera."""

from __future__ import annotations

import json

from fallwatch.daemon.cli.admin.watch import Watcher
from fallwatch.daemon.mqtt.homeassistant import discovery_messages
from mqtt_testlib import PREFIX, make_event, wait_until, watch_args
from testnet import free_port

CAMERAS = ["bath", "bed room"]  # "bed room": its topic level is bed_room


def test_two_cameras_events_and_states_on_their_own_topics(mosquitto, subscriber, mqtt_cfg, publisher):
    sub = subscriber(mosquitto.port, [f"{PREFIX}/#"])
    pub = publisher(mqtt_cfg(mosquitto.port, heartbeat_s=1), camera="bath", cameras=CAMERAS)
    pub.start()
    assert wait_until(lambda: pub.listening, 5)
    bath, bed = make_event("fall"), make_event("person_down")
    pub.publish_event(bath, camera="bath")
    pub.publish_event({**bed, "camera": "bed room"})  # the camera taken from the event itself
    pub.set_state({"state": "fall", "persons": 1}, camera="bath")
    pub.set_state({"state": "ok", "persons": 0}, camera="bed room")
    assert sub.wait_for(lambda s: s.on(f"{PREFIX}/bath/event") and s.on(f"{PREFIX}/bed_room/event"), 5)
    (got_bath,), (got_bed,) = sub.json_on(f"{PREFIX}/bath/event"), sub.json_on(f"{PREFIX}/bed_room/event")
    assert (got_bath["id"], got_bath["camera"]) == (bath["id"], "bath")
    assert (got_bed["id"], got_bed["camera"]) == (bed["id"], "bed room")
    # the device-level topics stay where they are; no device-level event or state
    assert sub.wait_for(
        lambda s: (
            s.on(f"{PREFIX}/heartbeat")
            and s.on(f"{PREFIX}/availability") == [b"online"]
            and s.on(f"{PREFIX}/alerts") == [b"ON"]
        ),
        5,
    )
    assert wait_until(pub.state_published, 5)
    assert not sub.on(f"{PREFIX}/event") and not sub.on(f"{PREFIX}/state")
    late = subscriber(mosquitto.port, [f"{PREFIX}/+/state"])  # retained, per camera
    assert late.wait_for(
        lambda s: (
            s.json_on(f"{PREFIX}/bath/state") == [{"state": "fall", "persons": 1}]
            and s.json_on(f"{PREFIX}/bed_room/state") == [{"state": "ok", "persons": 0}]
        ),
        5,
    )

    # {"test": true}: one test event per camera, on its own topic, so every room's automation is checked
    sub.client.publish(f"{PREFIX}/set", json.dumps({"test": True}), qos=1)
    assert sub.wait_for(
        lambda s: len(s.on(f"{PREFIX}/bath/event")) == 2 and len(s.on(f"{PREFIX}/bed_room/event")) == 2, 5
    )
    tests = [sub.json_on(f"{PREFIX}/{level}/event")[-1] for level in ("bath", "bed_room")]
    assert [(t["event"], t["camera"], t["source"]) for t in tests] == [
        ("test", "bath", "bath"),
        ("test", "bed room", "bed room"),
    ]
    assert not sub.on(f"{PREFIX}/event")


def test_without_cameras_the_topics_are_those_of_one_camera(mosquitto, subscriber, mqtt_cfg, publisher):
    sub = subscriber(mosquitto.port, [f"{PREFIX}/#"])
    pub = publisher(mqtt_cfg(mosquitto.port), camera="hall")
    pub.start()
    event = make_event("fall")
    pub.publish_event({**event, "camera": "elsewhere"})
    pub.set_state({"state": "fall", "persons": 1}, camera="elsewhere")
    assert sub.wait_for(lambda s: s.on(f"{PREFIX}/event") and s.on(f"{PREFIX}/state"), 5)
    assert sub.json_on(f"{PREFIX}/event")[0]["id"] == event["id"]
    assert sub.json_on(f"{PREFIX}/state") == [{"state": "fall", "persons": 1}]
    assert not [m[0] for m in sub.messages if m[0].count("/") > 2], "a per-camera topic in single-camera mode"


def test_events_queued_before_a_restart_go_to_their_cameras_topic(mosquitto, subscriber, mqtt_cfg, publisher):
    down = publisher(mqtt_cfg(free_port()), camera="bath", cameras=CAMERAS)  # no broker there
    down.start()
    events = [
        (make_event("fall", 0), "bed room"),
        (make_event("fall", 1), "bath"),
        (make_event("recovered", 2), "bed room"),
    ]
    for event, camera in events:
        down.publish_event(event, camera=camera)
    assert down.stats()["events_queued"] == 3
    down.stop()
    sub = subscriber(mosquitto.port, [f"{PREFIX}/#"])
    again = publisher(mqtt_cfg(mosquitto.port), camera="bath", cameras=CAMERAS)  # same state_dir: same outbox
    again.start()
    assert sub.wait_for(lambda s: len(s.on(f"{PREFIX}/bed_room/event")) == 2 and s.on(f"{PREFIX}/bath/event"), 8)
    assert [e["id"] for e in sub.json_on(f"{PREFIX}/bed_room/event")] == [events[0][0]["id"], events[2][0]["id"]]
    assert [e["id"] for e in sub.json_on(f"{PREFIX}/bath/event")] == [events[1][0]["id"]]
    assert wait_until(lambda: again.stats()["events_queued"] == 0, 3)
    assert not sub.on(f"{PREFIX}/event")


def _latest(sub) -> dict[str, bytes]:
    """The last payload per discovery topic (an empty one removes the entity)."""
    return {m[0]: m[1] for m in sub.messages if m[0].startswith("homeassistant/")}


def test_home_assistant_one_device_per_camera_and_a_dropped_camera_removed(
    mosquitto, subscriber, mqtt_cfg, publisher, tmp_path
):
    sub = subscriber(mosquitto.port, ["homeassistant/#", f"{PREFIX}/#"])
    pub = publisher(mqtt_cfg(mosquitto.port), camera="bath", cameras=CAMERAS)
    pub.start()
    assert sub.wait_for(lambda s: len(_latest(s)) == 6 * 2 + 3, 5), sorted(_latest(sub))
    configs = {topic: json.loads(payload) for topic, payload in _latest(sub).items()}
    devices: dict[str, dict] = {}
    for config in configs.values():
        devices.setdefault(config["device"]["identifiers"][0], config["device"])
        assert config["availability_topic"] == f"{PREFIX}/availability"
    assert set(devices) == {"fallwatch_testdev", "fallwatch_testdev_bath", "fallwatch_testdev_bed_room"}
    assert "via_device" not in devices["fallwatch_testdev"]
    for node in ("fallwatch_testdev_bath", "fallwatch_testdev_bed_room"):
        assert devices[node]["via_device"] == "fallwatch_testdev"
        keys = {topic.split("/")[3] for topic in configs if topic.split("/")[2] == node}
        assert keys == {"fall", "person_down", "persons", "alert", "ack", "false_alarm"}
    daemon_keys = {topic.split("/")[3] for topic in configs if topic.split("/")[2] == "fallwatch_testdev"}
    assert daemon_keys == {"fps", "backend", "alerts"}
    bed_fall = configs["homeassistant/binary_sensor/fallwatch_testdev_bed_room/fall/config"]
    assert bed_fall["state_topic"] == f"{PREFIX}/bed_room/state"
    assert configs["homeassistant/event/fallwatch_testdev_bath/alert/config"]["state_topic"] == f"{PREFIX}/bath/event"
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)

    # the bedroom camera is taken out (a reload): its entities and its retained state go, the bath's stay
    pub.set_state({"state": "ok", "persons": 0}, camera="bed room")
    pub.set_state({"state": "ok", "persons": 1}, camera="bath")
    assert sub.wait_for(lambda s: s.on(f"{PREFIX}/bed_room/state") and s.on(f"{PREFIX}/bath/state"), 5)
    pub.reconfigure(mqtt_cfg(mosquitto.port), cameras=["bath"])
    gone = [t for t in configs if "fallwatch_testdev_bed_room" in t]
    assert sub.wait_for(lambda s: all(_latest(s)[t] == b"" for t in gone), 5), "the dropped camera's entities stay"
    assert sub.wait_for(lambda s: s.on(f"{PREFIX}/bed_room/state")[-1:] == [b""], 5)
    late = subscriber(mosquitto.port, ["homeassistant/#", f"{PREFIX}/+/state"])
    assert late.wait_for(lambda s: len(_latest(s)) == 6 + 3 and s.on(f"{PREFIX}/bath/state"), 5)
    assert not any("bed_room" in m[0] for m in late.messages if m[1])

    # a restart in single-camera mode: the per-camera devices and states of the last run are removed too
    pub.stop()
    single = publisher(mqtt_cfg(mosquitto.port), camera="bath")
    single.start()
    assert sub.wait_for(lambda s: all(p == b"" for t, p in _latest(s).items() if "fallwatch_testdev_bath" in t), 5)
    assert sub.wait_for(lambda s: s.on(f"{PREFIX}/bath/state")[-1:] == [b""], 5)
    single_topics = {
        t
        for t, _ in discovery_messages(
            discovery_prefix="homeassistant", prefix=PREFIX, device_id="testdev", version="0.0-test", heartbeat_s=30
        )
    }
    assert sub.wait_for(lambda s: {t for t, p in _latest(s).items() if p} == single_topics, 5)


def test_watch_shows_one_row_per_camera(mosquitto, mqtt_cfg, publisher):
    args = watch_args(mosquitto.port)
    watcher = Watcher(args, None)
    assert watcher.start() is None
    try:
        pub = publisher(mqtt_cfg(mosquitto.port, heartbeat_s=1), camera="bath", cameras=CAMERAS)
        pub.start()
        event = make_event("fall")
        pub.publish_event(event, camera="bath")
        pub.set_state({"state": "fall", "persons": 1}, camera="bath")
        pub.set_state({"state": "ok", "persons": 0}, camera="bed room")

        def device() -> dict:
            return next((d for d in watcher.snapshot() if d["device"] == "testdev"), {})

        assert wait_until(
            lambda: len(device().get("cameras", [])) == 2 and device()["cameras"][0]["last_event"] == "fall", 5
        ), device()
        rows = [(c["camera"], c["state"], c["alarm"], c["last_event_id"]) for c in device()["cameras"]]
        assert rows == [("bath", "fall", True, event["id"]), ("bed_room", "ok", False, None)]
    finally:
        watcher.stop()
