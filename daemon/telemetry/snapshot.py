"""The daemon's figures: one typed Snapshot, built once per report, and every view of it.

Per-camera figures live in CameraStats (``Snapshot.cameras``, by camera name), device-level ones on the Snapshot.
The views are plain functions of a Snapshot: ``to_json`` (/api/stats and the page), ``heartbeat`` (MQTT),
``status_line`` (systemd STATUS=) and ``metrics`` (Prometheus /metrics). The flat keys of /api/stats and the
heartbeat speak for the first camera, as they did before there could be several; ``cameras`` has them all.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional

from fallwatch.daemon.capture.reader import CaptureState
from fallwatch.rules.alarm import worst
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

FPS_WINDOW = 64  # frames the fps is measured over
FPS_STALE_S = 2.0  # no inference for this long: fps reads 0


@dataclass(frozen=True)
class CameraStats:
    name: str
    source: Optional[str] = None  # what the capture reads (device, file, URL without secrets)
    capture: str = CaptureState.STARTING  # the capture's state (a CaptureState: eof when a file ended)
    capture_error: Optional[str] = None
    reopens: int = 0
    fps: float = 0.0
    frames: int = 0
    persons: int = 0
    state: str = "ok"  # ok | fall | person_down: the worst alarm a person in this camera holds
    latency_ms: float = 0.0  # capture -> rules done, for the newest frame
    stage_ms: Mapping[str, float] = field(default_factory=dict)
    dropped_frames: int = 0  # overwritten before inference took them
    corrupt_frames: int = 0  # unreadable, by the source or the engine
    pipeline_errors: int = 0
    events: int = 0  # events the rules raised
    enhance: Optional[Mapping[str, Any]] = None  # the night enhancement's figures, for an engine that has one
    last_frame_age_s: Optional[float] = None  # live figures the status hub knows best
    source_stopped: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "camera": self.capture,
            "camera_error": self.capture_error,
            "reopens": self.reopens,
            "fps": self.fps,
            "frames": self.frames,
            "persons": self.persons,
            "state": self.state,
            "latency_ms": self.latency_ms,
            "stage_ms": dict(self.stage_ms),
            "dropped_frames": self.dropped_frames,
            "corrupt_frames": self.corrupt_frames,
            "pipeline_errors": self.pipeline_errors,
            "events": self.events,
            "enhance": None if self.enhance is None else dict(self.enhance),
            "last_frame_age_s": self.last_frame_age_s,
            "source_stopped": self.source_stopped,
        }


@dataclass(frozen=True)
class MqttStats:
    enabled: bool = False
    connected: bool = False
    healthy: bool = True  # False: enabled and unable to deliver for longer than mqtt.watchdog_s
    down_s: Optional[float] = None  # seconds since it could last deliver; None while connected
    down_reason: Optional[str] = None  # the connection problem, when one was seen
    restarts: int = 0  # clients restarted by the MQTT watchdog
    events_sent: int = 0
    events_queued: int = 0
    events_dropped: int = 0
    events_suppressed: int = 0
    alerts: bool = True
    alerts_resume_at: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Snapshot:
    version: str
    cameras: Mapping[str, CameraStats]
    backend: Optional[str] = None
    backend_reason: Optional[str] = None  # why not the backend asked for (a fallback), if so
    started_at: float = field(default_factory=time.time)  # wall clock
    uptime_s: float = 0.0
    ready: bool = False  # a first frame went through the pipeline
    mqtt: MqttStats = MqttStats()
    labelled: Optional[Mapping[str, int]] = None  # event records by label (heartbeats only: counted from disk)
    recent_events: int = 0
    settings: Mapping[str, Any] = field(default_factory=dict)  # what the page shows of the configuration: rules, zones
    camera_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # each camera's, in `cameras`
    alarms: tuple[
        Mapping[str, Any], ...
    ] = ()  # the open alarms (daemon/alarms/open_alarms.py Alarm.view), oldest first
    notify: Optional[Mapping[str, Any]] = None  # Apprise notifications: queued, sent, failing (None: no notify.urls)
    cpu_temp_c: Optional[float] = None  # the SoC temperature (telemetry/system.py), where the system exposes it
    healthy: Optional[bool] = None  # the debug server's own figures, filled in as it answers
    viewers: int = 0

    @classmethod
    def starting(cls, version: str, camera: str, **kw: Any) -> "Snapshot":
        return cls(version=version, cameras={camera: CameraStats(camera)}, **kw)

    @property
    def camera(self) -> CameraStats:
        """The first camera: the one the flat keys describe."""
        return next(iter(self.cameras.values()))

    @property
    def state(self) -> str:
        """The room state: the worst alarm in any camera."""
        return worst(c.state for c in self.cameras.values())

    @property
    def persons(self) -> int:
        return sum(c.persons for c in self.cameras.values())

    def replace(self, **changes: Any) -> "Snapshot":
        return dataclasses.replace(self, **changes)

    def replace_camera(self, name: str, **changes: Any) -> "Snapshot":
        return self.replace(cameras={**self.cameras, name: dataclasses.replace(self.cameras[name], **changes)})

    def to_json(self) -> dict[str, Any]:
        """/api/stats and the page: the device's figures, the first camera's flat, and every camera's."""
        cam = self.camera
        out: dict[str, Any] = {
            "version": self.version,
            "camera_name": cam.name,
            "uptime_s": self.uptime_s,
            "started_at": self.started_at,
            "backend": self.backend,
            "backend_reason": self.backend_reason,
            "ready": self.ready,
            "cpu_temp_c": self.cpu_temp_c,
            **cam.to_json(),
            "state": self.state,
            "events": {
                "sent": self.mqtt.events_sent,
                "queued": self.mqtt.events_queued,
                "recent": self.recent_events,
                "raised": sum(c.events for c in self.cameras.values()),
            },
            "mqtt": self.mqtt.to_json(),
            "alerts": self.mqtt.alerts,
            "alerts_resume_at": self.mqtt.alerts_resume_at,
            "alarms": [dict(a) for a in self.alarms],
            "notify": None if self.notify is None else dict(self.notify),
            **self.settings,
            "cameras": {
                name: {**c.to_json(), **self.camera_settings.get(name, {})} for name, c in self.cameras.items()
            },
            "camera_names": list(self.cameras),  # configuration order (the page's camera picker)
        }
        del out["name"]
        if self.healthy is not None:
            out.update(healthy=self.healthy, viewers=self.viewers)
        return out


