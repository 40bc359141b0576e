"""`fallwatch run`: capture -> pose -> rules -> outputs (MQTT, debug stream, log), under systemd or not.

One main thread runs the pipeline: it takes the next frame from the cameras' capture threads (FrameScheduler:
round-robin, each camera's newest frame) and has that camera's CameraWorker run pose and rules on it and hand the
result to the outputs (the status hub is cheap; MQTT publishing and HTTP serving live in their own threads). The
Daemon holds what the cameras share: the pose engine, the MQTT publisher, the debug server, the figures, reloads
and the watchdog. Signals only set flags the loop checks between frames (app/stop_signals.py): SIGTERM/SIGINT stop
(within 2 s, exit 0), SIGHUP reloads the configuration file (daemon/app/reload.py).

With several cameras (``cameras:``) one camera failing never stops the others: a source that cannot be made or
opened is one error line and shows as failed, a file that ends stops its camera only; the daemon ends once every
source has ended (exit 1 when one failed). With ``camera:`` such a source ends the daemon at start, as it always did.

Start-up and shutdown are one ExitStack: each part registers its own stop as it starts, shutdown unwinds them in
reverse.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from fallwatch.config.cameras import CameraSetup, camera_setups, multi_camera
from fallwatch.config.changes import config_changes
from fallwatch.config.loader import ConfigError, default_config_path
from fallwatch.config.schema import Config
from fallwatch.daemon.app.camera_worker import CameraWorker, camera_source
from fallwatch.daemon.app.logsetup import set_level
from fallwatch.daemon.app.reload import BackgroundRead, log_changes, read_config, running_config
from fallwatch.daemon.app.scheduler import FrameScheduler
from fallwatch.daemon.app.sd_notify import Notifier, Watchdog
from fallwatch.daemon.app.stop_signals import Shutdown, StopSignals
from fallwatch.daemon.capture.reader import Capture, capture_for
from fallwatch.daemon.telemetry.snapshot import CameraStats, MqttStats, Snapshot, heartbeat, status_line
from fallwatch.daemon.telemetry.system import cpu_temp_c
from fallwatch.rules.alarm import worst

log = logging.getLogger(__name__)

GET_TIMEOUT_S = 0.25  # the loop wakes at least this often to look at signals and the source
STATUS_EVERY_S = 1.0  # a new Snapshot for the page, /api/stats, /metrics and heartbeats
SD_STATUS_EVERY_S = 5.0  # systemd STATUS= line


def fallwatch_version() -> str:
    try:
        return importlib.metadata.version("fallwatch")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class Daemon:
    """The running service. Collaborators can be injected (tests use a fake engine behind the real pipeline)."""

    def __init__(
        self,
        cfg: Config,
        config_path: Optional[Path] = None,
        source: Optional[str] = None,
        model_dir: Optional[str] = None,
        engine: Any = None,
        capture: Optional[Capture] = None,
        captures: Optional[dict[str, Capture]] = None,
        notifier: Optional[Notifier] = None,
        stall_s: Optional[float] = None,
        log_level_override: Optional[str] = None,
    ):
        self.cfg = cfg
        self.config_path = config_path
        self.source_override = source
        self.model_dir_arg = model_dir
        self.log_level_override = log_level_override  # --log-level wins over log.level, also after a reload
        self.engine = engine
        self._capture = capture  # handed in for the first camera (tests); else made from its settings at start
        self._captures = dict(captures or {})  # handed in by camera name (tests)
        self.multi = multi_camera(cfg)  # `cameras:`: per-camera topics, own trackers, a failing camera is not fatal
        self._setups = camera_setups(cfg)  # of the running configuration
        self.notifier = notifier or Notifier()
        self.version = fallwatch_version()
        self.cameras: dict[str, CameraWorker] = {}
        self.hub: Any = None
        self.debug_server: Any = None
        self.publisher: Any = None
        self.records: Any = None  # the EventRecorder the pages and MQTT feedback read (the first camera's)
        self.alarms: Any = None  # the open alarms (AlarmDesk), with their reminders
        self.notifications: Any = None  # Apprise notifications (Notifications), with notify.urls
        self._alarms_changed = threading.Event()  # answered or reminded from another thread: new state and figures
        self._recorders: dict[str, Any] = {}  # one per camera (each keeps its own pre-roll), one directory
        self._scheduler = FrameScheduler()
        self._ended: set[str] = set()  # cameras whose source has ended or failed (said once each)
        self._camera_states: dict[str, dict] = {}  # several cameras: each one's last state handed to MQTT
        self.watchdog: Optional[Watchdog] = None
        # A pipeline making no progress for this long is hung: the watchdog pings stop.
        self.stall_s = stall_s or max(self.notifier.watchdog_s or 30.0, 4 * GET_TIMEOUT_S)
        self._stop = threading.Event()
        self._reload = BackgroundRead(self._read_config)
        self._phase = "starting"  # starting | running | stopping: a stop signal interrupts only the start
        self._started = False
        self._refresh = threading.Event()  # figures changed outside the pipeline thread (alerts paused)
        self._ready = False
        self._parts: Optional[contextlib.ExitStack] = None  # the started parts' stops, unwound at shutdown
        self._started_wall, self._started_mono = time.time(), time.monotonic()
        self._stats = Snapshot(self.version, cameras={s.name: CameraStats(s.name) for s in self._setups})
        self._published_state: Optional[dict] = None
        self._last_status = 0.0
        self._last_sd_status = 0.0
        self.exit_code = 0
        self.exit_at_once = False  # native work still running at shutdown: skip the interpreter's teardown

    # -- what tests and outputs read -------------------------------------------------------------------------
    @property
    def camera(self) -> CameraWorker:
        """The first camera."""
        return next(iter(self.cameras.values()))

    @property
    def state(self) -> str:
        """The room state: the worst alarm any camera holds."""
        return worst(w.alarm.state for w in self.cameras.values())

    @property
    def published_state(self) -> Optional[dict]:
        """The last ``{"state", "persons"}`` handed to MQTT."""
        return self._published_state

    def stats(self) -> Snapshot:
        """The newest Snapshot (immutable: any thread may read it)."""
        return self._stats

    def heartbeat_status(self) -> dict[str, Any]:
        """The daemon's part of MQTT heartbeats (called from the MQTT thread). The label counts read every record's
        metadata from disk: counted here, at the heartbeat's cadence, never on the pipeline thread."""
        labelled = self.records.label_counts() if self.records is not None else None
        return heartbeat(self._stats.replace(labelled=labelled))

    def is_alive(self) -> bool:
        """For the watchdog: every camera made progress (or waited on its camera) recently."""
        now = time.monotonic()
        return all(w.alive(now, self.stall_s) for w in self.cameras.values())

    # -- lifecycle -------------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.request()

    def stop_signals(self) -> StopSignals:
        """SIGTERM/SIGINT stop, SIGHUP reloads; install() from the main thread, done() once run() returned."""
        return StopSignals(
            stop=self._stop.set,
            reload=self._reload.request,
            starting=lambda: self._phase == "starting",
            exit_code=lambda: self.exit_code,
        )

    def run(self) -> int:
        """Start everything, loop until stopped or the source ends, shut down. Returns the exit code."""
        with contextlib.ExitStack() as parts:
            self._parts = parts
            parts.callback(self._log_totals)
            parts.callback(self.notifier.close)
            try:
                try:
                    self._start(parts)
                except Shutdown:
                    return 0
                self._phase, self._started = "running", True
                if not self._stop.is_set():
                    self._loop()
                return self.exit_code
            finally:
                self._phase = "stopping"
                self.notifier.stopping()
        return self.exit_code  # (only when a stop raised and was swallowed; never in practice)

    def _start(self, parts: contextlib.ExitStack) -> None:
        from fallwatch.daemon.app.settings import ignore_polygons, make_engine
        from fallwatch.daemon.telemetry.status_hub import StatusHub

        cfg = self.cfg
        self.notifier.status("starting: loading models")
        # (before the models load: with `camera:` a missing camera or file ends the start in one line)
        sources = {
            s.name: camera_source(s, alone=not self.multi, override=self.source_override)
            for s in self._setups
            if self._given_capture(s.name) is None
        }
        if self.engine is None:
            self.engine = make_engine(cfg, self.model_dir_arg)
        close_engine = getattr(self.engine, "close", None)  # a clean exit: the Edge TPU crash marker goes
        if close_engine is not None:  # (also when the start fails further on; closing twice does nothing)
            parts.callback(close_engine)
        rules = self._camera_rules(cfg)
        self.hub = StatusHub(self.version, cameras=[s.name for s in self._setups])
        self._stats = self._snapshot(time.monotonic())
        self.hub.publish_stats(self._stats)
        if cfg.events.enabled:
            from fallwatch.daemon.records.recorder import start_recorders

            self._recorders = start_recorders(cfg, [s.name for s in self._setups])
            self.records = next(iter(self._recorders.values()))
            parts.callback(self._stop_records)
        self._start_alarms(cfg, parts)
        if cfg.debug.enabled:
            self.debug_server = self._start_debug_server()
            if self.debug_server is not None:
                parts.callback(self._stop_debug_server)
        if cfg.mqtt.enabled:
            self._start_mqtt(cfg)
        parts.callback(self._stop_mqtt)  # publishes `offline`, flushes what the broker will take (also after a reload)
        if close_engine is not None:  # again: a shutdown closes it before MQTT's flush may meet the stop deadline
            parts.callback(close_engine)
        for setup in self._setups:
            capture = self._given_capture(setup.name) or capture_for(setup.camera, sources[setup.name])
            tracker = self.engine.make_tracker() if self.multi else None  # one camera: the engine's own, as always
            worker = CameraWorker(
                cfg,
                self.engine,
                rules[setup.name],
                capture,
                self.hub,
                self._on_event,
                self._recorders.get(setup.name),
                name=setup.name,
                tracker=tracker,
            )
            zones = ignore_polygons(cfg, setup)
            if zones or tracker is not None:  # (an engine made here has the global ones already; one handed in may not)
                worker.set_ignore_zones(zones)
            self.cameras[setup.name] = worker
            self._scheduler.add(setup.name, capture)  # before it starts: no frame signal is missed
            parts.callback(self._camera_stopped, worker)
        for worker in self.cameras.values():
            worker.start_or_fail(alone=not self.multi)
        log.info(
            "fallwatch %s running: %s -> pose (%s) -> rules (%s) -> %s",
            self.version,
            ", ".join(
                w.capture.source.describe() if not self.multi else f"{name}: {w.capture.source.describe()}"
                for name, w in self.cameras.items()
            ),
            self.engine.backend,
            cfg.rules.strategy,
            ", ".join(
                o
                for o, on in (
                    ("mqtt", self.publisher is not None),
                    ("debug", self.debug_server is not None),
                    ("log", True),
                )
                if on
            ),
        )

    # -- cameras ---------------------------------------------------------------------------------------------
    def _given_capture(self, name: str) -> Optional[Capture]:
        if name in self._captures:
            return self._captures[name]
        return self._capture if name == self._setups[0].name else None

    def _camera_rules(self, cfg: Config) -> dict[str, Any]:
        from fallwatch.daemon.app.reload import camera_rules

        try:
            return camera_rules(cfg)
        except ValueError as exc:  # a combination of rules: values the rules refuse
            raise ConfigError([str(exc)]) from None

    def _camera_stopped(self, worker: CameraWorker) -> None:
        worker.stop()
        self._report(time.monotonic(), force=True)  # the page shows the camera stopped

    def _log_totals(self) -> None:
        if self._started:
            for s in self._stats.cameras.values():
                log.info(
                    "%sstopped after %d frames, %d events, %d dropped, %d corrupt frames",
                    f"camera {s.name} " if self.multi else "",
                    s.frames,
                    s.events,
                    s.dropped_frames,
                    s.corrupt_frames,
                )

    def _stop_records(self) -> None:
        # A stop asked for (SIGTERM) has the stop deadline; a source that ended has time to finish its clips.
        deadline = time.monotonic() + (1.0 if self._stop.is_set() else 30.0)
        finished = [r.stop(timeout=max(0.1, deadline - time.monotonic())) for r in self._recorders.values()]
        if not all(finished):
            # The writer is inside the video encoder: a normal interpreter exit would tear the encoder's threads
            # down under it (the process aborts). The CLI ends the process at once instead; that record is lost.
            log.warning("an event record was still being written at shutdown; it is incomplete")
            self.exit_at_once = True

    def _start_debug_server(self) -> Any:
        from fallwatch.daemon.app.settings import rule_settings
        from fallwatch.daemon.web.server import DebugServer

        try:
            server = DebugServer(self.cfg.debug, self.hub)
            server.records = self.records
            server.answer = self._answer_from_page
            server.rule_settings = lambda camera=None: rule_settings(self.cfg, self._setup(camera))
            server.start()
        except (OSError, ValueError, RuntimeError) as exc:  # bind, password file, packaging: each one line
            # The debug page helps tuning; fall detection must not depend on it.
            log.error("debug server not started (%s); continuing without it", exc)
            return None
        return server

    def _stop_debug_server(self) -> None:
        try:
            self.debug_server.stop()
        except Exception:
            log.exception("stopping the debug server failed")

    def _setup(self, camera: Optional[str]) -> CameraSetup:
        """The running setup of ``camera`` (default, or a camera no longer configured: the first)."""
        return next((s for s in self._setups if s.name == camera), self._setups[0])

    def _feedback(self, event_id: Any, label: Any) -> None:
        """The MQTT `{"feedback": {...}}` command; ValueError says what was wrong."""
        if self.records is None:
            raise ValueError("event records are off (events.enabled: false)")
        self.records.label(event_id, label)

    # -- alarms and notifications ----------------------------------------------------------------------------
    def _start_alarms(self, cfg: Config, parts: contextlib.ExitStack) -> None:
        """The open alarms, kept in the daemon's store (the outbox file), and the notifications."""
        from fallwatch.daemon.alarms.notifications import Notifications, NotifyError
        from fallwatch.daemon.alarms.open_alarms import AlarmDesk
        from fallwatch.daemon.mqtt.outbox import Outbox, default_state_dir

        state_dir = default_state_dir(cfg.mqtt.state_dir)
        store = Outbox(state_dir / "outbox.sqlite3", cfg.mqtt.outbox_max)  # (the publisher's file: its key/values)
        parts.callback(store.close)
        if cfg.notify.urls or cfg.notify.urls_file:
            try:
                self.notifications = Notifications(cfg.notify, state_dir)
            except NotifyError as exc:  # (check-config reads the file too; it can change after)
                log.error("%s; continuing without notifications", exc)
            else:
                self.notifications.start()
                parts.callback(self._stop_notifications)
        self.alarms = AlarmDesk(store, cfg.alerts.remind_s, self._alarm_event, on_change=self._alarms_changed.set)

    def _stop_notifications(self) -> None:
        notifications, self.notifications = self.notifications, None
        if notifications is not None:
            notifications.stop()
            notifications.close()

    def _alerting(self) -> bool:
        """Alerts are on (not paused by an MQTT command)."""
        return self.publisher is None or self.publisher.alerts_enabled

    def _alarm_event(self, event: dict) -> None:
        """A reminder or resolved from the alarm desk: to the log (said there), the page, MQTT and notifications.
        Their image is the camera's view now (what a carer wants to see: is the person still down?)."""
        camera = event.get("camera")
        if self.hub is not None:
            self.hub.add_event(event)
        if self.publisher is not None:
            self.publisher.publish_event(event, camera=camera if self.multi else None)
        if self.notifications is not None and self._alerting():
            jpeg = self.hub.latest_jpeg(None, camera) if self.hub is not None and self.cfg.notify.snapshot else None
            self.notifications.enqueue(event, jpeg)

    def _answer(self, answer: Any) -> list[dict]:
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

    def _answer_from_page(self, data: Any) -> list[dict]:
        """The page's POST: the same object as the MQTT command (``{"ack": id}``), answered by "page"."""
        from fallwatch.daemon.mqtt.commands import parse_answer

        problems: list[str] = []
        answer = parse_answer(data if isinstance(data, dict) else {}, problems, by="page")
        if answer is None:
            raise ValueError(problems[0] if problems else 'expected {"ack": "<id>"} or {"false_alarm": "<id>"}')
        return self._answer(answer)

    def _start_mqtt(self, cfg: Config) -> None:
        from fallwatch.daemon.mqtt.publisher import MqttPublisher

        self.publisher = MqttPublisher(
            cfg.mqtt,
            camera=self._setups[0].name,
            cameras=[s.name for s in self._setups] if self.multi else None,
            version=self.version,
            status=self.heartbeat_status,
            on_alerts_changed=lambda _on: self._refresh.set(),
            pause_max_s=cfg.alerts.pause_max_s,
            on_feedback=self._feedback,
            on_answer=self._answer,
        )
        self.publisher.start()
        self._published_state, self._camera_states = None, {}  # a publisher started by a reload gets them too
        self._refresh.set()

    def _stop_mqtt(self) -> None:
        if self.publisher is not None:
            publisher, self.publisher = self.publisher, None
            try:
                publisher.stop()
            except Exception:
                log.exception("stopping the MQTT client failed")

    # -- the loop --------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            read = self._reload.take()
            if read is not None:
                self._apply_reload(*read)
            got = self._scheduler.next(GET_TIMEOUT_S)
            served = None
            if got is not None:
                served = self.cameras[got[0]]
                if served.process(got[1]):
                    self._update_state()
                    if not self._ready:
                        self._first_frame(got[1])
                elif served.failing:
                    self.exit_code = 1  # let systemd restart us
                    break
            now = time.monotonic()
            for worker in self.cameras.values():
                if worker is not served:  # waiting on its camera (or its turn, which comes within one round)
                    worker.idle(now)
            if self._sources_ended():
                break
            self._alarm_duties(now)
            self._report(now)

    def _sources_ended(self) -> bool:
        """Say each camera whose source ended (once); True when every one has, the exit code then 1 when one of
        them failed (a stop asked for is exit 0 whatever the cameras do)."""
        for name, worker in self.cameras.items():
            capture = worker.capture
            if name in self._ended or not capture.finished:
                continue
            self._ended.add(name)
            last = len(self._ended) == len(self.cameras)
            if not self.multi:
                if capture.state == "failed":
                    log.error("source failed: %s", capture.error)
                else:
                    log.info("source ended; stopping")
            elif capture.state != "failed":  # (a failure was said where it happened, in one line)
                log.info(
                    "camera %s: source ended; %s", name, "every camera has: stopping" if last else "the others go on"
                )
            elif last:
                log.info("every camera has stopped: stopping")
        if len(self._ended) < len(self.cameras):
            return False
        if any(w.capture.state == "failed" for w in self.cameras.values()):
            self.exit_code = 1
        return True

    def _alarm_duties(self, now: float) -> None:
        """Reminders due, and the state and figures after an alarm changed (from whichever thread)."""
        if self.alarms is not None:
            self.alarms.tick()
        if self._alarms_changed.is_set():
            self._alarms_changed.clear()
            self._update_state()
            self._report(now, force=True)

    def _first_frame(self, frame: Any) -> None:
        self._ready = True
        log.info(
            "first frame through the pipeline (%.0f ms from capture); ready", (time.monotonic() - frame.captured) * 1000
        )
        now = time.monotonic()
        self._report(now, force=True)
        self.notifier.ready(status_line(self._stats))
        self._last_sd_status = now
        self.watchdog = Watchdog(self.notifier, self.is_alive).start()
        assert self._parts is not None
        self._parts.callback(self.watchdog.stop)

    def _on_event(self, data: dict, snapshot: Callable[[], bytes]) -> None:
        """A camera's event to the log and MQTT, with the annotated frame when mqtt.snapshots asks for it."""
        level = logging.INFO if data["event"] == "recovered" else logging.WARNING
        log.log(level, "event %s: %s", data["event"], json.dumps(data, sort_keys=False))
        alerting = self._alerting()
        notify = self.notifications is not None and alerting and data["event"] != "recovered"
        jpeg = None
        if (self.publisher is not None and self.cfg.mqtt.snapshots) or (notify and self.cfg.notify.snapshot):
            try:
                jpeg = snapshot()
            except Exception:
                log.exception("snapshot encoding failed; publishing the event without it")
        if self.publisher is not None:
            try:
                if self.multi:
                    self.publisher.publish_event(data, jpeg if self.cfg.mqtt.snapshots else None, camera=data["camera"])
                else:
                    self.publisher.publish_event(data, jpeg if self.cfg.mqtt.snapshots else None)
            except Exception:
                log.exception("queueing event %s for MQTT failed", data.get("id"))
        if notify:
            self.notifications.enqueue(data, jpeg if self.cfg.notify.snapshot else None)
        # An alarm while alerts are paused is not opened: nobody was asked, and its reminders would page the
        # family with a stale fall once alerts resume. A recovery always closes what is open.
        if self.alarms is not None and (alerting or data["event"] == "recovered"):
            self.alarms.on_event(data)

    def _update_state(self) -> None:
        """The room's state, and with several cameras each camera's, to MQTT when they change."""
        alarms = self.alarms.open_alarms() if self.alarms is not None else []
        state = {
            "state": self.state,
            "persons": sum(w.counters.persons for w in self.cameras.values()),
            "alarms": alarms,
        }
        changed: list[tuple[dict, Optional[str]]] = []
        if state != self._published_state:
            self._published_state = state
            if not self.multi:
                changed.append((state, None))
        if self.multi:
            for name, worker in self.cameras.items():
                mine = {
                    "state": worker.alarm.state,
                    "persons": worker.counters.persons,
                    "alarms": [a for a in alarms if a["camera"] == name],
                }
                if mine != self._camera_states.get(name):
                    self._camera_states[name] = mine
                    changed.append((mine, name))
        for one, camera in changed:
            if self.publisher is not None:
                try:
                    self.publisher.set_state(dict(one), camera=camera)
                except Exception:
                    log.exception("publishing the state failed")

    # -- figures ---------------------------------------------------------------------------------------------
    def _snapshot(self, now: float) -> Snapshot:
        return Snapshot(
            version=self.version,
            backend=getattr(self.engine, "backend", None),
            backend_reason=getattr(self.engine, "backend_reason", None),
            cameras={name: w.stats(now) for name, w in self.cameras.items()} or self._stats.cameras,
            started_at=self._started_wall,
            uptime_s=round(now - self._started_mono, 3),
            ready=self._ready,
            mqtt=MqttStats.of(self.publisher),
            settings=self._settings_shown(),
            camera_settings={s.name: self._settings_shown(s) for s in self._setups} if self.multi else {},
            alarms=tuple(self.alarms.open_alarms()) if self.alarms is not None else (),
            notify=self.notifications.figures() if self.notifications is not None else None,
            cpu_temp_c=cpu_temp_c(),
        )

    def _settings_shown(self, setup: Optional[CameraSetup] = None) -> dict[str, Any]:
        """The rules and zones the page shows of ``setup`` (default: the first camera: the flat keys)."""
        setup = setup or self._setups[0]
        return {"rules": setup.rules.model_dump(mode="json"), "zones": [z.model_dump(mode="json") for z in setup.zones]}

    def _report(self, now: float, force: bool = False) -> None:
        if force or self._refresh.is_set() or now - self._last_status >= STATUS_EVERY_S:
            self._last_status = now
            self._refresh.clear()
            self._stats = self._snapshot(now)
            if self.hub is not None:
                self.hub.publish_stats(self._stats)
        if not force and now - self._last_sd_status >= SD_STATUS_EVERY_S:
            self._last_sd_status = now
            self.notifier.status(status_line(self._stats))  # before the first frame: what it waits for

    # -- reload ----------------------------------------------------------------------------------------------
    def reload(self) -> bool:
        """Re-read the configuration file; apply rules, MQTT and log level; keep the camera running."""
        read = self._read_config()
        return read is not None and self._apply_reload(*read)

    def _read_config(self) -> Optional[tuple[Config, Any]]:
        """The new configuration and rules made from it, or None (logged) when the file is refused."""
        if self._ready:
            self.notifier.reloading()
        read = read_config(self.config_path or default_config_path(), None if self.multi else self.source_override)
        if read is None and self._ready:
            self.notifier.ready()  # ends RELOADING=1
        return read

    def _apply_reload(self, new: Config, rules: dict[str, Any]) -> bool:
        """On the detection thread, between two frames. ``rules``: each camera of ``new``'s rules."""
        from fallwatch.daemon.app.settings import ignore_polygons, rule_settings
        from fallwatch.rules import make_rules

        try:
            old = self.cfg
            changes = config_changes(old, new)
            if not changes:
                log.info("configuration reloaded: no changes")
                return True
            running = running_config(old, new)
            before = {s.name: s for s in self._setups}
            try:  # the running cameras with their new rules and zones (a camera taken out keeps its own)
                setups = {s.name: s for s in camera_setups(running)}
                changed = [
                    n for n in self.cameras if (setups[n].rules, setups[n].zones) != (before[n].rules, before[n].zones)
                ]
                settings = {n: rule_settings(running, setups[n]) for n in changed}
                # (the rules read with the file are those of a camera running on; one taken out gets its own here)
                new_rules = {n: rules[n] if n in rules else make_rules(settings[n], source=n) for n in changed}
            except ValueError as exc:
                log.error("%s", exc)
                log.error("configuration reload rejected; keeping the running configuration")
                return False
            if any(k.startswith("mqtt.") for k in changes):
                # First, as it is the one step that can still fail (unusable TLS files): all or nothing.
                try:
                    self._reload_mqtt(new)
                except Exception as exc:
                    log.error("mqtt: %s", exc)
                    log.error("configuration reload rejected; keeping the running configuration")
                    return False
            log_changes(changes, old, new)
            for name in changed:
                worker, zones = self.cameras[name], ignore_polygons(running, setups[name])
                if zones != ignore_polygons(old, before[name]):
                    worker.set_ignore_zones(zones)
                worker.reconfigure(settings[name], new_rules[name])
            self._update_state()
            if old.alerts != new.alerts and self.publisher is not None:
                self.publisher.set_pause_max(new.alerts.pause_max_s)
            if old.alerts.remind_s != new.alerts.remind_s and self.alarms is not None:
                self.alarms.set_remind_s(new.alerts.remind_s)
            if old.notify != new.notify:
                self._reload_notifications(new)
            if old.log.level != new.log.level and not self.log_level_override:
                set_level(new.log.level)
            self.cfg = running
            self._setups = list(setups.values())
            self._report(time.monotonic(), force=True)  # the page shows the new rules and zones at once
            return True
        finally:
            if self._ready:  # READY=1 ends the RELOADING=1 state; before the first frame it would lie
                self.notifier.ready()

    def _reload_notifications(self, new: Config) -> None:
        """New notify settings: a new sender over the same queue (what is queued for a URL still there is kept)."""
        from fallwatch.daemon.alarms.notifications import Notifications, NotifyError
        from fallwatch.daemon.mqtt.outbox import default_state_dir

        if not (new.notify.urls or new.notify.urls_file):
            self._stop_notifications()
            log.info("notify: no URLs in the new configuration; notifications off")
            return
        try:
            made = Notifications(new.notify, default_state_dir(new.mqtt.state_dir))
        except NotifyError as exc:
            log.error("%s; keeping the running notifications", exc)
            return
        started = self.notifications is None
        self._stop_notifications()
        self.notifications = made
        made.start()
        if started and self._parts is not None:
            self._parts.callback(self._stop_notifications)

    def _reload_mqtt(self, new: Config) -> None:
        if not new.mqtt.enabled:
            log.info("mqtt disabled by the new configuration")
            self._stop_mqtt()
        elif self.publisher is None:
            log.info("mqtt enabled by the new configuration")
            try:
                self._start_mqtt(new)
            except Exception:
                self._stop_mqtt()
                raise
        else:
            self.publisher.reconfigure(new.mqtt)
