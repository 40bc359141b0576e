"""StatusHub: the thread-safe meeting point between the pipeline thread and the debug web server.

The pipeline calls ``publish_frame`` for every processed frame; that only stores references and bumps a sequence
number. JPEG encoding happens lazily in ``latest_jpeg``, i.e. only while someone watches the stream. The daemon's
figures arrive as a Snapshot (``publish_stats``), once per report; the hub adds what it knows best itself: how old
the newest frame is, whether the source stopped, how many events it keeps.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Optional

import numpy as np

from .stats import Snapshot

log = logging.getLogger(__name__)

MAX_EVENTS = 50
JPEG_CACHE = 8  # encodings of the newest frame kept (one per height asked for); viewers share them

FrameTuple = tuple[int, np.ndarray, list, dict, dict]


class StatusHub:
    """Holds the newest processed frame, the newest Snapshot of the figures and the recent events."""

    def __init__(self, version: str, camera: str = "camera"):
        self.version = version
        self.camera_name = camera
        self._cond = threading.Condition()
        self._seq = 0
        self._frame: Optional[np.ndarray] = None
        self._persons: list = []
        self._states: dict = {}
        self._extra: dict = {}
        self._frame_mono: Optional[float] = None
        self._source_stopped = False
        self._events: collections.deque = collections.deque(maxlen=MAX_EVENTS)
        self._stats = Snapshot.starting(version, camera)
        # JPEG cache: (seq, height) -> bytes; only the newest seq is kept.
        self._jpeg_lock = threading.Lock()
        self._jpeg_cache: dict[tuple[int, Optional[int]], bytes] = {}
        self.encode_count = 0  # how many JPEGs were encoded (tests check that no viewer means no encoding)

    # ---- pipeline side -------------------------------------------------------------------------------------
    def publish_frame(
        self, frame_rgb: np.ndarray, persons: list, states: dict[int, str], extra: Optional[dict] = None
    ) -> None:
        """Store references to the newest processed frame. Cheap on purpose: called for every frame."""
        with self._cond:
            self._seq += 1
            self._frame = frame_rgb
            self._persons = list(persons)
            self._states = dict(states)
            self._extra = dict(extra) if extra else {}
            self._frame_mono = time.monotonic()
            self._source_stopped = False
            self._cond.notify_all()

    def add_event(self, event: dict) -> None:
        with self._cond:
            ev = dict(event)
            ev.setdefault("received_at", time.time())
            self._events.append(ev)

    def publish_stats(self, snapshot: Snapshot) -> None:
        with self._cond:
            self._stats = snapshot

    def mark_source_stopped(self) -> None:
        with self._cond:
            self._source_stopped = True
            self._cond.notify_all()

    # ---- reader side ---------------------------------------------------------------------------------------
    @property
    def seq(self) -> int:
        with self._cond:
            return self._seq

    @property
    def source_stopped(self) -> bool:
        with self._cond:
            return self._source_stopped

    def last_frame_age_s(self) -> Optional[float]:
        with self._cond:
            return None if self._frame_mono is None else time.monotonic() - self._frame_mono

    def healthy(self, max_age_s: float = 5.0) -> bool:
        """True while frames flow through inference (newest within max_age_s) and the source has not stopped."""
        with self._cond:
            if self._source_stopped or self._frame_mono is None:
                return False
            return time.monotonic() - self._frame_mono <= max_age_s

    def current(self) -> Snapshot:
        """The newest Snapshot with the hub's own figures filled in (of the first camera, for now the only one)."""
        with self._cond:
            age = None if self._frame_mono is None else round(time.monotonic() - self._frame_mono, 3)
            snap = self._stats.replace(recent_events=len(self._events))
            return snap.replace_camera(snap.camera.name, last_frame_age_s=age, source_stopped=self._source_stopped)

    def stats(self) -> dict:
        """``current()`` as JSON: what /api/stats serves."""
        return self.current().to_json()

    def recent_events(self) -> list[dict]:
        with self._cond:
            return [dict(e) for e in self._events]

    def snapshot(self) -> Optional[FrameTuple]:
        """The newest frame tuple (seq, frame, persons, states, extra), or None before the first frame."""
        with self._cond:
            if self._frame is None:
                return None
            return self._seq, self._frame, list(self._persons), dict(self._states), dict(self._extra)

    def wait_frame(self, after_seq: int, timeout: float) -> Optional[FrameTuple]:
        """Block until a frame newer than ``after_seq`` exists (or the timeout passes; then None)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._seq <= after_seq or self._frame is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._seq, self._frame, list(self._persons), dict(self._states), dict(self._extra)

    def wake_all(self) -> None:
        """Wake every waiter (used by the web server on shutdown)."""
        with self._cond:
            self._cond.notify_all()

    def jpeg_for(self, snap: FrameTuple, height: Optional[int] = None) -> bytes:
        """The annotated JPEG of one frame tuple, encoded once per (seq, height) however many clients watch."""
        from .overlay import draw_overlay, encode_jpeg  # cv2 only when someone actually looks

        seq, frame, persons, states, extra = snap
        if height is not None and height >= frame.shape[0]:
            height = None  # never scaled up: that costs CPU and bandwidth and shows nothing more
        key = (seq, height)
        with self._jpeg_lock:
            cached = self._jpeg_cache.get(key)
            if cached is not None:
                return cached
            data = encode_jpeg(draw_overlay(frame, persons, states, extra), height=height)
            self.encode_count += 1
            # keep only the newest sequence number's encodings, and only a few heights of it
            for old in [k for k in self._jpeg_cache if k[0] < seq]:
                del self._jpeg_cache[old]
            while len(self._jpeg_cache) >= JPEG_CACHE:
                del self._jpeg_cache[next(iter(self._jpeg_cache))]
            self._jpeg_cache[key] = data
            return data

    def latest_jpeg(self, height: Optional[int] = None) -> Optional[bytes]:
        """The newest annotated frame as JPEG (encoded on demand, cached per seq+height); None before any frame."""
        snap = self.snapshot()
        return None if snap is None else self.jpeg_for(snap, height)
