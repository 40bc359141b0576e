"""What a message on ``<prefix>/set`` asks for, parsed without a broker: ``parse_command(payload)``.

A command is one JSON object with any of these keys:
- ``"alerts": true|false``: resume or pause alerting;
- ``"test": true``: a ``test`` event end to end (one per camera);
- ``"feedback": {"id": "<event id>", "label": "fall"|"false_alarm"}``: label an event record;
- ``"ack": "<event id>"|"all"``: answer an open alarm (someone is on the way), which closes it;
- ``"false_alarm": "<event id>"|"all"``: close an open alarm as a false alarm (and label its record so);
- with those two, ``"camera": "<name>"`` limits "all" to one camera and ``"by": "<who>"`` (at most 64 characters)
  says who answered (logged, and echoed in the ``resolved`` event).

Parts that are wrong are left out of the result and named in ``Command.problems`` (one line each); the rest still
applies, so a misspelt extra key does not cost the household its pause. A payload that is not a JSON object at all
is refused whole: ``parse_command`` then returns the one line saying why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Union

from fallwatch.daemon.alarms.open_alarms import clean_by

KEYS = ("alerts", "test", "feedback", "ack", "false_alarm", "camera", "by")


@dataclass(frozen=True)
class Feedback:
    event_id: Any  # as sent: the event records check id and label (they know which exist)
    label: Any


@dataclass(frozen=True)
class Answer:
    """An answer to an open alarm: ``reason`` "ack" or "false_alarm", ``target`` an event id or "all"."""

    reason: str
    target: str
    camera: Optional[str] = None
    by: str = "mqtt"


@dataclass(frozen=True)
class Command:
    alerts: Optional[bool] = None  # None: leave the switch as it is
    test: bool = False
    feedback: Optional[Feedback] = None
    answer: Optional[Answer] = None
    problems: tuple[str, ...] = ()  # what was ignored, one line each


def parse_command(payload: bytes) -> Union[Command, str]:
    """The command in ``payload``, or one line saying why none can be read from it."""
    try:
        data = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, JSON nested too deep
        return f"not JSON ({exc}): {payload[:80]!r}"
    if not isinstance(data, dict):
        return f'expected a JSON object such as {{"alerts": false}}, got {payload[:80].decode("utf-8", "replace")}'
    problems = []
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(KEYS)})")
    alerts = data.get("alerts")
    if alerts is not None and not isinstance(alerts, bool):
        problems.append(f'"alerts" must be true or false, got {alerts!r:.80}')
        alerts = None
    test = data.get("test", False)
    if not isinstance(test, bool):
        problems.append(f'"test" must be true, got {test!r:.80}')
        test = False
    feedback = None
    if "feedback" in data:
        raw = data["feedback"]
        if isinstance(raw, dict):
            feedback = Feedback(raw.get("id"), raw.get("label"))
        else:
            problems.append(
                f'"feedback" must be {{"id": "<event id>", "label": "fall" or "false_alarm"}}, got {raw!r:.80}'
            )
    answer = parse_answer(data, problems)
    return Command(alerts=alerts, test=test, feedback=feedback, answer=answer, problems=tuple(problems))


def parse_answer(data: dict, problems: list[str], by: str = "mqtt") -> Optional[Answer]:
    """The ``ack`` / ``false_alarm`` of a command (with its ``camera`` and ``by``); problems appended to ``problems``.
    The debug page posts the same object."""
    given = [key for key in ("ack", "false_alarm") if key in data]
    if not given:
        for key in ("camera", "by"):
            if key in data:
                problems.append(f'"{key}" goes with "ack" or "false_alarm"')
        return None
    if len(given) > 1:
        problems.append('"ack" and "false_alarm" together: send one answer at a time')
        return None
    reason = given[0]
    target = data[reason]
    if not isinstance(target, str) or not target.strip() or len(target) > 64:
        problems.append(f'"{reason}" must be an event id or "all", got {target!r:.80}')
        return None
    camera = data.get("camera")
    if camera is not None and not isinstance(camera, str):
        problems.append(f'"camera" must be a camera name, got {camera!r:.80}')
        return None
    if "by" in data:
        try:
            by = clean_by(data["by"])
        except ValueError as exc:
            problems.append(str(exc))
            return None
    return Answer(reason=reason, target=target.strip(), camera=camera, by=by)
