"""Event records made for the debug server's tests: a real MJPEG clip (frames of a dev clip, as the recorder writes
them) and a real pose recording (an UR Fall Detection fall), in the layout the recorder keeps."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np

CLIP_SIZE = (320, 240)  # the recorder's clip size


def make_record(
    events_dir: Path, event_id: str, frames: list[np.ndarray], pose: Path, camera: str = "test-cam"
) -> Path:
    """A record folder ``events_dir/event_id``: clip.avi from ``frames`` (RGB), pose.jsonl copied from ``pose``."""
    folder = events_dir / event_id
    folder.mkdir(parents=True)
    writer = cv2.VideoWriter(str(folder / "clip.avi"), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, CLIP_SIZE)
    assert writer.isOpened()
    for rgb in frames:
        writer.write(cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), CLIP_SIZE))
    writer.release()
    shutil.copyfile(pose, folder / "pose.jsonl")
    meta = {
        "id": event_id,
        "event": "fall",
        "camera": camera,
        "track": None,
        "t": 2.0,
        "label": None,
        "clip": "clip.avi",
        "clip_fps": 10.0,
        "frames": len(frames),
        "recorded": time.time(),
    }
    (folder / "event.json").write_text(json.dumps(meta))
    return folder


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.grab():
        count += 1
    cap.release()
    return count
