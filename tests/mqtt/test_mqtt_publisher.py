"""MqttPublisher against a real mosquitto: events, heartbeats, availability, state, commands, outages."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import time
import uuid
from typing import Callable

import pytest
from event_schema import PUBLISHED_EVENT_KEYS as EVENT_KEYS
from fallwatch.config.schema import MqttConfig
from fallwatch.daemon.mqtt.outbox import Outbox, connect_sqlite, default_state_dir
from mqtt_testlib import PREFIX, STATUS, make_event, wait_until


def ids_before_marker(pub, sub) -> list[str]:
    """The ids of the events the subscriber got before a marker event published now, once the marker is in: the
    sender hands events over in order, so whatever an earlier event would still bring (a duplicate) is in by then."""
    marker = make_event("test")
    pub.publish_event(marker)
    assert sub.wait_for(lambda s: marker["id"] in [json.loads(p)["id"] for p in s.on(f"{PREFIX}/event")], 15), (
        "the marker event did not arrive"
    )
    ids = [json.loads(p)["id"] for p in sub.first_copies(f"{PREFIX}/event")]
    return ids[: ids.index(marker["id"])]


def held_outbox(held: list[sqlite3.Connection]) -> Callable[[MqttConfig], Outbox]:
    """The publisher's outbox factory (its seam), keeping the database connection for the test to break the disk
    under it."""

    def connect(path: str) -> sqlite3.Connection:
        held.append(connect_sqlite(path))
        return held[-1]

    return lambda cfg: Outbox(default_state_dir(cfg.state_dir) / "outbox.sqlite3", cfg.outbox_max, connect=connect)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_mqtt_events_arrive_with_schema(mosquitto, subscriber, mqtt_cfg, publisher, protocol):
    sub = subscriber(mosquitto.port, [f"{PREFIX}/#"])
    pub = publisher(mqtt_cfg(mosquitto.port, protocol=protocol))
    pub.start()
    assert wait_until(lambda: pub.connected, 5), "publisher did not connect"
    sent = [make_event("fall", 0), make_event("person_down", 1), make_event("recovered", 2)]
    for event in sent:
        pub.publish_event(event)
    got = [json.loads(p) for p in sub.wait_count(f"{PREFIX}/event", 3)]
    assert [e["id"] for e in got] == [e["id"] for e in sent]
    for orig, event in zip(sent, got, strict=True):
        assert set(event) >= EVENT_KEYS, f"missing keys: {EVENT_KEYS - set(event)}"
        assert event["ts"] == orig["ts"] and event["event"] == orig["event"] and event["box"] == orig["box"]
        assert (event["device"], event["camera"], event["backend"]) == ("testdev", "test-cam", "cpu")
    assert not any(m[2] for m in sub.messages if m[0] == f"{PREFIX}/event"), "events must not be retained"
    assert wait_until(lambda: pub.stats()["events_sent"] == 3 and pub.stats()["events_queued"] == 0, 3), pub.stats()
    # availability: online and retained (a late subscriber sees it)
    late = subscriber(mosquitto.port, [f"{PREFIX}/availability"])
    assert late.wait_count(f"{PREFIX}/availability", 1) == [b"online"]
    assert late.messages[0][2] is True
    pub.stop()
    assert sub.wait_for(lambda s: s.on(f"{PREFIX}/availability")[-1:] == [b"offline"], 3)


def test_mqtt_heartbeat_cadence_and_fields(mosquitto, subscriber, mqtt_cfg, publisher):
    sub = subscriber(mosquitto.port, [f"{PREFIX}/heartbeat"])
    pub = publisher(mqtt_cfg(mosquitto.port, heartbeat_s=1))
    pub.start()
    beats = sub.wait_count(f"{PREFIX}/heartbeat", 4, timeout=30)  # they keep coming
    assert len(beats) >= 4
    # The first goes out on connect, then one per heartbeat_s, never sooner (a busy machine may make them late):
    # the k-th carries an uptime (since the publisher was made, before it connected) of at least k seconds.
    uptimes = [json.loads(b)["uptime_s"] for b in beats]
    assert all(up >= k * 1.0 - 0.05 for k, up in enumerate(uptimes)), f"heartbeats sooner than 1 s: {uptimes}"
    hb = json.loads(beats[-1])
    for key in (
        "ts",
        "uptime_s",
        "version",
        "backend",
        "camera",
        "fps",
        "persons",
        "events_sent",
        "events_queued",
        "events_dropped",
        "dropped_frames",
        "cpu_temp_c",
        "heartbeat_s",
    ):
        assert key in hb, f"heartbeat lacks {key}"
    assert (hb["backend"], hb["camera"], hb["fps"], hb["persons"], hb["dropped_frames"]) == (
        STATUS["backend"],
        STATUS["camera"],
        STATUS["fps"],
        STATUS["persons"],
        STATUS["dropped_frames"],
    )
    assert hb["version"] == "0.0-test" and hb["uptime_s"] >= 2 and hb["heartbeat_s"] == 1
    assert hb["cpu_temp_c"] is None or 0 < hb["cpu_temp_c"] < 130


def test_mqtt_state_retained_and_only_on_change(mosquitto, subscriber, mqtt_cfg, publisher):
    sub = subscriber(mosquitto.port, [f"{PREFIX}/state"])
    pub = publisher(mqtt_cfg(mosquitto.port))
    pub.start()
    assert wait_until(lambda: pub.connected, 5)
    pub.set_state({"state": "ok", "persons": 1})
    pub.set_state({"state": "ok", "persons": 1})
    pub.set_state({"state": "fall", "persons": 1})
    states = [json.loads(p) for p in sub.wait_count(f"{PREFIX}/state", 2)]
    late = subscriber(mosquitto.port, [f"{PREFIX}/state"])
    assert json.loads(late.wait_count(f"{PREFIX}/state", 1)[0]) == {"state": "fall", "persons": 1}
    assert states[0] == {"state": "ok", "persons": 1}
    pub.set_state({"state": "marker", "persons": 0})  # in order after anything the three calls sent
    assert sub.wait_for(lambda s: s.json_on(f"{PREFIX}/state")[-1:] == [{"state": "marker", "persons": 0}], 10)
    assert [s["state"] for s in sub.json_on(f"{PREFIX}/state")] == ["ok", "fall", "marker"], (
        "unchanged state re-published"
    )


def test_mqtt_set_commands(mosquitto, subscriber, mqtt_cfg, publisher, caplog):
    sub = subscriber(mosquitto.port, [f"{PREFIX}/#"])
    changes: list[bool] = []
    pub = publisher(mqtt_cfg(mosquitto.port), on_alerts_changed=changes.append)
    pub.start()
    assert wait_until(lambda: pub.listening, 5)
    assert sub.wait_for(lambda s: s.on(f"{PREFIX}/alerts") == [b"ON"], 3)

    sub.client.publish(f"{PREFIX}/set", json.dumps({"alerts": False}), qos=1)
    assert sub.wait_for(lambda s: s.on(f"{PREFIX}/alerts")[-1:] == [b"OFF"], 3)
    assert wait_until(lambda: changes == [False], 2) and pub.alerts_enabled is False
    pub.publish_event(make_event("fall"))  # paused: logged, not published
    # a test event is an explicit request: it goes out even while paused
    sub.client.publish(f"{PREFIX}/set", json.dumps({"test": True}), qos=1)
    events = sub.wait_count(f"{PREFIX}/event", 1)
    # (a paused event published after all would also spoil the exact ["test", "fall"] awaited below)
    assert [json.loads(e)["event"] for e in sub.on(f"{PREFIX}/event")] == ["test"]
    test_event = json.loads(events[0])
    uuid.UUID(test_event["id"])
    assert test_event["device"] == "testdev" and test_event["ts"].endswith("Z")
    assert pub.stats()["events_suppressed"] == 1

    sub.client.publish(f"{PREFIX}/set", json.dumps({"alerts": True}), qos=1)
    assert sub.wait_for(lambda s: s.on(f"{PREFIX}/alerts")[-1:] == [b"ON"], 3)
    assert wait_until(lambda: changes == [False, True], 2)
    pub.publish_event(make_event("fall"))
    assert sub.wait_for(lambda s: [json.loads(e)["event"] for e in s.on(f"{PREFIX}/event")] == ["test", "fall"], 3)
    # the alerts retained topic is what a late Home Assistant sees
    late = subscriber(mosquitto.port, [f"{PREFIX}/alerts"])
    assert late.wait_count(f"{PREFIX}/alerts", 1) == [b"ON"]

    # bad commands: one clear warning each, nothing changes, the client keeps working
    with caplog.at_level(logging.WARNING, logger="fallwatch.daemon.mqtt.publisher"):
        sub.client.publish(f"{PREFIX}/set", b"not json", qos=1)
        sub.client.publish(f"{PREFIX}/set", json.dumps({"alerts": "maybe"}), qos=1)
        assert wait_until(lambda: sum("ignored command" in r.getMessage() for r in caplog.records) >= 2, 3), [
            r.getMessage() for r in caplog.records
        ]
    assert pub.alerts_enabled is True and pub.connected


def test_mqtt_alerts_switch_survives_restart(mosquitto, subscriber, mqtt_cfg, publisher):
    cfg = mqtt_cfg(mosquitto.port)
    pub = publisher(cfg)
    pub.start()
    assert wait_until(lambda: pub.listening, 5)
    sub = subscriber(mosquitto.port, [f"{PREFIX}/alerts"])
    sub.client.publish(f"{PREFIX}/set", json.dumps({"alerts": False}), qos=1)
    assert wait_until(lambda: not pub.alerts_enabled, 3)
    pub.stop()
    again = publisher(cfg)
    assert again.alerts_enabled is False


def test_mqtt_snapshots_only_when_enabled(mosquitto, subscriber, mqtt_cfg, publisher):
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9"
    sub = subscriber(mosquitto.port, [f"{PREFIX}/event", f"{PREFIX}/event/snapshot"])
    pub = publisher(mqtt_cfg(mosquitto.port))  # default: snapshots off
    pub.start()
    assert wait_until(lambda: pub.connected, 5)
    pub.publish_event(make_event("fall"), snapshot_jpeg=jpeg)
    pub.publish_event(make_event("fall", 1))  # a snapshot would go out before this event
    sub.wait_count(f"{PREFIX}/event", 2)
    assert sub.on(f"{PREFIX}/event/snapshot") == [], "a snapshot left the house without mqtt.snapshots"
    pub.stop()

    pub2 = publisher(mqtt_cfg(mosquitto.port, snapshots=True))
    pub2.start()
    pub2.publish_event(make_event("fall"), snapshot_jpeg=jpeg)
    assert sub.wait_count(f"{PREFIX}/event/snapshot", 1) == [jpeg]
    assert len(sub.on(f"{PREFIX}/event")) == 3


def test_mqtt_broker_down_at_start_then_outage_keeps_order(persistent_broker, subscriber, mqtt_cfg, publisher):
    broker = persistent_broker
    # a persistent QoS 1 session: the broker queues events for it while it is away or the broker restarts
    sub = subscriber(broker.port, [f"{PREFIX}/event"], client_id="family-phone", clean=False)
    broker.stop()
    pub = publisher(mqtt_cfg(broker.port))
    pub.start()  # broker down: start must not block or fail
    first = [make_event("fall", i) for i in range(2)]
    for event in first:
        pub.publish_event(event)
    assert pub.stats()["events_queued"] == 2 and not pub.connected
    broker.start()
    assert wait_until(lambda: pub.connected, 8), "no reconnect after the broker came up"
    assert sub.wait_for(lambda s: len(s.on(f"{PREFIX}/event")) >= 2, 8)
    # acknowledged, so not re-sent: an event whose PUBACK is lost in an outage is sent again (at-least-once)
    assert wait_until(lambda: pub.stats()["events_queued"] == 0, 3)
    broker.stop()  # outage while running
    assert wait_until(lambda: not pub.connected, 5)
    second = [make_event("person_down", i) for i in range(3)]
    for event in second:
        pub.publish_event(event)
    broker.start()
    want = [e["id"] for e in first + second]
    assert sub.wait_for(lambda s: len(s.on(f"{PREFIX}/event")) >= 5, 10), sub.on(f"{PREFIX}/event")
    got = ids_before_marker(pub, sub)
    assert got == want, f"lost, duplicated or reordered: got events {[want.index(i) for i in got]}"
    assert wait_until(lambda: pub.stats()["events_queued"] == 0, 3)


def test_mqtt_outbox_bound_drops_oldest(persistent_broker, subscriber, mqtt_cfg, publisher, caplog):
    broker = persistent_broker
    sub = subscriber(broker.port, [f"{PREFIX}/event", f"{PREFIX}/heartbeat"], client_id="family-phone", clean=False)
    broker.stop()
    pub = publisher(mqtt_cfg(broker.port, outbox_max=10))
    pub.start()
    events = [make_event("fall", i) for i in range(13)]
    with caplog.at_level(logging.WARNING, logger="fallwatch.daemon.mqtt.publisher"):
        for event in events:
            pub.publish_event(event)
    assert sum("outbox full" in r.getMessage() for r in caplog.records) == 3
    assert pub.stats()["events_dropped"] == 3 and pub.stats()["events_queued"] == 10
    broker.start()
    assert sub.wait_for(lambda s: len(s.on(f"{PREFIX}/event")) >= 10, 10), len(sub.on(f"{PREFIX}/event"))
    got = ids_before_marker(pub, sub)
    assert got == [e["id"] for e in events[3:]], "not the newest 10, in order"
    assert wait_until(lambda: pub.stats()["events_queued"] == 0, 3)
    assert sub.wait_for(lambda s: any(h["events_dropped"] == 3 for h in s.json_on(f"{PREFIX}/heartbeat")), 5)


def test_mqtt_unacknowledged_events_resent_in_order_once(persistent_broker, subscriber, mqtt_cfg, publisher):
    """Events handed to the broker but never acknowledged (it froze, then died) are re-sent, before newer ones."""
    broker = persistent_broker
    sub = subscriber(broker.port, [f"{PREFIX}/event"], client_id="family-phone", clean=False)
    pub = publisher(mqtt_cfg(broker.port))
    pub.start()
    assert wait_until(lambda: pub.connected, 5)
    events = [make_event("fall", i) for i in range(7)]
    for event in events[:2]:
        pub.publish_event(event)
    assert sub.wait_for(lambda s: len(s.on(f"{PREFIX}/event")) == 2, 5)
    # the broker must have saved the phone's session to disk before it is killed
    assert wait_until(lambda: (broker.db_dir / "mosquitto.db").exists(), 5), "mosquitto did not autosave"
    os.kill(broker.proc.pid, signal.SIGSTOP)  # frozen: takes the bytes, never acknowledges
    for event in events[2:5]:
        pub.publish_event(event)
    assert wait_until(lambda: pub.in_flight() == 3, 3), "events were not handed to the frozen broker"
    os.kill(broker.proc.pid, signal.SIGKILL)
    broker.proc.wait(5)
    broker.proc = None
    assert wait_until(lambda: not pub.connected, 5)
    for event in events[5:]:
        pub.publish_event(event)  # queued behind the unacknowledged three
    broker.start()
    sub.wait_for(lambda s: len(s.on(f"{PREFIX}/event")) >= 7, 10)
    got = ids_before_marker(pub, sub)
    want = [e["id"] for e in events]
    assert got == want, f"lost, duplicated or reordered: got events {[want.index(i) for i in got]}"
    assert wait_until(lambda: pub.stats()["events_queued"] == 0, 3)


def test_mqtt_event_handed_over_as_the_link_drops_is_sent_after_reconnecting(
    persistent_broker, subscriber, mqtt_cfg, publisher
):
    """The sender hands an event to paho in the moment between the link dropping and on_disconnect running:
    paho keeps it (QoS 1) and sends it once reconnected; the sender must neither stall on it nor lose it."""
    broker = persistent_broker
    sub = subscriber(broker.port, [f"{PREFIX}/event"], client_id="family-phone", clean=False)
    pub = publisher(mqtt_cfg(broker.port))
    pub.start()
    assert wait_until(lambda: pub.connected, 5)
    broker.stop()
    assert wait_until(lambda: not pub.connected, 5)
    pub.link.connected = True  # the window: paho has lost the link, the publisher does not know yet
    events = [make_event("fall", i) for i in range(2)]
    pub.publish_event(events[0])
    assert wait_until(lambda: pub.in_flight() == 1, 3), "the event was not handed to paho"
    broker.start()
    assert wait_until(lambda: pub.connected and pub.in_flight() == 0, 10), "the sender stalled on the event"
    pub.publish_event(events[1])
    want = [e["id"] for e in events]
    assert sub.wait_for(lambda s: [json.loads(p)["id"] for p in s.on(f"{PREFIX}/event")] == want, 10), sub.on(
        f"{PREFIX}/event"
    )
    assert wait_until(lambda: pub.stats()["events_queued"] == 0, 3)


@pytest.mark.parametrize("qos", [0, 2])
def test_mqtt_event_qos_setting(mosquitto, subscriber, mqtt_cfg, publisher, qos):
    sub = subscriber(mosquitto.port, [f"{PREFIX}/event"])
    pub = publisher(mqtt_cfg(mosquitto.port, qos=qos))
    pub.start()
    assert wait_until(lambda: pub.connected, 5)
    events = [make_event("fall", i) for i in range(5)]
    for event in events:
        pub.publish_event(event)
    assert [json.loads(p)["id"] for p in sub.wait_count(f"{PREFIX}/event", 5)] == [e["id"] for e in events]
    assert wait_until(lambda: pub.stats()["events_queued"] == 0 and pub.stats()["events_sent"] == 5, 3), pub.stats()


def test_mqtt_retained_state_is_current_after_an_outage(mosquitto, subscriber, mqtt_cfg, publisher):
    """A state published into a dead connection (never acknowledged) must not overwrite, after the reconnect,
    the newer state that changed during the outage: a late dashboard must see the truth."""
    pub = publisher(mqtt_cfg(mosquitto.port))
    pub.start()
    assert wait_until(lambda: pub.connected, 5)
    pub.set_state({"state": "ok", "persons": 1})
    sub = subscriber(mosquitto.port, [f"{PREFIX}/state"])
    assert sub.wait_for(lambda s: s.json_on(f"{PREFIX}/state")[-1:] == [{"state": "ok", "persons": 1}], 3)
    os.kill(mosquitto.proc.pid, signal.SIGSTOP)  # takes the bytes, never acknowledges
    pub.set_state({"state": "person_down", "persons": 1})
    assert not pub.state_published()  # handed to paho, never to be acknowledged
    os.kill(mosquitto.proc.pid, signal.SIGKILL)
    mosquitto.proc.wait(5)
    mosquitto.proc = None
    assert wait_until(lambda: not pub.connected, 5)
    pub.set_state({"state": "ok", "persons": 0})  # the person got up while the broker was away
    mosquitto.start()
    assert wait_until(lambda: pub.connected, 8), "no reconnect"
    # the last state handed to paho is acknowledged and none waits behind it (the stale one, re-sent by paho
    # first, was acknowledged before it)
    assert wait_until(pub.state_published, 8)
    late = subscriber(mosquitto.port, [f"{PREFIX}/state"])
    assert late.wait_count(f"{PREFIX}/state", 1)
    assert late.json_on(f"{PREFIX}/state") == [{"state": "ok", "persons": 0}], "a stale state is retained"


def test_mqtt_event_still_sent_when_the_outbox_cannot_store_it(mosquitto, subscriber, mqtt_cfg, publisher, caplog):
    """A full SD card must not silence a fall alert: the event goes out without the outbox, with one clear line."""
    sub = subscriber(mosquitto.port, [f"{PREFIX}/event"])
    db: list[sqlite3.Connection] = []
    pub = publisher(mqtt_cfg(mosquitto.port), outbox=held_outbox(db))
    pages = db[0].execute("PRAGMA page_count").fetchone()[0]
    db[0].execute(f"PRAGMA max_page_count={pages}")  # the disk is full
    pub.start()
    assert wait_until(lambda: pub.connected, 5)
    event = dict(make_event("fall"), note="x" * 50_000)  # needs new pages
    with caplog.at_level(logging.ERROR, logger="fallwatch.daemon.mqtt.publisher"):
        pub.publish_event(event)
    assert [json.loads(p)["id"] for p in sub.wait_count(f"{PREFIX}/event", 1)] == [event["id"]]
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1 and "cannot store" in lines[0] and "full" in lines[0], lines


def test_mqtt_set_command_wrong_types_get_one_clear_warning(mosquitto, subscriber, mqtt_cfg, publisher, caplog):
    sub = subscriber(mosquitto.port, [f"{PREFIX}/event", f"{PREFIX}/alerts"])
    pub = publisher(mqtt_cfg(mosquitto.port))
    pub.start()
    # published after its subscription to <prefix>/set: once seen, the broker routes commands to it
    assert sub.wait_for(lambda s: s.on(f"{PREFIX}/alerts") == [b"ON"], 5)
    with caplog.at_level(logging.WARNING, logger="fallwatch.daemon.mqtt.publisher"):
        sub.client.publish(f"{PREFIX}/set", json.dumps({"test": "yes"}), qos=1)
        sub.client.publish(f"{PREFIX}/set", b"[" * 60_000, qos=1)  # JSON nested too deep (under the size cap)
        assert wait_until(lambda: sum("ignored command" in r.getMessage() for r in caplog.records) >= 2, 3), [
            r.getMessage() for r in caplog.records
        ]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a bad command logged a traceback"
    assert any('"test" must be true' in r.getMessage() for r in caplog.records)
    assert ids_before_marker(pub, sub) == [] and pub.connected


def test_mqtt_read_only_outbox_keeps_sending_without_flooding_the_log(
    mosquitto, subscriber, mqtt_cfg, publisher, caplog
):
    """The SD card's file system remounted read-only (what ext4 does on I/O errors): queued events and new ones
    still go out, and the log gets one line per problem, not one every half second."""
    sub = subscriber(mosquitto.port, [f"{PREFIX}/event"])
    db: list[sqlite3.Connection] = []
    pub = publisher(mqtt_cfg(mosquitto.port), outbox=held_outbox(db))
    old = make_event("fall", 0)
    pub.publish_event(old)  # queued before the start
    db[0].execute("PRAGMA query_only=ON")  # every write now fails: "attempt to write a readonly db"
    with caplog.at_level(logging.WARNING, logger="fallwatch.daemon.mqtt.publisher"):
        pub.start()
        assert sub.wait_for(lambda s: len(s.on(f"{PREFIX}/event")) >= 1, 5)
        new = make_event("person_down", 1)
        pub.publish_event(new)
        assert sub.wait_for(lambda s: len(s.on(f"{PREFIX}/event")) >= 2, 5)
        time.sleep(2.0)
    got = [json.loads(p)["id"] for p in sub.on(f"{PREFIX}/event")]
    assert got == [old["id"], new["id"]], got
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) <= 3, f"{len(errors)} error lines: {errors[:5]}"
    assert any("readonly" in e for e in errors), errors


def test_mqtt_reload_with_a_read_only_outbox_still_reconnects(mosquitto, subscriber, mqtt_cfg, publisher, caplog):
    """SIGHUP lowering mqtt.outbox_max and changing the broker while the outbox cannot be written: the outbox
    keeps its events (said in one line) and the new connection is made all the same."""
    from testnet import free_port

    sub = subscriber(mosquitto.port, [f"{PREFIX}/event"])
    db: list[sqlite3.Connection] = []
    pub = publisher(mqtt_cfg(free_port(), outbox_max=20), outbox=held_outbox(db))  # no broker there
    pub.start()
    events = [make_event("fall", i) for i in range(12)]
    for event in events:
        pub.publish_event(event)
    db[0].execute("PRAGMA query_only=ON")  # the file system went read-only
    with caplog.at_level(logging.ERROR, logger="fallwatch.daemon.mqtt.publisher"):
        pub.reconfigure(mqtt_cfg(mosquitto.port, outbox_max=10))
    assert any("outbox_max" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert wait_until(lambda: pub.connected, 8), "no connection after the reload"
    assert sub.wait_for(lambda s: len(s.on(f"{PREFIX}/event")) >= 12, 8), len(sub.on(f"{PREFIX}/event"))
    assert [json.loads(p)["id"] for p in sub.on(f"{PREFIX}/event")] == [e["id"] for e in events]


def test_mqtt_alerts_pause_expires_by_itself_and_says_so(mosquitto, subscriber, mqtt_cfg, publisher, caplog):
    # Side door 3: a pause by MQTT command lasted for ever (across restarts, silently). Now it ends after
    # alerts.pause_max_s (1 s here), announced in the log, on <prefix>/alerts and in the heartbeat.
    sub = subscriber(mosquitto.port, [f"{PREFIX}/#"])
    pub = publisher(mqtt_cfg(mosquitto.port), pause_max_s=1.0)
    pub.start()
    assert sub.wait_for(lambda s: s.on(f"{PREFIX}/alerts") == [b"ON"], 5)
    with caplog.at_level(logging.WARNING, logger="fallwatch.daemon.mqtt.publisher"):
        sub.client.publish(f"{PREFIX}/set", json.dumps({"alerts": False}), qos=1)
        assert sub.wait_for(lambda s: b"OFF" in s.on(f"{PREFIX}/alerts"), 5)
        paused_beat = sub.wait_for(lambda s: any(h["alerts"] is False for h in s.json_on(f"{PREFIX}/heartbeat")), 5)
        assert paused_beat, "the heartbeat shows the pause at once"
        beat = next(h for h in sub.json_on(f"{PREFIX}/heartbeat") if h["alerts"] is False)
        assert beat["alerts_resume_at"].endswith("Z")
        assert sub.wait_for(lambda s: s.on(f"{PREFIX}/alerts")[-1:] == [b"ON"], 5), "the pause did not end"
        assert wait_until(lambda: "alerts resumed" in caplog.text, 10)  # logged just after <prefix>/alerts ON
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("alerts PAUSED by MQTT command" in m for m in lines), lines
    assert any("alerts resumed: the pause reached alerts.pause_max_s (1 s)" in m for m in lines), lines
    assert sub.wait_for(lambda s: s.json_on(f"{PREFIX}/heartbeat")[-1]["alerts"] is True, 5)
    event = make_event("fall")
    pub.publish_event(event)
    assert [json.loads(p)["id"] for p in sub.wait_count(f"{PREFIX}/event", 1)] == [event["id"]]


def test_mqtt_paused_alerts_warn_at_start_and_commands_can_be_switched_off(
    mosquitto, subscriber, mqtt_cfg, publisher, caplog
):
    cfg = mqtt_cfg(mosquitto.port)
    sub = subscriber(mosquitto.port, [f"{PREFIX}/alerts"])
    pub = publisher(cfg)
    pub.start()
    assert sub.wait_for(lambda s: s.on(f"{PREFIX}/alerts") == [b"ON"], 5)
    sub.client.publish(f"{PREFIX}/set", json.dumps({"alerts": False}), qos=1)
    assert wait_until(lambda: not pub.alerts_enabled, 5)
    pub.stop()

    # a restart while paused says so, as a warning naming when alerts resume
    with caplog.at_level(logging.WARNING, logger="fallwatch.daemon.mqtt.publisher"):
        again = publisher(cfg)
        again.start()
    starts = [r.getMessage() for r in caplog.records if "alerts are PAUSED" in r.getMessage()]
    assert len(starts) == 1 and again.alerts_resume_at() in starts[0], starts
    assert again.stats()["alerts"] is False and again.stats()["alerts_resume_at"]
    again.stop()

    # mqtt.commands: false lifts the pause and takes no more commands
    closed = mqtt_cfg(mosquitto.port, commands=False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fallwatch.daemon.mqtt.publisher"):
        third = publisher(closed)
        third.start()
    assert third.alerts_enabled is True
    assert any("mqtt.commands is false" in r.getMessage() for r in caplog.records)
    assert wait_until(lambda: third.connected, 5)
    assert not third.listening
    watch = subscriber(mosquitto.port, [f"{PREFIX}/set"])  # sees what the broker hands every subscriber
    sub.client.publish(f"{PREFIX}/set", json.dumps({"alerts": False}), qos=1).wait_for_publish(5)
    sub.client.publish(f"{PREFIX}/set", json.dumps({"test": True}), qos=1).wait_for_publish(5)
    assert watch.wait_for(lambda s: len(s.on(f"{PREFIX}/set")) == 2, 5)  # both commands were delivered
    assert third.alerts_enabled is True and third.stats()["events_sent"] == 0


def test_mqtt_one_heartbeat_on_connect(mosquitto, subscriber, mqtt_cfg, publisher):
    # Side door 8: two heartbeats went out on connect (one from the loop's start, one from the connect).
    sub = subscriber(mosquitto.port, [f"{PREFIX}/heartbeat", f"{PREFIX}/state"])
    pub = publisher(mqtt_cfg(mosquitto.port))
    pub.start()
    assert wait_until(lambda: pub.connected, 5)
    sub.wait_count(f"{PREFIX}/heartbeat", 1)
    pub.set_state({"state": "ok", "persons": 0})  # a marker published after anything the connect sent
    assert sub.wait_count(f"{PREFIX}/state", 1)
    assert len(sub.on(f"{PREFIX}/heartbeat")) == 1
