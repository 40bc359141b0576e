"""The alarm book: which tracked person holds which alarm, and the room state that follows.

Events say which alarm a person raised ("fall", "person_down") and when they recovered; the rules' per-person
states say whom they still track. Pure bookkeeping: no clock, no I/O.
"""

from __future__ import annotations

from typing import Any, Mapping

ALARMS = ("person_down", "fall")  # worst first: the room state is the worst alarm anyone holds


class AlarmBook:
    def __init__(self) -> None:
        self._down: dict[int, str] = {}  # track -> "fall" | "person_down", until it recovers

    def on_event(self, event: Mapping[str, Any]) -> None:
        """An event as published (``event``, ``track``): an alarm is raised, or a recovery clears it."""
        track = int(event["track"])
        if event["event"] == "recovered":
            self._down.pop(track, None)
        else:
            self._down[track] = str(event["event"])

    def follow(self, states: Mapping[int, str]) -> None:
        """After each frame's rules: a fallen person the rules forgot (out of view too long) no longer counts; one
        whose incident the rules moved to a new track id in this frame (lost and found again) keeps the alarm under
        that id."""
        orphans = [self._down.pop(track) for track in list(self._down) if track not in states]
        for track, state in states.items():
            if not orphans:
                break
            if state != "upright" and track not in self._down:
                kind = "person_down" if "person_down" in orphans else orphans[0]
                orphans.remove(kind)
                self._down[track] = kind

    def clear(self) -> list[int]:
        """Forget every alarm (rules without history could never report these people recovered); the tracks held."""
        tracks = sorted(self._down)
        self._down.clear()
        return tracks

    @property
    def tracks(self) -> dict[int, str]:
        return dict(self._down)

    @property
    def state(self) -> str:
        """The room state: "person_down" over "fall" over "ok"."""
        return worst(self._down.values())


def worst(states: Any) -> str:
    """The worst of room states or alarms: "person_down" over "fall" over "ok"."""
    held = set(states)
    return next((alarm for alarm in ALARMS if alarm in held), "ok")
