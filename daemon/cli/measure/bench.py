"""`fallwatch bench --source VIDEO [--cameras N] [--baseline VIDEO]`: the full pipeline's speed, memory and model
work on a clip (per camera with --cameras; night against day with --baseline).

Exit codes: 0 fine; 1 a clip could not be decoded; 2 bad configuration, a missing model or an unusable backend.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from fallwatch.daemon.cli.measure.pose import load_engine
from fallwatch.pose.engine import PoseEngine

log = logging.getLogger(__name__)


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return float("nan")


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def _growth_pct(rss: list[float]) -> float:
    """RSS growth from the start to the end of the run: the median of the last three loops over the median of
    the first three (decoder and allocator buffers swing a few MB from one loop to the next)."""
    if len(rss) < 2:
        return 0.0
    k = min(3, len(rss) // 2)
    first, last = float(np.median(rss[:k])), float(np.median(rss[-k:]))
    return 100.0 * (last - first) / first if first > 0 else 0.0


def summary_stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": 0.0, "p95": 0.0, "mean": 0.0}
    a = np.asarray(values, dtype=np.float64)
    return {
        "median": round(float(np.median(a)), 3),
        "p95": round(float(np.percentile(a, 95)), 3),
        "mean": round(float(a.mean()), 3),
    }


def finite(value: float, digits: int = 3) -> Optional[float]:
    """Rounded, or None (JSON null) when there was nothing to measure."""
    return round(value, digits) if np.isfinite(value) else None


def _rules(config: Any, source: str = "bench") -> Optional[Any]:
    """The configured rules, or None when the rules floor cannot be built (the bench then measures pose only)."""
    try:
        from fallwatch.daemon.app.settings import rule_settings
        from fallwatch.rules import make_rules

        return make_rules(rule_settings(config), source=source)
    except Exception as exc:  # no usable rules floor just means: bench without the rules stage
        log.warning("bench without the rules stage (%s)", exc)
        return None


def run_bench(
    engine: PoseEngine,
    source: str,
    loops: int = 1,
    rules: Optional[Any] = None,
    invokes: Optional[dict[str, list[float]]] = None,
) -> dict[str, Any]:
    """The daemon's pipeline (decode -> pose -> rules) over ``source``, ``loops`` times, as fast as possible.
    ``invokes``, if given, collects every detector invoke and every single estimator invoke (ms) by role."""
    from fallwatch.daemon.app.pipeline import Pipeline, VideoFrames, person_poses

    # enhance (night enhancement) is part of detect, estimate and track, and is shown apart too
    stages: dict[str, list[float]] = {
        k: [] for k in ("decode", "detect", "estimate", "track", "enhance", "pose", "rules", "pipeline")
    }
    det_invokes: list[float] = []
    est_invokes: list[float] = []
    det_frame: list[float] = []
    est_frame: list[float] = []
    est_calls = det_runs = frames = 0
    rss_per_loop: list[float] = []
    pipeline = Pipeline(engine, rules) if rules is not None else None
    t_offset = 0.0
    engine.reset()
    t_start = time.perf_counter()
    for _ in range(max(1, loops)):
        video = VideoFrames(source)
        it = iter(video)
        while True:
            t0 = time.perf_counter()
            try:
                rgb, t, frame_no = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            est_before = engine.estimator_model.invoke_count
            det_before = engine.detector_model.invoke_count
            # media time keeps running across loops, as the daemon's capture does for a looping file
            if pipeline is not None:
                pose = pipeline.process(rgb, t + t_offset, frames).pose
            else:
                pose = engine.process(rgb, t + t_offset)
                person_poses(pose.persons)
            t2 = time.perf_counter()
            sm = pose.stage_ms
            stages["decode"].append((t1 - t0) * 1000)
            stages["detect"].append(sm["detect"])
            stages["estimate"].append(sm["estimate"])
            stages["track"].append(sm["track"])
            stages["enhance"].append(sm.get("enhance", 0.0))
            stages["pose"].append(sm["total"])
            stages["rules"].append(max(0.0, (t2 - t1) * 1000 - sm["total"]))
            stages["pipeline"].append((t2 - t0) * 1000)
            det_frame.append(sm["detect_invoke"])
            est_frame.append(sm["estimate_invoke"])
            if engine.detector_model.invoke_count > det_before:
                det_invokes.append(engine.detector_model.last_invoke_ms)
                det_runs += 1
            n_est = engine.estimator_model.invoke_count - est_before
            est_calls += n_est
            if n_est == 1:
                est_invokes.append(engine.estimator_model.last_invoke_ms)
            frames += 1
        t_offset += video.duration_s
        rss_per_loop.append(rss_mb())
    wall = time.perf_counter() - t_start
    if invokes is not None:
        invokes.setdefault("detector", []).extend(det_invokes)
        invokes.setdefault("estimator", []).extend(est_invokes)
    invoke_per_frame = float(np.mean(det_frame) + np.mean(est_frame))
    # One estimator invoke: the median over frames with exactly one; with none such (an empty room, a person
    # lying: every frame also tries the rotations) the mean over all of them, so the report stays valid JSON.
    per_call = float(np.sum(est_frame)) / est_calls if est_calls else float("nan")
    est_invoke = float(np.median(est_invokes)) if est_invokes else per_call
    est_mean = float(np.mean(est_invokes)) if est_invokes else per_call
    det_invoke = float(np.median(det_invokes)) if det_invokes else 0.0
    # Medians per invoke times how often each model ran: robust to the scheduling spikes of a busy machine.
    model_cost = (est_calls / frames * est_invoke + det_runs / frames * det_invoke) / est_invoke
    ours_mean = float(np.mean(stages["pose"])) + float(np.mean(stages["rules"]))
    pipeline_mean = float(np.mean(stages["pipeline"]))
    if pipeline is None:
        stages.pop("rules")
    return {
        "source": source,
        "loops": max(1, loops),
        "frames": frames,
        "fps": round(frames / wall, 2),
        "backend": engine.backend,
        "backend_reason": engine.backend_reason,
        # which runtime (module and version) ran each model, on which backend
        "models": {
            role: {"file": m.path.name, "backend": m.backend, "runtime": m.runtime}
            for role, m in (("detector", engine.detector_model), ("estimator", engine.estimator_model))
        },
        "stage_ms": {k: summary_stats(v) for k, v in stages.items()},
        "invoke_ms": {
            "detector": {**summary_stats(det_invokes), "count": len(det_invokes)},
            "estimator": {**summary_stats(est_invokes), "count": len(est_invokes)},
        },
        "model_invoke_ms_per_frame": round(invoke_per_frame, 3),
        # night enhancement (pose.enhance): its share of the overhead, and how many model inputs it changed
        "enhance_ms_per_frame": round(float(np.mean(stages["enhance"])), 3),
        "enhanced_fraction": engine.enhancer.figures()["enhanced_fraction"],
        # our per-frame work (crops, tracking, smoothing, rules) over the models' own invoke time
        "overhead_ratio": round(ours_mean / invoke_per_frame, 3),
        "overhead_ratio_without_enhance": round((ours_mean - float(np.mean(stages["enhance"]))) / invoke_per_frame, 3),
        # the same with video decoding (OpenCV/FFmpeg) counted in too
        "overhead_ratio_with_decode": round(pipeline_mean / invoke_per_frame, 3),
        # detector + estimator invoke time per frame over one estimator invoke (crop tracking saves the detector)
        "model_cost_ratio": finite(model_cost),
        "model_cost_ratio_mean": finite(invoke_per_frame / est_mean),
        "detector_run_fraction": round(det_runs / frames, 4),
        "estimator_calls_per_frame": round(est_calls / frames, 3),
        "detector_runs": det_runs,
        "estimator_calls": est_calls,
        # model work per frame: counted calls x each model's median invoke (ms), as model_work() computes it
        "model_work_ms_per_frame": finite(model_work(det_runs, est_calls, frames, det_invoke, est_invoke)),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_per_loop_mb": [round(v, 1) for v in rss_per_loop],
        "rss_growth_pct": round(_growth_pct(rss_per_loop), 2),
        "rules": pipeline is not None,
    }


def model_work(det_runs: int, est_calls: int, frames: int, det_ms: float, est_ms: float) -> float:
    """Model work per frame (ms): detector runs x one detector invoke + estimator calls x one estimator invoke,
    over the frames. Counted calls priced at median invoke times, so a busy machine's spikes do not move it."""
    return (det_runs * det_ms + est_calls * est_ms) / frames if frames else float("nan")


