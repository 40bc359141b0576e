"""The alarm desk's events are typed until they leave: ``to_dict`` is their one serialisation."""

from fallwatch.daemon.alarms.alarm_event import AlarmEvent

OPENING = {"event": "fall", "id": "ev-1", "ts": "2027-01-15T08:00:00.000Z", "camera": "hall", "track": 3, "t": 1.5}


def test_a_reminder_repeats_the_opening_fields_with_its_own_id_time_and_level():
    reminder = AlarmEvent("reminder", "ev-1", "fall", OPENING, "2027-01-15T08:02:00.000Z", level=1)
    data = reminder.to_dict()
    assert (data["event"], data["level"], data["alarm_id"], data["alarm_kind"]) == ("reminder", 1, "ev-1", "fall")
    assert data["id"] == reminder.id != "ev-1" and data["ts"] == "2027-01-15T08:02:00.000Z"
    assert (data["camera"], data["track"], data["t"]) == ("hall", 3, 1.5) and reminder.camera == "hall"
    assert "reason" not in data and "by" not in data
    assert AlarmEvent("reminder", "ev-1", "fall", OPENING, "x", level=2).id != reminder.id, "each has its own id"


def test_resolved_says_why_and_by_whom():
    data = AlarmEvent("resolved", "ev-1", "person_down", OPENING, "t", reason="ack", by="Anna").to_dict()
    assert (data["event"], data["reason"], data["by"], data["alarm_kind"]) == ("resolved", "ack", "Anna", "person_down")
    assert "level" not in data
