"""A small learned model over keypoint windows beside the fall rule: measured held-out (issue 19).

    .venv/bin/pip install scikit-learn        # the experiment only: not a runtime dependency
    nice -n 10 .venv/bin/python bench/learn_experiment.py [--kul MANIFEST] [--perturb N] [--kul-perturb N]
        [--only kul-odd kul-even gmd urfd] [--model logreg|mlp] [--cost] [--cache PICKLE]

Features: per track and frame, the last WINDOW_S seconds of the track resampled at RATE_HZ (the latest pose at or
before each step; a track younger than that holds its first pose), each step measured against the window's own
"before" (median of its first BEFORE_S) and in that "before"'s body heights, so the figures hold for any camera
height: torso centre, hips and shoulders moved down, spine angle, torso length, keypoint box height and width,
sideways move, legs under the body. Models: logistic regression and a one-hidden-layer MLP (scikit-learn, fixed
seeds). A track's score is the least of its last CONSECUTIVE frames' probabilities; a model `fall` is that score
reaching the threshold (once per track per COOLDOWN_S); clips are scored exactly as ``fallwatch eval`` does
(rules.evaluate.score_clip), so a fall clip with annotated times is caught only by an event in its span.

Labels per window: clips with fall times (GMDCSA24, URFD): positive when the window ends in [start + 0.3, end + 1],
negative before start - 0.5, else unused; daily clips: all negative. KU Leuven gives no fall times, so a fall
clip's positives are found (multiple-instance learning): its TOP_SHARE best-scoring windows under a model trained
without them, twice.

Held-out only: kul-train 2-fold by the clip's number (odd/even; the other half plus every dev set trains), then
leave-one-set-out on the dev sets (GMDCSA24 day, night, long-lie, x86 and arm64 recordings held out together:
they are the same clips; URFD), trained on all of kul-train and the other set. Compared on the same held-out
clips: the rule alone, the model alone, the model as a veto on the rule's `fall` (kept only if the model's score
reached VETO_AT within [-1, +0.5] s of it) and as a second path (rule's events plus the model's at OR_AT).
Margins: the model's best score against its threshold (value / threshold - 1, as eval's margins), the rule's from
eval's own margin log. Perturbations: rules.perturb, the seeds `fallwatch eval --perturb` uses.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from fallwatch.rules import RuleSettings
from fallwatch.rules.evaluate import Clip, deciding_attempt, load_manifest, replay_frames, score_clip
from fallwatch.rules.events import Event
from fallwatch.rules.geometry import measure
from fallwatch.rules.perturb import perturb, seed_for
from fallwatch.rules.recording import RecordedFrame, read_recording

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
KUL = Path("/work/cache/kul-rec/kul-train/manifest.json")
GMD = ("gmdcsa24-dev-x86-avx2", "gmdcsa24-dev-arm64")  # the same clips on two CPUs: held out together
URFD = "urfd-falls-keypoints"

WINDOW_S = 2.5
RATE_HZ = 10.0
BEFORE_S = 0.5
MIN_AGE_S = 0.5  # a track is scored once it is this old
CONSECUTIVE = 3  # frames in a row at or above the threshold
COOLDOWN_S = 10.0
TOP_SHARE = 0.15
MIN_SCORE = 0.2  # the rules' min_keypoint_score
STEPS = int(round(WINDOW_S * RATE_HZ)) + 1
MODEL_AT = 0.5
VETO_AT = 0.2
OR_AT = 0.8


def _frame_measures(kps: np.ndarray) -> Optional[np.ndarray]:
    g = measure(kps, MIN_SCORE)
    if g is None:
        return None
    centre_y = (g.hip_y + g.shoulder_y) / 2.0
    centre_x = (g.hip_x + g.shoulder_x) / 2.0
    legs = 1.0 if g.legs_px is not None else 0.0
    return np.array(
        [centre_y, g.hip_y, g.shoulder_y, g.spine_angle_deg, g.torso_px, g.box_h, g.box_w, centre_x, legs, g.height_px]
    )


def window_features(times: np.ndarray, rows: np.ndarray, t: float) -> np.ndarray:
    """One window's features: ``rows`` are a track's per-frame measures (times ascending, the last at ``t``)."""
    steps = t - WINDOW_S + np.arange(STEPS) / RATE_HZ
    idx = np.clip(np.searchsorted(times, steps, side="right") - 1, 0, len(times) - 1)
    w = rows[idx]
    before = w[: int(BEFORE_S * RATE_HZ) + 1]
    ref = np.median(before, axis=0)
    h = max(float(ref[9]), 1.0)
    f = np.stack(
        [
            (w[:, 0] - ref[0]) / h,
            (w[:, 1] - ref[1]) / h,
            (w[:, 2] - ref[2]) / h,
            w[:, 3] / 90.0,
            w[:, 4] / h,
            w[:, 5] / h,
            w[:, 6] / h,
            np.abs(w[:, 7] - ref[7]) / h,
            w[:, 8],
        ],
        axis=1,
    )
    return f.reshape(-1)


@dataclass
class Windows:
    t: np.ndarray  # per scored (frame, track)
    track: np.ndarray
    x: np.ndarray


def windows(frames: list[RecordedFrame]) -> Windows:
    hist: dict[int, tuple[list[float], list[np.ndarray]]] = {}
    ts, tracks, xs = [], [], []
    for fr in frames:
        for p in fr.people:
            m = _frame_measures(p.keypoints)
            if m is None:
                continue
            times, rows = hist.setdefault(p.track, ([], []))
            times.append(fr.t)
            rows.append(m)
            while times and times[0] < fr.t - WINDOW_S - 1.0 and len(times) > 1:
                times.pop(0)
                rows.pop(0)
            # age: from the first sample kept (older ones are pruned only once the window is long past them)
            if fr.t - times[0] < MIN_AGE_S:
                continue
            ts.append(fr.t)
            tracks.append(p.track)
            xs.append(window_features(np.array(times), np.array(rows), fr.t))
    n = len(STEP_NAMES) * STEPS
    x = np.array(xs) if xs else np.zeros((0, n))
    return Windows(np.array(ts), np.array(tracks, dtype=int), x)


STEP_NAMES = ("centre", "hip", "shoulder", "angle", "torso", "box_h", "box_w", "sideways", "legs")


def smoothed(w: Windows, p: np.ndarray) -> np.ndarray:
    """Per window: the least probability over its track's last CONSECUTIVE windows (fewer at a track's start)."""
    out = np.zeros_like(p)
    last: dict[int, list[float]] = {}
    for i, (tr, v) in enumerate(zip(w.track, p, strict=True)):
        q = last.setdefault(int(tr), [])
        q.append(float(v))
        if len(q) > CONSECUTIVE:
            q.pop(0)
        out[i] = min(q) if len(q) == CONSECUTIVE else 0.0
    return out


def model_events(w: Windows, s: np.ndarray, at: float) -> list[Event]:
    events, last = [], {}
    for t, tr, v in zip(w.t, w.track, s, strict=True):
        if v >= at and t - last.get(int(tr), -1e9) >= COOLDOWN_S:
            last[int(tr)] = t
            events.append(_event(float(t), int(tr), float(v)))
    return events


def _event(t: float, track: int, confidence: float) -> Event:
    return Event("fall", "learn", t, 0, track, confidence, 0.0, 0.0, 0.0, [0.0, 0.0, 0.0, 0.0])


def veto(rule: list[Event], w: Windows, s: np.ndarray, at: float) -> list[Event]:
    kept = []
    for e in rule:
        if e.event != "fall":
            kept.append(e)
            continue
        near = (w.t >= e.t - 1.0) & (w.t <= e.t + 0.5)
        if near.any() and s[near].max() >= at:
            kept.append(e)
    return kept


def near_rule(clip: Clip, rule: list[Event], w: Windows, s: np.ndarray) -> Optional[float]:
    """The model's best score near the rule's `fall` events that count (what a veto would look at)."""
    falls = [e for e in rule if e.event == "fall"]
    if clip.label == "fall" and clip.fall_start_s is not None and clip.fall_end_s is not None:
        falls = [e for e in falls if clip.fall_start_s - 0.5 <= e.t <= clip.fall_end_s + 1.0]
    best = None
    for e in falls:
        near = (w.t >= e.t - 1.0) & (w.t <= e.t + 0.5)
        if near.any():
            best = max(best or 0.0, float(s[near].max()))
        else:
            best = max(best or 0.0, 0.0)
    return best


def best_score(clip: Clip, w: Windows, s: np.ndarray) -> float:
    """What decides the model's result: its best score where an event would count (a fall clip's span)."""
    if clip.label == "fall" and clip.fall_start_s is not None and clip.fall_end_s is not None:
        inside = (w.t >= clip.fall_start_s - 0.5) & (w.t <= clip.fall_end_s + 1.0)
        return float(s[inside].max()) if inside.any() else 0.0
    return float(s.max()) if len(s) else 0.0


@dataclass
class Item:
    clip: Clip
    group: str  # kul-odd, kul-even, gmd, urfd
    frames: list[RecordedFrame]
    w: Windows
    rule_events: list[Event]
    rule_result: str
    rule_margin: Optional[float]
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0))  # 1, 0, or -1 (unused)


def clip_number(name: str) -> int:
    digits = "".join(c for c in Path(name).stem.split("__")[-1] if c.isdigit())
    return int(digits) if digits else 1  # "adl" (no number) counts as 1: odd


def load(manifest: Path, group: Callable[[Clip], str], settings: RuleSettings) -> list[Item]:
    items = []
    for clip in load_manifest(manifest):
        frames = list(read_recording(clip.path))
        events, duration, rules = replay_frames(frames, settings, source=clip.path.stem, margins=True)
        scored = score_clip(clip, events, duration)
        decision = deciding_attempt(clip, scored, getattr(rules, "margins", None))
        item = Item(
            clip, group(clip), frames, windows(frames), events, scored.result, decision.margin if decision else None
        )
        item.labels = initial_labels(item)
        items.append(item)
    return items


def initial_labels(item: Item) -> np.ndarray:
    c, t = item.clip, item.w.t
    if c.label == "adl":
        return np.zeros(len(t))
    if item.group.startswith("kul"):
        return np.full(len(t), -1.0)  # no fall times: found by multiple-instance learning
    assert c.fall_start_s is not None and c.fall_end_s is not None
    lab = np.full(len(t), -1.0)
    lab[(t >= c.fall_start_s + 0.3) & (t <= c.fall_end_s + 1.0)] = 1.0
    lab[t < c.fall_start_s - 0.5] = 0.0
    return lab


def make_model(kind: str) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.05, class_weight="balanced", max_iter=2000))
    return make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(16,), alpha=1e-2, max_iter=80, random_state=0),
    )


def _fit(kind: str, train: list[Item], labels: list[np.ndarray]) -> Any:
    xs = [it.w.x[lab >= 0] for it, lab in zip(train, labels, strict=True)]
    ys = [lab[lab >= 0] for lab in labels]
    x, y = np.concatenate(xs), np.concatenate(ys)
    model = make_model(kind)
    if kind == "mlp":  # the MLP has no class weights: balance by a seeded sample of the negatives
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        keep = np.random.default_rng(0).permutation(neg)[: 2 * len(pos)]
        idx = np.sort(np.concatenate([pos, keep]))
        x, y = x[idx], y[idx]
    model.fit(x, y)
    return model


def train(kind: str, train_items: list[Item]) -> Any:
    """Fit, then twice: label each KU Leuven fall clip's best TOP_SHARE windows positive and refit."""
    labels = [it.labels.copy() for it in train_items]
    model = _fit(kind, train_items, labels)
    for _ in range(2):
        for it, lab in zip(train_items, labels, strict=True):
            if it.group.startswith("kul") and it.clip.label == "fall" and len(it.w.t):
                p = model.predict_proba(it.w.x)[:, 1]
                k = max(3, int(TOP_SHARE * len(p)))
                lab[:] = -1.0
                lab[np.argsort(-p)[:k]] = 1.0
        model = _fit(kind, train_items, labels)
    return model