def heartbeat(snapshot: Snapshot) -> dict[str, Any]:
    """The daemon's part of an MQTT heartbeat (mqtt/heartbeat.py adds the same snapshot's delivery figures)."""
    cam = snapshot.camera
    return {
        "backend": snapshot.backend,
        "backend_reason": snapshot.backend_reason,
        "camera": cam.capture,
        "fps": cam.fps,
        "persons": snapshot.persons,
        "state": snapshot.state,
        "dropped_frames": cam.dropped_frames,
        "corrupt_frames": cam.corrupt_frames,
        "labelled": None if snapshot.labelled is None else dict(snapshot.labelled),
        "alarms": [dict(a) for a in snapshot.alarms],
        "notify": None if snapshot.notify is None else dict(snapshot.notify),
        "cpu_temp_c": snapshot.cpu_temp_c,
        "cameras": {
            name: {
                "camera": c.capture,
                "fps": c.fps,
                "persons": c.persons,
                "state": c.state,
                "dropped_frames": c.dropped_frames,
                "corrupt_frames": c.corrupt_frames,
            }
            for name, c in snapshot.cameras.items()
        },
    }


def status_line(snapshot: Snapshot) -> str:
    """systemd's STATUS=: what `systemctl status` shows; before the first frame, what the daemon waits for."""
    cam = snapshot.camera
    error = f" ({cam.capture_error})" if cam.capture_error else ""
    if len(snapshot.cameras) > 1:  # every camera, briefly: which one is in trouble shows at a glance
        cams = ", ".join(f"{c.name} {c.capture}" for c in snapshot.cameras.values())
        if not snapshot.ready:
            return f"waiting for a first frame: {cams}" + mqtt_status(snapshot.mqtt)
        fps = sum(c.fps for c in snapshot.cameras.values())
        return (
            f"{fps:.1f} fps on {snapshot.backend}, {snapshot.persons} in view, state {snapshot.state}, {cams}"
            + mqtt_status(snapshot.mqtt)
        )
    if not snapshot.ready:
        return f"waiting for {cam.source or cam.name}: {cam.capture}{error}" + mqtt_status(snapshot.mqtt)
    return (
        f"{cam.fps:.1f} fps on {snapshot.backend}, {snapshot.persons} in view, state {snapshot.state}, "
        f"camera {cam.capture}{error}" + mqtt_status(snapshot.mqtt)
    )


