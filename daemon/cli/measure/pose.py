"""`fallwatch pose IMAGE...`: detector + estimator on still images.

Exit codes: 0 fine; 1 an image could not be read; 2 bad configuration, a missing model or an unusable backend.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
from fallwatch.config.loader import load_config
from fallwatch.daemon.app.settings import make_engine
from fallwatch.pose.engine import BackendError, FrameError, PoseEngine
from fallwatch.pose.models import ModelError
from fallwatch.pose.types import KEYPOINT_NAMES, PoseResult

log = logging.getLogger(__name__)


def load_engine(args: argparse.Namespace) -> tuple[Optional[PoseEngine], int, Any]:
    """(engine, 0, config) as the configuration says, or (None, 2, None) after printing one line per problem."""
    config = load_config(args.config)
    try:
        return make_engine(config, getattr(args, "model_dir", None)), 0, config
    except (ModelError, BackendError) as exc:
        print(f"fallwatch: {exc}", file=sys.stderr)
        return None, 2, None


def read_image_rgb(path: str) -> np.ndarray:
    """An image file as RGB uint8, or ValueError with one line naming the file and the problem."""
    import cv2
    from fallwatch.daemon.capture.images import read_image_bgr

    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")
    return cv2.cvtColor(read_image_bgr(path), cv2.COLOR_BGR2RGB)  # ImageError is a ValueError


def person_json(p: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "track_id": p.track_id,
        "box": [round(float(v), 1) for v in p.box],
        "score": round(float(p.score), 4),
        "keypoints": {
            name: [
                round(float(p.keypoints[i, 0]), 1),
                round(float(p.keypoints[i, 1]), 1),
                round(float(p.keypoints[i, 2]), 4),
            ]
            for i, name in enumerate(KEYPOINT_NAMES)
        },
    }
    if p.keypoints33 is not None:  # BlazePose: all 33 landmarks too, in its own order
        out["keypoints33"] = [[round(float(x), 1), round(float(y), 1), round(float(s), 4)] for x, y, s in p.keypoints33]
    return out


def cmd_pose(args: argparse.Namespace) -> int:
    engine, rc, _ = load_engine(args)
    if engine is None:
        return rc
    status = 0
    for path in args.images:
        try:
            rgb = read_image_rgb(path)
        except ValueError as exc:
            print(f"fallwatch pose: {exc}", file=sys.stderr)
            status = 1
            continue
        engine.reset()  # every image stands alone: no tracks carried over
        try:
            result = engine.process(rgb, 0.0)
        except FrameError as exc:  # decodable but unusable (e.g. a few pixels)
            print(f"fallwatch pose: {path}: {exc}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            print(
                json.dumps(
                    {"image": path, "backend": result.backend, "people": [person_json(p) for p in result.persons]}
                ),
                flush=True,
            )
        else:
            _print_people(path, rgb.shape, result)
    return status


def _print_people(path: str, shape: tuple[int, ...], result: PoseResult) -> None:
    n = len(result.persons)
    print(f"{path}: {shape[1]}x{shape[0]}, {n} {'person' if n == 1 else 'people'} ({result.backend})")
    for p in result.persons:
        x0, y0, x1, y1 = p.box
        print(
            f"  person {p.track_id}: box [{x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}] score {p.score:.2f}"
            f"{' (detector)' if p.detected else ''}"
        )
        for i, name in enumerate(KEYPOINT_NAMES):
            x, y, s = p.keypoints[i]
            print(f"    {name:<15} {x:7.1f} {y:7.1f}  {s:.2f}")


# -- bench ---------------------------------------------------------------------------------------------------
