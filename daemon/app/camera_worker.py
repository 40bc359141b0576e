"""One camera's part of `fallwatch run`: its capture, its pipeline (the shared pose engine with this camera's rules),
its alarm book, its outputs (status hub, event records; the log and MQTT through the daemon) and its figures.

The daemon's pipeline thread hands each frame the capture delivers to ``process``; nothing here runs a thread of
its own but the capture.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Optional

from fallwatch.config.cameras import CameraSetup, camera_setups
from fallwatch.config.schema import Config
from fallwatch.daemon.app.pipeline import Engine, Pipeline
from fallwatch.daemon.capture.reader import Capture, CaptureState, Frame
from fallwatch.daemon.capture.source import Source, SourceError, UnavailableSource
from fallwatch.daemon.capture.sources import make_source
from fallwatch.daemon.telemetry.snapshot import CameraCounters, CameraStats
from fallwatch.daemon.telemetry.status_hub import StatusHub
from fallwatch.pose.types import PoseResult
from fallwatch.rules import Event, Rules
from fallwatch.rules.alarm import AlarmBook

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_ERRORS = 25  # unexpected pipeline errors in a row: exit 1 and let systemd restart us

# (event as published, () -> the annotated frame as JPEG): the daemon logs the event and hands it to MQTT
OnEvent = Callable[[dict, Callable[[], bytes]], None]


def camera_error(name: str, exc: Exception) -> str:
    """A source's one-line error naming the camera's own key (`cameras.<name>.source`)."""
    text = str(exc)
    if "camera.source" in text:
        return text.replace("camera.source", f"cameras.{name}.source", 1)
    return f"cameras.{name}: {text}"


def camera_source(setup: CameraSetup, alone: bool, override: Optional[str] = None) -> Source:
    """The camera's Source. A SourceError (no camera found, no such file) ends the start of a daemon with one
    camera; among several that camera fails alone (said when it starts: ``start_or_fail``)."""
    if alone:
        return make_source(setup.camera, override)
    try:
        return make_source(setup.camera)
    except SourceError as exc:
        return UnavailableSource(setup.camera.source, camera_error(setup.name, exc))


class CameraWorker:
    def __init__(
        self,
        cfg: Config,
        engine: Engine,
        rules: Rules,
        capture: Capture,
        hub: StatusHub,
        on_event: OnEvent,
        records: Any = None,
        setup: Optional[CameraSetup] = None,
    ):
        """``setup``: this camera's (default: the first of ``cfg``). Each camera has its own tracker on the shared
        engine (engine.make_tracker()): its tracks, ids and detector schedule are its own."""
        self.setup = setup or camera_setups(cfg)[0]
        self.name = self.setup.name
        self.privacy = cfg.privacy
        self.engine = engine
        self.tracker = engine.make_tracker()
        self.pipeline = Pipeline(engine, rules, tracker=self.tracker)
        self.capture = capture
        self.hub = hub
        self.records = records  # EventRecorder, with events.enabled
        self.on_event = on_event
        self.alarm = AlarmBook()
        self.counters = CameraCounters()
        self.progress = time.monotonic()  # inference completed, or the loop idled waiting on the camera

    @property
    def log_prefix(self) -> str:
        """How its log lines name it: not at all when it is the only camera of a ``camera:`` file."""
        return "" if self.setup.alone else f"camera {self.name} "

    def describe(self) -> str:
        source = self.capture.source.describe()
        return source if self.setup.alone else f"{self.name}: {source}"

    @property
    def room_state(self) -> dict[str, Any]:
        """Its part of the room's state on MQTT: the worst alarm its people hold, and how many it sees."""
        return {"state": self.alarm.state, "persons": self.counters.persons}

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.capture.start()  # SourceError for an unreadable file
        self.progress = time.monotonic()

    def start_or_fail(self, alone: bool) -> None:
        """Start; a source that cannot be used ends the start of a daemon with one camera (``alone``), and fails
        only this camera among several (its one error line, its camera shown failed)."""
        source = self.capture.source
        if isinstance(source, UnavailableSource):
            self.capture.fail(source.error)
            return
        try:
            self.start()
        except SourceError as exc:
            if alone:
                raise
            self.capture.fail(camera_error(self.name, exc))

    def say_ended(self, last: bool) -> None:
        """Its source ended or failed: one line (a failure among several cameras was said where it happened)."""
        failed = self.capture.state == CaptureState.FAILED
        if self.setup.alone:
            if failed:
                log.error("source failed: %s", self.capture.error)
            else:
                log.info("source ended; stopping")
        elif not failed:
            log.info(
                "camera %s: source ended; %s", self.name, "every camera has: stopping" if last else "the others go on"
            )
        elif last:
            log.info("every camera has stopped: stopping")

    def stop(self) -> None:
        self.capture.stop(timeout=0.5)
        self.hub.mark_source_stopped(self.name)

    # -- frames ----------------------------------------------------------------------------------------------
    def idle(self, now: float) -> None:
        """No frame came: waiting on the camera is not a hang (the pipeline is idle, not stuck)."""
        self.progress = now
        if self.capture.state != CaptureState.RUNNING:
            self.hub.mark_source_stopped(self.name)

    @property
    def failing(self) -> bool:
        """The pipeline failed on MAX_CONSECUTIVE_ERRORS frames in a row: the daemon should exit 1 and let systemd
        restart it (one odd frame must not end the watch)."""
        return self.counters.error_run >= MAX_CONSECUTIVE_ERRORS

    def process(self, frame: Any) -> bool:
        """One frame through pose and rules to the outputs; False when it did not get through."""
        from fallwatch.pose.engine import FrameError

        try:
            result = self.pipeline.process(frame.image, frame.t, frame.frame_no)
        except FrameError as exc:
            self.counters.corrupt += 1
            log.debug("frame %d skipped: %s", frame.frame_no, exc)
            self.progress = time.monotonic()
            return False
        except Exception:
            run = self.counters.failed()
            if run in (1, MAX_CONSECUTIVE_ERRORS):
                log.exception("pipeline failed on frame %d", frame.frame_no)
            if run >= MAX_CONSECUTIVE_ERRORS:
                log.error("pipeline failed on %d frames in a row; exiting", run)
            return False
        done = time.monotonic()
        self.progress = done
        pose = result.pose
        self.counters.frame_done(done, frame.captured, len(pose.persons), pose.stage_ms)
        self.hub.publish_frame(
            self.shown(frame.image),
            pose.persons,
            result.states,
            extra={"t": frame.t, "frame": frame.frame_no, "enhance": self.enhance_figures()},
            camera=self.name,
        )
        if self.records is not None:
            self.records.on_frame(frame.image, frame.t, frame.frame_no, pose.persons, result.states)
        for event in result.events:
            self._emit(event, frame, pose, result.states)
        self.alarm.follow(result.states)
        return True

    def _emit(self, event: Event, frame: Frame, pose: PoseResult, states: dict) -> None:
        self.counters.events += 1
        data = dataclasses.replace(event, camera=self.name, backend=self.engine.backend).to_dict()
        self.hub.add_event(data)
        if self.records is not None:
            self.records.on_event(data)
        self.alarm.on_event(data)

        def snapshot() -> bytes:
            from fallwatch.daemon.web.overlay import draw_overlay, encode_jpeg

            return encode_jpeg(draw_overlay(self.shown(frame.image), pose.persons, states))

        self.on_event(data, snapshot)

    def shown(self, image: Any) -> Any:
        """What images may show: with `privacy: skeleton` a plain background, never the camera's picture."""
        if self.privacy == "skeleton":
            from fallwatch.daemon.records.recorder import plain_frame

            return plain_frame(image.shape)
        return image

    # -- configuration ---------------------------------------------------------------------------------------
    def set_ignore_zones(self, polygons: tuple) -> None:
        """The ignore zones of this camera, on its own tracker."""
        self.tracker.s.ignore_zones = tuple(polygons)

    def reconfigure(self, settings: Any, rules: Rules) -> bool:
        """New rule settings: in place for the same strategy, so a person already on the floor stays on record;
        else the new rules, which start without history and so could never report the people with an alarm
        recovered: those alarms are dropped. True when alarms were dropped."""
        if self.pipeline.rules.reconfigure(settings):
            return False
        self.pipeline.set_rules(rules)
        if not self.alarm.tracks:
            return False
        log.warning(
            "rules.strategy changed; clearing the %s state of track(s) %s",
            self.alarm.state,
            ", ".join(str(t) for t in self.alarm.clear()),
        )
        return True

    # -- figures ---------------------------------------------------------------------------------------------
    def enhance_figures(self) -> Optional[dict[str, Any]]:
        """The night enhancement's figures for the stream badge and /api/stats (None for an engine without it)."""
        enhancer = getattr(self.engine, "enhancer", None)
        return enhancer.figures() if enhancer is not None else None

    def stats(self, now: float) -> CameraStats:
        c, n = self.capture, self.counters
        return CameraStats(
            name=self.name,
            source=c.source.name,
            capture=c.state,
            capture_error=c.error,
            reopens=c.reopens,
            fps=round(n.fps(now), 2),
            frames=n.frames,
            persons=n.persons,
            state=self.alarm.state,
            latency_ms=round(n.latency_ms, 1),
            stage_ms=dict(n.stage_ms),
            dropped_frames=c.dropped,
            corrupt_frames=c.corrupt + n.corrupt,
            pipeline_errors=n.errors,
            events=n.events,
            enhance=self.enhance_figures(),
        )

    def log_totals(self) -> None:
        s = self.stats(time.monotonic())
        log.info(
            "%sstopped after %d frames, %d events, %d dropped, %d corrupt frames",
            self.log_prefix,
            s.frames,
            s.events,
            s.dropped_frames,
            s.corrupt_frames,
        )

    def alive(self, now: float, stall_s: float) -> bool:
        """For the watchdog: progress within stall_s, and the capture thread is not stuck inside a driver."""
        c = self.capture
        return now - self.progress <= stall_s and (c.ended or now - c.last_progress <= stall_s)
