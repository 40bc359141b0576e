"""Home Assistant discovery: valid JSON with the keys HA requires, retained, tied to availability and one device."""

from __future__ import annotations

import json
import re

from fallwatch.daemon.mqtt.homeassistant import discovery_messages
from mqtt_testlib import PREFIX, wait_until

# Required per component in HA's MQTT platform schemas (plus what we promise for every entity).
REQUIRED = {
    "binary_sensor": {"state_topic"},
    "sensor": {"state_topic"},
    "event": {"state_topic", "event_types"},
    "switch": {"command_topic", "state_topic", "payload_on", "payload_off", "state_on", "state_off"},
    "button": {"command_topic", "payload_press"},
}
COMMON = {"name", "unique_id", "availability_topic", "payload_available", "payload_not_available", "device"}
DEVICE_KEYS = {"identifiers", "name", "model", "manufacturer", "sw_version"}
# the keys each source topic really carries
STATE_KEYS = {"state", "persons"}
HEARTBEAT_KEYS = {"fps", "backend"}
EVENT_KEYS = {"event", "id", "ts"}


def _check_entity(topic: str, config: dict, prefix: str) -> None:
    m = re.fullmatch(
        r"homeassistant/(binary_sensor|sensor|switch|event|button)/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)/config", topic
    )
    assert m, f"bad discovery topic {topic}"
    component = m.group(1)
    missing = (REQUIRED[component] | COMMON) - set(config)
    assert not missing, f"{topic} lacks {missing}"
    assert set(config["device"]) >= DEVICE_KEYS
    assert config["availability_topic"] == f"{prefix}/availability"
    assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
    assert config["default_entity_id"] == f"{component}.{config['object_id']}"
    template = config.get("value_template", "")
    used = set(re.findall(r"value_json\.(\w+)", template))
    if config.get("state_topic") == f"{prefix}/state":
        assert used <= STATE_KEYS, f"{topic}: template uses {used - STATE_KEYS}, not in the state payload"
    elif config.get("state_topic") == f"{prefix}/heartbeat":
        assert used <= HEARTBEAT_KEYS and used, f"{topic}: template uses {used}"
    elif config.get("state_topic") == f"{prefix}/event":
        assert used <= EVENT_KEYS and "event" in used, f"{topic}: template uses {used}"
        assert set(config["event_types"]) == {"fall", "person_down", "recovered", "test", "reminder", "resolved"}
    if component == "switch":
        assert json.loads(config["payload_on"]) == {"alerts": True}
        assert json.loads(config["payload_off"]) == {"alerts": False}
        assert config["command_topic"] == f"{prefix}/set" and config["state_topic"] == f"{prefix}/alerts"
    if component == "button":  # the alarm contract's commands: close every open alarm (of this camera)
        key = m.group(3)
        assert key in ("ack", "false_alarm") and config["command_topic"] == f"{prefix}/set"
        press = json.loads(config["payload_press"])
        assert press[key] == "all" and press["by"] == "home-assistant"
        assert set(press) - {key, "by"} <= {"camera"}


def test_mqtt_discovery_payloads_pure():
    messages = discovery_messages(
        discovery_prefix="homeassistant", prefix="fallwatch/pi", device_id="pi", version="1.2.3", heartbeat_s=30
    )
    keys = {topic.split("/")[3] for topic, _ in messages}
    assert keys == {"fall", "person_down", "persons", "fps", "backend", "alert", "alerts", "ack", "false_alarm"}
    for topic, config in messages:
        _check_entity(topic, json.loads(json.dumps(config)), "fallwatch/pi")
    buttons = {c["name"]: json.loads(c["payload_press"]) for t, c in messages if t.startswith("homeassistant/button/")}
    # one camera: no "camera" key (the alarm contract)
    assert buttons == {
        "Acknowledge alarm": {"ack": "all", "by": "home-assistant"},
        "False alarm": {"false_alarm": "all", "by": "home-assistant"},
    }
    assert "suggested_area" not in messages[0][1]["device"]
    unique = [c["unique_id"] for _, c in messages]
    assert len(set(unique)) == len(unique)
    assert len({json.dumps(c["device"], sort_keys=True) for _, c in messages}) == 1, "one device entry"
    diag = {t.split("/")[3] for t, c in messages if c.get("entity_category") == "diagnostic"}
    assert diag == {"fps", "backend"}


