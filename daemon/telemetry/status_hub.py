"""StatusHub: the thread-safe meeting point between the pipeline thread and the debug web server.

The pipeline calls ``publish_frame`` for every processed frame; that only stores references and bumps a sequence
number. JPEG encoding happens lazily in ``latest_jpeg``, i.e. only while someone watches the stream. The daemon's
figures arrive as a Snapshot (``publish_stats``), once per report; the hub adds what it knows best itself: how old
each camera's newest frame is, whether its source stopped, how many events it keeps.

One hub serves every camera of the daemon: each has its own frame slot, named as in the configuration. The
cameras are those of the newest Snapshot (the daemon's, in configuration order; before the first, the names the hub
was made with). Every ``camera=None`` means the first camera, so single-camera callers need not name it. Sequence
numbers are counted over all cameras, so a frame's number is unique across them (the JPEG cache is keyed by it).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from typing import Optional

import numpy as np
from fallwatch.daemon.capture.reader import CaptureState
from fallwatch.daemon.telemetry.snapshot import CameraStats, Snapshot

log = logging.getLogger(__name__)

MAX_EVENTS = 50  # per camera
JPEG_CACHE = 8  # encodings of a camera's newest frame kept (one per height asked for); viewers share them


@dataclasses.dataclass(frozen=True)
class ShownFrame:
    """A camera's processed frame as the page shows it: ``seq`` numbers frames over all cameras (the JPEG cache's
    key), ``extra`` carries the badge figures (time, frame number, night enhancement)."""

    seq: int
    image: np.ndarray
    persons: list
    states: dict
    extra: dict


class UnknownCamera(KeyError):
    """A camera name the hub does not have; the message names the ones it has."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclasses.dataclass
class _Slot:
    """One camera's newest processed frame."""

    seq: int = 0
    frame: Optional[np.ndarray] = None
    persons: list = dataclasses.field(default_factory=list)
    states: dict = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)
    frame_mono: Optional[float] = None
    source_stopped: bool = False

    def shown(self) -> ShownFrame:
        assert self.frame is not None
        return ShownFrame(self.seq, self.frame, list(self.persons), dict(self.states), dict(self.extra))

    def age(self, now: float) -> Optional[float]:
        return None if self.frame_mono is None else now - self.frame_mono