def decide(clip: Clip, frames_w: Windows, s: np.ndarray, rule_events: list[Event], duration: float) -> dict:
    """Each strategy's result on one clip."""
    m = model_events(frames_w, s, MODEL_AT)
    return {
        "rule": score_clip(clip, rule_events, duration).result,
        "model": score_clip(clip, m, duration).result,
        "veto": score_clip(clip, veto(rule_events, frames_w, s, VETO_AT), duration).result,
        "or": score_clip(clip, rule_events + model_events(frames_w, s, OR_AT), duration).result,
    }


STRATS = ("rule", "model", "veto", "or")


def duration(frames: list[RecordedFrame]) -> float:
    return frames[-1].t - frames[0].t if frames else 0.0


def evaluate_fold(model: Any, test: list[Item], settings: RuleSettings, runs: int) -> list[dict]:
    rows = []
    for it in test:
        p = model.predict_proba(it.w.x)[:, 1] if len(it.w.t) else np.zeros(0)
        s = smoothed(it.w, p)
        res = decide(it.clip, it.w, s, it.rule_events, duration(it.frames))
        row = {
            "clip": it.clip.name,
            "group": it.group,
            "label": it.clip.label,
            **res,
            "model_margin": best_score(it.clip, it.w, s) / MODEL_AT - 1.0,
            "rule_margin": it.rule_margin,
            "near_rule": near_rule(it.clip, it.rule_events, it.w, s),
        }
        same = dict.fromkeys(STRATS, 0)
        for run in range(runs):
            shaken = perturb(it.frames, seed_for(it.clip.name, run))
            ev, _, _ = replay_frames(shaken, settings, source=it.clip.path.stem)
            w = windows(shaken)
            ps = model.predict_proba(w.x)[:, 1] if len(w.t) else np.zeros(0)
            r = decide(it.clip, w, smoothed(w, ps), ev, duration(shaken))
            for k in STRATS:
                same[k] += r[k] == res[k]
        row["unchanged"] = {k: same[k] / runs for k in STRATS} if runs else None
        rows.append(row)
    return rows


