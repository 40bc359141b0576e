"""Open alarms over a real broker: an unanswered fall reminds at level 1, 2, 3 on time (a fake clock), an `ack` on
`<prefix>/set` closes it with `resolved` (reason, by) and stops the reminders, `false_alarm: all` of one camera, a
bad answer is one warning, and an alarm is still open, and reminding, after a restart of the publisher and desk
over the same state directory (as the daemon wires them, daemon/app/service.py)."""

from __future__ import annotations

import json
import logging

from fallwatch.daemon.alarms.open_alarms import AlarmDesk
from fallwatch.daemon.mqtt.outbox import Outbox
from mqtt_testlib import PREFIX, make_event, wait_until

T0 = 1_800_000_000.0


class Clock:
    now = T0

    def __call__(self) -> float:
        return self.now


def _wired(publisher, mqtt_cfg, port, clock, cameras=None):
    """A publisher and an alarm desk wired as the daemon wires them; the desk's store is the outbox file."""
    cfg = mqtt_cfg(port)
    desk: list[AlarmDesk] = []
    pub = publisher(
        cfg,
        on_answer=lambda a: desk[0].answer(a.target, a.reason, a.by, a.camera),
        cameras=cameras,
        camera=(cameras or ["test-cam"])[0],
    )
    store = Outbox(pub.outbox_path, cfg.outbox_max)
    desk.append(AlarmDesk(store, 120, lambda e: pub.publish_event(e.to_dict(), camera=e.camera), clock=clock))
    pub.start()
    assert wait_until(lambda: pub.listening, 10)
    return pub, desk[0], store


def _raise(pub, desk, kind="fall", camera=None):
    event = make_event(kind)
    event["camera"] = camera or pub.camera
    pub.publish_event(event, camera=event["camera"])
    desk.on_event(event)
    return event


def _events(sub, topic=f"{PREFIX}/event"):
    return [json.loads(p) for p in sub.first_copies(topic)]


def test_unanswered_fall_reminds_at_level_1_2_3_then_an_mqtt_ack_resolves_it(
    mosquitto, subscriber, mqtt_cfg, publisher, caplog
):
    caplog.set_level(logging.INFO)
    clock = Clock()
    sub = subscriber(mosquitto.port, [f"{PREFIX}/#"])
    pub, desk, store = _wired(publisher, mqtt_cfg, mosquitto.port, clock)
    fall = _raise(pub, desk)
    assert sub.wait_for(lambda s: len(_events(s)) == 1, 10)
    for level in (1, 2, 3):
        clock.now = T0 + level * 120 - 0.5
        assert desk.tick() == 0
        clock.now = T0 + level * 120
        assert desk.tick() == 1
        assert sub.wait_for(lambda s, n=1 + level: len(_events(s)) == n, 10), _events(sub)
        reminder = _events(sub)[-1]
        assert reminder["event"] == "reminder" and reminder["level"] == level and reminder["alarm_id"] == fall["id"]
        assert reminder["id"] != fall["id"] and reminder["device"] == "testdev" and reminder["camera"] == "test-cam"
    sub.client.publish(f"{PREFIX}/set", json.dumps({"ack": fall["id"], "by": "Anna"}), qos=1)
    assert sub.wait_for(lambda s: _events(s)[-1]["event"] == "resolved", 10)
    resolved = _events(sub)[-1]
    assert (resolved["alarm_id"], resolved["reason"], resolved["by"]) == (fall["id"], "ack", "Anna")
    assert desk.open_alarms() == []
    clock.now = T0 + 3600
    assert desk.tick() == 0
    sub.client.publish(f"{PREFIX}/set", json.dumps({"ack": fall["id"]}), qos=1)  # answered already: one warning
    assert wait_until(lambda: f"ignored ack on {PREFIX}/set: no open alarm {fall['id']}" in caplog.text, 10)
    assert [e["event"] for e in _events(sub)] == ["fall", "reminder", "reminder", "reminder", "resolved"]
    assert f"command on {PREFIX}/set: ack {fall['id']} by Anna" in caplog.text  # logged, with who
    store.close()


def test_false_alarm_all_of_one_camera(mosquitto, subscriber, mqtt_cfg, publisher):
    clock = Clock()
    sub = subscriber(mosquitto.port, [f"{PREFIX}/#"])
    pub, desk, store = _wired(publisher, mqtt_cfg, mosquitto.port, clock, cameras=["hall", "kitchen"])
    hall = _raise(pub, desk, camera="hall")
    kitchen = _raise(pub, desk, "person_down", camera="kitchen")
    sub.client.publish(f"{PREFIX}/set", json.dumps({"false_alarm": "all", "camera": "kitchen"}), qos=1)
    assert sub.wait_for(lambda s: len(_events(s, f"{PREFIX}/kitchen/event")) == 2, 10)
    resolved = _events(sub, f"{PREFIX}/kitchen/event")[-1]
    assert (resolved["event"], resolved["alarm_id"], resolved["reason"], resolved["by"]) == (
        "resolved",
        kitchen["id"],
        "false_alarm",
        "mqtt",
    )
    assert [a["id"] for a in desk.open_alarms()] == [hall["id"]]
    store.close()


def test_an_open_alarm_is_still_open_and_reminding_after_a_restart(mosquitto, subscriber, mqtt_cfg, publisher):
    clock = Clock()
    sub = subscriber(mosquitto.port, [f"{PREFIX}/#"])
    pub, desk, store = _wired(publisher, mqtt_cfg, mosquitto.port, clock)
    fall = _raise(pub, desk)
    clock.now = T0 + 120
    desk.tick()
    assert sub.wait_for(lambda s: len(_events(s)) == 2, 10)
    pub.stop()
    store.close()

    pub2, desk2, store2 = _wired(publisher, mqtt_cfg, mosquitto.port, clock)  # the daemon started again
    assert [(a["id"], a["level"]) for a in desk2.open_alarms()] == [(fall["id"], 1)]
    clock.now = T0 + 240
    assert desk2.tick() == 1
    assert sub.wait_for(lambda s: len(_events(s)) == 3, 10)
    assert (_events(sub)[-1]["event"], _events(sub)[-1]["level"]) == ("reminder", 2)
    sub.client.publish(f"{PREFIX}/set", json.dumps({"ack": "all"}), qos=1)
    assert sub.wait_for(lambda s: _events(s)[-1]["event"] == "resolved", 10)
    assert _events(sub)[-1]["by"] == "mqtt"
    store2.close()