class StatusHub:
    """Holds each camera's newest processed frame, the newest Snapshot of the figures and the recent events."""

    def __init__(self, version: str, camera: str = "camera", cameras: Optional[Sequence[str]] = None):
        """``cameras``: every camera's name in configuration order (default: just ``camera``)."""
        self.version = version
        names = list(cameras) if cameras else [camera]
        self._names = names  # what the newest Snapshot names, in its order
        self._slots: dict[str, _Slot] = {name: _Slot() for name in names}  # made on demand for each name
        self._cond = threading.Condition()
        self._seq = 0  # frames published, over all cameras
        self._events: collections.deque = collections.deque(maxlen=MAX_EVENTS * len(names))
        self._stats = Snapshot(version=version, cameras={name: CameraStats(name) for name in names})
        # JPEG cache: (seq, height) -> bytes; only each camera's newest seq is kept.
        self._jpeg_lock = threading.Lock()
        self._jpeg_cache: dict[tuple[int, Optional[int]], bytes] = {}
        self.encode_count = 0  # how many JPEGs were encoded (tests check that no viewer means no encoding)
        self._waiting = 0  # clients blocked in wait_frame now

    @property
    def cameras(self) -> list[str]:
        """Every camera's name, in configuration order."""
        with self._cond:
            return list(self._names)

    @property
    def camera_name(self) -> str:
        """The first camera: what camera=None means."""
        with self._cond:
            return self._names[0]

    def has_camera(self, camera: Optional[str]) -> bool:
        with self._cond:
            return camera is None or camera in self._names

    def _slot(self, camera: Optional[str]) -> _Slot:
        """(under self._cond)"""
        name = self._names[0] if camera is None else camera
        if name not in self._names:
            raise UnknownCamera(f"no camera {camera!r}; the cameras are {', '.join(self._names)}")
        return self._slots.setdefault(name, _Slot())

    def _named_slots(self) -> list[tuple[str, _Slot]]:
        """(under self._cond) every camera's slot, in order"""
        return [(name, self._slot(name)) for name in self._names]

    # ---- pipeline side -------------------------------------------------------------------------------------
    def publish_frame(
        self,
        frame_rgb: np.ndarray,
        persons: list,
        states: dict[int, str],
        extra: Optional[dict] = None,
        camera: Optional[str] = None,
    ) -> None:
        """Store references to the camera's newest processed frame. Cheap on purpose: called for every frame."""
        with self._cond:
            slot = self._slot(camera)
            self._seq += 1
            slot.seq = self._seq
            slot.frame = frame_rgb
            slot.persons = list(persons)
            slot.states = dict(states)
            slot.extra = dict(extra) if extra else {}
            slot.frame_mono = time.monotonic()
            slot.source_stopped = False
            self._cond.notify_all()

    def add_event(self, event: dict) -> None:
        """An event as published; its ``camera`` (default: the first camera) says whose it is."""
        with self._cond:
            ev = dict(event)
            ev.setdefault("camera", self._names[0])
            ev.setdefault("received_at", time.time())
            self._events.append(ev)

    def publish_stats(self, snapshot: Snapshot) -> None:
        """The daemon's newest figures; its cameras are the hub's from now on."""
        with self._cond:
            self._stats = snapshot
            if list(snapshot.cameras) != self._names and snapshot.cameras:
                self._names = list(snapshot.cameras)
                if (self._events.maxlen or 0) < MAX_EVENTS * len(self._names):
                    self._events = collections.deque(self._events, maxlen=MAX_EVENTS * len(self._names))

    def mark_source_stopped(self, camera: Optional[str] = None) -> None:
        with self._cond:
            self._slot(camera).source_stopped = True
            self._cond.notify_all()

    # ---- reader side ---------------------------------------------------------------------------------------
    @property
    def seq(self) -> int:
        """Frames published so far, over all cameras."""
        with self._cond:
            return self._seq

    def last_frame_age_s(self, camera: Optional[str] = None) -> Optional[float]:
        with self._cond:
            return self._slot(camera).age(time.monotonic())

    def _healthy(self, slot: _Slot, now: float, max_age_s: float) -> bool:
        age = slot.age(now)
        return not slot.source_stopped and age is not None and age <= max_age_s

    def healthy(self, max_age_s: float = 5.0, camera: Optional[str] = None) -> bool:
        """True while frames flow through inference (newest within max_age_s) and the source has not stopped: of
        every camera, or of the one named."""
        now = time.monotonic()
        with self._cond:
            slots = [slot for _, slot in self._named_slots()] if camera is None else [self._slot(camera)]
            return all(self._healthy(slot, now, max_age_s) for slot in slots)

    def health(self, max_age_s: float = 5.0) -> dict[str, dict]:
        """Per camera, in configuration order: ``healthy``, ``last_frame_age_s`` and, when unhealthy, ``reason``."""
        now = time.monotonic()
        with self._cond:
            stats = self._stats.cameras
            out: dict[str, dict] = {}
            for name, slot in self._named_slots():
                age = slot.age(now)
                entry: dict = {
                    "healthy": self._healthy(slot, now, max_age_s),
                    "last_frame_age_s": None if age is None else round(age, 3),
                }
                if not entry["healthy"]:
                    entry["reason"] = self._reason(slot, stats.get(name), age)
                out[name] = entry
            return out

    @staticmethod
    def _reason(slot: _Slot, stats: Optional[CameraStats], age: Optional[float]) -> str:
        if slot.source_stopped:
            if stats is not None and stats.capture == CaptureState.REOPENING:  # the daemon is trying again: not stopped
                return "camera reopening" + (f" ({stats.capture_error})" if stats.capture_error else "")
            if stats is not None and stats.capture == CaptureState.FAILED and stats.capture_error:
                return f"source failed ({stats.capture_error})"
            return "source stopped"
        if age is None:
            return "no frame yet"
        return f"no frame through inference for {age:.1f} s"

    def current(self) -> Snapshot:
        """The newest Snapshot with the hub's own figures filled in for every camera, in configuration order."""
        now = time.monotonic()
        with self._cond:
            snap = self._stats
            cameras = {}
            for name, slot in self._named_slots():
                age = slot.age(now)
                cameras[name] = dataclasses.replace(
                    snap.cameras.get(name) or CameraStats(name),
                    last_frame_age_s=None if age is None else round(age, 3),
                    source_stopped=slot.source_stopped,
                )
            return snap.replace(cameras=cameras, recent_events=len(self._events))

    def stats(self) -> dict:
        """``current()`` as JSON: what /api/stats serves."""
        return self.current().to_json()

    def recent_events(self, camera: Optional[str] = None) -> list[dict]:
        """The recent events, oldest first: all, or those of ``camera``."""
        with self._cond:
            if camera is not None:
                self._slot(camera)  # an unknown camera is an error, not an empty list
            return [dict(e) for e in self._events if camera is None or e.get("camera") == camera]

    def snapshot(self, camera: Optional[str] = None) -> Optional[ShownFrame]:
        """The camera's newest frame, or None before its first frame."""
        with self._cond:
            slot = self._slot(camera)
            return None if slot.frame is None else slot.shown()

    def wait_frame(self, after_seq: int, timeout: float, camera: Optional[str] = None) -> Optional[ShownFrame]:
        """Block until the camera has a frame newer than ``after_seq`` (or the timeout passes; then None)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            slot = self._slot(camera)
            self._waiting += 1
            try:
                while slot.seq <= after_seq or slot.frame is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._cond.wait(remaining)
                return slot.shown()
            finally:
                self._waiting -= 1

    @property
    def waiting(self) -> int:
        """How many clients are blocked in wait_frame now (the streams waiting for their next frame)."""
        with self._cond:
            return self._waiting

    def wake_all(self) -> None:
        """Wake every waiter (used by the web server on shutdown)."""
        with self._cond:
            self._cond.notify_all()

    def jpeg_for(self, snap: ShownFrame, height: Optional[int] = None) -> bytes:
        """The annotated JPEG of one frame (of any camera), encoded once per (seq, height) however many clients
        watch."""
        from fallwatch.daemon.web.overlay import draw_overlay, encode_jpeg  # cv2 only when someone actually looks

        seq, frame = snap.seq, snap.image
        if height is not None and height >= frame.shape[0]:
            height = None  # never scaled up: that costs CPU and bandwidth and shows nothing more
        key = (seq, height)
        with self._jpeg_lock:
            cached = self._jpeg_cache.get(key)
            if cached is not None:
                return cached
            data = encode_jpeg(draw_overlay(frame, snap.persons, snap.states, snap.extra), height=height)
            self.encode_count += 1
            # keep only the encodings of each camera's newest frame, and only a few heights of each
            with self._cond:
                newest = {slot.seq for _, slot in self._named_slots()}
            for old in [k for k in self._jpeg_cache if k[0] not in newest]:
                del self._jpeg_cache[old]
            same = [k for k in self._jpeg_cache if k[0] == seq]
            for old in same[: max(0, len(same) - JPEG_CACHE + 1)]:
                del self._jpeg_cache[old]
            self._jpeg_cache[key] = data
            return data

    def latest_jpeg(self, height: Optional[int] = None, camera: Optional[str] = None) -> Optional[bytes]:
        """The camera's newest annotated frame as JPEG (encoded on demand, cached per seq+height); None before its
        first frame."""
        snap = self.snapshot(camera)
        return None if snap is None else self.jpeg_for(snap, height)
