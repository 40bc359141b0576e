"""`fallwatch run`: capture -> pose -> rules -> outputs (MQTT, debug stream, log), under systemd or not.

One main thread runs the pipeline: it takes the newest frame from the capture thread, runs pose and rules on
it, and hands the result to the outputs (the status hub is cheap; MQTT publishing and HTTP serving live in their
own threads). Signals only set flags the loop checks between frames: SIGTERM/SIGINT stop (within 2 s, exit 0),
SIGHUP reloads the configuration file.
"""
from __future__ import annotations

import argparse
import collections
import importlib.metadata
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

from fallwatch.config.loader import ConfigError, default_config_path, load_config, masked_dump
from fallwatch.config.schema import Config

from .capture import Capture
from .logsetup import set_level, setup_logging
from .notify import Notifier, Watchdog
from .sources import SourceError, make_source

log = logging.getLogger(__name__)

STOP_DEADLINE_S = 1.9  # SIGTERM to exit, whatever a blocked driver or broker does
GET_TIMEOUT_S = 0.25  # the loop wakes at least this often to look at signals and the source
STATUS_EVERY_S = 1.0  # status hub figures
SD_STATUS_EVERY_S = 5.0  # systemd STATUS= line
FPS_STALE_S = 2.0  # no inference for this long: fps reads 0
MAX_CONSECUTIVE_ERRORS = 25  # unexpected pipeline errors in a row: exit 1 and let systemd restart us
# Sections a reload applies at once; the others need a restart (they hold the camera, the models, the socket).
LIVE_SECTIONS = ("rules", "zones", "mqtt", "alerts", "log")


