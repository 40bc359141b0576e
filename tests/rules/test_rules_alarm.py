"""AlarmBook: which tracked person holds which alarm, and the room state that follows."""

from __future__ import annotations

from fallwatch.rules.alarm import AlarmBook, worst


def event(kind: str, track: int) -> dict:
    return {"event": kind, "track": track}


def test_the_worst_alarm_held_is_the_room_state() -> None:
    book = AlarmBook()
    assert book.state == "ok"
    book.on_event(event("fall", 1))
    assert book.state == "fall"
    book.on_event(event("person_down", 2))
    assert book.state == "person_down"
    book.on_event(event("recovered", 2))
    assert book.state == "fall" and book.tracks == {1: "fall"}
    book.on_event(event("recovered", 1))
    assert book.state == "ok" and book.tracks == {}


def test_a_person_the_rules_forgot_no_longer_holds_an_alarm() -> None:
    book = AlarmBook()
    book.on_event(event("fall", 1))
    book.follow({1: "down", 2: "upright"})
    assert book.state == "fall"
    book.follow({2: "upright"})  # track 1 forgotten; the one in view stands: nobody to hand the alarm to
    assert book.state == "ok"


def test_an_incident_moved_to_a_new_track_keeps_its_alarm() -> None:
    book = AlarmBook()
    book.on_event(event("fall", 1))
    book.on_event(event("person_down", 3))
    book.follow({7: "down", 8: "upright"})  # both lost; a new id lies down in the same frame, another stands
    assert book.tracks == {7: "person_down"}, "the worse alarm goes to the new track"
    assert book.state == "person_down"


def test_clear_drops_every_alarm_and_says_whose() -> None:
    book = AlarmBook()
    book.on_event(event("person_down", 4))
    book.on_event(event("fall", 2))
    assert book.clear() == [2, 4]
    assert book.state == "ok" and book.tracks == {}


def test_worst() -> None:
    assert worst([]) == "ok"
    assert worst(["ok", "fall"]) == "fall"
    assert worst(["fall", "person_down", "ok"]) == "person_down"
