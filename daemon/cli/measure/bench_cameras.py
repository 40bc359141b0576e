"""`fallwatch bench --cameras N`: one clip opened as N cameras sharing one pose engine, with fair scheduling, and
the figures per camera."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

import numpy as np
from fallwatch.daemon.cli.measure.bench import peak_rss_mb, summary_stats
from fallwatch.pose.engine import PoseEngine

log = logging.getLogger(__name__)


def run_bench_cameras(
    engine: PoseEngine,
    source: str,
    cameras: int,
    loops: int = 1,
    rules: Optional[Callable[[str], Optional[Any]]] = None,
) -> dict[str, Any]:
    """``source`` opened ``cameras`` times as that many captures sharing ``engine``, each with its own tracker and
    rules (``rules(name)``), frames taken through a FrameScheduler as fast as the engine goes: every capture is
    lossless (its reader decodes the next frame once the last is taken), so the engine is never idle and no
    decoding is wasted."""
    from fallwatch.daemon.app.pipeline import Pipeline, person_poses
    from fallwatch.daemon.app.scheduler import FrameScheduler
    from fallwatch.daemon.capture.reader import Capture
    from fallwatch.daemon.capture.sources import EndOfStream, SourceError, VideoFileSource

    class Passes(VideoFileSource):
        """The clip ``loops`` times, media time running on (as a looping camera.source file)."""

        def __init__(self, path: str, passes: int):
            super().__init__(path, 30.0)
            self.passes = passes

        def rewind(self) -> None:
            self.passes -= 1
            if self.passes <= 0:
                raise EndOfStream()
            super().rewind()

    loops = max(1, loops)
    scheduler = FrameScheduler()
    captures = []
    # per camera: its own tracker, and its Pipeline (tracker + rules) when there are rules
    per: dict[str, tuple[Any, Optional[Pipeline]]] = {}
    for i in range(cameras):
        name = f"camera{i + 1}"
        captures.append(scheduler.add(name, Capture(Passes(source, loops), realtime=False, loop=True)))
        tracker = engine.make_tracker()
        camera_rules = rules(name) if rules is not None else None
        per[name] = tracker, Pipeline(engine, camera_rules, tracker=tracker) if camera_rules is not None else None
    pose_ms: list[float] = []
    ours_ms: list[float] = []
    invoke_ms: list[float] = []
    frames = 0
    try:
        for capture in captures:
            capture.start()  # opens the file: SourceError for one that cannot be decoded
        t_start = time.perf_counter()
        while True:
            got = scheduler.next(1.0)
            if got is None:
                if scheduler.finished:
                    break
                continue
            name, frame = got
            tracker, pipeline = per[name]
            t0 = time.perf_counter()
            if pipeline is not None:
                pose = pipeline.process(frame.image, frame.t, frame.frame_no).pose
            else:
                pose = engine.process(frame.image, frame.t, tracker)
                person_poses(pose.persons)
            ours_ms.append((time.perf_counter() - t0) * 1000)
            sm = pose.stage_ms
            pose_ms.append(sm["total"])
            invoke_ms.append(sm["detect_invoke"] + sm["estimate_invoke"])
            frames += 1
        wall = time.perf_counter() - t_start
    except SourceError as exc:
        raise ValueError(str(exc)) from None
    finally:
        for capture in captures:
            capture.stop()
    failed = [c for c in captures if c.state == "failed"]
    if failed or not frames:
        raise ValueError((failed[0].error if failed else None) or f"{source}: no frame could be decoded")
    invoke_per_frame = float(np.mean(invoke_ms))
    per_camera = {
        name: {"frames": st["handed"], "fps": round(st["handed"] / wall, 2), "dropped": st["dropped"]}
        for name, st in scheduler.stats().items()
    }
    return {
        "source": source,
        "cameras": cameras,
        "loops": loops,
        "frames": frames,
        "fps": round(frames / wall, 2),  # total inference throughput: frames through the engine per second
        "backend": engine.backend,
        "backend_reason": engine.backend_reason,
        "per_camera": per_camera,
        "stage_ms": {"pose": summary_stats(pose_ms), "pipeline": summary_stats(ours_ms)},
        "model_invoke_ms_per_frame": round(invoke_per_frame, 3),
        # as run_bench: our per-frame work (pose + rules) over the models' own invoke time
        "overhead_ratio": round(float(np.mean(ours_ms)) / invoke_per_frame, 3),
        # wall time per frame over invoke time: the above plus waiting for decoders and scheduling
        "overhead_ratio_wall": round(1000.0 * wall / frames / invoke_per_frame, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rules": any(pipeline is not None for _, pipeline in per.values()),
    }


def print_cameras(report: dict[str, Any]) -> None:
    n = report["cameras"]
    print(
        f"source {report['source']} x{report['loops']} as {n} camera{'s' if n > 1 else ''} sharing one engine "
        f"(not realtime): {report['frames']} frames, {report['fps']} fps through the engine, backend "
        f"{report['backend']} ({report['backend_reason']})"
    )
    for name, cam in report["per_camera"].items():
        print(f"  {name}: {cam['frames']} frames, {cam['fps']:.2f} fps, {cam['dropped']} dropped")
    print(
        f"model invoke per frame {report['model_invoke_ms_per_frame']:.2f} ms; overhead ratio "
        f"{report['overhead_ratio']:.3f} ({report['overhead_ratio_wall']:.3f} wall time per frame); peak RSS "
        f"{report['peak_rss_mb']:.1f} MB" + ("; rules included" if report["rules"] else "")
    )
