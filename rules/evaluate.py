"""Scoring labelled clips: manifest in, per-clip results and one summary out.

A manifest is ``{"clips": [{"path": relative to the manifest, "label": "fall" | "adl",
"fall_start_s": s, "fall_end_s": s, "down_expected": true | false (optional)}]}``. A fall clip is caught when a
``fall`` event has ``t`` within [fall_start_s - 0.5, fall_end_s + 1.0]; a ``fall`` outside that span, or any
``fall`` on an ADL clip, is a false alarm.

The whole incident is scored too. A clip with ``"down_expected": true`` ends with the person still on the floor:
it should get a ``person_down``; any ``recovered`` after the fall began is a false recovery (they never got up);
every ``fall`` after the first caught one is a repeated alarm for the same incident. A clip with
``"down_expected": false`` should get no ``person_down``. Running the clips is somebody else's job (a callable),
so this module stays free of models and video.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, TypeGuard, Union

from .base import RuleSettings
from .events import Event
from .margins import Attempt, MarginLog
from .perturb import perturb, seed_for
from .recording import RecordedFrame, read_recording

log = logging.getLogger(__name__)

EARLY_S = 0.5
LATE_S = 1.0
EDGE_S = 1e-6  # an event exactly on the span's edge counts inside, whatever the float rounding of start - 0.5


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and the clip."""


@dataclass
class Clip:
    path: Path
    name: str
    label: str
    fall_start_s: Optional[float] = None
    fall_end_s: Optional[float] = None
    down_expected: Optional[bool] = None


@dataclass
class ClipResult:
    clip: Clip
    result: str  # "caught", "missed", "ok" (ADL, no alarm), "false_alarm" (ADL), "error"
    delay_s: Optional[float] = None
    false_alarms: int = 0
    duration_s: float = 0.0
    events: list[Event] = field(default_factory=list)
    error: str = ""
    person_down: int = 0  # person_down events
    false_recoveries: int = 0  # recovered while the person is still down (down_expected clips)
    repeat_falls: int = 0  # fall events after the first caught one, for the same incident
    decision: Optional[Attempt] = None  # what decided it, gate by gate (recordings only: replayed here)
    unchanged: Optional[float] = None  # share of perturbed replays with the same result (eval --perturb)


# (clip path, settings) -> (events, footage seconds, the rules' margins or None)
ClipRunner = Callable[[Path, RuleSettings], tuple[list[Event], float, Optional[MarginLog]]]


def _seconds(v: object) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_manifest(path: Union[str, Path]) -> list[Clip]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("clips"), list):
        raise ManifestError(f'{path}: a manifest needs a "clips" list')
    clips = []
    for i, c in enumerate(data["clips"]):
        where = f"{path}: clip {i}"
        if not isinstance(c, dict) or not isinstance(c.get("path"), str) or not c["path"]:
            raise ManifestError(f'{where}: needs a "path" (a file name relative to the manifest)')
        label = c.get("label")
        if label not in ("fall", "adl"):
            raise ManifestError(f'{where} ({c["path"]}): label must be "fall" or "adl", not {label!r}')
        start, end = c.get("fall_start_s"), c.get("fall_end_s")
        down = c.get("down_expected")
        if down is not None and not isinstance(down, bool):
            raise ManifestError(f"{where} ({c['path']}): down_expected must be true or false, not {down!r}")
        if label == "fall":
            if not (_seconds(start) and _seconds(end)) or end < start:
                raise ManifestError(f"{where} ({c['path']}): a fall clip needs fall_start_s <= fall_end_s")
        clips.append(
            Clip(
                path=path.parent / c["path"],
                name=str(c["path"]),
                label=label,
                fall_start_s=float(start) if start is not None else None,
                fall_end_s=float(end) if end is not None else None,
                down_expected=down,
            )
        )
    return clips


def score_clip(clip: Clip, events: Iterable[Event], duration_s: float) -> ClipResult:
    events = list(events)
    falls = [e for e in events if e.event == "fall"]
    downs = sum(e.event == "person_down" for e in events)
    if clip.label == "adl":
        return ClipResult(
            clip,
            "false_alarm" if falls else "ok",
            false_alarms=len(falls),
            duration_s=duration_s,
            events=events,
            person_down=downs,
        )
    if clip.fall_start_s is None or clip.fall_end_s is None:
        raise ValueError(f"{clip.name}: a fall clip needs fall_start_s and fall_end_s")
    lo, hi = clip.fall_start_s - EARLY_S - EDGE_S, clip.fall_end_s + LATE_S + EDGE_S
    inside = [e for e in falls if lo <= e.t <= hi]
    outside = len(falls) - len(inside)
    if not inside:
        return ClipResult(clip, "missed", false_alarms=outside, duration_s=duration_s, events=events, person_down=downs)
    first = min(e.t for e in inside)
    # The incident lasts to the end of the clip when the person stays down, else to the end of the fall span.
    end = float("inf") if clip.down_expected else hi
    repeats = sum(first < e.t <= end for e in falls)
    false_rec = sum(e.event == "recovered" and e.t >= lo for e in events) if clip.down_expected else 0
    return ClipResult(
        clip,
        "caught",
        delay_s=first - clip.fall_start_s,
        false_alarms=outside,
        duration_s=duration_s,
        events=events,
        person_down=downs,
        false_recoveries=false_rec,
        repeat_falls=repeats,
    )


