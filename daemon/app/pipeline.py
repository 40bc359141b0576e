"""The one frame -> events code path, shared by the daemon, `detect`, `eval` on videos and `bench`.

Pipeline.process: pose engine on the frame, persons -> PersonPose, rules.update, optional pose recording.
iter_video_frames: decode a video file with OpenCV as fast as possible, with media time stamps.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Protocol, Union

import numpy as np
from fallwatch.daemon.capture.media_time import MediaClock, stated_fps
from fallwatch.pose.types import PoseResult
from fallwatch.rules import Event, PersonPose, Rules

if TYPE_CHECKING:  # the engine is only called, never constructed, here
    from fallwatch.pose.tracker import Tracker
    from fallwatch.rules.recording import RecordingWriter

log = logging.getLogger(__name__)

# A decoder that keeps failing this many times in a row has reached the real end of a damaged file.
MAX_CONSECUTIVE_BAD_FRAMES = 25


@dataclass
class FrameResult:
    t: float
    frame_no: int
    pose: PoseResult
    events: list[Event] = field(default_factory=list)
    states: dict[int, str] = field(default_factory=dict)


def person_poses(persons: list[Any]) -> list[PersonPose]:
    """The pose engine's Person objects as the plain values the rules take."""
    return [
        PersonPose(
            track=int(p.track_id),
            box=tuple(float(v) for v in p.box),
            keypoints=p.keypoints,
            keypoints_raw=getattr(p, "keypoints_raw", None),
        )
        for p in persons
    ]


class Engine(Protocol):
    """What the daemon needs of the pose engine (pose/engine.py PoseEngine; tests hand in stand-ins)."""

    @property
    def backend(self) -> str: ...
    @property
    def backend_reason(self) -> Optional[str]: ...

    def make_tracker(self) -> Any: ...
    def process(self, frame_rgb: np.ndarray, t: float, tracker: Any = None) -> PoseResult: ...


class Pipeline:
    """One camera's frames -> events. Cameras sharing one engine each have their own Pipeline, with their own
    ``tracker`` (engine.make_tracker()) and rules; without a tracker the engine's own is used."""

    def __init__(
        self,
        engine: Engine,
        rules: Rules,
        recorder: Optional["RecordingWriter"] = None,
        tracker: Optional["Tracker"] = None,
    ) -> None:
        self.engine = engine
        self._rules = rules
        self.recorder = recorder
        self.tracker = tracker
        self._lock = threading.Lock()  # set_rules may come from a SIGHUP handler thread
        self.frames = 0

    @property
    def rules(self) -> Rules:
        return self._rules

    def set_rules(self, rules: Rules) -> None:
        """Swap the rules (configuration reload) without touching the camera or the models."""
        with self._lock:
            self._rules = rules

    def process(self, frame_rgb: np.ndarray, t: float, frame_no: int) -> FrameResult:
        """Pose + rules for one RGB frame. A malformed frame raises the engine's FrameError (callers skip it)."""
        if self.tracker is None:
            pose = self.engine.process(frame_rgb, t)
        else:
            pose = self.engine.process(frame_rgb, t, tracker=self.tracker)
        size = (int(frame_rgb.shape[1]), int(frame_rgb.shape[0]))
        people = person_poses(pose.persons)
        with self._lock:
            rules = self._rules
        events = rules.update(t, frame_no, people, size)
        if self.recorder is not None:
            self.recorder.write(t, frame_no, size, people)
        self.frames += 1
        return FrameResult(t=t, frame_no=frame_no, pose=pose, events=events, states=rules.person_states())


class VideoFrames:
    """Iterate (rgb, t, frame_no) over a video file; t is media time in seconds, as the daemon's file source
    has it (daemon/capture/media_time.py). Frames that fail to decode are skipped and counted in ``corrupt``."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = str(path)
        self.corrupt = 0
        self.frames = 0
        self.fps = 0.0
        self.first_t: Optional[float] = None
        self.last_t: Optional[float] = None

    def __iter__(self) -> Iterator[tuple[np.ndarray, float, int]]:
        import cv2

        if not Path(self.path).is_file():
            raise ValueError(f"{self.path}: no such video file")
        cap = cv2.VideoCapture(self.path)
        if not cap.isOpened():
            raise ValueError(f"{self.path}: cannot open video (unsupported or corrupt)")
        try:
            self.fps = stated_fps(cap, self.path)
            clock = MediaClock(self.fps)
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            frame_no = -1
            bad_run = 0
            while True:
                frame_no += 1
                if not cap.grab():
                    # End of stream, or a damaged packet before the end: skip on while frames remain.
                    if total and frame_no < total and bad_run < MAX_CONSECUTIVE_BAD_FRAMES:
                        self.corrupt += 1
                        bad_run += 1
                        continue
                    break
                ok, bgr = cap.retrieve()
                if not ok or bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
                    self.corrupt += 1
                    bad_run += 1
                    if bad_run >= MAX_CONSECUTIVE_BAD_FRAMES:
                        break
                    continue
                bad_run = 0
                t = clock.stamp(cap.get(cv2.CAP_PROP_POS_MSEC), frame_no)
                self.frames += 1
                if self.first_t is None:
                    self.first_t = t
                self.last_t = t
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), t, frame_no
        finally:
            cap.release()
        if self.corrupt:
            log.warning("%s: %d corrupt frame(s) skipped", self.path, self.corrupt)
        if self.frames == 0:
            raise ValueError(f"{self.path}: no frame could be decoded")

    @property
    def duration_s(self) -> float:
        """Footage length: first to last time stamp plus one frame."""
        if self.first_t is None or self.last_t is None:
            return 0.0
        return self.last_t - self.first_t + 1.0 / self.fps


def iter_video_frames(path: Union[str, Path]) -> Iterator[tuple[np.ndarray, float, int]]:
    """(rgb, t, frame_no) for each decodable frame of a video file (see VideoFrames)."""
    return iter(VideoFrames(path))
