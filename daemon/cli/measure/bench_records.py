"""`fallwatch bench-records --source CLIP`: pipeline latency while event clips are being written, against the same
pipeline with the recorder idle (pre-roll only) and without event records at all, in one run (alternating
rounds, so machine load hits all alike).

Frames are paced at the clip's frame rate, as a camera delivers them; the latency of a frame is the pipeline
thread's time for it (pose + rules + handing the frame to the recorder). With records on, an event is forced
every events.pre_s + events.post_s seconds (records back to back, as a fall then its person_down would not even
do), so a clip is always being collected while the one before is encoded and written; before each round without
records, the recorder has finished writing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np


def _frames(path: str) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(path)
    fps = cap.get(cv2.CAP_PROP_FPS) or 15.0
    out = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    if not out:
        raise ValueError(f"{path}: no frames could be decoded")
    return out, float(fps)


def _round(
    pipeline: Any, frames: list[np.ndarray], fps: float, recorder: Optional[Any], t0: float, events: bool = True
) -> list[float]:
    every = (recorder.cfg.pre_s + recorder.cfg.post_s) if recorder else 0.0
    next_event = t0 + (recorder.cfg.pre_s if recorder else 0.0) if events else float("inf")
    latencies = []
    start = time.monotonic()
    for i, image in enumerate(frames):
        t = t0 + i / fps
        wait = start + i / fps - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        began = time.perf_counter()
        result = pipeline.process(image, t, i)
        if recorder is not None:
            recorder.on_frame(image, t, i, result.pose.persons, result.states)
            if t >= next_event:
                recorder.on_event({"event": "fall", "id": str(uuid.uuid4()), "t": t, "frame": i, "track": 1})
                next_event += every
        latencies.append((time.perf_counter() - began) * 1000.0)
    return latencies


def cmd_bench_records(args: argparse.Namespace) -> int:
    from fallwatch.config.loader import load_config
    from fallwatch.daemon.app.pipeline import Pipeline
    from fallwatch.daemon.app.settings import make_engine, rule_settings
    from fallwatch.daemon.records.recorder import EventRecorder
    from fallwatch.rules import make_rules

    cfg = load_config(args.config)
    try:
        frames, fps = _frames(args.source)
        frames = frames * max(1, int(np.ceil(30 * fps / len(frames))))  # rounds of at least 30 s
    except ValueError as exc:
        print(f"fallwatch bench-records: {exc}", file=sys.stderr)
        return 1
    from fallwatch.pose.engine import BackendError
    from fallwatch.pose.models import ModelError

    try:
        engine = make_engine(cfg, getattr(args, "model_dir", None))
    except (ModelError, BackendError) as exc:
        print(f"fallwatch: {exc}", file=sys.stderr)
        return 2
    pipeline = Pipeline(engine, make_rules(rule_settings(cfg), source="bench"))
    off: list[float] = []
    idle: list[float] = []
    on: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        recorder = EventRecorder(cfg.events, Path(tmp), privacy=cfg.privacy == "skeleton").start()
        t0 = 0.0
        _round(pipeline, frames[: int(fps)], fps, None, t0)  # warm-up
        for _ in range(args.rounds):
            t0 += 1000.0  # each round is a new stretch of time for the rules
            off += _round(pipeline, frames, fps, None, t0)
            t0 += 1000.0
            idle += _round(pipeline, frames, fps, recorder, t0, events=False)
            t0 += 1000.0
            on += _round(pipeline, frames, fps, recorder, t0)
            recorder.flush(timeout=120)  # the next round without records starts on a quiet disk
        recorder.stop(timeout=60)
        written, failed, skipped = recorder.records_written, recorder.records_failed, recorder.frames_dropped
    report = {
        "source": args.source,
        "frames_per_round": len(frames),
        "fps": round(fps, 2),
        "rounds": args.rounds,
        "backend": engine.backend,
        "latency_ms_without_records": {
            "median": round(statistics.median(off), 2),
            "p90": round(float(np.percentile(off, 90)), 2),
        },
        "latency_ms_recorder_idle": {
            "median": round(statistics.median(idle), 2),
            "p90": round(float(np.percentile(idle, 90)), 2),
        },
        "latency_ms_writing_clips": {
            "median": round(statistics.median(on), 2),
            "p90": round(float(np.percentile(on, 90)), 2),
        },
        "records_written": written,
        "records_failed": failed,
        "recorder_frames_skipped": skipped,
    }
    report["writing_vs_idle_ratio"] = round(
        report["latency_ms_writing_clips"]["median"] / report["latency_ms_recorder_idle"]["median"], 3
    )
    report["recorder_vs_none_ratio"] = round(
        report["latency_ms_recorder_idle"]["median"] / report["latency_ms_without_records"]["median"], 3
    )
    if args.json:
        print(json.dumps(report))
        return 0
    a, i, b = (
        report["latency_ms_without_records"],
        report["latency_ms_recorder_idle"],
        report["latency_ms_writing_clips"],
    )
    print(f"{args.source}: {len(frames)} frames at {fps:.1f} fps x {args.rounds} rounds, backend {engine.backend}")
    print(f"pipeline latency without records: median {a['median']:.1f} ms, p90 {a['p90']:.1f} ms")
    print(f"pipeline latency, recorder idle:  median {i['median']:.1f} ms, p90 {i['p90']:.1f} ms (pre-roll only)")
    print(
        f"pipeline latency writing clips:   median {b['median']:.1f} ms, p90 {b['p90']:.1f} ms "
        f"({written} records written, {failed} failed, {skipped} frames skipped by the recorder)"
    )
    print(
        f"ratio writing clips / recorder idle: {report['writing_vs_idle_ratio']:.3f}; "
        f"recorder idle / no records: {report['recorder_vs_none_ratio']:.3f}"
    )
    return 0
