"""`fallwatch tune`: re-tune the rule's physical thresholds on a household's own labelled events.

Reads the labelled event records (their pose recordings) and any labelled manifests, replays the rules over them
for a small grid of settings, and proposes the settings that (1) still catch every labelled fall, (2) remove as
many labelled false alarms as possible, and (3) catch as many manifest falls as the current settings do, so one
room cannot un-learn falls. Ties go to the smallest change from the current settings, then the shorter delay.
Pose runs at most once per video clip; the grid only replays keypoints. Never edits the running configuration:
it prints the YAML to paste, and `--write FILE` writes a complete new configuration file.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, TypedDict

import yaml
from fallwatch.config.loader import ConfigError, default_config_path, load_config
from fallwatch.daemon.records.recorder import records_dir
from fallwatch.daemon.records.store import pose_recording, read_labels, scan_records
from fallwatch.rules import RuleSettings, make_rules
from fallwatch.rules.evaluate import EARLY_S, EDGE_S, LATE_S, ManifestError, load_manifest
from fallwatch.rules.recording import RecordedFrame, RecordingError, read_recording

# The searched thresholds (physical: body heights, body heights per second); the current value is always tried.
GRID: dict[str, tuple[float, ...]] = {
    "drop_without_turn": (0.5, 0.6, 0.7, 0.8),
    "min_drop": (0.25, 0.3, 0.35),
    "min_descent_rate": (0.5, 0.75, 1.0, 1.25),
    "min_hip_drop": (0.1, 0.2),
}
RECORD_SLACK_S = 2.0  # a labelled fall counts as caught by a fall event this close to the one it was recorded for


class Tally(TypedDict):
    """One source's figures in a score."""

    falls: int
    caught: int
    false_alarms: int
    delays: list[float]


@dataclass
class Case:
    """One labelled sequence: a record ("fall" / "false_alarm") or a manifest clip ("fall" / "adl")."""

    name: str
    label: str
    source: str  # "records" or "manifest"
    frames: list[RecordedFrame]
    lo: float = float("-inf")  # a fall in [lo, hi] catches it
    hi: float = float("inf")
    start: float = 0.0  # delay is measured from here


def _records(directory: Path) -> list[Case]:
    """The labelled records as cases, pruned ones too (from their kept pose recordings); one line on stderr for
    each record left out."""
    listing = scan_records(directory, warn=False)  # one line of its own per skipped record, below
    for skipped in listing.skipped:
        print(f"fallwatch tune: skipping record {skipped['id']}: event.json {skipped['problem']}", file=sys.stderr)
    labelled = {m["id"]: m for m in listing.records if m.get("label") in ("fall", "false_alarm")}
    pruned = {i: e for i, e in read_labels(directory).items() if i not in {m["id"] for m in listing.records}}
    cases = []
    for event_id, meta in {**pruned, **labelled}.items():
        path = pose_recording(directory, event_id)
        if event_id in pruned and not path.is_file():
            print(f"fallwatch tune: skipping record {event_id}: pruned, and its pose recording too", file=sys.stderr)
            continue
        t = meta.get("t")
        if not isinstance(t, (int, float)) or isinstance(t, bool):  # (event.json is checked; the index is not)
            print(
                f"fallwatch tune: skipping record {event_id}: its label index entry has no event time", file=sys.stderr
            )
            continue
        try:
            frames = list(read_recording(path))
        except (OSError, RecordingError) as exc:
            print(f"fallwatch tune: skipping record {event_id}: {exc}", file=sys.stderr)
            continue
        name = f"record {event_id[:8]} ({meta.get('event')}{', pruned' if event_id in pruned else ''})"
        cases.append(Case(name, meta["label"], "records", frames, t - RECORD_SLACK_S, t + RECORD_SLACK_S, t))
    return cases