def tally(rows: list[dict], strat: str) -> str:
    falls = [r for r in rows if r["label"] == "fall"]
    adl = [r for r in rows if r["label"] == "adl"]
    caught = sum(r[strat] == "caught" for r in falls)
    alarmed = sum(r[strat] == "false_alarm" for r in adl)
    out = f"{caught}/{len(falls)} falls, {alarmed}/{len(adl)} ADL"
    if rows and rows[0]["unchanged"] is not None:
        low = sum(r["unchanged"][strat] < 0.95 for r in rows)
        out += f", <95% unchanged: {low}"
    return out


def margins_line(rows: list[dict]) -> str:
    def narrow(vals: list[float]) -> str:
        vals = [abs(v) for v in vals if v is not None]
        if not vals:
            return "-"
        return f"median |m| {statistics.median(vals):.2f}, under 0.1: {sum(v < 0.1 for v in vals)}/{len(vals)}"

    return (
        f"margins: rule {narrow([r['rule_margin'] for r in rows])}; model {narrow([r['model_margin'] for r in rows])}"
    )


def headroom(rows: list[dict]) -> str:
    """Could any second-path threshold help here? The model's best score on the rule's misses against its best
    on the daily clips the rule left quiet (an oracle threshold: an upper bound, not a result)."""
    missed = sorted(r["model_margin"] + 1.0 for r in rows if r["label"] == "fall" and r["rule"] == "missed")
    quiet = [r["model_margin"] + 1.0 for r in rows if r["label"] == "adl" and r["rule"] == "ok"]
    top = max(quiet, default=0.0)
    return (
        f"headroom: rule's misses' model scores {[round(v * MODEL_AT, 3) for v in missed]}, highest on a quiet "
        f"daily clip {top * MODEL_AT:.3f}: {sum(v > top for v in missed)} rescuable without a new alarm"
    )


