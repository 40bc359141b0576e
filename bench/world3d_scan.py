"""Would a 3D "lying" second opinion rescue the falls 2D missed without alarming daily activities? (issue 19)

    .venv/bin/python bench/world3d_scan.py --recordings DIR [--videos DIR] [--step 10] [--json]

world3d_experiment.py looks at two moments per clip; a second opinion would run all along a track. This scans
every clip of the recordings' manifest end to end at one frame in ``--step`` (3 a second at 30 fps): BlazePose on
the recorded person's box (as world3d_experiment.py), each frame's 3D torso and body (min of torso and legs) angle
against the person's own first second, smoothed as the median of 3 consecutive samples (about 1 s). Per clip the
largest smoothed angle is what a "lying for 1 s" test at a threshold would see: a fall clip should pass it, a daily
activity should not. Printed: per clip its 2D result and the largest angles, then for thresholds 40-80 degrees
how many falls missed by 2D it would rescue and how many daily clips it would alarm (those 2D left quiet).
About 1,400 frames for 141 clips: minutes, run it niced.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Optional

import numpy as np
from fallwatch.pose.engine import PoseEngine, PoseSettings
from fallwatch.pose.models import resolve_model_dir
from world3d_experiment import MIN_CONFIDENCE, frame_measures, load_clip, read_frames, segments_in, spine_angle_2d

MEASURES = ("torso_vs_ref", "body_vs_ref")


def scan_clip(estimator, rec: Path, video: Path, step: int) -> Optional[dict]:
    frames, events, track = load_clip(rec)
    if track is None:
        return None
    seen = [(f.frame, f.t, p) for f in frames for p in f.people if p.track == track and p.box]
    picked = seen[::step]
    rgb = read_frames(video, {n for n, _, _ in picked})
    samples = []
    for n, t, p in picked:
        if n not in rgb:
            continue
        kps = np.asarray(p.keypoints, dtype=np.float64)
        seg = segments_in(estimator, rgb[n], tuple(p.box), kps)
        if seg is not None and seg["torso"].confidence >= MIN_CONFIDENCE:
            samples.append((t, spine_angle_2d(kps), seg))
    t0 = seen[0][1]
    first = [s for s in samples if s[0] - t0 <= 1.0]
    row: dict = {"clip": rec.stem, "fall_event": any(e.get("event") == "fall" for e in events), "samples": len(samples)}
    if not first:
        return row | {"usable": False}
    ref = {}
    for part in ("torso", "legs"):
        vs = [g[part].vector / g[part].length_m for _, _, g in first if part in g]
        vs = [v for v, g in zip(vs, [g[part] for _, _, g in first if part in g], strict=True) if g.confidence >= 0.5]
        if vs:
            ref[part] = np.median(np.array(vs), axis=0)
    per = [(t, frame_measures(a, g, ref)) for t, a, g in samples]
    for m in MEASURES:
        best, when = None, None
        for i in range(len(per) - 2):
            vals = [f[m] for _, f in per[i : i + 3]]
            if all(v is not None for v in vals):
                v = statistics.median(vals)
                if best is None or v > best:
                    best, when = v, per[i + 1][0]
        row[f"max_{m}"] = None if best is None else round(best, 1)
        row[f"at_{m}"] = None if when is None else round(when, 2)
    return row | {"usable": True}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recordings", required=True)
    ap.add_argument("--videos")
    ap.add_argument("--model-dir")
    ap.add_argument("--step", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rec_dir = Path(args.recordings)
    videos = Path(args.videos or Path(os.environ.get("FALLWATCH_DATA_DIR", "../shared/data")) / "kul-train")
    engine = PoseEngine(
        PoseSettings(
            backend="cpu", detector="blazepose_detector", estimator="blazepose_full", num_threads=args.threads
        ),
        resolve_model_dir(args.model_dir),
    )
    manifest = json.loads((rec_dir / "manifest.json").read_text())
    rows = []
    for clip in manifest["clips"]:
        rec = rec_dir / clip["path"]
        folder, name = rec.stem.split("__", 1)
        video = videos / folder / f"{name}.mp4"
        if not rec.is_file() or not video.is_file():
            print(f"world3d_scan: {rec if not rec.is_file() else video} is missing", file=sys.stderr)
            return 2
        row = scan_clip(engine.estimator, rec, video, args.step)
        if row is not None:
            rows.append(row | {"label": clip["label"]})
    table = {}
    for m in MEASURES:
        for thr in (40, 50, 60, 70, 80):
            over = [r for r in rows if r.get(f"max_{m}") is not None and r[f"max_{m}"] >= thr]
            table[f"{m}>={thr}"] = {
                "rescued_missed_falls": sum(r["label"] == "fall" and not r["fall_event"] for r in over),
                "missed_falls": sum(r["label"] == "fall" and not r["fall_event"] for r in rows),
                "new_adl_alarms": sum(r["label"] == "adl" and not r["fall_event"] for r in over),
                "quiet_adls": sum(r["label"] == "adl" and not r["fall_event"] for r in rows),
                "caught_falls_over": sum(r["label"] == "fall" and r["fall_event"] for r in over),
                "caught_falls": sum(r["label"] == "fall" and r["fall_event"] for r in rows),
            }
    if args.json:
        print(json.dumps({"clips": rows, "thresholds": table}, indent=1))
        return 0
    print(f"{'clip':18} {'label':5} {'2D':7} {'max torso_vs_ref':>17} {'max body_vs_ref':>16}  samples")
    for r in rows:
        two_d = (
            ("caught" if r["label"] == "fall" else "alarm")
            if r["fall_event"]
            else ("missed" if r["label"] == "fall" else "quiet")
        )
        cells = [f"{'-' if r.get(f'max_{m}') is None else r[f'max_{m}']:>16}" for m in MEASURES]
        print(f"{r['clip']:18} {r['label']:5} {two_d:7} {cells[0]:>17} {cells[1]}  {r['samples']}")
    print("\nA 3D 'lying for ~1 s' test at each threshold (largest smoothed angle against the person's first second):")
    for key, v in table.items():
        print(
            f"  {key:18} rescues {v['rescued_missed_falls']}/{v['missed_falls']} falls 2D missed, "
            f"alarms {v['new_adl_alarms']}/{v['quiet_adls']} daily clips 2D left quiet "
            f"(passed by {v['caught_falls_over']}/{v['caught_falls']} falls 2D caught)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