def mqtt_status(mqtt: MqttStats) -> str:
    """What the status line says of MQTT: nothing while it delivers; else how long it has not (and DOWN past
    mqtt.watchdog_s: alerts cannot leave the house)."""
    if not mqtt.enabled or mqtt.down_s is None:
        return ""
    why = f" ({mqtt.down_reason})" if mqtt.down_reason else ""
    if not mqtt.healthy:
        return f", MQTT DOWN for {mqtt.down_s:.0f} s{why}: alerts cannot be sent"
    return f", MQTT disconnected {mqtt.down_s:.0f} s"


# ---- Prometheus ------------------------------------------------------------------------------------------------
class SnapshotCollector:
    """Prometheus metrics of one Snapshot; per-camera metrics carry a ``camera`` label."""

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        cams = list(s.cameras.values())

        def gauge(name: str, help_: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, help_, value=value)

        def per_camera(family: Any, name: str, help_: str, value: Any) -> Metric:
            metric = family(name, help_, labels=["camera"])
            for c in cams:
                metric.add_metric([c.name], value(c))
            return metric

        yield gauge("fallwatch_uptime_seconds", "Seconds since the daemon started.", s.uptime_s)
        yield per_camera(GaugeMetricFamily, "fallwatch_fps", "Frames per second through inference.", lambda c: c.fps)
        stages = GaugeMetricFamily(
            "fallwatch_stage_ms", "Milliseconds per pipeline stage for the latest frames.", labels=["camera", "stage"]
        )
        for c in cams:
            for stage, ms in sorted(c.stage_ms.items()):
                stages.add_metric([c.name, stage], ms)
        yield stages
        yield per_camera(
            GaugeMetricFamily,
            "fallwatch_latency_ms",
            "Milliseconds from capture to rules done, newest frame.",
            lambda c: c.latency_ms,
        )
        yield per_camera(
            CounterMetricFamily, "fallwatch_frames_total", "Frames processed through inference.", lambda c: c.frames
        )
        yield per_camera(
            CounterMetricFamily,
            "fallwatch_dropped_frames_total",
            "Camera frames dropped because inference was busy.",
            lambda c: c.dropped_frames,
        )
        yield per_camera(
            CounterMetricFamily,
            "fallwatch_corrupt_frames_total",
            "Frames the source delivered unreadable.",
            lambda c: c.corrupt_frames,
        )
        yield per_camera(
            CounterMetricFamily,
            "fallwatch_pipeline_errors_total",
            "Frames the pipeline failed on.",
            lambda c: c.pipeline_errors,
        )
        yield per_camera(
            CounterMetricFamily,
            "fallwatch_camera_reopens_total",
            "Times the camera was opened again.",
            lambda c: c.reopens,
        )
        yield per_camera(CounterMetricFamily, "fallwatch_events_total", "Events the rules raised.", lambda c: c.events)
        yield per_camera(GaugeMetricFamily, "fallwatch_persons", "Persons in view.", lambda c: c.persons)
        yield per_camera(
            GaugeMetricFamily,
            "fallwatch_last_frame_age_seconds",
            "Seconds since the last frame went through inference.",
            lambda c: float("nan") if c.last_frame_age_s is None else c.last_frame_age_s,
        )
        state = GaugeMetricFamily("fallwatch_state_info", "The current room state.", labels=["camera", "state"])
        camera = GaugeMetricFamily("fallwatch_camera_info", "The camera source state.", labels=["camera", "state"])
        for c in cams:
            state.add_metric([c.name, c.state], 1)
            camera.add_metric([c.name, c.capture or "unknown"], 1)
        yield state
        yield camera
        yield CounterMetricFamily(
            "fallwatch_events_sent_total", "Events delivered to the MQTT broker.", value=s.mqtt.events_sent
        )
        yield gauge("fallwatch_events_queued", "Events waiting in the outbox.", s.mqtt.events_queued)
        yield gauge("fallwatch_mqtt_connected", "1 while connected to the MQTT broker.", int(s.mqtt.connected))
        yield gauge(
            "fallwatch_mqtt_healthy",
            "0 while MQTT is enabled and could not deliver for longer than mqtt.watchdog_s.",
            int(s.mqtt.healthy),
        )
        yield CounterMetricFamily(
            "fallwatch_mqtt_restarts_total", "MQTT clients restarted by the watchdog.", value=s.mqtt.restarts
        )
        yield gauge("fallwatch_healthy", "1 while frames flow through inference.", int(bool(s.healthy)))
        yield gauge("fallwatch_viewers", "Clients watching the MJPEG stream.", s.viewers)
        yield gauge("fallwatch_open_alarms", "Alarms nobody has answered yet.", len(s.alarms))
        if s.cpu_temp_c is not None:
            yield gauge("fallwatch_cpu_temperature_celsius", "The SoC temperature.", s.cpu_temp_c)
        backend = GaugeMetricFamily("fallwatch_backend_info", "The inference backend in use.", labels=["backend"])
        backend.add_metric([s.backend or "none"], 1)
        yield backend
        build = GaugeMetricFamily("fallwatch_build_info", "The fallwatch version.", labels=["version"])
        build.add_metric([s.version], 1)
        yield build