def summarize(results: list[ClipResult]) -> dict:
    ok = [r for r in results if r.result != "error"]
    falls = [r for r in ok if r.clip.label == "fall"]
    adl = [r for r in ok if r.clip.label == "adl"]
    caught = [r for r in falls if r.result == "caught"]
    adl_alarmed = [r for r in adl if r.result == "false_alarm"]
    false_alarms = sum(r.false_alarms for r in ok)
    footage = sum(r.duration_s for r in ok)
    delays = [r.delay_s for r in caught if r.delay_s is not None]
    return {
        "clips": len(results),
        "falls": len(falls),
        "caught": len(caught),
        "sensitivity": round(len(caught) / len(falls), 4) if falls else None,
        "adl": len(adl),
        "adl_false_alarm_clips": len(adl_alarmed),
        "specificity": round(1 - len(adl_alarmed) / len(adl), 4) if adl else None,
        "false_alarms": false_alarms,
        "footage_s": round(footage, 2),
        "false_alarms_per_hour": round(false_alarms / footage * 3600, 2) if footage else None,
        "median_delay_s": round(statistics.median(delays), 3) if delays else None,
        "errors": len(results) - len(ok),
        "down_expected": sum(r.clip.down_expected is True for r in ok),
        "down_caught": sum(r.clip.down_expected is True and r.person_down > 0 for r in ok),
        "down_false_alarm_clips": sum(r.clip.down_expected is False and r.person_down > 0 for r in ok),
        "false_recoveries": sum(r.false_recoveries for r in ok),
        "repeat_falls": sum(r.repeat_falls for r in ok),
        "narrowest": [
            {"clip": r.clip.name, "result": r.result, **(r.decision.to_dict() if r.decision else {})}
            for r in narrowest(ok)
        ],
        **_perturb_summary(ok),
    }


NARROWEST = 5  # decisions listed in the summary


def narrowest(results: list[ClipResult], n: int = NARROWEST) -> list[ClipResult]:
    """The ``n`` decisions nearest to going the other way (smallest margin either side of the thresholds)."""
    measured = [r for r in results if r.decision is not None]
    return sorted(measured, key=lambda r: abs(r.decision.margin) if r.decision else 0.0)[:n]


def _perturb_summary(results: list[ClipResult]) -> dict:
    shaken = [r for r in results if r.unchanged is not None]
    if not shaken:
        return {}
    return {
        "perturbed_clips": len(shaken),
        "unchanged_min": min(r.unchanged for r in shaken if r.unchanged is not None),
        "unchanged_below_95": sorted(r.clip.name for r in shaken if r.unchanged is not None and r.unchanged < 0.95),
    }


def replay_frames(
    frames: Iterable[RecordedFrame], settings: RuleSettings, source: str = "", margins: bool = False
) -> tuple[list[Event], float, Any]:
    """Run only the rules over recorded frames: (events, footage seconds, the rules, with their margins when
    ``margins``)."""
    from . import make_rules

    rules = make_rules(settings, source=source, margins=margins)
    events: list[Event] = []
    first: Optional[float] = None
    last = 0.0
    for fr in frames:
        first = fr.t if first is None else first
        last = fr.t
        events.extend(rules.update(fr.t, fr.frame, fr.people, fr.size))
    return events, (last - first if first is not None else 0.0), rules


def replay_clip(path: Path, settings: RuleSettings) -> tuple[list[Event], float]:
    """Run only the rules over a pose recording. Returns the events and the footage duration."""
    events, duration, _ = replay_frames(read_recording(path), settings, source=path.stem)
    return events, duration


def deciding_attempt(clip: Clip, result: "ClipResult", margins: Optional[MarginLog]) -> Optional[Attempt]:
    """The attempt that decided the clip: the caught fall (or the false alarm), else the nearest miss."""
    if margins is None:  # the ambianic baseline keeps none
        return None
    falls = [e for e in result.events if e.event == "fall"]
    if clip.label == "fall" and result.result == "caught" and result.delay_s is not None:
        assert clip.fall_start_s is not None
        return margins.decision(clip.fall_start_s + result.delay_s)
    return margins.decision(falls[0].t if falls else None)