def _manifest(path: str, args: argparse.Namespace, config: Any) -> list[Case]:
    cases = []
    runner = None
    for clip in load_manifest(path):
        if clip.path.suffix.lower() == ".jsonl":
            frames = list(read_recording(clip.path))
        else:  # pose once per clip, into a temporary recording; the grid replays that
            from fallwatch.daemon.cli.measure.rules import _LazyVideoRunner, run_video

            runner = runner or _LazyVideoRunner(args, config)
            with tempfile.TemporaryDirectory() as tmp:
                if runner.engine is None:
                    from fallwatch.daemon.cli.measure.rules import _make_engine

                    runner.engine = _make_engine(args, config)
                rec = Path(tmp) / "clip.jsonl"
                run_video(runner.engine, clip.path, RuleSettings(), record=rec)
                frames = list(read_recording(rec))
        if clip.label == "fall":
            start, end = clip.fall_start_s, clip.fall_end_s
            assert start is not None and end is not None  # load_manifest requires both of a fall clip
            cases.append(
                Case(clip.name, "fall", "manifest", frames, start - EARLY_S - EDGE_S, end + LATE_S + EDGE_S, start)
            )
        else:
            cases.append(Case(clip.name, "adl", "manifest", frames))
    return cases


def _falls(case: Case, settings: RuleSettings) -> list[float]:
    rules = make_rules(settings, source=case.name)
    out: list[float] = []
    for fr in case.frames:
        out.extend(e.t for e in rules.update(fr.t, fr.frame, fr.people, fr.size) if e.event == "fall")
    return out


def score(
    cases: list[Case], settings: RuleSettings, max_missed: Optional[dict[str, int]] = None
) -> Optional[dict[str, Tally]]:
    """Caught falls, false alarms and delays per source; None as soon as more falls of a source are missed than
    ``max_missed`` allows (so a hopeless candidate costs little)."""
    s: dict[str, Tally] = {
        "records": {"falls": 0, "caught": 0, "false_alarms": 0, "delays": []},
        "manifest": {"falls": 0, "caught": 0, "false_alarms": 0, "delays": []},
    }
    for case in sorted(cases, key=lambda c: c.label != "fall"):  # falls first: a miss ends the check early
        falls = _falls(case, settings)
        part = s[case.source]
        if case.label == "fall":
            inside = [t for t in falls if case.lo <= t <= case.hi]
            part["falls"] += 1
            if inside:
                part["caught"] += 1
                part["delays"].append(min(inside) - case.start)
            elif max_missed is not None and part["falls"] - part["caught"] > max_missed.get(case.source, 1 << 30):
                return None
            part["false_alarms"] += len(falls) - len(inside) if case.source == "manifest" else 0
        else:
            part["false_alarms"] += len(falls)
    return s


def _change(settings: RuleSettings, base: RuleSettings) -> float:
    return sum(abs(getattr(settings, k) - getattr(base, k)) / max(getattr(base, k), 1e-6) for k in GRID)


def _median(xs: list[float]) -> Optional[float]:
    return round(statistics.median(xs), 2) if xs else None


def _table(before: dict[str, Tally], after: dict[str, Tally]) -> list[str]:
    rows = [
        ("labelled falls caught", lambda s: f"{s['records']['caught']}/{s['records']['falls']}"),
        ("labelled false alarms", lambda s: str(s["records"]["false_alarms"])),
        ("manifest falls caught", lambda s: f"{s['manifest']['caught']}/{s['manifest']['falls']}"),
        ("manifest false alarms", lambda s: str(s["manifest"]["false_alarms"])),
        ("median delay (s)", lambda s: str(_median(s["records"]["delays"] + s["manifest"]["delays"]))),
    ]
    lines = [f"{'':<24}{'before':>10}{'after':>10}"]
    lines += [f"{name:<24}{f(before):>10}{f(after):>10}" for name, f in rows]
    return lines


