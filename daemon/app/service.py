"""`fallwatch run`: capture -> pose -> rules -> outputs (MQTT, debug stream, log), under systemd or not.

One main thread runs the pipeline: it takes the next frame from the cameras' capture threads (FrameScheduler:
round-robin, each camera's newest frame) and has that camera's CameraWorker run pose and rules on it and hand the
result to the outputs (the status hub is cheap; MQTT publishing and HTTP serving live in their own threads). The
Daemon holds what the cameras share: the pose engine, the MQTT publisher, the debug server, the figures, reloads
and the watchdog. Signals only set flags the loop checks between frames (app/stop_signals.py): SIGTERM/SIGINT stop
(within 2 s, exit 0), SIGHUP reloads the configuration file (daemon/app/reload.py).

The cameras are a list (of one with ``camera:``). One camera failing never stops the others: a source that cannot
be made or opened is one error line and shows as failed, a file that ends stops its camera only; the daemon ends
once every source has ended (exit 1 when one failed). With ``camera:`` such a source ends the daemon at start
(``CameraSetup.alone``). What leaves the process (log, MQTT, alarms, notifications) is app/outputs.py; the figures
are built by telemetry/builder.py.

Start-up and shutdown are one ExitStack: each part registers its own stop as it starts, shutdown unwinds them in
reverse.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import threading
import time
from pathlib import Path
from typing import Any, Literal, Optional

from fallwatch.config.cameras import CameraSetup, camera_setups
from fallwatch.config.loader import ConfigError, default_config_path
from fallwatch.config.schema import Config
from fallwatch.daemon.app.camera_worker import CameraWorker, camera_source
from fallwatch.daemon.app.outputs import Outputs
from fallwatch.daemon.app.pipeline import Engine
from fallwatch.daemon.app.reload import BackgroundRead, apply_reload, read_config
from fallwatch.daemon.app.scheduler import FrameScheduler
from fallwatch.daemon.app.sd_notify import Notifier, Watchdog
from fallwatch.daemon.app.settings import settings_shown
from fallwatch.daemon.app.stop_signals import Shutdown, StopSignals
from fallwatch.daemon.capture.reader import Capture, CaptureState, Frame, capture_for
from fallwatch.daemon.capture.sources import Source
from fallwatch.daemon.telemetry.builder import SnapshotBuilder
from fallwatch.daemon.telemetry.logsetup import set_level
from fallwatch.daemon.telemetry.snapshot import Snapshot, status_line
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
        engine: Optional[Engine] = None,
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
        self._setups = camera_setups(cfg)  # of the running configuration: a list, of one with `camera:`
        self._captures = dict(captures or {})  # handed in by camera name (tests); `capture`: the first camera's
        if capture is not None:
            self._captures[self._setups[0].name] = capture
        self.notifier = notifier or Notifier()
        self.version = fallwatch_version()
        self.cameras: dict[str, CameraWorker] = {}
        self.outputs = Outputs(cfg, self._setups, self.version)
        self._scheduler = FrameScheduler()
        self._ended: set[str] = set()  # cameras whose source has ended or failed (said once each)
        self.watchdog: Optional[Watchdog] = None
        # A pipeline making no progress for this long is hung: the watchdog pings stop.
        self.stall_s = stall_s or max(self.notifier.watchdog_s or 30.0, 4 * GET_TIMEOUT_S)
        self._stop = threading.Event()
        self._reload = BackgroundRead(self._read_config)
        self._phase: Literal["starting", "running", "stopping"] = "starting"  # a stop signal interrupts only the start
        self._started = False
        self._ready = False
        self._parts: Optional[contextlib.ExitStack] = None  # the started parts' stops, unwound at shutdown
        self.figures = SnapshotBuilder(self.version, [s.name for s in self._setups])
        self._provide_figures()
        self._last_status = 0.0
        self._last_sd_status = 0.0
        self.exit_code = 0

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
    def exit_at_once(self) -> bool:
        """Native work still running at shutdown (a clip being encoded): skip the interpreter's teardown."""
        return self.outputs.records_unfinished

    @property
    def published_state(self) -> Optional[dict]:
        """The last ``{"state", "persons", "alarms"}`` the first camera handed to MQTT."""
        return self.outputs.states.get(self._setups[0].topic)

    def stats(self) -> Snapshot:
        """The newest Snapshot (immutable: any thread may read it)."""
        return self.figures.last

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
        from fallwatch.daemon.app.settings import make_engine, rule_settings
        from fallwatch.daemon.telemetry.status_hub import StatusHub

        cfg, out = self.cfg, self.outputs
        self.notifier.status("starting: loading models")
        # (before the models load: with `camera:` a missing camera or file ends the start in one line)
        sources = {
            s.name: camera_source(s, alone=s.alone, override=self.source_override)
            for s in self._setups
            if s.name not in self._captures
        }
        if self.engine is None:
            self.engine = make_engine(cfg, self.model_dir_arg)
        close_engine = getattr(self.engine, "close", None)  # a clean exit: the Edge TPU crash marker goes
        if close_engine is not None:  # (also when the start fails further on; closing twice does nothing)
            parts.callback(close_engine)
        self._rules = self._camera_rules(cfg)
        out.hub = StatusHub(self.version, cameras=[s.name for s in self._setups])
        out.hub.publish_stats(self.figures.build(time.monotonic()))
        if cfg.events.enabled:
            out.start_records(parts, stopping=self._stop.is_set)
        out.start_alarms(parts)
        if cfg.debug.enabled:
            out.start_page(parts, rule_settings=lambda camera=None: rule_settings(self.cfg, self._setup(camera)))
        if cfg.mqtt.enabled:
            out.start_mqtt(cfg, self.figures)
        parts.callback(out.stop_mqtt)  # publishes `offline`, flushes what the broker will take (also after a reload)
        if close_engine is not None:  # again: a shutdown closes it before MQTT's flush may meet the stop deadline
            parts.callback(close_engine)
        for setup in self._setups:
            self._add_camera(setup, sources.get(setup.name))
        for worker in self.cameras.values():
            worker.start_or_fail(alone=worker.setup.alone)
        outputs = [o for o, on in (("mqtt", out.publisher), ("debug", out.page), ("log", True)) if on]
        log.info(
            "fallwatch %s running: %s -> pose (%s) -> rules (%s) -> %s",
            self.version,
            ", ".join(w.describe() for w in self.cameras.values()),
            getattr(self.engine, "backend", None),
            cfg.rules.strategy,
            ", ".join(outputs),
        )

    # -- cameras ---------------------------------------------------------------------------------------------
    def _add_camera(self, setup: CameraSetup, source: Optional[Source]) -> None:
        from fallwatch.daemon.app.settings import ignore_polygons

        assert self.engine is not None and self._parts is not None and self.outputs.hub is not None
        capture = self._captures.get(setup.name)
        if capture is None:
            assert source is not None, "a camera without a capture has its source made at start"
            capture = capture_for(setup.camera, source)
        worker = CameraWorker(
            self.cfg,
            self.engine,
            self._rules[setup.name],
            capture,
            self.outputs.hub,
            self.outputs.on_event,
            self.outputs.recorders.get(setup.name),
            setup=setup,
        )
        worker.set_ignore_zones(ignore_polygons(self.cfg, setup))
        self.cameras[setup.name] = worker
        self._scheduler.add(setup.name, capture)  # before it starts: no frame signal is missed
        self._parts.callback(self._camera_stopped, worker)

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
            for worker in self.cameras.values():
                worker.log_totals()

    def _setup(self, camera: Optional[str]) -> CameraSetup:
        """The running setup of ``camera`` (default, or a camera no longer configured: the first)."""
        return next((s for s in self._setups if s.name == camera), self._setups[0])

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
                    self.outputs.update_states(self.cameras)
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
            if name in self._ended or not worker.capture.finished:
                continue
            self._ended.add(name)
            worker.say_ended(last=len(self._ended) == len(self.cameras))
        if len(self._ended) < len(self.cameras):
            return False
        if any(w.capture.state == CaptureState.FAILED for w in self.cameras.values()):
            self.exit_code = 1
        return True

    def _alarm_duties(self, now: float) -> None:
        """Reminders due, and the state and figures after an alarm changed (from whichever thread)."""
        if self.outputs.alarms is not None:
            self.outputs.alarms.tick()
        if self.outputs.alarms_changed.is_set():
            self.outputs.alarms_changed.clear()
            self.outputs.update_states(self.cameras)
            self._report(now, force=True)

    def _first_frame(self, frame: Frame) -> None:
        self._ready = True
        log.info(
            "first frame through the pipeline (%.0f ms from capture); ready", (time.monotonic() - frame.captured) * 1000
        )
        now = time.monotonic()
        self._report(now, force=True)
        self.notifier.ready(status_line(self.stats()))
        self._last_sd_status = now
        self.watchdog = Watchdog(self.notifier, self.is_alive).start()
        assert self._parts is not None
        self._parts.callback(self.watchdog.stop)

    # -- figures ---------------------------------------------------------------------------------------------
    def _provide_figures(self) -> None:
        """What each part contributes to the Snapshot (telemetry/builder.py)."""
        out, fig = self.outputs, self.figures
        fig.provide(
            "engine",
            lambda now: {
                "backend": getattr(self.engine, "backend", None),
                "backend_reason": getattr(self.engine, "backend_reason", None),
            },
        )
        fig.provide("cameras", lambda now: {"cameras": {n: w.stats(now) for n, w in self.cameras.items()}})
        fig.provide("state", lambda now: {"ready": self._ready, **settings_shown(self._setups)})
        # MQTT provides its own figures (mqtt/publisher.py). Label counts read every record's metadata from disk:
        # pulled at the heartbeat's cadence (heavy), never on the pipeline thread.
        fig.provide(
            "labelled",
            lambda now: {"labelled": out.records.label_counts() if out.records is not None else None},
            heavy=True,
        )
        fig.provide("alarms", lambda now: {"alarms": tuple(out.alarms.open_alarms()) if out.alarms is not None else ()})
        fig.provide(
            "notify", lambda now: {"notify": out.notifications.figures() if out.notifications is not None else None}
        )
        fig.provide("system", lambda now: {"cpu_temp_c": cpu_temp_c()})

    def _report(self, now: float, force: bool = False) -> None:
        if force or self.outputs.refresh.is_set() or now - self._last_status >= STATUS_EVERY_S:
            self._last_status = now
            self.outputs.refresh.clear()
            snapshot = self.figures.build(now)
            if self.outputs.hub is not None:
                self.outputs.hub.publish_stats(snapshot)
        if not force and now - self._last_sd_status >= SD_STATUS_EVERY_S:
            self._last_sd_status = now
            self.notifier.status(status_line(self.stats()))  # before the first frame: what it waits for

    # -- reload ----------------------------------------------------------------------------------------------
    def reload(self) -> bool:
        """Re-read the configuration file; apply rules, MQTT and log level; keep the camera running."""
        read = self._read_config()
        return read is not None and self._apply_reload(*read)

    def _read_config(self) -> Optional[tuple[Config, dict[str, Any]]]:
        """The new configuration and rules made from it, or None (logged) when the file is refused."""
        if self._ready:
            self.notifier.reloading()
        override = self.source_override if self._setups[0].alone else None
        read = read_config(self.config_path or default_config_path(), override)
        if read is None and self._ready:
            self.notifier.ready()  # ends RELOADING=1
        return read

    def _apply_reload(self, new: Config, rules: dict[str, Any]) -> bool:
        """On the detection thread, between two frames. ``rules``: each camera of ``new``'s rules."""
        try:
            old = self.cfg
            plan = apply_reload(old, new, rules, self.cameras, self.outputs, self.figures)
            if plan is None or not plan.changes:
                return plan is not None
            if old.log.level != new.log.level and not self.log_level_override:
                set_level(new.log.level)
            self.cfg = self.outputs.cfg = plan.running
            self._setups = self.outputs.setups = [w.setup for w in self.cameras.values()]
            self.outputs.update_states(self.cameras)
            self._report(time.monotonic(), force=True)  # the page shows the new rules and zones at once
            return True
        finally:
            if self._ready:  # READY=1 ends the RELOADING=1 state; before the first frame it would lie
                self.notifier.ready()
