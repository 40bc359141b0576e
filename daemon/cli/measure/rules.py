"""`fallwatch detect VIDEO...`, `fallwatch replay REC.jsonl...`, `fallwatch eval MANIFEST.json...`.

detect runs the daemon's own Pipeline over video files as fast as they decode; replay runs only the rules over
pose recordings; eval scores labelled clips (videos through the pipeline, recordings through the rules).
With --json, stdout carries JSON only (logs go to stderr).

Exit codes: 0 fine; 1 a clip or recording could not be read; 2 bad configuration, manifest or model.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional

from fallwatch.rules import Event, RuleSettings, make_rules
from fallwatch.rules.evaluate import ManifestError, evaluate, format_summary, format_table, summarize
from fallwatch.rules.recording import RecordingError, RecordingWriter, read_recording

log = logging.getLogger(__name__)


def _config(args: argparse.Namespace) -> Any:
    """The configuration (a ConfigError is reported by the CLI: one line per error, exit 2)."""
    from fallwatch.config.loader import load_config

    return load_config(getattr(args, "config", None))


def _rule_settings(config: Any, strategy: Optional[str] = None) -> RuleSettings:
    from fallwatch.daemon.app.settings import rule_settings

    settings = rule_settings(config)
    if strategy:
        settings.strategy = strategy
    return settings


def _make_engine(args: argparse.Namespace, config: Any) -> Any:
    """The pose engine as configured; raises ModelError/BackendError with a one-line message."""
    from fallwatch.daemon.app.settings import make_engine

    engine = make_engine(config, getattr(args, "model_dir", None))
    log.info("pose backend %s", engine.backend)
    return engine


def describe(event: Event) -> str:
    """One human-readable line per event."""
    seen = " (no fall seen)" if event.event == "person_down" and event.after_fall is False else ""
    return (
        f"{event.source}: {event.event}{seen} at t={event.t:.2f}s (frame {event.frame}) track {event.track} "
        f"confidence {event.confidence:.2f}, spine {event.spine_angle_deg:.0f} deg "
        f"({event.angle_change_deg:+.0f}), descent {event.descent_rate:.2f} body heights/s"
    )


def _print_event(event: Event, as_json: bool) -> None:
    print(json.dumps(event.to_dict()) if as_json else describe(event), flush=True)


def run_video(
    engine: Any, path: Path, settings: RuleSettings, record: Optional[Path] = None, on_event: Any = None
) -> tuple[list[Event], float]:
    """The whole pipeline over one video file: (events, footage seconds). ValueError if it cannot be decoded."""
    from fallwatch.daemon.app.pipeline import Pipeline, VideoFrames
    from fallwatch.pose.engine import FrameError

    if not Path(path).is_file():  # before the recorder: no empty recording left behind for a missing video
        raise ValueError(f"{path}: no such video file")
    engine.reset()  # every clip starts with no tracks
    recorder = RecordingWriter(record) if record is not None else None
    pipeline = Pipeline(engine, make_rules(settings, source=path.name), recorder=recorder)
    frames = VideoFrames(path)
    events: list[Event] = []
    skipped = 0
    try:
        for rgb, t, frame_no in frames:
            try:
                result = pipeline.process(rgb, t, frame_no)
            except FrameError as exc:
                skipped += 1
                log.debug("%s frame %d skipped: %s", path, frame_no, exc)
                continue
            for event in result.events:
                events.append(event)
                if on_event is not None:
                    on_event(event)
    finally:
        if recorder is not None:
            recorder.close()
    log.info(
        "%s: %d frames (%d corrupt, %d skipped), %d events", path, frames.frames, frames.corrupt, skipped, len(events)
    )
    return events, frames.duration_s


def _record_paths(videos: list[str], record: Optional[str]) -> Optional[list[Optional[Path]]]:
    if record is None:
        return [None] * len(videos)
    out = Path(record)
    if len(videos) == 1 and not out.is_dir():
        return [out]
    if not out.is_dir():
        print(f"fallwatch detect: --record {record}: with several videos, give an existing directory", file=sys.stderr)
        return None
    paths: list[Optional[Path]] = []
    for v in videos:  # videos of the same name from different folders must not overwrite each other
        name, n = Path(v).stem, 1
        while out / f"{name}.jsonl" in paths:
            n += 1
            name = f"{Path(v).stem}-{n}"
        paths.append(out / f"{name}.jsonl")
    return paths


def cmd_detect(args: argparse.Namespace) -> int:
    from fallwatch.pose.engine import BackendError
    from fallwatch.pose.models import ModelError

    config = _config(args)
    records = _record_paths(args.videos, args.record)
    if records is None:
        return 2
    try:
        settings = _rule_settings(config)
        engine = _make_engine(args, config)
    except (ModelError, BackendError, ValueError) as exc:
        print(f"fallwatch detect: {exc}", file=sys.stderr)
        return 2
    status = 0
    for video, record in zip(args.videos, records, strict=True):
        try:
            run_video(engine, Path(video), settings, record, on_event=lambda e: _print_event(e, args.json))
        except (OSError, ValueError) as exc:
            print(f"fallwatch detect: {exc}", file=sys.stderr)
            status = 1
    return status


def cmd_replay(args: argparse.Namespace) -> int:
    config = _config(args)
    try:
        settings = _rule_settings(config)
    except ValueError as exc:
        print(f"fallwatch replay: {exc}", file=sys.stderr)
        return 2
    plot = getattr(args, "plot", None)
    if plot and len(args.recordings) != 1:
        print("fallwatch replay: --plot draws one recording; give exactly one", file=sys.stderr)
        return 2
    if plot and Path(plot).suffix.lower() not in (".html", ".htm"):
        print(f"fallwatch replay: --plot {plot}: only .html is written (an interactive uPlot chart)", file=sys.stderr)
        return 2
    status = 0
    for rec in args.recordings:
        rules = make_rules(settings, source=Path(rec).name)
        events: list[Event] = []
        try:
            frames = list(read_recording(rec))
            for fr in frames:
                for event in rules.update(fr.t, fr.frame, fr.people, fr.size):
                    _print_event(event, args.json)
                    events.append(event)
        except RecordingError as exc:
            print(f"fallwatch replay: {exc}", file=sys.stderr)
            status = 1
            continue
        if plot:
            from fallwatch.daemon.web.signal_plot import write_plot
            from fallwatch.rules.signals import fall_signals

            first = next((e for e in events if e.event == "fall"), None)
            signals = fall_signals(frames, settings, track=first.track if first else None)
            signals.update(event_t=first.t if first else None, event="fall" if first else None)
            try:
                write_plot(
                    Path(plot), signals, f"{Path(rec).name}: " + (f"fall at t={first.t:.2f} s" if first else "no fall")
                )
            except (OSError, ValueError) as exc:
                print(f"fallwatch replay: {exc}", file=sys.stderr)
                return 2
    return status


class _LazyVideoRunner:
    """Builds the pose engine on the first video clip only, so JSONL-only manifests need no models."""

    def __init__(self, args: argparse.Namespace, config: Any) -> None:
        self.args, self.config, self.engine = args, config, None

    def __call__(self, path: Path, settings: RuleSettings) -> tuple[list[Event], float]:
        if self.engine is None:
            self.engine = _make_engine(self.args, self.config)
        return run_video(self.engine, path, settings)


def cmd_eval(args: argparse.Namespace) -> int:
    from fallwatch.pose.engine import BackendError
    from fallwatch.pose.models import ModelError

    config = _config(args)
    try:
        settings = _rule_settings(config, getattr(args, "strategy", None))
        results = evaluate(
            args.manifests,
            settings,
            video_runner=_LazyVideoRunner(args, config),
            perturbations=getattr(args, "perturb", 0),
        )
    except (ManifestError, ModelError, BackendError) as exc:
        print(f"fallwatch eval: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"fallwatch eval: {exc}", file=sys.stderr)
        return 2
    summary = summarize(results)
    for line in format_table(results):
        print(line)
    if args.json:
        print(json.dumps({**summary, "strategy": settings.strategy}), flush=True)
    else:
        print(f"[{settings.strategy}] " + format_summary(summary), flush=True)
    return 1 if summary["errors"] else 0