def test_mqtt_discovery_published_retained_on_connect(mosquitto, subscriber, mqtt_cfg, publisher):
    pub = publisher(mqtt_cfg(mosquitto.port, heartbeat_s=1))
    pub.start()
    assert wait_until(lambda: pub.connected, 5)
    pub.set_state({"state": "person_down", "persons": 1})
    first = subscriber(mosquitto.port, ["homeassistant/#"])
    assert first.wait_for(lambda s: len({m[0] for m in s.messages}) >= 9, 5)
    # a Home Assistant that connects later finds everything retained
    sub = subscriber(mosquitto.port, ["homeassistant/#", f"{PREFIX}/#"])
    assert sub.wait_for(lambda s: len([m for m in s.messages if m[0].startswith("homeassistant/")]) >= 9, 5)
    configs = {m[0]: m for m in sub.messages if m[0].startswith("homeassistant/")}
    assert len(configs) == 9
    for topic, (_, payload, retained, _, _) in configs.items():
        assert retained, f"{topic} not retained"
        config = json.loads(payload)
        _check_entity(topic, config, PREFIX)
        assert config["device"]["sw_version"] == "0.0-test"
        assert config["device"]["identifiers"] == ["fallwatch_testdev"]
    # the topics the entities read carry the keys their templates use
    assert sub.wait_for(lambda s: s.on(f"{PREFIX}/heartbeat") and s.on(f"{PREFIX}/state"), 3)
    assert set(json.loads(sub.on(f"{PREFIX}/state")[-1])) >= STATE_KEYS
    assert set(json.loads(sub.on(f"{PREFIX}/heartbeat")[-1])) >= HEARTBEAT_KEYS

    # Home Assistant restarted: it announces itself and gets discovery again
    n = len(sub.on("homeassistant/switch/fallwatch_testdev/alerts/config"))
    sub.client.publish("homeassistant/status", b"online", qos=1)
    assert sub.wait_for(lambda s: len(s.on("homeassistant/switch/fallwatch_testdev/alerts/config")) > n, 3)

    # discovery switched off by SIGHUP: the entities are removed (empty retained configs)
    pub.reconfigure(mqtt_cfg(mosquitto.port, heartbeat_s=1, homeassistant={"enabled": False}))
    assert sub.wait_for(lambda s: all(s.on(t)[-1:] == [b""] for t in configs), 3), "entities not removed"
    late = subscriber(mosquitto.port, ["homeassistant/#"])
    assert not wait_until(lambda: late.messages, 0.5), "entities still discoverable after disabling"


def test_mqtt_discovery_disabled_publishes_nothing(mosquitto, subscriber, mqtt_cfg, publisher):
    sub = subscriber(mosquitto.port, ["homeassistant/#"])
    pub = publisher(mqtt_cfg(mosquitto.port, homeassistant={"enabled": False}))
    pub.start()
    assert wait_until(lambda: pub.connected, 5)
    assert not wait_until(lambda: sub.messages, 0.5)


def test_mqtt_discovery_templates_render_on_real_payloads(mosquitto, subscriber, mqtt_cfg, publisher):
    """Render each entity's template with Jinja2 (what Home Assistant uses) on the payloads really published."""
    import jinja2
    from mqtt_testlib import make_event

    env = jinja2.Environment(undefined=jinja2.StrictUndefined)  # a key missing from the payload fails here

    def render(config: dict, payload: bytes) -> str:
        return env.from_string(config["value_template"]).render(value_json=json.loads(payload)).strip()

    sub = subscriber(mosquitto.port, ["homeassistant/#", f"{PREFIX}/#"])
    pub = publisher(mqtt_cfg(mosquitto.port, heartbeat_s=1))
    pub.start()
    assert sub.wait_for(lambda s: len({m[0] for m in s.messages if m[0].startswith("homeassistant/")}) >= 9, 5)
    cfg = {m[0].split("/")[3]: json.loads(m[1]) for m in sub.messages if m[0].startswith("homeassistant/")}
    expect = {"ok": ("OFF", "OFF"), "fall": ("ON", "OFF"), "person_down": ("ON", "ON")}
    for state, (fall, down) in expect.items():
        pub.set_state({"state": state, "persons": 2})
        assert sub.wait_for(
            lambda s, state=state: (
                s.on(f"{PREFIX}/state") and json.loads(s.on(f"{PREFIX}/state")[-1])["state"] == state
            ),
            3,
        )
        payload = sub.on(f"{PREFIX}/state")[-1]
        assert render(cfg["fall"], payload) == fall and render(cfg["person_down"], payload) == down, state
        assert render(cfg["persons"], payload) == "2"
    assert sub.wait_for(lambda s: s.on(f"{PREFIX}/heartbeat"), 3)
    heartbeat = sub.on(f"{PREFIX}/heartbeat")[-1]
    assert float(render(cfg["fps"], heartbeat)) == 14.5 and render(cfg["backend"], heartbeat) == "cpu"
    event = make_event("person_down")
    pub.publish_event(event)
    rendered = json.loads(render(cfg["alert"], sub.wait_count(f"{PREFIX}/event", 1)[0]))
    assert rendered["event_type"] == "person_down" and rendered["event_type"] in cfg["alert"]["event_types"]
    assert rendered["id"] == event["id"]