def _replay_scored(clip: Clip, settings: RuleSettings, perturbations: int) -> "ClipResult":
    frames = list(read_recording(clip.path))
    events, duration, rules = replay_frames(frames, settings, source=clip.path.stem, margins=True)
    result = score_clip(clip, events, duration)
    result.decision = deciding_attempt(clip, result, getattr(rules, "margins", None))
    if perturbations:
        same = 0
        for run in range(perturbations):
            shaken = perturb(frames, seed_for(clip.name, run))
            ev, dur, _ = replay_frames(shaken, settings, source=clip.path.stem)
            same += score_clip(clip, ev, dur).result == result.result
        result.unchanged = same / perturbations
    return result


def evaluate(
    manifests: Iterable[Union[str, Path]],
    settings: RuleSettings,
    video_runner: Optional[ClipRunner] = None,
    perturbations: int = 0,
) -> list[ClipResult]:
    """Score every clip of the manifests. JSONL clips are replayed here (with their decision margins, and
    ``perturbations`` seeded perturbed replays each); anything else goes to video_runner."""
    results = []
    for manifest in manifests:
        for clip in load_manifest(manifest):
            try:
                if clip.path.suffix.lower() == ".jsonl":
                    results.append(_replay_scored(clip, settings, perturbations))
                    continue
                if video_runner is None:
                    raise ValueError(f"{clip.path}: not a .jsonl recording and no video runner given")
                events, duration, margins = video_runner(clip.path, settings)
            except (OSError, ValueError) as exc:
                log.error("%s", exc)
                results.append(ClipResult(clip, "error", error=str(exc)))
                continue
            result = score_clip(clip, events, duration)
            result.decision = deciding_attempt(clip, result, margins)
            results.append(result)
    return results


def format_table(results: list[ClipResult]) -> list[str]:
    width = max([len(r.clip.name) for r in results] + [4])
    incidents = any(r.clip.down_expected is not None for r in results)
    shaken = any(r.unchanged is not None for r in results)
    head = f"{'clip':<{width}}  {'label':<5}  {'result':<11}  delay_s  false_alarms  margin  deciding      "
    head += "unchanged  " if shaken else ""
    lines = [head + ("down  person_down  false_rec  repeat_falls" if incidents else "")]
    for r in results:
        delay = f"{r.delay_s:7.2f}" if r.delay_s is not None else "      -"
        line = f"{r.clip.name:<{width}}  {r.clip.label:<5}  {r.result:<11}  {delay}  {r.false_alarms:<12}"
        d = r.decision
        line += f"  {d.margin:+6.2f}  {d.weakest.signal:<12}" if d is not None else f"  {'-':>6}  {'-':<12}"
        if shaken:
            line += f"  {r.unchanged:>9.0%}" if r.unchanged is not None else f"  {'-':>9}"
        if incidents:
            want = {True: "yes", False: "no", None: "-"}[r.clip.down_expected]
            line += f"  {want:<4}  {r.person_down:<11}  {r.false_recoveries:<9}  {r.repeat_falls}"
        lines.append(line.rstrip())
    return lines


def format_summary(summary: dict) -> str:
    sens = f"{summary['sensitivity']:.0%}" if summary["sensitivity"] is not None else "-"
    spec = f"{summary['specificity']:.0%}" if summary["specificity"] is not None else "-"
    delay = f"{summary['median_delay_s']:.2f} s" if summary["median_delay_s"] is not None else "-"
    fah = summary["false_alarms_per_hour"]
    text = (
        f"clips {summary['clips']}: falls caught {summary['caught']}/{summary['falls']} ({sens}), "
        f"ADL alarmed {summary['adl_false_alarm_clips']}/{summary['adl']} (specificity {spec}), "
        f"false alarms {summary['false_alarms']} ({fah if fah is not None else '-'}/h over "
        f"{summary['footage_s']:.0f} s), median delay {delay}"
    )
    if summary.get("down_expected") or summary.get("down_false_alarm_clips"):
        text += (
            f"; person_down caught {summary['down_caught']}/{summary['down_expected']}, on clips not down "
            f"{summary['down_false_alarm_clips']}, false recoveries {summary['false_recoveries']}, "
            f"repeated falls {summary['repeat_falls']}"
        )
    if summary.get("narrowest"):
        text += "\nnarrowest decisions (margin: weakest signal / its threshold - 1; + raised fall, - did not):"
        for n in summary["narrowest"]:
            gates = ", ".join(f"{k} {v:.2f}/{th:.2f}" for k, (v, th) in n["gates"].items())
            text += f"\n  {n['clip']}: {n['result']}, {n['margin']:+.2f} on {n['deciding']} ({n['outcome']}: {gates})"
    if summary.get("perturbed_clips"):
        below = summary["unchanged_below_95"]
        text += (
            f"\nperturbed: {summary['perturbed_clips']} clips, decision unchanged in at least "
            f"{summary['unchanged_min']:.0%} of runs; under 95 %: {', '.join(below) if below else 'none'}"
        )
    return text
