"""Without a broker: `<prefix>/set` commands parsed, the test event a real Event, the per-camera topic layout."""

from __future__ import annotations

import json

import pytest
from fallwatch.daemon.mqtt.commands import Command, Feedback, parse_command
from fallwatch.daemon.mqtt.publisher import MqttError, camera_topics
from fallwatch.daemon.mqtt.topics import CameraTopics
from fallwatch.rules.events import Event
from mqtt_testlib import make_event


def cmd(data) -> Command | str:
    return parse_command(json.dumps(data).encode())


def test_commands_that_are_right():
    assert cmd({"alerts": False}) == Command(alerts=False)
    assert cmd({"alerts": True, "test": True}) == Command(alerts=True, test=True)
    assert cmd({"test": False}) == Command()
    assert cmd({"feedback": {"id": "e1", "label": "fall"}}) == Command(feedback=Feedback("e1", "fall"))
    assert cmd({}) == Command()


@pytest.mark.parametrize(
    "payload, says",
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100_000, "not JSON"),  # nested too deep to parse: a line, not a traceback
        (b"[1, 2]", "expected a JSON object"),
        (b"true", "expected a JSON object"),
    ],
)
def test_payloads_refused_whole_say_why_in_one_line(payload, says):
    problem = parse_command(payload)
    assert isinstance(problem, str) and says in problem and "\n" not in problem and len(problem) < 300


def test_wrong_parts_are_named_and_the_rest_still_applies():
    parsed = cmd({"alerts": "maybe", "test": True, "pause": 5})
    assert isinstance(parsed, Command)
    assert parsed.alerts is None and parsed.test is True
    assert any('"alerts" must be true or false' in p for p in parsed.problems)
    assert any("unknown key(s) pause" in p for p in parsed.problems)
    parsed = cmd({"test": "yes", "alerts": False})
    assert isinstance(parsed, Command) and parsed.test is False and parsed.alerts is False
    assert parsed.problems == ("\"test\" must be true, got 'yes'",)
    parsed = cmd({"feedback": "e1"})
    assert isinstance(parsed, Command) and parsed.feedback is None and '"feedback" must be' in parsed.problems[0]


def test_the_test_event_has_every_field_of_a_real_one():
    real = make_event("fall")
    test = Event.test(source="bath").to_dict()
    assert set(real) <= set(test)
    assert test["event"] == "test" and test["test"] is True and test["source"] == "bath"
    assert test["ts"].endswith("Z") and test["id"] != Event.test(source="bath").id
    with pytest.raises(ValueError, match="unknown event type"):
        Event(
            event="tset",
            source="x",
            t=0,
            frame=0,
            track=0,
            confidence=0,
            spine_angle_deg=0,
            angle_change_deg=0,
            descent_rate=0,
            box=[],
        )


def test_camera_topic_layout():
    one = CameraTopics("fallwatch/pi", "hall")
    assert (one.event("x"), one.snapshot(None), one.state("x")) == (
        "fallwatch/pi/event",
        "fallwatch/pi/event/snapshot",
        "fallwatch/pi/state",
    )
    assert one.cameras == ["hall"] and one.key("x") is None and one.all_states() == ["fallwatch/pi/state"]
    assert one.camera_of(json.dumps(make_event()).encode()) is None

    several = CameraTopics("fallwatch/pi", "bath", ["bath", "bed room", "bath"])
    assert several.levels == {"bath": "bath", "bed room": "bed_room"} and several.cameras == ["bath", "bed room"]
    assert several.event("bed room") == "fallwatch/pi/bed_room/event"
    assert several.snapshot(None) == "fallwatch/pi/bath/event/snapshot"  # the default camera
    assert several.state("attic+1") == "fallwatch/pi/attic_1/state" and not several.known("attic+1")
    assert several.all_states() == ["fallwatch/pi/bath/state", "fallwatch/pi/bed_room/state"]
    assert several.key(None) == "bath" and several.key("bed room") == "bed room"
    assert several.camera_of(json.dumps({**make_event(), "camera": "bed room"}).encode()) == "bed room"
    assert several.camera_of(b"{broken") is None
    with pytest.raises(MqttError, match="'bed room' and 'bed/room'"):
        camera_topics("fallwatch/pi", "bed room", ["bed room", "bed/room"])
