"""Where the daemon's events, states and answers go: the log, the page (status hub), MQTT, the open alarms and the
notifications. The Daemon owns the cameras and the loop; this owns what leaves the process, so each path an alarm
takes out of the house is in one place.

Every camera is one of a list (a file with ``camera:`` is a list of one): its state goes to its own MQTT topic,
``CameraSetup.topic`` (None: the device's own topics, as ``camera:`` always had).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Protocol, Sequence

from fallwatch.config.cameras import CameraSetup
from fallwatch.config.schema import Config, MqttConfig

if TYPE_CHECKING:  # (imported where used: a daemon without records, the page or notifications never loads them)
    from fallwatch.daemon.alarms.alarm_event import AlarmEvent
    from fallwatch.daemon.alarms.notifications import Notifications
    from fallwatch.daemon.alarms.open_alarms import AlarmDesk
    from fallwatch.daemon.mqtt.commands import Answer
    from fallwatch.daemon.records.recorder import EventRecorder
    from fallwatch.daemon.telemetry.builder import SnapshotBuilder
    from fallwatch.daemon.telemetry.status_hub import StatusHub
    from fallwatch.daemon.web.server import DebugServer

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """What the daemon needs of MQTT (daemon/mqtt/publisher.py MqttPublisher)."""

    @property
    def alerts_enabled(self) -> bool: ...

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def publish_event(
        self, event: dict, snapshot_jpeg: Optional[bytes] = None, camera: Optional[str] = None
    ) -> None: ...
    def set_state(self, state: dict, camera: Optional[str] = None) -> None: ...
    def set_pause_max(self, pause_max_s: float) -> None: ...
    def reconfigure(self, cfg: MqttConfig) -> None: ...
    def stats(self) -> dict: ...


class CameraView(Protocol):
    """What the outputs read of a camera (daemon/app/camera_worker.py CameraWorker)."""

    @property
    def room_state(self) -> dict[str, Any]: ...


class Outputs:
    def __init__(self, cfg: Config, setups: Sequence[CameraSetup], version: str) -> None:
        self.cfg = cfg
        self.setups = list(setups)
        self.version = version
        self.hub: Optional[StatusHub] = None  # made by the daemon at start
        self.records: Optional[EventRecorder] = None  # the one the pages and MQTT feedback read (the first camera's)
        self.recorders: dict[str, EventRecorder] = {}  # one per camera (each keeps its own pre-roll), one directory
        self.records_unfinished = False  # a record was still being written at shutdown
        self.page: Optional[DebugServer] = None  # the debug server, with debug.enabled
        self.publisher: Optional[Publisher] = None
        self.alarms: Optional[AlarmDesk] = None  # the open alarms, with their reminders
        self.notifications: Optional[Notifications] = None  # Apprise notifications, with notify.urls
        self.alarms_changed = threading.Event()  # answered or reminded from another thread: new state and figures
        self.refresh = threading.Event()  # figures changed outside the pipeline thread (alerts paused)
        self.states: dict[Optional[str], dict] = {}  # each camera topic's last state handed to MQTT

    # -- events ----------------------------------------------------------------------------------------------
    def alerting(self) -> bool:
        """Alerts are on (not paused by an MQTT command)."""
        return self.publisher is None or self.publisher.alerts_enabled

    def topic_of(self, camera: Optional[str]) -> Optional[str]:
        """The MQTT camera level of ``camera`` (a camera no longer configured: the first camera's)."""
        setup = next((s for s in self.setups if s.name == camera), self.setups[0])
        return setup.topic

    def on_event(self, data: dict, snapshot: Callable[[], bytes]) -> None:
        """A camera's event to the log, MQTT, notifications and the open alarms, with the annotated frame when
        mqtt.snapshots or notify.snapshot asks for it."""
        level = logging.INFO if data["event"] == "recovered" else logging.WARNING
        log.log(level, "event %s: %s", data["event"], json.dumps(data, sort_keys=False))
        alerting = self.alerting()
        notify = self.notifications is not None and alerting and data["event"] != "recovered"
        jpeg = None
        if (self.publisher is not None and self.cfg.mqtt.snapshots) or (notify and self.cfg.notify.snapshot):
            try:
                jpeg = snapshot()
            except Exception:
                log.exception("snapshot encoding failed; publishing the event without it")
        if self.publisher is not None:
            try:
                camera = self.topic_of(data.get("camera"))
                self.publisher.publish_event(data, jpeg if self.cfg.mqtt.snapshots else None, camera=camera)
            except Exception:
                log.exception("queueing event %s for MQTT failed", data.get("id"))
        if notify and self.notifications is not None:
            self.notifications.enqueue(data, jpeg if self.cfg.notify.snapshot else None)
        # An alarm while alerts are paused is not opened: nobody was asked, and its reminders would page the
        # family with a stale fall once alerts resume. A recovery always closes what is open.
        if self.alarms is not None and (alerting or data["event"] == "recovered"):
            self.alarms.on_event(data)

    def alarm_event(self, event: AlarmEvent) -> None:
        """A reminder or resolved from the alarm desk, serialised here once: to the page, MQTT and notifications (the
        desk logs it). Their image is the camera's view now (what a carer wants to see: is the person still down?)."""
        camera, data = event.camera, event.to_dict()
        if self.hub is not None:
            self.hub.add_event(data)
        if self.publisher is not None:
            self.publisher.publish_event(data, camera=self.topic_of(camera))
        if self.notifications is not None and self.alerting():
            jpeg = self.hub.latest_jpeg(None, camera) if self.hub is not None and self.cfg.notify.snapshot else None
            self.notifications.enqueue(data, jpeg)

    def update_states(self, cameras: Mapping[str, CameraView]) -> None:
        """Each camera's state ``{"state", "persons", "alarms"}`` to its MQTT topic when it changed. An open alarm
        of a camera no longer configured is shown with the first camera."""
        alarms = self.alarms.open_alarms() if self.alarms is not None else []
        names = list(cameras)
        for name, worker in cameras.items():
            mine = {
                **worker.room_state,
                "alarms": [a for a in alarms if (a["camera"] if a["camera"] in names else names[0]) == name],
            }
            topic = self.topic_of(name)
            if mine == self.states.get(topic):
                continue
            self.states[topic] = mine
            if self.publisher is not None:
                try:
                    self.publisher.set_state(dict(mine), camera=topic)
                except Exception:
                    log.exception("publishing the state failed")

    # -- answers ---------------------------------------------------------------------------------------------
    def feedback(self, event_id: Any, label: Any) -> None:
        """The MQTT `{"feedback": {...}}` command; ValueError says what was wrong."""
        if self.records is None:
            raise ValueError("event records are off (events.enabled: false)")
        self.records.label(event_id, label)

    def answer(self, answer: Answer) -> list[dict]:
        """An answer to open alarms (MQTT command or the page); ValueError says why it closed none. A false
        alarm labels the event records of the alarms it closed, as the feedback command does."""
        if self.alarms is None:
            raise ValueError("the daemon is not running yet")
        closed = self.alarms.answer(answer.target, answer.reason, answer.by, answer.camera)
        if answer.reason == "false_alarm" and self.records is not None:
            for alarm in closed:
                try:
                    self.records.label(alarm["id"], "false_alarm")
                except (ValueError, OSError) as exc:  # no record (pruned, unwritable): it closes all the same
                    log.info("alarm %s: its event record is not labelled (%s)", alarm["id"], exc)
        return closed

    def answer_from_page(self, data: Any) -> list[dict]:
        """The page's POST: the same object as the MQTT command (``{"ack": id}``), answered by "page"."""
        from fallwatch.daemon.mqtt.commands import parse_answer

        problems: list[str] = []
        answer = parse_answer(data if isinstance(data, dict) else {}, problems, by="page")
        if answer is None:
            raise ValueError(problems[0] if problems else 'expected {"ack": "<id>"} or {"false_alarm": "<id>"}')
        return self.answer(answer)

    # -- event records and the page --------------------------------------------------------------------------
    def start_records(self, parts: contextlib.ExitStack, stopping: Callable[[], bool]) -> None:
        from fallwatch.daemon.records.recorder import start_recorders

        self.recorders = start_recorders(self.cfg, [s.name for s in self.setups])
        self.records = next(iter(self.recorders.values()))
        parts.callback(self._stop_records, stopping)

    def _stop_records(self, stopping: Callable[[], bool]) -> None:
        # A stop asked for (SIGTERM) has the stop deadline; a source that ended has time to finish its clips.
        deadline = time.monotonic() + (1.0 if stopping() else 30.0)
        finished = [r.stop(timeout=max(0.1, deadline - time.monotonic())) for r in self.recorders.values()]
        if not all(finished):
            # The writer is inside the video encoder: a normal interpreter exit would tear the encoder's threads
            # down under it (the process aborts). The CLI ends the process at once instead; that record is lost.
            log.warning("an event record was still being written at shutdown; it is incomplete")
            self.records_unfinished = True

    def start_page(self, parts: contextlib.ExitStack, rule_settings: Callable[..., Any]) -> None:
        """The debug page; fall detection must not depend on it: a failure to start is one line."""
        from fallwatch.daemon.web.server import DebugServer

        assert self.hub is not None, "the status hub is made first"
        try:
            server = DebugServer(self.cfg.debug, self.hub)
            server.records = self.records
            server.answer = self.answer_from_page
            server.rule_settings = rule_settings
            server.start()
        except (OSError, ValueError, RuntimeError) as exc:  # bind, password file, packaging: each one line
            log.error("debug server not started (%s); continuing without it", exc)
            return
        self.page = server
        parts.callback(self._stop_page)

    def _stop_page(self) -> None:
        try:
            if self.page is not None:
                self.page.stop()
        except Exception:
            log.exception("stopping the debug server failed")

    # -- alarms and notifications ----------------------------------------------------------------------------
    def start_alarms(self, parts: contextlib.ExitStack) -> None:
        """The open alarms, kept in the daemon's store (the outbox file), and the notifications."""
        from fallwatch.daemon.alarms.open_alarms import AlarmDesk
        from fallwatch.daemon.mqtt.outbox import Outbox, default_state_dir

        cfg = self.cfg
        store = Outbox(default_state_dir(cfg.mqtt.state_dir) / "outbox.sqlite3", cfg.mqtt.outbox_max)
        parts.callback(store.close)  # (the publisher's file: its key/values)
        parts.callback(self.stop_notifications)  # whichever sender runs then (a reload may start or replace it)
        if cfg.notify.urls or cfg.notify.urls_file:
            self._start_notifications(cfg, "continuing without")
        self.alarms = AlarmDesk(store, cfg.alerts.remind_s, self.alarm_event, on_change=self.alarms_changed.set)

    def _start_notifications(self, cfg: Config, otherwise: str) -> None:
        """A sender for ``cfg.notify`` in place of the running one; refused in one line ending with ``otherwise``."""
        from fallwatch.daemon.alarms.notifications import Notifications, NotifyError
        from fallwatch.daemon.mqtt.outbox import default_state_dir

        try:
            made = Notifications(cfg.notify, default_state_dir(cfg.mqtt.state_dir))
        except NotifyError as exc:  # (check-config reads the file too; it can change after)
            log.error("%s; %s", exc, otherwise)
            return
        self.stop_notifications()
        self.notifications = made
        made.start()

    def stop_notifications(self) -> None:
        notifications, self.notifications = self.notifications, None
        if notifications is not None:
            notifications.stop()
            notifications.close()

    def reload_notifications(self, new: Config) -> None:
        """New notify settings: a new sender over the same queue (what is queued for a URL still there is kept)."""
        if not (new.notify.urls or new.notify.urls_file):
            self.stop_notifications()
            log.info("notify: no URLs in the new configuration; notifications off")
            return
        self._start_notifications(new, "keeping the running notifications")

    # -- MQTT ------------------------------------------------------------------------------------------------
    def start_mqtt(self, cfg: Config, figures: SnapshotBuilder) -> None:
        from fallwatch.daemon.mqtt.publisher import MqttPublisher

        topics = [s.topic for s in self.setups]
        publisher = MqttPublisher(
            cfg.mqtt,
            camera=self.setups[0].name,
            cameras=None if topics == [None] else [t for t in topics if t is not None],
            version=self.version,
            figures=figures,
            on_alerts_changed=lambda _on: self.refresh.set(),
            pause_max_s=cfg.alerts.pause_max_s,
            on_feedback=self.feedback,
            on_answer=self.answer,
        )
        self.publisher = publisher
        publisher.start()
        self.states = {}  # a publisher started by a reload gets them too
        self.refresh.set()

    def stop_mqtt(self) -> None:
        if self.publisher is not None:
            publisher, self.publisher = self.publisher, None
            try:
                publisher.stop()
            except Exception:
                log.exception("stopping the MQTT client failed")

    def reload_mqtt(self, new: Config, figures: SnapshotBuilder) -> None:
        if not new.mqtt.enabled:
            log.info("mqtt disabled by the new configuration")
            self.stop_mqtt()
        elif self.publisher is None:
            log.info("mqtt enabled by the new configuration")
            try:
                self.start_mqtt(new, figures)
            except Exception:
                self.stop_mqtt()
                raise
        else:
            self.publisher.reconfigure(new.mqtt)

    def apply_reload(self, old: Config, new: Config) -> None:
        """The live alert, reminder and notification settings of a reload (MQTT's went first: it can fail)."""
        if old.alerts != new.alerts and self.publisher is not None:
            self.publisher.set_pause_max(new.alerts.pause_max_s)
        if old.alerts.remind_s != new.alerts.remind_s and self.alarms is not None:
            self.alarms.set_remind_s(new.alerts.remind_s)
        if old.notify != new.notify:
            self.reload_notifications(new)
