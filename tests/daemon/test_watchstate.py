"""The state model of `fallwatch watch` (pure): topics, availability, staleness, alarms, per-camera rows, order."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

from fallwatch.daemon.cli.admin.watch import render_table
from fallwatch.daemon.cli.admin.watch_state import WatchModel, age_text, parse_topic, parse_ts, topic_filters
from rich.console import Console

T0 = 1_800_000_000.0  # wall-clock seconds; the model never reads the clock itself


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def feed(model: WatchModel, topic: str, payload, at: float = T0) -> bool:
    data = (
        payload
        if isinstance(payload, bytes)
        else (payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
    )
    return model.apply(topic, data, at)


def by_name(rows: list[dict]) -> dict[str, dict]:
    return {r["device"]: r for r in rows}


def test_topics_device_level_and_per_camera():
    assert parse_topic("fallwatch", "fallwatch/hall-pi/state") == ("hall-pi", None, "state")
    assert parse_topic("fallwatch", "fallwatch/hall-pi/availability") == ("hall-pi", None, "availability")
    assert parse_topic("fallwatch", "fallwatch/care-3/bath/event") == ("care-3", "bath", "event")
    assert parse_topic("fallwatch/", "fallwatch/care-3/bath/state") == ("care-3", "bath", "state")
    for other in (
        "fallwatch/hall-pi/event/snapshot",
        "fallwatch/hall-pi/set",
        "fallwatch/hall-pi/bath/heartbeat",
        "homeassistant/binary_sensor/x/fall/config",
        "fallwatchx/a/state",
        "fallwatch//state",
    ):
        assert parse_topic("fallwatch", other) is None, other
    assert "fallwatch/+/+/event" in topic_filters("fallwatch") and "fallwatch/+/heartbeat" in topic_filters("fallwatch")


def test_order_alarm_then_down_then_the_rest_with_reasons():
    m = WatchModel(started_at=T0)
    feed(m, "fallwatch/b-ok/availability", "online")
    feed(m, "fallwatch/b-ok/state", {"state": "ok", "persons": 1})
    feed(m, "fallwatch/b-ok/heartbeat", {"heartbeat_s": 30, "fps": 15.0, "version": "0.1.0"}, T0 + 50)
    feed(m, "fallwatch/a-ok/availability", "online")
    feed(m, "fallwatch/c-off/availability", "offline")  # a Last Will
    feed(m, "fallwatch/c-off/state", {"state": "ok", "persons": 0})
    feed(m, "fallwatch/z-fall/availability", "online")
    feed(m, "fallwatch/z-fall/state", {"state": "person_down", "persons": 1})
    feed(m, "fallwatch/z-fall/event", {"event": "fall", "id": "e1", "ts": iso(T0 + 40), "camera": "hall"}, T0 + 41)
    rows = m.snapshot(T0 + 60)
    assert [r["device"] for r in rows] == ["z-fall", "c-off", "a-ok", "b-ok"]
    fall, off, a_ok, b_ok = rows
    assert fall["alarm"] and not fall["down"]
    cam = fall["cameras"][0]
    assert (cam["camera"], cam["state"], cam["last_event"], cam["last_event_id"], cam["last_event_age_s"]) == (
        "hall",
        "person_down",
        "fall",
        "e1",
        20.0,
    )
    assert off["down"] and off["down_reason"] == "offline" and not off["alarm"]
    assert not a_ok["down"] and a_ok["heartbeat_age_s"] is None  # 60 s unheard is within the 90 s default
    assert b_ok["heartbeat_age_s"] == 10.0 and b_ok["fps"] == 15.0 and b_ok["heartbeat_s"] == 30


def test_stale_heartbeat_uses_the_devices_own_period_else_the_default():
    m = WatchModel(started_at=T0, stale_after=90)
    feed(m, "fallwatch/fast/availability", "online")
    feed(m, "fallwatch/fast/heartbeat", {"heartbeat_s": 1}, T0 + 50)
    feed(m, "fallwatch/slow/availability", "online")
    feed(m, "fallwatch/slow/heartbeat", {"heartbeat_s": 30}, T0 + 50)
    feed(m, "fallwatch/mute/availability", "online")  # retained online, never a heartbeat
    at = by_name(m.snapshot(T0 + 53.5))
    assert at["fast"]["down"] and at["fast"]["down_reason"] == "no heartbeat for 3 s"
    assert not at["slow"]["down"] and not at["mute"]["down"]
    at = by_name(m.snapshot(T0 + 130))  # slow: 80 s of its 90; mute: 130 s of 90
    assert not at["slow"]["down"] and at["mute"]["down_reason"] == "no heartbeat for 2 min"
    assert by_name(m.snapshot(T0 + 141))["slow"]["down"]
    feed(m, "fallwatch/fast/heartbeat", {"heartbeat_s": 1}, T0 + 200)
    assert not by_name(m.snapshot(T0 + 200.5))["fast"]["down"]


def test_per_camera_rows_alarm_first_and_the_device_summary_not_repeated():
    m = WatchModel(started_at=T0)
    feed(m, "fallwatch/care-3/availability", "online")
    feed(m, "fallwatch/care-3/state", {"state": "fall", "persons": 1})  # a device-level summary
    feed(m, "fallwatch/care-3/bedroom/state", {"state": "ok", "persons": 0})
    feed(m, "fallwatch/care-3/bath/state", {"state": "fall", "persons": 1})
    feed(m, "fallwatch/care-3/bath/event", {"event": "fall", "id": "x", "ts": iso(T0 - 5), "camera": "bath"})
    feed(m, "fallwatch/care-3/attic/state", {"state": "ok", "persons": 0})
    (row,) = m.snapshot(T0)
    assert row["alarm"]
    assert [(c["camera"], c["state"]) for c in row["cameras"]] == [("bath", "fall"), ("attic", "ok"), ("bedroom", "ok")]
    assert row["cameras"][0]["last_event_age_s"] == 5.0


def test_bad_and_cleared_messages():
    m = WatchModel(started_at=T0)
    assert not feed(m, "fallwatch/x/state", b"\xff\xfe")
    assert not feed(m, "fallwatch/x/state", "[1, 2]")
    assert not feed(m, "fallwatch/x/heartbeat", "{not json")
    assert not feed(m, "other/x/state", {"state": "fall"})
    assert m.ignored == 3 and m.devices == {}
    feed(m, "fallwatch/x/availability", "offline")
    feed(m, "fallwatch/x/state", {"state": "fall", "persons": "many"})
    feed(m, "fallwatch/x/event", {"event": "fall", "id": "y", "ts": "yesterday"}, T0 - 7)  # ts unreadable
    (row,) = m.snapshot(T0)
    assert row["alarm"] and row["down"] and row["cameras"][0]["persons"] is None
    assert row["cameras"][0]["last_event_age_s"] == 7.0  # from its arrival
    feed(m, "fallwatch/x/availability", b"")  # retained message cleared
    feed(m, "fallwatch/x/state", b"")
    (row,) = m.snapshot(T0)
    assert row["availability"] is None and not row["down"] and not row["alarm"]


def test_helpers():
    assert parse_ts("2026-11-23T18:34:50.500Z") == datetime(2026, 11, 23, 18, 34, 50, 500000, timezone.utc).timestamp()
    assert parse_ts("2026-11-23T18:34:50") is None and parse_ts(5) is None
    assert [age_text(s) for s in (None, 0, 59.9, 150, 7300, 200000)] == ["", "0 s", "59 s", "2 min", "2 h", "2 d"]


def test_table_rows_follow_the_model_order():
    m = WatchModel(started_at=T0)
    feed(m, "fallwatch/a-ok/availability", "online")
    feed(m, "fallwatch/a-ok/alerts", "OFF")
    feed(m, "fallwatch/b-gone/availability", "offline")
    feed(m, "fallwatch/c-fall/state", {"state": "fall", "persons": 1})
    args = argparse.Namespace(host="broker", port=1883, prefix="fallwatch")
    console = Console(record=True, width=160)
    console.print(render_table(args, m.snapshot(T0), connected=True))
    text = console.export_text()
    assert "3 device(s), 1 with a fall, 1 down" in " ".join(text.split())  # the title may wrap
    lines = [line for line in text.splitlines() if any(d in line for d in ("a-ok", "b-gone", "c-fall"))]
    assert [next(d for d in ("a-ok", "b-gone", "c-fall") if d in line) for line in lines] == [
        "c-fall",
        "b-gone",
        "a-ok",
    ]
    assert "FALL" in lines[0] and "offline" in lines[1] and "OFF" in lines[2]


def test_open_alarms_from_the_state_mark_the_camera_and_show_in_the_table():
    m = WatchModel(started_at=T0)
    alarm = {"id": "ev-1", "camera": "bath", "kind": "fall", "opened": iso(T0 - 300), "level": 2, "acknowledged": False}
    # the person got up unseen, or left the view: the state is ok, but nobody has answered the alarm yet
    feed(m, "fallwatch/care-3/bath/state", {"state": "ok", "persons": 0, "alarms": [alarm]})
    feed(m, "fallwatch/care-3/hall/state", {"state": "ok", "persons": 1, "alarms": []})
    (row,) = m.snapshot(T0)
    assert row["alarm"] and row["cameras"][0]["camera"] == "bath"
    assert row["cameras"][0]["open_alarms"] == [alarm] and row["cameras"][1]["open_alarms"] == []
    args = argparse.Namespace(host="broker", port=1883, prefix="fallwatch")
    console = Console(record=True, width=200)
    console.print(render_table(args, m.snapshot(T0), connected=True))
    since = datetime.fromtimestamp(T0 - 300).strftime("%H:%M:%S")
    assert f"fall since {since}, reminder 2" in console.export_text()
    feed(m, "fallwatch/care-3/bath/state", {"state": "ok", "persons": 0, "alarms": []})  # answered
    assert not m.snapshot(T0)[0]["alarm"]