def run_bench_compare(engine: PoseEngine, source: str, baseline: str, rules: Any = None) -> dict[str, Any]:
    """``baseline`` then ``source`` through one engine in one run, and the ratio of their model work per frame
    (e.g. a night clip against the same clip by day), both priced at the same invoke costs: the medians over
    both clips' invokes."""
    invokes: dict[str, list[float]] = {}
    base = run_bench(engine, baseline, 1, rules() if rules else None, invokes)
    src = run_bench(engine, source, 1, rules() if rules else None, invokes)
    det_ms = float(np.median(invokes["detector"])) if invokes.get("detector") else 0.0
    est_ms = float(np.median(invokes["estimator"])) if invokes.get("estimator") else float("nan")
    work = {
        name: model_work(r["detector_runs"], r["estimator_calls"], r["frames"], det_ms, est_ms)
        for name, r in (("source", src), ("baseline", base))
    }
    return {
        "source": src,
        "baseline": base,
        "model_work": {
            "detector_invoke_ms": round(det_ms, 3),
            "estimator_invoke_ms": finite(est_ms),
            "source_ms_per_frame": finite(work["source"]),
            "baseline_ms_per_frame": finite(work["baseline"]),
            "ratio": finite(work["source"] / work["baseline"]) if work["baseline"] > 0 else None,
        },
    }