def cmd_tune(args: argparse.Namespace) -> int:
    from fallwatch.daemon.app.settings import rule_settings

    started = time.monotonic()
    config_path = Path(args.config) if args.config else default_config_path()
    if args.write and Path(args.write).resolve() == config_path.resolve():  # refused before the search, not after
        print(
            f"fallwatch tune: --write {args.write} is the configuration in use; write a new file and review it",
            file=sys.stderr,
        )
        return 2
    try:
        cfg = load_config(args.config)
    except ConfigError:
        raise
    base = rule_settings(cfg)
    if base.strategy != "fallwatch":
        print("fallwatch tune: tunes rules.strategy fallwatch only", file=sys.stderr)
        return 2
    records = Path(args.records) if args.records else records_dir(cfg)
    cases = _records(records)
    try:
        for manifest in args.manifest or []:
            cases += _manifest(manifest, args, cfg)
    except (ManifestError, RecordingError, OSError, ValueError) as exc:
        print(f"fallwatch tune: {exc}", file=sys.stderr)
        return 2
    labelled = [c for c in cases if c.source == "records"]
    if not labelled:
        print(
            f"fallwatch tune: no labelled event records in {records} (label events on the events page or "
            "with the MQTT feedback command first)",
            file=sys.stderr,
        )
        return 1
    loaded = time.monotonic()
    before = score(cases, base)
    assert before is not None  # only a max_missed cuts a score short
    # Every combination of the GRID thresholds (product yields one value per key, in GRID's order).
    grid: list[dict[str, Any]] = [
        dict(zip(GRID, values, strict=True))
        for values in itertools.product(*(sorted(set(v) | {getattr(base, k)}) for k, v in GRID.items()))
    ]
    ranked = []
    for values in grid:
        if values["drop_without_turn"] < values["min_drop"]:
            continue
        settings = replace(base, **values)
        only_records = score(labelled, settings, max_missed={"records": 0})
        if only_records is None or only_records["records"]["caught"] < only_records["records"]["falls"]:
            continue
        delays = only_records["records"]["delays"]
        ranked.append(
            (
                only_records["records"]["false_alarms"],
                _change(settings, base),
                statistics.median(delays) if delays else 0.0,
                settings,
            )
        )
    ranked.sort(key=lambda r: r[:3])
    missed_before = before["manifest"]["falls"] - before["manifest"]["caught"]
    best, after = base, before
    for _, _, _, settings in ranked:  # the best on the records that keeps the manifests' falls
        full = score(cases, settings, max_missed={"records": 0, "manifest": missed_before})
        if full is not None and full["manifest"]["caught"] >= before["manifest"]["caught"]:
            best, after = settings, full
            break
    elapsed = time.monotonic() - loaded
    for line in _table(before, after):
        print(line)
    frames = sum(len(c.frames) for c in cases)
    print(
        f"searched {len(grid)} settings over {len(cases)} sequences ({frames} frames) in {elapsed:.1f} s "
        f"(loading {loaded - started:.1f} s)"
    )
    changed = {k: getattr(best, k) for k in GRID if getattr(best, k) != getattr(base, k)}
    if after["records"]["false_alarms"] >= before["records"]["false_alarms"] or not changed:
        print("no better settings found: the current ones stay")
        return 0
    print("\n# paste into the rules: section of your configuration")
    print(yaml.safe_dump({"rules": changed}, sort_keys=False).rstrip())
    if args.write:
        out = Path(args.write)
        try:
            data = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            print(f"fallwatch tune: cannot read {config_path}: {exc}", file=sys.stderr)
            return 2
        data.setdefault("rules", {})
        data["rules"] = {**(data["rules"] or {}), **changed}
        out.write_text(
            f"# written by `fallwatch tune` from {config_path}\n" + yaml.safe_dump(data, sort_keys=False),
            encoding="utf-8",
        )
        load_config(out)  # what was written must load
        print(f"wrote {out}")
    return 0
