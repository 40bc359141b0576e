"""The alarm desk with a fake clock over the daemon's real store (SQLite): reminders on time, answers, recoveries,
the same incident joined, and open alarms kept across a restart. The broker side: tests/mqtt/test_mqtt_alarms.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fallwatch.daemon.alarms.open_alarms import AlarmDesk, clean_by
from fallwatch.daemon.mqtt.commands import Answer, parse_command
from fallwatch.daemon.mqtt.outbox import Outbox

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def event(kind: str = "fall", id_: str = "ev-1", camera: str = "hall", track: int = 3) -> dict:
    return {"event": kind, "id": id_, "camera": camera, "track": track, "ts": "2027-01-15T08:00:00.000Z", "t": 1.5}


@pytest.fixture
def desk_on(tmp_path: Path):
    made = []

    def make(clock: Clock, remind_s: float = 120) -> tuple[AlarmDesk, list[dict]]:
        store = Outbox(tmp_path / "outbox.sqlite3", 100)
        made.append(store)
        sent: list[dict] = []
        return AlarmDesk(store, remind_s, lambda e: sent.append(e.to_dict()), clock=clock), sent  # as it leaves

    yield make
    for store in made:
        store.close()


def test_reminders_at_each_period_with_rising_level_until_acknowledged(desk_on):
    clock = Clock()
    desk, sent = desk_on(clock)
    desk.on_event(event())
    assert [a["id"] for a in desk.open_alarms()] == ["ev-1"]
    for level in (1, 2, 3):
        clock.now = T0 + level * 120 - 0.001
        assert desk.tick() == 0, f"reminder {level} came early"
        clock.now = T0 + level * 120
        assert desk.tick() == 1
        assert desk.tick() == 0  # once
        last = sent[-1]
        assert (last["event"], last["level"], last["alarm_id"], last["alarm_kind"]) == (
            "reminder",
            level,
            "ev-1",
            "fall",
        )
        assert last["id"] != "ev-1" and last["t"] == 1.5 and last["camera"] == "hall"  # its own id, the usual fields
    assert desk.open_alarms()[0]["level"] == 3
    closed = desk.answer("ev-1", "ack", "Anna")
    assert [a["id"] for a in closed] == ["ev-1"]
    assert (sent[-1]["event"], sent[-1]["reason"], sent[-1]["by"], sent[-1]["alarm_id"]) == (
        "resolved",
        "ack",
        "Anna",
        "ev-1",
    )
    n = len(sent)
    clock.now += 10_000
    assert desk.tick() == 0 and len(sent) == n and desk.open_alarms() == []


def test_open_alarms_survive_a_restart_and_remind_on(desk_on):
    clock = Clock()
    desk, _ = desk_on(clock)
    desk.on_event(event())
    clock.now = T0 + 120
    desk.tick()
    again, sent = desk_on(clock)  # a new daemon on the same store
    view = again.open_alarms()
    assert [(a["id"], a["camera"], a["kind"], a["level"], a["acknowledged"]) for a in view] == [
        ("ev-1", "hall", "fall", 1, False)
    ]
    assert view[0]["opened"] == "2027-01-15T08:00:00.000Z"
    clock.now = T0 + 240
    assert again.tick() == 1 and sent[-1]["level"] == 2


def test_a_reminder_late_by_a_long_downtime_goes_out_once_and_the_cadence_restarts(desk_on):
    clock = Clock()
    desk, sent = desk_on(clock)
    desk.on_event(event())
    clock.now = T0 + 1000  # the daemon was down for 8 periods
    assert desk.tick() == 1 and desk.tick() == 0
    clock.now = T0 + 1119
    assert desk.tick() == 0
    clock.now = T0 + 1120
    assert desk.tick() == 1 and [e["level"] for e in sent] == [1, 2]


def test_recovery_closes_that_persons_alarm_only(desk_on):
    clock = Clock()
    desk, sent = desk_on(clock)
    desk.on_event(event(id_="a", track=1))
    desk.on_event(event(id_="b", track=2))
    desk.on_event(event(id_="c", track=1, camera="kitchen"))
    desk.on_event({"event": "recovered", "id": "r", "camera": "hall", "track": 1})
    assert sorted(a["id"] for a in desk.open_alarms()) == ["b", "c"]
    assert (sent[-1]["event"], sent[-1]["reason"], sent[-1]["by"], sent[-1]["alarm_id"]) == (
        "resolved",
        "recovered",
        "rules",
        "a",
    )


def test_person_down_after_a_fall_is_the_same_alarm(desk_on):
    clock = Clock()
    desk, sent = desk_on(clock)
    desk.on_event(event("fall", "f"))
    desk.on_event(event("person_down", "d"))
    assert [(a["id"], a["kind"]) for a in desk.open_alarms()] == [("f", "person_down")]
    clock.now = T0 + 120
    assert desk.tick() == 1  # one reminder, not two
    desk.answer("d", "false_alarm", "mqtt")  # either id answers it
    assert desk.open_alarms() == [] and sent[-1]["alarm_id"] == "f"


def test_all_answers_every_alarm_or_one_cameras_and_unknown_ids_say_so(desk_on):
    desk, sent = desk_on(Clock())
    desk.on_event(event(id_="a", camera="hall"))
    desk.on_event(event(id_="b", camera="kitchen"))
    desk.on_event(event(id_="c", camera="kitchen", track=4))
    with pytest.raises(ValueError, match="no open alarm nope"):
        desk.answer("nope", "ack", "x")
    with pytest.raises(ValueError, match="no open alarm on camera attic"):
        desk.answer("all", "ack", "x", camera="attic")
    assert sorted(a["id"] for a in desk.answer("all", "ack", "x", camera="kitchen")) == ["b", "c"]
    assert [a["id"] for a in desk.open_alarms()] == ["a"]
    assert [a["id"] for a in desk.answer("all", "false_alarm", "y")] == ["a"]
    assert [e["reason"] for e in sent] == ["ack", "ack", "false_alarm"]


def test_a_damaged_store_value_starts_empty(tmp_path: Path):
    store = Outbox(tmp_path / "outbox.sqlite3", 10)
    store.remember("open_alarms", "{not json")
    assert AlarmDesk(store, 120, lambda e: None).open_alarms() == []
    store.remember("open_alarms", json.dumps([{"id": "x"}]))  # fields missing
    assert AlarmDesk(store, 120, lambda e: None).open_alarms() == []
    store.close()


def test_commands_ack_and_false_alarm_parse_with_camera_and_by():
    cmd = parse_command(b'{"ack": "ev-1", "by": "Anna"}')
    assert not isinstance(cmd, str)
    assert cmd.answer == Answer(reason="ack", target="ev-1", camera=None, by="Anna") and cmd.problems == ()
    cmd = parse_command(b'{"false_alarm": "all", "camera": "hall"}')
    assert not isinstance(cmd, str) and cmd.answer == Answer("false_alarm", "all", "hall", "mqtt")
    for payload, problem in [
        (b'{"ack": 5}', '"ack" must be an event id or "all"'),
        (b'{"ack": "a", "false_alarm": "b"}', "one answer at a time"),
        (b'{"ack": "a", "by": "' + b"x" * 65 + b'"}', "at most 64 characters"),
        (b'{"ack": "a", "by": "two\\nlines"}', "one line"),
        (b'{"ack": "a", "camera": 3}', '"camera" must be a camera name'),
        (b'{"by": "Anna"}', '"by" goes with "ack" or "false_alarm"'),
    ]:
        cmd = parse_command(payload)
        assert not isinstance(cmd, str) and cmd.answer is None, payload
        assert any(problem in p for p in cmd.problems), (payload, cmd.problems)
    assert clean_by(" Anna ") == "Anna"


def test_the_daemon_labels_the_record_of_a_false_alarm_and_closes_one_without_a_record(tmp_path: Path):
    from fallwatch.config.schema import Config, EventsConfig
    from fallwatch.daemon.app.service import Daemon
    from fallwatch.daemon.records.recorder import EventRecorder

    records = tmp_path / "events"
    (records / "ev-1").mkdir(parents=True)
    record = {**event(), "recorded": T0, "frames": 30}  # an event record as the recorder keeps it
    (records / "ev-1" / "event.json").write_text(json.dumps(record))
    outputs = Daemon(Config()).outputs
    outputs.records = EventRecorder(EventsConfig(), records)
    sent: list[dict] = []
    outputs.alarms = AlarmDesk(None, 120, lambda e: sent.append(e.to_dict()))
    outputs.alarms.on_event(event(id_="ev-1", track=1))
    outputs.alarms.on_event(event(id_="ev-2", track=2))  # its record was pruned, or events are off
    closed = outputs.answer(Answer(reason="false_alarm", target="all", by="Anna"))
    assert sorted(a["id"] for a in closed) == ["ev-1", "ev-2"]
    assert json.loads((records / "ev-1" / "event.json").read_text())["label"] == "false_alarm"
    assert [(e["reason"], e["by"]) for e in sent] == [("false_alarm", "Anna")] * 2
    with pytest.raises(ValueError, match="no open alarm"):
        outputs.answer_from_page({"ack": "ev-1"})
    with pytest.raises(ValueError, match='expected {"ack"'):
        outputs.answer_from_page([])


def test_a_new_period_counts_from_the_last_reminder(desk_on):
    clock = Clock()
    desk, sent = desk_on(clock)
    desk.on_event(event())
    clock.now = T0 + 120
    desk.tick()
    desk.set_remind_s(60)  # SIGHUP: alerts.remind_s 120 -> 60
    clock.now = T0 + 179
    assert desk.tick() == 0
    clock.now = T0 + 180
    assert desk.tick() == 1 and [e["level"] for e in sent] == [1, 2]
