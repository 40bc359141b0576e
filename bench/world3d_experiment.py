"""Does BlazePose's 3D torso tell lying from upright where the 2D rule could not? (issue 19, "the seeds' 3D pose")

    .venv/bin/python bench/world3d_experiment.py --recordings DIR [--videos DIR] [--clips A,B,...] [--json]

``--recordings`` holds pose recordings of kul-train made with the default pipeline (``fallwatch detect --record``,
one ``<FOLDER>__<name>.jsonl`` per clip, its events in ``<name>.jsonl.events.json``); ``--videos`` the clips
(default ``$FALLWATCH_DATA_DIR/kul-train``). Per clip, BlazePose full runs on a few frames of two windows, on a crop
of the recorded person box turned so the recorded 2D spine points up, then once more on the region its own
alignment points give (as MediaPipe tracks):

- before: the track's first second (standing or walking: the person's own upright reference);
- after: around the 2D decision: the ``fall`` event's second if one was raised, else a fall clip's last second
  (lying at the end) or, for a daily activity, the second around the lowest the hips came in the image.

Printed per clip: the 2D spine angle from the image vertical (MoveNet, recorded), the 3D torso inclination from the
camera's up direction and the 3D angle against the person's own "before" torso, each a median over the window; then
how well a threshold on each measure separates lying (falls, after) from upright (every before, ADLs after).
Only ~8 frames per window are decoded and estimated: run it niced, it takes about a minute.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from fallwatch.pose.engine import PoseEngine, PoseSettings
from fallwatch.pose.estimator import Crop, Estimate, crop_around_box
from fallwatch.pose.models import resolve_model_dir
from fallwatch.pose.world3d import Segment3D, angle_between, legs3d, torso3d
from fallwatch.rules.recording import RecordedFrame, read_recording

# The clips where 2D is ambiguous in kul-train (/work/cache/ana/causes.py on the default pipeline's recordings):
# the 9 falls missed on geometry (lying, but the torso less than min_drop lower in the image than standing) and the
# 7 daily activities that alarmed with the whole body seen; then controls: caught falls and quiet activities.
AMBIGUOUS = [
    "FALL__fall102",
    "FALL__fall105",
    "FALL__fall111",
    "FALL__fall118",
    "FALL__fall31",
    "FALL__fall57",
    "FALL__fall59",
    "FALL__fall62",
    "FALL__fall64",
    "ADL__bend18",
    "ADL__kneel2",
    "ADL__kneel3",
    "ADL__sit17",
    "ADL__sit2",
    "ADL__sit9",
    "ADL__walk20",
]
CONTROLS = [
    "FALL__fall100",
    "FALL__fall108",
    "FALL__fall23",
    "FALL__fall33",
    "ADL__sit10",
    "ADL__kneel4",
    "ADL__bend",
    "ADL__standup12",
    "ADL__walk21",
]
MIN_CONFIDENCE = 0.5  # a frame's 3D torso counts when its four torso landmarks are at least this visible
FRAMES_PER_WINDOW = 8


def spine_angle_2d(kps: np.ndarray) -> Optional[float]:
    """Degrees of the 2D spine (hips -> shoulders) from the image's up direction, or None without a torso."""
    if min(kps[[5, 6, 11, 12], 2]) < 0.2:
        return None
    dx, dy = kps[[5, 6], :2].mean(axis=0) - kps[[11, 12], :2].mean(axis=0)
    return math.degrees(math.atan2(abs(dx), -dy)) if (dx or dy) else None


def main_track(frames: list[RecordedFrame], events: list[dict]) -> Optional[int]:
    falls = [e for e in events if e.get("event") == "fall"]
    if falls:
        return int(falls[0]["track"])
    counts = Counter(p.track for f in frames for p in f.people)
    return counts.most_common(1)[0][0] if counts else None


def windows(frames: list[RecordedFrame], track: int, label: str, events: list[dict]) -> dict[str, list[int]]:
    """Frame numbers of the "before" and "after" windows (see the module's docstring), ~8 of each."""
    seen = [(f.frame, f.t, p) for f in frames for p in f.people if p.track == track and p.box]
    t0 = seen[0][1]
    before = [n for n, t, _ in seen if t - t0 <= 1.0]
    falls = [e for e in events if e.get("event") == "fall"]
    if falls:
        tf = float(falls[0]["t"])
        after = [n for n, t, _ in seen if tf - 0.2 <= t <= tf + 0.8]
    elif label == "fall":
        t_end = seen[-1][1]
        after = [n for n, t, _ in seen if t >= t_end - 1.0]
    else:
        low = max(seen, key=lambda s: float(s[2].keypoints[[11, 12], 1].mean()))[1]
        after = [n for n, t, _ in seen if abs(t - low) <= 0.5]
    return {"before": _spread(before), "after": _spread(after)}


