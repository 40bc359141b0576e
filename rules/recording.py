"""Pose recordings: JSONL, one line per frame.

``{"t": s, "frame": n, "size": [w, h], "people": [{"track": id, "box": [x0,y0,x1,y1],
"keypoints": [[x, y, score] x 17]}]}`` (COCO-17 order, pixels; ``track`` and ``box`` optional).
Written recordings also carry ``keypoints_raw`` (before smoothing) when the pose engine provides them.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Union

import numpy as np

from .base import PersonPose

log = logging.getLogger(__name__)


class RecordingError(ValueError):
    """A recording that cannot be read; the message names the file and line."""


@dataclass
class RecordedFrame:
    t: float
    frame: int
    size: tuple[int, int]
    people: list[PersonPose]


def _person(obj: dict, index: int, where: str) -> PersonPose:
    if not isinstance(obj, dict):
        raise RecordingError(f'{where}: person {index} must be an object with "keypoints"')
    kps = np.asarray(obj.get("keypoints"), dtype=np.float32)
    if kps.shape != (17, 3):
        raise RecordingError(f"{where}: person {index} has keypoints of shape {kps.shape}, expected 17 x [x, y, score]")
    box = obj.get("box")
    if box is not None:
        if len(box) != 4:
            raise RecordingError(f"{where}: person {index} box must be [x0, y0, x1, y1]")
        box = tuple(float(v) for v in box)
        if not all(np.isfinite(box)):
            raise RecordingError(f"{where}: person {index} box must be four finite numbers")
    raw = obj.get("keypoints_raw")
    if raw is not None:
        raw = np.asarray(raw, dtype=np.float32)
        if raw.shape != (17, 3):
            raise RecordingError(f"{where}: person {index} has keypoints_raw of shape {raw.shape}, expected 17 x 3")
    track = obj.get("track")
    return PersonPose(track=int(track) if track is not None else index, box=box, keypoints=kps, keypoints_raw=raw)


def parse_line(line: str, where: str = "recording") -> RecordedFrame:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RecordingError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(obj, dict) or "t" not in obj:
        raise RecordingError(f'{where}: a frame needs at least "t" (seconds)')
    people_in = obj.get("people") or []
    if not isinstance(people_in, list):
        raise RecordingError(f'{where}: "people" must be a list')
    try:
        t = float(obj["t"])
        frame = int(obj.get("frame", 0))
        size = tuple(int(v) for v in obj.get("size", (0, 0)))
        people = [_person(p, i, where) for i, p in enumerate(people_in)]
    except (TypeError, ValueError, OverflowError) as exc:  # int(Infinity) overflows
        if isinstance(exc, RecordingError):
            raise
        raise RecordingError(f"{where}: bad value ({exc})") from None
    if not np.isfinite(t):
        raise RecordingError(f'{where}: "t" must be a finite number of seconds, not {obj["t"]!r}')
    if len(size) != 2:
        raise RecordingError(f"{where}: size must be [width, height]")
    return RecordedFrame(t=t, frame=frame, size=size, people=people)


def read_recording(path: Union[str, Path]) -> Iterator[RecordedFrame]:
    """Yield the frames of a recording; a bad line raises RecordingError naming file and line."""
    path = Path(path)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise RecordingError(f"{path}: cannot open recording ({exc.strerror})") from None
    with fh:
        n = 0
        while True:
            try:
                raw = fh.readline()
            except OSError as exc:
                raise RecordingError(f"{path}:{n + 1}: cannot read recording ({exc.strerror})") from None
            if not raw:
                return
            n += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise RecordingError(f"{path}:{n}: not UTF-8 text (is this a JSONL pose recording?)") from None
            if line.strip():
                yield parse_line(line, f"{path}:{n}")


def _points(kps: np.ndarray) -> list[list[float]]:
    return [[round(float(x), 2), round(float(y), 2), round(float(s), 4)] for x, y, s in np.asarray(kps)]


def frame_to_dict(t: float, frame: int, size: tuple[int, int], people: list[PersonPose]) -> dict:
    out = []
    for p in people:
        d: dict = {"track": int(p.track)}
        if p.box is not None:
            d["box"] = [round(float(v), 2) for v in p.box]
        d["keypoints"] = _points(p.keypoints)
        if p.keypoints_raw is not None:
            d["keypoints_raw"] = _points(p.keypoints_raw)
        out.append(d)
    return {"t": round(float(t), 4), "frame": int(frame), "size": [int(size[0]), int(size[1])], "people": out}


class RecordingWriter:
    """Appends one JSON line per frame; use as a context manager or call close()."""

    def __init__(self, path: Union[str, Path, IO[str]]) -> None:
        self._fh: IO[str]
        if isinstance(path, (str, os.PathLike)):
            self._fh = Path(path).open("w", encoding="utf-8")
            self._own = True
        else:
            self._fh = path
            self._own = False

    def write(self, t: float, frame: int, size: tuple[int, int], people: list[PersonPose]) -> None:
        self._fh.write(json.dumps(frame_to_dict(t, frame, size, people), separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self._own:
            self._fh.close()
        else:
            self._fh.flush()

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
