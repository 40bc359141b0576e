"""A synthetic household for `fallwatch tune`: pose recordings of fast deep squats (which the default rules
take for falls) and of real topples, written as event records with their labels, as the daemon keeps them."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import numpy as np

FPS = 15.0
H = 220.0  # standing body height, pixels
FLOOR = 420.0  # image y of the feet
SIZE = (640, 480)


def skeleton(x: float, hip_y: float, lean_deg: float, ankle_y: float = FLOOR, lying: bool = False) -> list:
    """COCO-17 keypoints of a person: hips at (x, hip_y), spine leaning lean_deg from vertical."""
    kps = np.zeros((17, 3))
    a = math.radians(lean_deg)
    torso = 0.37 * H
    sx, sy = x + torso * math.sin(a), hip_y - torso * math.cos(a)
    head = (x + 1.35 * torso * math.sin(a), hip_y - 1.35 * torso * math.cos(a))
    for i in range(5):
        kps[i] = (head[0] + (i - 2) * 3, head[1], 0.9)
    kps[5], kps[6] = (sx - 15, sy, 0.9), (sx + 15, sy, 0.9)
    kps[7], kps[8] = (sx - 20, sy + 0.5 * torso, 0.9), (sx + 20, sy + 0.5 * torso, 0.9)
    kps[9], kps[10] = (sx - 22, sy + torso, 0.9), (sx + 22, sy + torso, 0.9)
    kps[11], kps[12] = (x - 12, hip_y, 0.9), (x + 12, hip_y, 0.9)
    if lying:  # legs along the floor, away from the head
        kps[13], kps[14] = (x - 0.25 * H, hip_y, 0.9), (x - 0.25 * H, hip_y + 5, 0.9)
        kps[15], kps[16] = (x - 0.5 * H, hip_y, 0.9), (x - 0.5 * H, hip_y + 5, 0.9)
    else:
        knee_y = (hip_y + ankle_y) / 2
        bend = max(0.0, 0.49 * H - (ankle_y - hip_y))  # knees go forward as the hips come down
        kps[13], kps[14] = (x - 12 + bend, knee_y, 0.9), (x + 12 + bend, knee_y, 0.9)
        kps[15], kps[16] = (x - 12, ankle_y, 0.9), (x + 12, ankle_y, 0.9)
    return [[round(float(v), 2) for v in p] for p in kps]


def _frame(t: float, i: int, kps: list) -> dict:
    xs, ys = [p[0] for p in kps], [p[1] for p in kps]
    return {
        "t": round(t, 4),
        "frame": i,
        "size": list(SIZE),
        "people": [{"track": 1, "box": [min(xs) - 5, min(ys) - 5, max(xs) + 5, max(ys) + 5], "keypoints": kps}],
    }


def squat(depth: float = 0.42, lean: float = 30.0, down_s: float = 0.35, hold_s: float = 2.4) -> list[dict]:
    """Stand 2 s, drop the hips ``depth`` body heights in ``down_s`` with the spine leaning, hold ``hold_s``,
    stand."""
    stand = FLOOR - 0.49 * H
    frames, t = [], 0.0
    for i in range(int((4.1 + hold_s) * FPS)):
        t = i / FPS
        k = min(max((t - 2.0) / down_s, 0.0), 1.0) - min(max((t - 2.0 - hold_s) / 0.8, 0.0), 1.0)
        k = 0.5 - 0.5 * math.cos(math.pi * k)
        frames.append(_frame(t, i, skeleton(320, stand + depth * H * k, lean * k)))
    return frames


def topple(lean_end: float = 85.0, down_s: float = 0.6) -> list[dict]:
    """Stand 2 s, fall over sideways in ``down_s`` (spine to ``lean_end``), lie still."""
    stand = FLOOR - 0.49 * H
    frames = []
    for i in range(int(7 * FPS)):
        t = i / FPS
        k = min(max((t - 2.0) / down_s, 0.0), 1.0)
        k = k * k
        lying = k > 0.7
        frames.append(_frame(t, i, skeleton(320 + 60 * k, stand + (FLOOR - 25 - stand) * k, lean_end * k, lying=lying)))
    return frames


def write_record(directory: Path, frames: list[dict], label: str, event_t: float) -> str:
    """An event record as the daemon writes it (no clip: tune reads only the pose recording and the event)."""
    event_id = str(uuid.uuid4())
    folder = directory / event_id
    folder.mkdir(parents=True)
    (folder / "pose.jsonl").write_text("".join(json.dumps(f) + "\n" for f in frames))
    (folder / "event.json").write_text(
        json.dumps(
            {
                "event": "fall",
                "id": event_id,
                "t": event_t,
                "track": 1,
                "label": label,
                "recorded": 1.0e9,
                "frames": len(frames),
                "clip": None,
            }
        )
    )
    return event_id