def _spread(numbers: list[int]) -> list[int]:
    if len(numbers) <= FRAMES_PER_WINDOW:
        return numbers
    step = len(numbers) / FRAMES_PER_WINDOW
    return [numbers[int(i * step)] for i in range(FRAMES_PER_WINDOW)]


def read_frames(video: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """The wanted frames (RGB) of a video, read in order: grab() skips the others without converting them."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise SystemExit(f"world3d_experiment: cannot open video {video}")
    out: dict[int, np.ndarray] = {}
    n = 0
    try:
        while n <= max(wanted, default=-1):
            if not cap.grab():
                break
            if n in wanted:
                ok, bgr = cap.retrieve()
                if ok:
                    out[n] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            n += 1
    finally:
        cap.release()
    return out


def segments_in(estimator, rgb: np.ndarray, box: tuple, kps2d: np.ndarray) -> Optional[dict[str, Segment3D]]:
    """BlazePose's 3D torso and legs in the person's box: the crop turned by the 2D spine, then once more on
    BlazePose's own region; the pass whose torso is the more confident."""
    angle = 0.0
    if min(kps2d[[5, 6, 11, 12], 2]) >= 0.2:
        dx, dy = kps2d[[5, 6], :2].mean(axis=0) - kps2d[[11, 12], :2].mean(axis=0)
        angle = math.degrees(math.atan2(dx, -dy))
    best: Optional[dict[str, Segment3D]] = None
    crop: Optional[Crop] = crop_around_box(box, angle=angle)
    for _ in range(2):
        assert crop is not None
        est: Estimate = estimator.estimate(rgb, crop)
        assert est.world is not None and est.kps33 is not None
        torso, legs = torso3d(est.world, est.kps33[:, 2]), legs3d(est.world, est.kps33[:, 2])
        if torso is not None and (best is None or torso.confidence > best["torso"].confidence):
            best = {"torso": torso} | ({"legs": legs} if legs is not None else {})
        crop = est.roi
        if crop is None:
            break
    return best


MEASURES = ("2d", "torso_incl", "torso_vs_ref", "body_incl", "body_vs_ref")


def frame_measures(spine2d: Optional[float], seg: dict[str, Segment3D], ref: dict[str, np.ndarray]) -> dict:
    """One frame's measures. "body" is the smaller of the torso's and the legs' angle (lying: both are
    horizontal; bending or sitting: one of them is not); None when the legs are not seen confidently."""
    torso, legs = seg["torso"], seg.get("legs")
    out: dict = {"2d": spine2d, "torso_incl": torso.inclination_deg, "torso_vs_ref": None}
    if "torso" in ref:
        out["torso_vs_ref"] = angle_between(torso.vector, ref["torso"])
    legs_ok = legs is not None and legs.confidence >= MIN_CONFIDENCE
    out["body_incl"] = min(torso.inclination_deg, legs.inclination_deg) if legs_ok else None
    out["body_vs_ref"] = None
    if legs_ok and "legs" in ref and out["torso_vs_ref"] is not None:
        out["body_vs_ref"] = min(out["torso_vs_ref"], angle_between(legs.vector, ref["legs"]))
    return out


def load_clip(rec: Path) -> tuple[list[RecordedFrame], list[dict], Optional[int]]:
    """A clip's pose recording, its events (``<rec>.events.json``, none when absent) and its main track."""
    frames = list(read_recording(rec))
    events_path = Path(str(rec) + ".events.json")
    events = json.loads(events_path.read_text()) if events_path.exists() else []
    return frames, events, main_track(frames, events)


def measure_clip(estimator, rec: Path, video: Path, label: str) -> Optional[dict]:
    frames, events, track = load_clip(rec)
    if track is None:
        return None
    win = windows(frames, track, label, events)
    by_number = {f.frame: p for f in frames for p in f.people if p.track == track}
    rgb = read_frames(video, set(win["before"]) | set(win["after"]))
    found: dict[str, list[tuple[Optional[float], dict[str, Segment3D]]]] = {"before": [], "after": []}
    for name, numbers in win.items():
        for n in numbers:
            if n not in rgb:
                continue
            p = by_number[n]
            kps = np.asarray(p.keypoints, dtype=np.float64)
            seg = segments_in(estimator, rgb[n], tuple(p.box), kps)
            if seg is not None and seg["torso"].confidence >= MIN_CONFIDENCE:
                found[name].append((spine_angle_2d(kps), seg))
    row: dict = {"clip": rec.stem, "label": label, "fall_event": any(e.get("event") == "fall" for e in events)}
    if not found["before"] or not found["after"]:
        return row | {"usable": False}
    # the person's own upright reference: the median direction of each segment over the first second
    ref = {}
    for part in ("torso", "legs"):
        segs = [seg[part] for _, seg in found["before"] if part in seg]
        vs = [g.vector / g.length_m for g in segs if g.confidence >= MIN_CONFIDENCE]
        if vs:
            ref[part] = np.median(np.array(vs), axis=0)
    for name, got in found.items():
        per_frame = [frame_measures(a, seg, ref) for a, seg in got]
        for m in MEASURES:
            vals = [f[m] for f in per_frame if f[m] is not None]
            row[f"{name}_{m}"] = round(statistics.median(vals), 1) if vals else None
        row[f"{name}_n"] = len(got)
    return row | {"usable": True}


def separation(lying: list[float], upright: list[float]) -> dict:
    """The best threshold between two groups (lying above it) and its margin: the gap between the groups' nearest
    members (negative: they overlap), and how many of each fall on the wrong side at the best threshold."""
    if not lying or not upright:
        return {}
    cands = sorted(set(lying) | set(upright))
    best = None
    for i in range(len(cands) - 1):
        thr = (cands[i] + cands[i + 1]) / 2
        errs = sum(v < thr for v in lying) + sum(v >= thr for v in upright)
        if best is None or errs < best[0]:
            best = (errs, thr)
    assert best is not None
    thr = best[1]
    return {
        "threshold": round(thr, 1),
        "gap_deg": round(min(lying) - max(upright), 1),
        "lying_below": sum(v < thr for v in lying),
        "upright_above": sum(v >= thr for v in upright),
        "lying_n": len(lying),
        "upright_n": len(upright),
    }


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recordings", required=True, help="folder of kul-train pose recordings and their events")
    ap.add_argument("--videos", help="the kul-train clips (default $FALLWATCH_DATA_DIR/kul-train)")
    ap.add_argument("--model-dir", help="where the models are (default: the usual search order)")
    ap.add_argument("--clips", help="comma-separated recording names (default: the ambiguous ones and controls)")
    ap.add_argument("--all", action="store_true", help="every clip of the recordings' manifest.json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rec_dir = Path(args.recordings)
    videos = Path(args.videos or Path(os.environ.get("FALLWATCH_DATA_DIR", "../shared/data")) / "kul-train")
    names = args.clips.split(",") if args.clips else AMBIGUOUS + CONTROLS
    if args.all:
        manifest = json.loads((rec_dir / "manifest.json").read_text())
        names = [Path(c["path"]).stem for c in manifest["clips"]]
    engine = PoseEngine(
        PoseSettings(
            backend="cpu", detector="blazepose_detector", estimator="blazepose_full", num_threads=args.threads
        ),
        resolve_model_dir(args.model_dir),
    )
    rows = []
    for name in names:
        rec = rec_dir / f"{name}.jsonl"
        folder, clip = name.split("__", 1)
        video = videos / folder / f"{clip}.mp4"
        for path in (rec, video):
            if not path.is_file():
                print(f"world3d_experiment: {path} is missing", file=sys.stderr)
                return 2
        label = "fall" if folder == "FALL" else "adl"
        row = measure_clip(engine.estimator, rec, video, label)
        if row is not None:
            row["group"] = "ambiguous" if name in AMBIGUOUS else "control" if name in CONTROLS else "other"
            rows.append(row)
    usable = [r for r in rows if r["usable"]]
    summary = {}
    for m in MEASURES:
        lying = [r[f"after_{m}"] for r in usable if r["label"] == "fall" and r[f"after_{m}"] is not None]
        upright = [r[f"before_{m}"] for r in usable if r[f"before_{m}"] is not None]
        upright += [r[f"after_{m}"] for r in usable if r["label"] == "adl" and r[f"after_{m}"] is not None]
        summary[m] = separation(lying, upright)
    if args.json:
        print(json.dumps({"clips": rows, "separation": summary}, indent=1))
        return 0
    print("median degrees over each window, before -> after; 2D: spine from the image's vertical (MoveNet);")
    print("incl: 3D from the camera's up; vs_ref: 3D against the person's own first second; body: min(torso, legs)")
    print(f"{'clip':16} {'group':9} {'label':5} {'2D fall':7} " + " ".join(f"{m:>15}" for m in MEASURES) + "  frames")
    for r in rows:
        head = f"{r['clip']:16} {r['group']:9} {r['label']:5} {'yes' if r['fall_event'] else 'no':7}"
        if not r["usable"]:
            print(f"{head} no confident 3D torso")
            continue
        cells = []
        for m in MEASURES:
            b, a = r[f"before_{m}"], r[f"after_{m}"]
            cells.append(f"{'-' if b is None else round(b):>6} -> {'-' if a is None else round(a):>4}")
        print(f"{head} " + " ".join(f"{c:>15}" for c in cells) + f"  {r['before_n']}+{r['after_n']}")
    print("\nseparation of lying (falls, after) from upright (every before, ADLs after), lying above the threshold:")
    for m in MEASURES:
        s = summary[m]
        if s:
            print(
                f"  {m:13} threshold {s['threshold']:5.1f} deg  gap {s['gap_deg']:+6.1f} deg  "
                f"lying below {s['lying_below']}/{s['lying_n']}  upright above {s['upright_above']}/{s['upright_n']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