def metrics(snapshot: Snapshot) -> bytes:
    """Prometheus text exposition (0.0.4) of the snapshot, from a registry of its own: no process collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)


# ---- counting, on the pipeline thread --------------------------------------------------------------------------
class CameraCounters:
    """One camera's running figures, kept by its pipeline thread and read into CameraStats once per report."""

    def __init__(self) -> None:
        self.frames = 0
        self.corrupt = 0  # frames the engine refused (FrameError); the capture counts its own
        self.errors = 0  # unexpected exceptions in the pipeline
        self.error_run = 0  # ... in a row
        self.events = 0
        self.persons = 0
        self.stage_ms: dict[str, float] = {}
        self.latency_ms = 0.0
        self._times: collections.deque[float] = collections.deque(maxlen=FPS_WINDOW)

    def frame_done(self, done: float, captured: float, persons: int, stage_ms: Mapping[str, float]) -> None:
        self.error_run = 0
        self.latency_ms = (done - captured) * 1000.0
        self.frames += 1
        self._times.append(done)
        self.persons = persons
        self.stage_ms = dict(stage_ms)

    def failed(self) -> int:
        """One more pipeline error; how many in a row."""
        self.errors += 1
        self.error_run += 1
        return self.error_run

    def fps(self, now: float) -> float:
        t = self._times
        if not t or now - t[-1] > FPS_STALE_S or len(t) < 2 or t[-1] <= t[0]:
            return 0.0
        return (len(t) - 1) / (t[-1] - t[0])
