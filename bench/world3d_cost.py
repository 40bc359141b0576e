"""What a BlazePose 3D second opinion costs per frame: its landmark call against a MoveNet Lightning call.

    .venv/bin/python bench/world3d_cost.py [--source VIDEO] [--frames N] [--threads N] [--json]

Both estimators run on the same person crops of the same frames (the first ``--frames`` frames of ``--source``,
default a kul-train fall clip, each crop from the box of the person MoveNet's pipeline tracks), interleaved call by
call so that the machine's load falls on both alike. Printed: the median time of a whole estimator call (crop,
invoke, decode; BlazePose with its 3D world landmarks read) and of the model invoke alone, and their ratios
BlazePose / MoveNet: measured here, in the same run, never against figures of another machine. On a shared, loaded
machine wall times mostly measure waiting for a core; the process's CPU time per call (``time.process_time``, all
interpreter threads) does not, so its ratio is the one to read there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
from fallwatch.pose import runtime
from fallwatch.pose.engine import PoseEngine, PoseSettings
from fallwatch.pose.estimator import BlazePoseEstimator, MoveNetEstimator, crop_around_box
from fallwatch.pose.models import model_path, resolve_model_dir
from fallwatch.pose.runtime import Model
from fallwatch.pose.world3d import torso3d


def person_crops(source: str, tracker: PoseEngine, frames: int) -> list[tuple[np.ndarray, Any]]:
    """Up to ``frames`` (RGB frame, crop around the first person the pipeline found) of a video, for timing an
    estimator on the crops the daemon would give it."""
    cap = cv2.VideoCapture(source)
    crops: list[tuple[np.ndarray, Any]] = []
    while len(crops) < frames:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        persons = tracker.process(rgb, len(crops) / 30.0).persons
        if persons:
            crops.append((rgb, crop_around_box(persons[0].box)))
    cap.release()
    return crops


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data = Path(os.environ.get("FALLWATCH_DATA_DIR", "../shared/data"))
    ap.add_argument("--source", default=str(data / "kul-train" / "FALL" / "fall100.mp4"))
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1, help="interpreter threads of both models (default 1)")
    ap.add_argument("--model-dir")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    model_dir = resolve_model_dir(args.model_dir)

    def load(name: str) -> Model:
        path = model_path(name, model_dir)
        return Model(runtime.make_cpu_interpreter(path, args.threads), path, "cpu")

    movenet, blaze = MoveNetEstimator(load("movenet_lightning")), BlazePoseEstimator(load("blazepose_full"))
    tracker = PoseEngine(PoseSettings(backend="cpu", num_threads=args.threads), model_dir)

    if not cv2.VideoCapture(args.source).isOpened():
        print(f"world3d_cost: cannot open video {args.source}", file=sys.stderr)
        return 2
    crops = person_crops(args.source, tracker, args.frames)
    if not crops:
        print(f"world3d_cost: nobody found in the first frames of {args.source}", file=sys.stderr)
        return 2

    call: dict[str, list[float]] = {"movenet": [], "blazepose": []}
    cpu: dict[str, list[float]] = {"movenet": [], "blazepose": []}
    invoke: dict[str, list[float]] = {"movenet": [], "blazepose": []}
    for est in (movenet, blaze):  # one warm-up call each: the first invoke allocates
        est.estimate(*crops[0])
    for rgb, crop in crops:
        for name, est in (("movenet", movenet), ("blazepose", blaze)):
            t0, c0 = time.perf_counter(), time.process_time()
            e = est.estimate(rgb, crop)
            if name == "blazepose":
                assert e.world is not None and e.kps33 is not None
                torso3d(e.world, e.kps33[:, 2])
            call[name].append((time.perf_counter() - t0) * 1000.0)
            cpu[name].append((time.process_time() - c0) * 1000.0)
            invoke[name].append(est.model.last_invoke_ms)
    out = {
        "source": args.source,
        "calls": len(crops),
        "threads": args.threads,
        "movenet_call_ms": round(statistics.median(call["movenet"]), 2),
        "blazepose_call_ms": round(statistics.median(call["blazepose"]), 2),
        "movenet_cpu_ms": round(statistics.median(cpu["movenet"]), 2),
        "blazepose_cpu_ms": round(statistics.median(cpu["blazepose"]), 2),
        "movenet_invoke_ms": round(statistics.median(invoke["movenet"]), 2),
        "blazepose_invoke_ms": round(statistics.median(invoke["blazepose"]), 2),
    }
    out["call_ratio"] = round(out["blazepose_call_ms"] / out["movenet_call_ms"], 2)
    out["cpu_ratio"] = round(out["blazepose_cpu_ms"] / out["movenet_cpu_ms"], 2)
    out["invoke_ratio"] = round(out["blazepose_invoke_ms"] / out["movenet_invoke_ms"], 2)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{Path(args.source).name}: {out['calls']} person crops, {args.threads} thread(s), medians, same run")
    print(f"  MoveNet Lightning call   {out['movenet_call_ms']:7.2f} ms  (invoke {out['movenet_invoke_ms']:.2f} ms)")
    print(
        f"  BlazePose full + 3D call {out['blazepose_call_ms']:7.2f} ms  (invoke {out['blazepose_invoke_ms']:.2f} ms)"
    )
    print(
        f"  CPU time per call: MoveNet {out['movenet_cpu_ms']:.2f} ms, BlazePose + 3D {out['blazepose_cpu_ms']:.2f} ms"
    )
    print(
        f"  ratio BlazePose / MoveNet: CPU {out['cpu_ratio']:.2f}x; wall: call {out['call_ratio']:.2f}x, "
        f"invoke {out['invoke_ratio']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
