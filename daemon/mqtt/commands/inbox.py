"""Messages from the broker: commands on ``<prefix>/set`` and Home Assistant's birth message, with their guards.

Nothing a broker sends may silence the alarms:
- Topics are read from the raw bytes; a topic that is not UTF-8 is refused in one line.
- Messages above ``MAX_MESSAGE_BYTES`` are refused in one line, never parsed (link/client.py keeps paho from
  holding them). A retained command is cleared (an empty retained message), so it is not applied or read again
  on every reconnect.
- Remote ``feedback`` and ``test`` commands and birth messages are rate-limited (``COMMAND_LIMITS``), and floods
  of bad commands are logged as one line and a count (telemetry/ratelog.py).

What a command does is the publisher's (``Actions``): this module only decides whether it may.
Runs on paho's network thread only; ``_command_times`` is touched by nothing else, so it needs no lock.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional

import paho.mqtt.client as mqtt
from fallwatch.daemon.mqtt import homeassistant as ha
from fallwatch.daemon.mqtt.commands.parse import Answer, Command, Feedback, parse_command
from fallwatch.daemon.mqtt.link.client import LOGGER, MAX_MESSAGE_BYTES, CappedClient
from fallwatch.daemon.mqtt.link.connection import Connection
from fallwatch.daemon.telemetry.ratelog import LogLimiter

log = logging.getLogger(LOGGER)

# Remote messages that write or send something: at most N per window each (a flood must not churn the event
# records, fill the outbox with test events, or have discovery published again and again); an alerts on/off
# command is never limited.
COMMAND_LIMITS = {"feedback": (10, 60.0), "test": (5, 60.0), "birth": (3, 60.0)}  # birth: Home Assistant's


@dataclass(frozen=True)
class Actions:
    set_alerts: Callable[[bool, str], object]  # the alerts switch (turn), with why
    test: Callable[[], None]  # a test event per camera
    republish: Callable[[mqtt.Client], None]  # Home Assistant is back: discovery and retained states again
    feedback: Optional[Callable[[Any, Any], None]]  # labels an event record; raises ValueError naming what was wrong
    answer: Optional[Callable[[Answer], object]]  # answers an open alarm; raises ValueError naming why not


class Inbox:
    def __init__(self, connection: Connection, actions: Actions):
        self._link = connection
        self._do = actions
        self.limited = LogLimiter(log)  # floods of bad messages: one line and a count (flushed by the watchdog)
        self._command_times: dict[str, deque[float]] = {
            n: deque(maxlen=most) for n, (most, _) in COMMAND_LIMITS.items()
        }

    def on_message(self, client: mqtt.Client, msg: mqtt.MQTTMessage) -> None:
        cfg, set_topic = self._link.cfg, f"{self._link.prefix}/set"
        raw_topic = bytes(msg._topic)  # msg.topic raises on a topic that is not UTF-8
        topic = raw_topic.decode("utf-8", "replace")
        if topic.encode("utf-8") != raw_topic:
            self.limited.warning("bad topic", "MQTT: ignored a message whose topic is not UTF-8: %.100r", raw_topic)
            return
        size = len(msg.payload)
        if isinstance(client, CappedClient) and client.dropped_size is not None:  # read only in part
            size = client.dropped_size - 2 - len(raw_topic) - (2 if msg.qos else 0)
        if size > MAX_MESSAGE_BYTES:
            self.limited.warning(
                "too large",
                "MQTT: ignored a message of %d bytes on %s (more than %d): not read",
                size,
                topic,
                MAX_MESSAGE_BYTES,
            )
            msg.payload = b""  # let it go now, not when paho is done with the message
            if msg.retain and topic == set_topic:
                self._clear_retained_command(client, topic)
            return
        if topic == set_topic and cfg.commands:
            self._handle_command(client, msg, topic)
        elif ha.Discovery.is_birth(cfg.homeassistant, msg):  # msg.topic is safe now: it is UTF-8
            if self._within_limit("birth"):
                log.info("Home Assistant is back online: publishing discovery again")
                self._do.republish(client)
            else:
                self.limited.warning(
                    "birth limit",
                    "Home Assistant said online more than %d times in %g s: ignored",
                    *COMMAND_LIMITS["birth"],
                )

    def _handle_command(self, client: mqtt.Client, msg: mqtt.MQTTMessage, topic: str) -> None:
        if msg.retain:
            self._clear_retained_command(client, topic)
            return
        if not msg.payload:  # how a retained command is cleared (by us or anyone): nothing to do
            return
        command = parse_command(bytes(msg.payload))
        if isinstance(command, str):
            self.limited.warning("bad command", "ignored command on %s: %s", topic, command)
            return
        self._apply(command, topic)

    def _clear_retained_command(self, client: mqtt.Client, topic: str) -> None:
        """A retained command would be applied again on every reconnect, and a huge one read again each time: it
        is ignored and cleared (an empty retained message; a broker ACL that forbids it keeps it, then it is only
        ignored, logged once a minute at most)."""
        self.limited.warning(
            "retained command",
            "ignored a retained command on %s (commands must not be retained); clearing it on the broker",
            topic,
        )
        client.publish(topic, b"", qos=1, retain=True)

    def _within_limit(self, name: str) -> bool:
        """The ``name`` command (feedback, test, birth) is within ``COMMAND_LIMITS``; counts it when it is."""
        most, window_s = COMMAND_LIMITS[name]
        times = self._command_times[name]
        now = time.monotonic()
        if len(times) == most and now - times[0] < window_s:
            return False
        times.append(now)
        return True

    def _apply(self, command: Command, topic: str) -> None:
        for problem in command.problems:
            self.limited.warning("bad command", "ignored command on %s: %s", topic, problem)
        if command.feedback is not None:
            if self._within_limit("feedback"):
                self._feedback(topic, command.feedback)
            else:
                self.limited.warning(
                    "feedback limit",
                    "ignored feedback on %s: more than %d in %g s",
                    topic,
                    *COMMAND_LIMITS["feedback"],
                )
        if command.answer is not None:
            self._answer(topic, command.answer)
        if command.alerts is not None:
            self._do.set_alerts(command.alerts, "by MQTT command")
        if command.test:
            if self._within_limit("test"):
                self._do.test()
            else:
                self.limited.warning(
                    "test limit", "ignored a test command on %s: more than %d in %g s", topic, *COMMAND_LIMITS["test"]
                )

    def _feedback(self, topic: str, feedback: Feedback) -> None:
        """Label an event record (``{"feedback": {"id": ..., "label": ...}}``)."""
        if self._do.feedback is None:
            self.limited.warning(
                "bad feedback", "ignored feedback on %s: this daemon keeps no event records to label", topic
            )
            return
        try:
            self._do.feedback(feedback.event_id, feedback.label)
        except ValueError as exc:
            self.limited.warning("bad feedback", "ignored feedback on %s: %s", topic, exc)
        except OSError as exc:
            self.limited.warning(
                "bad feedback", "ignored feedback on %s: the record cannot be written (%s)", topic, exc.strerror or exc
            )

    def _answer(self, topic: str, answer: Answer) -> None:
        """``{"ack": ...}`` / ``{"false_alarm": ...}``: close open alarms (logged there, with who answered)."""
        log.info("command on %s: %s %s by %s", topic, answer.reason, answer.target, answer.by)
        if self._do.answer is None:
            self.limited.warning("bad answer", "ignored %s on %s: this daemon keeps no alarms", answer.reason, topic)
            return
        try:
            self._do.answer(answer)
        except ValueError as exc:
            self.limited.warning("bad answer", "ignored %s on %s: %s", answer.reason, topic, exc)
