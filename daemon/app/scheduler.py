"""Several cameras sharing one pose engine: hand out their frames fairly.

Each Capture keeps at most one frame (it drops the oldest, or its reader waits when it is lossless), so nothing
queues without bound. The FrameScheduler takes frames round-robin over the cameras that have one ready: after a
camera is served, the others come first, so a busy camera cannot starve a quiet one, and each camera's frame is
its newest. It blocks on one condition that every capture signals (Capture.on_update), not on each capture.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

from fallwatch.daemon.capture.reader import Capture, Frame

FPS_WINDOW = 30  # hand-outs the per-camera rate is measured over


@dataclass
class _Camera:
    name: str
    capture: Capture
    handed: int = 0  # frames handed out
    times: deque = field(default_factory=lambda: deque(maxlen=FPS_WINDOW))  # monotonic hand-out times

    def fps(self) -> float:
        if len(self.times) < 2 or self.times[-1] <= self.times[0]:
            return 0.0
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


class FrameScheduler:
    """``next(timeout)`` -> (camera name, Frame) from the cameras added with ``add``, round-robin."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._updates = 0  # bumped by every capture's on_update: a frame, or an end
        self._cameras: list[_Camera] = []
        self._turn = 0  # index of the camera asked first next time

    def add(self, name: str, capture: Capture) -> Capture:
        """Serve ``capture`` under ``name`` (unique). Add before ``capture.start()`` so no signal is missed (a
        frame that came before is still found: every ``next`` looks at every camera)."""
        with self._cond:
            if any(c.name == name for c in self._cameras):
                raise ValueError(f"camera {name!r} is already scheduled")
            self._cameras.append(_Camera(name, capture))
        capture.on_update = self._signal
        return capture

    def _signal(self) -> None:
        with self._cond:
            self._updates += 1
            self._cond.notify_all()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self._cameras]

    @property
    def finished(self) -> bool:
        """Every camera has ended and its last frame has been taken."""
        return all(c.capture.finished for c in self._cameras)

    def next(self, timeout: float = 0.5) -> Optional[tuple[str, Frame]]:
        """The next camera's frame, or None after ``timeout`` without any (at once when all have finished)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                seen = self._updates
                cameras = list(self._cameras)
                turn = self._turn
            # No lock of ours is held while a capture's lock is taken (a capture calls _signal holding none).
            for k in range(len(cameras)):
                i = (turn + k) % len(cameras)
                cam = cameras[i]
                frame = cam.capture.get(0)
                if frame is not None:
                    with self._cond:
                        self._turn = (i + 1) % len(cameras)
                        cam.handed += 1
                        cam.times.append(time.monotonic())
                    return cam.name, frame
            if self.finished:
                return None
            with self._cond:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if self._updates == seen:  # nothing arrived since we looked: wait for a capture's signal
                    self._cond.wait(left)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per camera: frames handed out, frames its capture dropped (overwritten before being taken) and read,
        the hand-out rate over the last FPS_WINDOW frames, and the capture's state."""
        with self._cond:
            return {
                c.name: {
                    "handed": c.handed,
                    "dropped": c.capture.dropped,
                    "delivered": c.capture.delivered,
                    "fps": round(c.fps(), 2),
                    "state": c.capture.state,
                }
                for c in self._cameras
            }