def forward(model: Any, x: np.ndarray) -> np.ndarray:
    """The fitted logistic regression as the few lines of numpy a daemon would run (no scikit-learn)."""
    scaler, lr = model[0], model[-1]
    z = ((x - scaler.mean_) / scaler.scale_) @ lr.coef_[0] + lr.intercept_[0]
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def cost(model: Any, video: Path, frames: int = 60) -> str:
    """The model's cost per frame (one track's window features and forward pass) against a MoveNet Lightning
    call on the same frames, interleaved, process CPU time (the machine is shared: wall time is mostly waiting)."""
    from fallwatch.pose import runtime
    from fallwatch.pose.engine import PoseEngine, PoseSettings
    from fallwatch.pose.estimator import MoveNetEstimator
    from fallwatch.pose.models import model_path, resolve_model_dir
    from fallwatch.pose.runtime import Model
    from world3d_cost import person_crops

    model_dir = resolve_model_dir(None)
    path = model_path("movenet_lightning", model_dir)
    movenet = MoveNetEstimator(Model(runtime.make_cpu_interpreter(path, 1), path, "cpu"))
    tracker = PoseEngine(PoseSettings(backend="cpu", num_threads=1), model_dir)
    crops = person_crops(str(video), tracker, frames)
    hist_t, hist_rows = [], []
    movenet.estimate(*crops[0])
    cpu_net, cpu_model = [], []
    for i, (rgb, crop) in enumerate(crops):
        c0 = time.process_time()
        est = movenet.estimate(rgb, crop)
        c1 = time.process_time()
        m = _frame_measures(est.kps)
        if m is not None:
            hist_t.append(i / 30.0)
            hist_rows.append(m)
        if hist_t:
            forward(model, window_features(np.array(hist_t), np.array(hist_rows), i / 30.0)[None, :])
        c2 = time.process_time()
        cpu_net.append(c1 - c0)
        cpu_model.append(c2 - c1)
    net, mod = statistics.median(cpu_net) * 1000, statistics.median(cpu_model) * 1000
    size = model[-1].coef_.size + 1 + 2 * model[0].mean_.size
    return (
        f"cost per frame ({len(crops)} frames of {video.name}, CPU time, same run): "
        f"MoveNet Lightning call {net:.2f} ms, "
        f"window features + logistic forward {mod:.3f} ms ({mod / net:.3f}x); {size} parameters "
        f"({size * 4 / 1024:.1f} KiB float32)"
    )