def test_mqtt_discovery_follows_a_new_device_id_and_prefix(mosquitto, subscriber, mqtt_cfg, publisher):
    """SIGHUP with a new device id or discovery prefix: the old entities are removed, not left behind as a second,
    forever unavailable device; Home Assistant's status on the new prefix is listened to."""
    pub = publisher(mqtt_cfg(mosquitto.port))
    pub.start()
    first = subscriber(mosquitto.port, ["homeassistant/#"])
    assert first.wait_for(lambda s: len({m[0] for m in s.messages}) >= 9, 5)
    pub.reconfigure(mqtt_cfg(mosquitto.port, device_id="kitchen"))
    assert wait_until(lambda: pub.connected, 5)
    sub = subscriber(mosquitto.port, ["homeassistant/#"])

    def nodes(s) -> set:  # devices whose latest config on each topic is not the empty (removing) one
        latest = {m[0]: m[1] for m in s.messages}
        return {topic.split("/")[2] for topic, payload in latest.items() if payload}

    assert sub.wait_for(lambda s: nodes(s) == {"fallwatch_kitchen"}, 5), f"retained discovery for {nodes(sub)}"

    pub.reconfigure(mqtt_cfg(mosquitto.port, device_id="kitchen", homeassistant={"discovery_prefix": "ha2"}))
    assert first.wait_for(
        lambda s: all(s.on(t)[-1:] == [b""] for t in {m[0] for m in s.messages if "kitchen" in m[0]}), 3
    )
    ha2 = subscriber(mosquitto.port, ["ha2/#"])
    assert ha2.wait_for(lambda s: len({m[0] for m in s.messages}) >= 9, 5)
    n = len(ha2.messages)
    ha2.client.publish("ha2/status", b"online", qos=1)  # Home Assistant on the new prefix restarted
    assert ha2.wait_for(lambda s: len(s.messages) >= n + 9, 3), "discovery not re-sent on ha2/status"
    late = subscriber(mosquitto.port, ["homeassistant/#"])
    assert not wait_until(lambda: [m for m in late.messages if m[1]], 0.5), "entities left under the old prefix"


def test_mqtt_discovery_switched_off_across_a_restart_removes_the_entities(mosquitto, subscriber, mqtt_cfg, publisher):
    """Discovery turned off in the configuration file and the daemon restarted (not reloaded): the entities of
    the previous run must not stay in Home Assistant as a forever unavailable device."""
    pub = publisher(mqtt_cfg(mosquitto.port))
    pub.start()
    first = subscriber(mosquitto.port, ["homeassistant/#"])
    assert first.wait_for(lambda s: len({m[0] for m in s.messages}) >= 9, 5)
    pub.stop()
    again = publisher(mqtt_cfg(mosquitto.port, homeassistant={"enabled": False}))
    again.start()
    assert wait_until(lambda: again.connected, 5)
    assert first.wait_for(lambda s: all(s.on(t)[-1:] == [b""] for t in {m[0] for m in s.messages}), 3)
    late = subscriber(mosquitto.port, ["homeassistant/#"])
    assert not wait_until(lambda: late.messages, 0.5), "entities still discoverable after a restart without them"


def test_mqtt_without_commands_the_alerts_entity_is_read_only():
    # mqtt.commands: false: a switch in Home Assistant would only pretend to pause alerts.
    messages = dict(
        discovery_messages(
            discovery_prefix="homeassistant",
            prefix="fallwatch/pi",
            device_id="pi",
            version="1",
            heartbeat_s=30,
            commands=False,
        )
    )
    assert "homeassistant/switch/fallwatch_pi/alerts/config" not in messages
    sensor = messages["homeassistant/binary_sensor/fallwatch_pi/alerts/config"]
    assert sensor["state_topic"] == "fallwatch/pi/alerts" and "command_topic" not in sensor
    assert not any("command_topic" in c for c in messages.values())  # no switch, no buttons


def test_mqtt_discovery_payloads_per_camera_pure():
    """Several cameras: each a device of its own, via the daemon's device, reading its own topics."""
    messages = discovery_messages(
        discovery_prefix="homeassistant",
        prefix="fallwatch/pi",
        device_id="pi",
        version="1",
        heartbeat_s=30,
        cameras={"bath": "bath", "bed room": "bed_room"},
    )
    assert len(messages) == 2 * 6 + 3
    for topic, config in messages:
        _check_entity(topic, config, "fallwatch/pi")
        used = set(re.findall(r"value_json\.(\w+)", config.get("value_template", "")))
        node = topic.split("/")[2]
        if node != "fallwatch_pi":
            level = node.removeprefix("fallwatch_pi_")
            assert config["device"]["via_device"] == "fallwatch_pi" and config["device"]["identifiers"] == [node]
            camera = {"bath": "bath", "bed_room": "bed room"}[level]
            assert config["device"]["suggested_area"] == camera.capitalize()
            if topic.startswith("homeassistant/button/"):  # the camera's name, not its topic segment
                assert json.loads(config["payload_press"])["camera"] == camera
                continue
            assert config["state_topic"] in (f"fallwatch/pi/{level}/state", f"fallwatch/pi/{level}/event")
            assert used <= (STATE_KEYS if config["state_topic"].endswith("/state") else EVENT_KEYS) and used
    names = {c["device"]["name"] for _, c in messages}
    assert names == {"fallwatch pi", "fallwatch pi bath", "fallwatch pi bed room"}