def fallwatch_version() -> str:
    try:
        return importlib.metadata.version("fallwatch")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"rules": {"fall_angle_deg": 45}} -> {"rules.fall_angle_deg": 45}"""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def config_changes(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """Changed keys (dotted) -> (old, new) as they may be logged: compared on the real values (a changed
    password counts), shown masked (secrets, and passwords inside URLs such as an RTSP camera.source)."""
    a, b = flatten(old.model_dump()), flatten(new.model_dump())
    shown_a, shown_b = flatten(masked_dump(old)), flatten(masked_dump(new))
    return {k: (shown_a.get(k), shown_b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


class Shutdown(Exception):
    """Raised by the signal handler while the daemon is still starting (loading models can take a while)."""


class Daemon:
    """The running service. Collaborators can be injected (tests use a fake engine behind the real pipeline)."""

    def __init__(self, cfg: Config, config_path: Optional[Path] = None, source: Optional[str] = None,
                 model_dir: Optional[str] = None, engine: Any = None, capture: Optional[Capture] = None,
                 notifier: Optional[Notifier] = None, stall_s: Optional[float] = None,
                 log_level_override: Optional[str] = None):
        self.cfg = cfg
        self.config_path = config_path
        self.source_override = source
        self.model_dir_arg = model_dir
        self.log_level_override = log_level_override  # --log-level wins over log.level, also after a reload
        self.engine = engine
        self.capture = capture
        self.notifier = notifier or Notifier()
        self.version = fallwatch_version()
        self.pipeline: Any = None
        self.hub: Any = None
        self.debug_server: Any = None
        self.publisher: Any = None
        self.records: Any = None  # EventRecorder, with events.enabled
        self.watchdog: Optional[Watchdog] = None
        # A pipeline making no progress for this long is hung: the watchdog pings stop.
        self.stall_s = stall_s or max(self.notifier.watchdog_s or 30.0, 4 * GET_TIMEOUT_S)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._reload_thread: Optional[threading.Thread] = None
        self._reload_read: Optional[tuple[Config, Any]] = None  # what the reload thread read and checked
        self._started = False
        self._shutting_down = False
        self._ready = False
        self._progress = time.monotonic()
        self._done = threading.Event()
        self._wakeup: Optional[tuple[socket.socket, socket.socket]] = None  # signal wake-up socket pair
        # figures
        self.frames = 0
        self.corrupt = 0  # frames the engine refused (FrameError); the capture counts its own
        self.errors = 0  # unexpected exceptions in the pipeline
        self._error_run = 0
        self.events = 0
        self._times: collections.deque = collections.deque(maxlen=64)
        self.fps = 0.0
        self.persons = 0
        self.stage_ms: dict[str, float] = {}
        self.latency_ms = 0.0  # capture -> rules done, for the newest frame
        self._down: dict[int, str] = {}  # track -> "fall" | "person_down", until it recovers
        self.state = "ok"
        self._published_state: Optional[dict] = None
        self._last_status = 0.0
        self._last_sd_status = 0.0
        self.exit_code = 0

    # -- lifecycle -------------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    def install_signals(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads. Call from the main thread."""
        def on_stop(_signum: int, _frame: Any) -> None:
            # Flags only: a handler runs between any two bytecodes of the main thread, which may be holding a lock
            # that logging or starting a thread would need again (a deadlock). The stop-deadline thread, running
            # already, logs the signal and bounds the exit.
            self._stop.set()
            if not self._started and not self._shutting_down:
                raise Shutdown()

        # Python's C-level handler writes each signal's number here at once, even while the main thread is
        # inside a long C call (loading a model) and cannot run the Python handler yet.
        wake_r, wake_w = socket.socketpair()
        wake_w.setblocking(False)
        wake_r.settimeout(0.25)
        self._wakeup = (wake_r, wake_w)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
        threading.Thread(target=self._stop_deadline, args=(wake_r,), name="stop-deadline", daemon=True).start()

    def _stop_deadline(self, wake: socket.socket) -> None:
        """After SIGTERM/SIGINT the process is gone within STOP_DEADLINE_S, whatever blocks (a camera driver, a
        broker, a model load)."""
        stops = {int(signal.SIGTERM), int(signal.SIGINT)}
        signum = 0
        while not signum:
            try:
                signum = next((b for b in wake.recv(64) if b in stops), 0)
            except (socket.timeout, BlockingIOError):
                pass
            except OSError:
                return
            if self._done.is_set():
                return
        log.info("%s received; stopping", signal.Signals(signum).name)
        if not self._done.wait(STOP_DEADLINE_S):
            log.warning("shutdown did not finish in %.1fs; exiting now", STOP_DEADLINE_S)
            logging.shutdown()
            os._exit(self.exit_code)

    def run(self) -> int:
        """Start everything, loop until stopped or the source ends, shut down. Returns the exit code."""
        try:
            try:
                self._start()
            except Shutdown:
                return 0
            self._started = True
            if self._stop.is_set():
                return 0
            self._loop()
            return self.exit_code
        finally:
            self._shutdown()
            self._done.set()
            self._close_wakeup()

    def _close_wakeup(self) -> None:
        if self._wakeup is None:
            return
        try:
            signal.set_wakeup_fd(-1)
        except ValueError:  # not the main thread
            pass
        for sock in self._wakeup:
            sock.close()
        self._wakeup = None

    def _start(self) -> None:
        from fallwatch.rules import make_rules

        from .pipeline import Pipeline
        from .settings import ignore_polygons, make_engine, rule_settings
        from .status import StatusHub

        cfg = self.cfg
        self.notifier.status("starting: loading models")
        if self.capture is None:
            source = make_source(cfg.camera, self.source_override)  # SourceError: no camera, no such file
        if self.engine is None:
            self.engine = make_engine(cfg, self.model_dir_arg)
        try:
            rules = make_rules(rule_settings(cfg), source=cfg.camera.name)
        except ValueError as exc:  # a combination of rules: values the rules refuse
            raise ConfigError([str(exc)]) from None
        if ignore_polygons(cfg):  # (an engine made here has them already; one handed in may not)
            self.engine.set_ignore_zones(ignore_polygons(cfg))
        self.pipeline = Pipeline(self.engine, rules)
        self.hub = StatusHub(self.version, cfg.camera.name)
        self.hub.update(backend=self.engine.backend, backend_reason=getattr(self.engine, "backend_reason", None),
                        camera="starting", rules=cfg.rules.model_dump(mode="json"),
                        zones=[z.model_dump(mode="json") for z in cfg.zones])
        if cfg.events.enabled:
            self._start_records(cfg)
        if cfg.debug.enabled:
            self._start_debug_server()
        if cfg.mqtt.enabled:
            self._start_mqtt(cfg)
        if self.capture is None:
            c = cfg.camera
            self.capture = Capture(source, rotate=c.rotate, flip=c.flip, realtime=c.realtime, loop=c.loop,
                                   reopen_max_s=c.reopen_max_s)
        self.capture.start()  # SourceError for an unreadable file
        self._progress = time.monotonic()
        log.info("fallwatch %s running: %s -> pose (%s) -> rules (%s) -> %s", self.version,
                 self.capture.source.describe(), self.engine.backend, cfg.rules.strategy,
                 ", ".join(o for o, on in (("mqtt", self.publisher is not None),
                                           ("debug", self.debug_server is not None), ("log", True)) if on))

    def _start_debug_server(self) -> None:
        from .settings import rule_settings
        from .web import DebugServer

        try:
            server = DebugServer(self.cfg.debug, self.hub)
            server.records = self.records
            server.rule_settings = lambda: rule_settings(self.cfg)
            server.start()
        except (OSError, ValueError, RuntimeError) as exc:  # bind, password file, packaging: each one line
            # The debug page helps tuning; fall detection must not depend on it.
            log.error("debug server not started (%s); continuing without it", exc)
            return
        self.debug_server = server

    def _start_records(self, cfg: Config) -> None:
        from .event_records import EventRecorder
        from .outbox import default_state_dir

        directory = Path(cfg.events.dir).expanduser() if cfg.events.dir else \
            default_state_dir(cfg.mqtt.state_dir) / "events"
        self.records = EventRecorder(cfg.events, directory, privacy=cfg.privacy == "skeleton",
                                     camera=cfg.camera.name).start()

    def _feedback(self, event_id: Any, label: Any) -> None:
        """The MQTT `{"feedback": {...}}` command; ValueError says what was wrong."""
        if self.records is None:
            raise ValueError("event records are off (events.enabled: false)")
        self.records.label(event_id, label)

    def _start_mqtt(self, cfg: Config) -> None:
        from .mqtt import MqttPublisher

        self.publisher = MqttPublisher(cfg.mqtt, camera=cfg.camera.name, version=self.version,
                                       status=self.heartbeat_status, on_alerts_changed=self._alerts_changed,
                                       pause_max_s=cfg.alerts.pause_max_s,
                                       on_feedback=self._feedback)
        self.publisher.start()
        self._alerts_changed(self.publisher.alerts_enabled)

    def _stop_mqtt(self) -> None:
        if self.publisher is not None:
            publisher, self.publisher = self.publisher, None
            try:
                publisher.stop()
            except Exception:
                log.exception("stopping the MQTT client failed")

    def _alerts_changed(self, enabled: bool) -> None:
        """The publisher logs the change; the page shows it."""
        if self.hub is not None:
            resume_at = self.publisher.alerts_resume_at() if self.publisher is not None else None
            self.hub.update(alerts=bool(enabled), alerts_resume_at=resume_at)

    def _shutdown(self) -> None:
        self._shutting_down = True
        self.notifier.stopping()
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.capture is not None:
            self.capture.stop(timeout=0.5)
        if self.hub is not None:
            self.hub.mark_source_stopped()
            self.hub.update(camera=self.capture.state if self.capture else "stopped")
        close_engine = getattr(self.engine, "close", None)
        if close_engine is not None:  # a clean exit: the Edge TPU crash marker goes
            close_engine()
        self._stop_mqtt()  # publishes `offline` and flushes what the broker will take
        if self.records is not None:
            self.records.stop(timeout=1.0)  # within the stop deadline; unfinished records keep what they have
        if self.debug_server is not None:
            try:
                self.debug_server.stop()
            except Exception:
                log.exception("stopping the debug server failed")
        self.notifier.close()
        capture = self.capture
        if not self._started:
            return
        log.info("stopped after %d frames, %d events, %d dropped, %d corrupt frames", self.frames, self.events,
                 capture.dropped if capture else 0, (capture.corrupt if capture else 0) + self.corrupt)

    # -- the loop --------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        capture = self.capture
        assert capture is not None
        while not self._stop.is_set():
            if self._reload.is_set() and self._reload_thread is None:
                # The file is read and checked in a thread of its own: a slow or hostile file must not stall
                # detection. The result is applied here, between two frames.
                self._reload.clear()
                self._reload_thread = threading.Thread(target=self._read_for_reload, name="config-reload",
                                                       daemon=True)
                self._reload_thread.start()
            if self._reload_thread is not None and not self._reload_thread.is_alive():
                self._reload_thread = None
                read, self._reload_read = self._reload_read, None
                if read is not None:
                    self._apply_reload(*read)
            frame = capture.get(GET_TIMEOUT_S)
            now = time.monotonic()
            if frame is None:
                if capture.finished:
                    if capture.state == "failed":
                        log.error("source failed: %s", capture.error)
                        self.exit_code = 1
                    else:
                        log.info("source ended; stopping")
                    break
                # Waiting on the camera is not a hang: the pipeline is idle, not stuck.
                self._progress = now
                if capture.state != "running" and self.hub is not None:
                    self.hub.mark_source_stopped()
                self._report(now)
                continue
            self._process(frame)
            self._report(time.monotonic())

    def _process(self, frame: Any) -> None:
        from fallwatch.pose.engine import FrameError

        try:
            result = self.pipeline.process(frame.image, frame.t, frame.frame_no)
        except FrameError as exc:
            self.corrupt += 1
            log.debug("frame %d skipped: %s", frame.frame_no, exc)
            self._progress = time.monotonic()
            return
        except Exception:
            # One odd frame must not end the watch; a pipeline that keeps failing is restarted by systemd.
            self.errors += 1
            self._error_run += 1
            if self._error_run == 1 or self._error_run == MAX_CONSECUTIVE_ERRORS:
                log.exception("pipeline failed on frame %d", frame.frame_no)
            if self._error_run >= MAX_CONSECUTIVE_ERRORS:
                log.error("pipeline failed on %d frames in a row; exiting", self._error_run)
                self.exit_code = 1
                self._stop.set()
            return
        self._error_run = 0
        done = time.monotonic()
        self._progress = done
        self.latency_ms = (done - frame.captured) * 1000.0
        self.frames += 1
        self._times.append(done)
        if len(self._times) >= 2 and self._times[-1] > self._times[0]:
            self.fps = (len(self._times) - 1) / (self._times[-1] - self._times[0])
        pose = result.pose
        self.persons = len(pose.persons)
        self.stage_ms = dict(pose.stage_ms)
        self.hub.publish_frame(self._shown(frame.image), pose.persons, result.states,
                               extra={"t": frame.t, "frame": frame.frame_no,
                                      "enhance": self._enhance_figures()})
        if self.records is not None:
            self.records.on_frame(frame.image, frame.t, frame.frame_no, pose.persons, result.states)
        for event in result.events:
            self._emit(event, frame, pose, result.states)
        self._follow_rules(result.states)
        self._update_state()
        if not self._ready:
            self._ready = True
            latency = (done - frame.captured) * 1000
            log.info("first frame through the pipeline (%.0f ms from capture); ready", latency)
            self.notifier.ready(self.sd_status())
            self._last_sd_status = done
            self.watchdog = Watchdog(self.notifier, self.is_alive).start()

    def _emit(self, event: Any, frame: Any, pose: Any, states: dict) -> None:
        self.events += 1
        data = event.to_dict()
        data.setdefault("camera", self.cfg.camera.name)
        data.setdefault("backend", self.engine.backend)
        level = logging.INFO if data["event"] == "recovered" else logging.WARNING
        log.log(level, "event %s: %s", data["event"], json.dumps(data, sort_keys=False))
        self.hub.add_event(data)
        if self.records is not None:
            self.records.on_event(data)
        if data["event"] == "recovered":
            self._down.pop(int(data["track"]), None)
        else:
            self._down[int(data["track"])] = data["event"]
        if self.publisher is not None:
            snapshot = None
            if self.cfg.mqtt.snapshots:
                try:
                    from .overlay import draw_overlay, encode_jpeg

                    snapshot = encode_jpeg(draw_overlay(self._shown(frame.image), pose.persons, states))
                except Exception:
                    log.exception("snapshot encoding failed; publishing the event without it")
            try:
                self.publisher.publish_event(data, snapshot)
            except Exception:
                log.exception("queueing event %s for MQTT failed", data.get("id"))

    def _shown(self, image: Any) -> Any:
        """What images may show: with `privacy: skeleton` a plain background, never the camera's picture."""
        if self.cfg.privacy == "skeleton":
            from .event_records import plain_frame

            return plain_frame(image.shape)
        return image

    def _follow_rules(self, states: dict) -> None:
        """Events say which alarm a person raised; the rules' per-person states say who they still track. A
        fallen person the rules forgot (out of view too long) no longer counts; one whose incident the rules
        moved to a new track id in this frame (lost and found again) keeps the alarm under that id."""
        orphans = [self._down.pop(track) for track in list(self._down) if track not in states]
        for track, state in states.items():
            if not orphans:
                break
            if state != "upright" and track not in self._down:
                kind = "person_down" if "person_down" in orphans else orphans[0]
                orphans.remove(kind)
                self._down[track] = kind

    def _update_state(self) -> None:
        values = set(self._down.values())
        self.state = "person_down" if "person_down" in values else "fall" if "fall" in values else "ok"
        state = {"state": self.state, "persons": self.persons}
        if state != self._published_state:
            self._published_state = state
            if self.publisher is not None:
                try:
                    self.publisher.set_state(dict(state))
                except Exception:
                    log.exception("publishing the state failed")

    def _report(self, now: float) -> None:
        if self._times and now - self._times[-1] > FPS_STALE_S:
            self.fps = 0.0
        if now - self._last_status >= STATUS_EVERY_S:
            self._last_status = now
            self._update_hub()
        if now - self._last_sd_status >= SD_STATUS_EVERY_S:
            self._last_sd_status = now
            if self._ready:
                self.notifier.status(self.sd_status())
            elif self.capture is not None:  # `systemctl status` says what it waits for
                self.notifier.status(f"waiting for {self.capture.source.name}: {self.capture.state}"
                                     + (f" ({self.capture.error})" if self.capture.error else ""))

    def _enhance_figures(self) -> Optional[dict[str, Any]]:
        """The night enhancement's figures for the stream badge and /api/stats (None for an engine without it)."""
        enhancer = getattr(self.engine, "enhancer", None)
        return enhancer.figures() if enhancer is not None else None

    def _update_hub(self) -> None:
        if self.hub is None or self.capture is None:
            return
        fields: dict[str, Any] = dict(
            backend=self.engine.backend, backend_reason=getattr(self.engine, "backend_reason", None), fps=round(self.fps, 2),
            stage_ms=self.stage_ms,
            dropped_frames=self.capture.dropped, corrupt_frames=self.capture.corrupt + self.corrupt,
            persons=self.persons, state=self.state, camera=self.capture.state, camera_error=self.capture.error,
            source=self.capture.source.name,
            reopens=self.capture.reopens, latency_ms=round(self.latency_ms, 1), pipeline_errors=self.errors,
            enhance=self._enhance_figures())
        fields["mqtt"] = {"enabled": False}
        if self.publisher is not None:
            try:
                stats = dict(self.publisher.stats())
            except Exception:
                stats = {}
            stats.setdefault("connected", bool(getattr(self.publisher, "connected", False)))
            stats["enabled"] = True
            fields.update(mqtt=stats, events_sent=stats.get("events_sent", stats.get("sent", 0)),
                          events_queued=stats.get("events_queued", stats.get("queued", 0)))
        self.hub.update(**fields)

    def sd_status(self) -> str:
        error = self.capture.error if self.capture else None
        return (f"{self.fps:.1f} fps on {self.engine.backend}, {self.persons} in view, state {self.state}, "
                f"camera {self.capture.state if self.capture else 'none'}" + (f" ({error})" if error else ""))

    def heartbeat_status(self) -> dict[str, Any]:
        """Figures for MQTT heartbeats (called from the MQTT thread; plain reads only)."""
        capture = self.capture
        return {"backend": self.engine.backend if self.engine else None,
                "backend_reason": getattr(self.engine, "backend_reason", None),
                "camera": capture.state if capture else "starting", "fps": round(self.fps, 2),
                "persons": self.persons, "state": self.state,
                "dropped_frames": capture.dropped if capture else 0,
                "corrupt_frames": (capture.corrupt if capture else 0) + self.corrupt,
                "labelled": self.records.label_counts() if self.records is not None else None}

    def is_alive(self) -> bool:
        """For the watchdog: inference completed (or the loop idled waiting on the camera) recently, and the
        capture thread is not stuck inside a driver."""
        now = time.monotonic()
        if now - self._progress > self.stall_s:
            return False
        capture = self.capture
        return capture is None or capture.ended or now - capture.last_progress <= self.stall_s

    # -- reload ----------------------------------------------------------------------------------------------
    def reload(self) -> bool:
        """Re-read the configuration file; apply rules, MQTT and log level; keep the camera running."""
        read = self._read_config()
        return read is not None and self._apply_reload(*read)

    def _read_for_reload(self) -> None:
        """The reload thread: read and check the file; the loop applies it."""
        self._reload_read = self._read_config()

    def _read_config(self) -> Optional[tuple[Config, Any]]:
        """The new configuration and rules made from it, or None (logged) when the file is refused."""
        from fallwatch.rules import make_rules

        from .settings import ignore_polygons, rule_settings

        if self._ready:
            self.notifier.reloading()
        path = self.config_path or default_config_path()
        log.info("SIGHUP: reloading %s", path)
        try:
            new = load_config(path)
            if self.source_override:
                new.camera.source = self.source_override
            rules = make_rules(rule_settings(new), source=self.cfg.camera.name)
        except Exception as exc:  # ConfigError, a value the rules refuse, or anything else: never the daemon's end
            for line in getattr(exc, "errors", None) or str(exc).splitlines() or [repr(exc)]:
                log.error("%s", line)
            log.error("configuration reload rejected; keeping the running configuration")
            if self._ready:
                self.notifier.ready()  # ends RELOADING=1
            return None
        return new, rules

    def _apply_reload(self, new: Config, rules: Any) -> bool:
        """On the detection thread, between two frames."""
        from .settings import rule_settings

        try:
            old = self.cfg
            changes = config_changes(old, new)
            if not changes:
                log.info("configuration reloaded: no changes")
                return True
            if any(k.startswith("mqtt.") for k in changes):
                # First, as it is the one step that can still fail (unusable TLS files): all or nothing.
                try:
                    self._reload_mqtt(old, new)
                except Exception as exc:
                    log.error("mqtt: %s", exc)
                    log.error("configuration reload rejected; keeping the running configuration")
                    return False
            for key, (before, after) in changes.items():
                section = key.split(".", 1)[0]
                if section in LIVE_SECTIONS:
                    log.info("configuration reloaded: %s %s -> %s", key, before, after)
                else:
                    log.warning("configuration: %s %s -> %s needs a restart to apply "
                                "(systemctl restart fallwatch); keeping %s", key, before, after, before)
            if any(k.startswith("zones") for k in changes):
                if ignore_polygons(new) != ignore_polygons(old):
                    self.engine.set_ignore_zones(ignore_polygons(new))
                if self.hub is not None:
                    self.hub.update(zones=[z.model_dump(mode="json") for z in new.zones])
            if any(k.startswith(("rules.", "zones")) for k in changes):
                # Same strategy: new thresholds in place, so a person already on the floor stays on record.
                if not self.pipeline.rules.reconfigure(rule_settings(new)):
                    self.pipeline.set_rules(rules)
                    if self._down:
                        # Rules of another strategy start without history: they could never report these people
                        # recovered.
                        log.warning("rules.strategy changed; clearing the %s state of track(s) %s", self.state,
                                    ", ".join(str(t) for t in sorted(self._down)))
                        self._down.clear()
                        self._update_state()
                if self.hub is not None:
                    self.hub.update(rules=new.rules.model_dump(mode="json"))
            if old.alerts != new.alerts and self.publisher is not None:
                self.publisher.set_pause_max(new.alerts.pause_max_s)
            if old.log.level != new.log.level and not self.log_level_override:
                set_level(new.log.level)
            # Keep what was not applied, so the next reload reports it again and the status stays truthful.
            self.cfg = new.model_copy(update={s: getattr(old, s) for s in type(old).model_fields
                                              if s not in LIVE_SECTIONS})
            return True
        finally:
            if self._ready:  # READY=1 ends the RELOADING=1 state; before the first frame it would lie
                self.notifier.ready()

    def _reload_mqtt(self, old: Config, new: Config) -> None:
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


def cmd_run(args: argparse.Namespace) -> int:
    config_arg = getattr(args, "config", None)
    cfg = load_config(config_arg)  # a ConfigError is reported by the CLI: one line per error, exit 2
    config_path = Path(config_arg) if config_arg else default_config_path()
    target = setup_logging(getattr(args, "log_level", None) or cfg.log.level)
    log.debug("logging to %s", target)
    source = getattr(args, "source", None)
    if source:
        try:
            cfg.camera.source = source
        except ValueError as exc:
            print(f"fallwatch: --source {source}: {exc}", file=sys.stderr)
            return 2
    daemon = Daemon(cfg, config_path=config_path, source=source, model_dir=getattr(args, "model_dir", None),
                    log_level_override=getattr(args, "log_level", None))
    if threading.current_thread() is threading.main_thread():
        daemon.install_signals()
    try:
        return daemon.run()
    except Shutdown:
        return 0
    except SourceError as exc:
        print(f"fallwatch: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        # The few errors that mean "this setup cannot work", each one line naming what to fix.
        if type(exc).__name__ in ("ModelError", "BackendError", "MqttError"):
            print(f"fallwatch: {exc}", file=sys.stderr)
            return 1
        raise