def cmd_bench(args: argparse.Namespace) -> int:
    if not Path(args.source).is_file():
        print(f"fallwatch bench: {args.source}: no such file", file=sys.stderr)
        return 1
    if args.cameras is not None and args.cameras < 1:
        print(f"fallwatch bench: --cameras must be at least 1, not {args.cameras}", file=sys.stderr)
        return 2
    engine, rc, config = load_engine(args)
    if engine is None:
        return rc
    if getattr(args, "baseline", None) is not None:
        if args.cameras is not None:
            print("fallwatch bench: --baseline and --cameras do not go together", file=sys.stderr)
            return 2
        if not Path(args.baseline).is_file():
            print(f"fallwatch bench: {args.baseline}: no such file", file=sys.stderr)
            return 1
    try:
        if getattr(args, "baseline", None) is not None:
            compare = run_bench_compare(engine, args.source, args.baseline, lambda: _rules(config))
            if args.json:
                print(json.dumps(compare))
            else:
                _print_compare(compare)
            return 0
        if args.cameras is not None:
            from fallwatch.daemon.cli.measure.bench_cameras import print_cameras, run_bench_cameras

            report = run_bench_cameras(
                engine, args.source, args.cameras, args.loops, lambda name: _rules(config, f"bench:{name}")
            )
        else:
            report = run_bench(engine, args.source, args.loops, _rules(config))
    except ValueError as exc:
        print(f"fallwatch bench: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report))
        return 0
    if args.cameras is not None:
        print_cameras(report)
        return 0
    print(
        f"source {report['source']} x{report['loops']}: {report['frames']} frames, {report['fps']} fps, "
        f"backend {report['backend']} ({report['backend_reason']})"
    )
    print("; ".join(f"{role} {m['file']} on {m['backend']} ({m['runtime']})" for role, m in report["models"].items()))
    print("stage            median ms   p95 ms")
    for name, st in report["stage_ms"].items():
        print(f"  {name:<14} {st['median']:9.2f} {st['p95']:8.2f}")
    for name, st in report["invoke_ms"].items():
        print(f"  {name + ' invoke':<14} {st['median']:9.2f} {st['p95']:8.2f}  ({st['count']} single invokes)")
    print(
        f"model invoke per frame {report['model_invoke_ms_per_frame']:.2f} ms; overhead ratio "
        f"{report['overhead_ratio']:.3f} ({report['overhead_ratio_with_decode']:.3f} with decoding); "
        f"detector+estimator / estimator invoke "
        f"{'-' if report['model_cost_ratio'] is None else format(report['model_cost_ratio'], '.3f')}"
    )
    print(
        f"night enhancement ({engine.settings.enhance.mode}) {report['enhance_ms_per_frame']:.2f} ms per frame "
        f"(mean), {100 * report['enhanced_fraction']:.0f}% of model inputs enhanced; overhead ratio without it "
        f"{report['overhead_ratio_without_enhance']:.3f}"
    )
    work = report["model_work_ms_per_frame"]
    print(
        f"detector ran on {100 * report['detector_run_fraction']:.1f}% of frames; "
        f"{report['estimator_calls_per_frame']:.2f} estimator calls per frame; model work "
        f"{'-' if work is None else format(work, '.2f')} ms per frame (calls x median invoke)"
    )
    loops_mb = report["rss_per_loop_mb"]
    print(
        f"peak RSS {report['peak_rss_mb']:.1f} MB; RSS growth {report['rss_growth_pct']:+.2f}% over "
        f"{len(loops_mb)} loop(s) ({loops_mb[0]:.1f} -> {loops_mb[-1]:.1f} MB after the first/last)"
        + ("; rules included" if report["rules"] else "")
    )
    return 0


def _print_compare(compare: dict[str, Any]) -> None:
    w = compare["model_work"]
    for name in ("baseline", "source"):
        r = compare[name]
        print(
            f"{name} {r['source']}: {r['frames']} frames, detector on {100 * r['detector_run_fraction']:.1f}% of "
            f"frames, {r['estimator_calls_per_frame']:.2f} estimator calls per frame, model work "
            f"{w[name + '_ms_per_frame']:.2f} ms per frame"
        )
    ratio = "-" if w["ratio"] is None else f"{w['ratio']:.3f}"
    print(
        f"model work per frame, source / baseline: {ratio} (detector invoke {w['detector_invoke_ms']:.2f} ms, "
        f"estimator invoke {w['estimator_invoke_ms']:.2f} ms: medians over both clips)"
    )
