"""What a message on ``<prefix>/set`` asks for, parsed without a broker: ``parse_command(payload)``.

A command is one JSON object with any of these keys:
- ``"alerts": true|false``: resume or pause alerting;
- ``"test": true``: a ``test`` event end to end (one per camera);
- ``"feedback": {"id": "<event id>", "label": "fall"|"false_alarm"}``: label an event record.

Parts that are wrong are left out of the result and named in ``Command.problems`` (one line each); the rest still
applies, so a misspelt extra key does not cost the household its pause. A payload that is not a JSON object at all
is refused whole: ``parse_command`` then returns the one line saying why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Union

KEYS = ("alerts", "test", "feedback")


@dataclass(frozen=True)
class Feedback:
    event_id: Any  # as sent: the event records check id and label (they know which exist)
    label: Any


@dataclass(frozen=True)
class Command:
    alerts: Optional[bool] = None  # None: leave the switch as it is
    test: bool = False
    feedback: Optional[Feedback] = None
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
    return Command(alerts=alerts, test=test, feedback=feedback, problems=tuple(problems))