def veto_headroom(rows: list[dict]) -> str:
    """Could any veto threshold help? The model's score at the rule's false alarms against the lowest at the
    falls the rule caught (an oracle threshold: an upper bound, not a result)."""
    caught = [r["near_rule"] for r in rows if r["label"] == "fall" and r["rule"] == "caught"]
    alarms = sorted(r["near_rule"] for r in rows if r["label"] == "adl" and r["rule"] == "false_alarm")
    low = min((v for v in caught if v is not None), default=1.0)
    return (
        f"veto headroom: model at the rule's false alarms {[round(v, 3) for v in alarms]}, lowest at a caught "
        f"fall {low:.3f}: {sum(v < low for v in alarms)} removable without losing a fall"
    )


def main(argv: Optional[list[str]] = None) -> int:
    global TOP_SHARE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kul", type=Path, default=KUL, help="kul-train recordings' manifest (not in ../shared)")
    ap.add_argument("--perturb", type=int, default=0, help="perturbed replays per dev clip")
    ap.add_argument("--kul-perturb", type=int, default=0, help="perturbed replays per kul-train clip")
    ap.add_argument("--model", choices=("logreg", "mlp"), default="logreg")
    ap.add_argument("--top-share", type=float, default=TOP_SHARE)
    ap.add_argument("--only", nargs="*", help="held-out sets to run: kul-odd kul-even gmd urfd (default all)")
    ap.add_argument("--cost", action="store_true", help="also time the model against a MoveNet call")
    ap.add_argument("--cache", type=Path, help="pickle of the loaded clips (made if missing): faster reruns")
    args = ap.parse_args(argv)
    TOP_SHARE = args.top_share
    settings = RuleSettings()
    t0 = time.process_time()
    if args.cache and args.cache.exists():
        kul, gmd, urfd = pickle.loads(args.cache.read_bytes())
    else:
        kul = load(args.kul, lambda c: "kul-odd" if clip_number(c.name) % 2 else "kul-even", settings)
        gmd = [it for d in GMD for it in load(SHARED / d / "manifest.json", lambda c: "gmd", settings)]
        urfd = load(SHARED / URFD / "manifest.json", lambda c: "urfd", settings)
        if args.cache:
            args.cache.write_bytes(pickle.dumps((kul, gmd, urfd)))
    print(f"loaded {len(kul)} + {len(gmd)} + {len(urfd)} clips, {time.process_time() - t0:.0f} s CPU", flush=True)
    dev = gmd + urfd
    folds = [
        ("kul odd (trained on kul even + dev)", [i for i in kul if i.group == "kul-even"] + dev, "kul-odd"),
        ("kul even (trained on kul odd + dev)", [i for i in kul if i.group == "kul-odd"] + dev, "kul-even"),
        ("gmdcsa24 x86+arm64 (trained on kul + urfd)", kul + urfd, "gmd"),
        ("urfd (trained on kul + gmdcsa24)", kul + gmd, "urfd"),
    ]
    every = []
    for name, train_items, test_group in folds:
        if args.only and test_group not in args.only:
            continue
        test = [i for i in kul + dev if i.group == test_group]
        model = train(args.model, train_items)
        runs = args.kul_perturb if test_group.startswith("kul") else args.perturb
        rows = evaluate_fold(model, test, settings, runs)
        every += rows
        print(f"\n== {name}: {len(test)} clips")
        for strat in STRATS:
            print(f"  {strat:<6} {tally(rows, strat)}")
        print("  " + margins_line(rows))
        print("  " + headroom(rows))
        print("  " + veto_headroom(rows))
        for r in rows:
            if len({r[k] for k in STRATS}) > 1 or (r["unchanged"] and min(r["unchanged"].values()) < 0.95):
                u = " ".join(f"{k}={v:.0%}" for k, v in r["unchanged"].items()) if r["unchanged"] else ""
                rm = f"{r['rule_margin']:+.2f}" if r["rule_margin"] is not None else "-"
                print(
                    f"    {r['clip']:<34} {r['label']:<4} rule={r['rule']:<11} model={r['model']:<11} "
                    f"veto={r['veto']:<11} or={r['or']:<11} margins rule {rm} model {r['model_margin']:+.2f} {u}"
                )
    if args.cost and args.model == "logreg":
        print(cost(model, SHARED / "kul-train" / "FALL" / "fall100.mp4"))
    print(f"\nCPU {time.process_time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
