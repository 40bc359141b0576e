"""The rules on the dev clips' real pose recordings (gmdcsa24-dev-arm64: the same clips recorded on an emulated
Pi), replayed with perturbations the rules must shrug off: a few pixels of keypoint noise, half the frame rate,
and the long-lie recipe (the last frame held for 75 s with light jitter, as ../shared/data/gmdcsa24-dev-longlie
was made from the videos). Replays only: milliseconds per clip, no video decoding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pytest
from fallwatch.rules import Event, PersonPose, RuleSettings, make_rules
from fallwatch.rules.evaluate import Clip, load_manifest, score_clip, summarize
from fallwatch.rules.recording import RecordedFrame, read_recording

HOLD_S = 75.0  # the long-lie recipe: the clip's last frame held this long


@pytest.fixture(scope="module")
def dev_clips(data_dir: Path) -> list[tuple[Clip, list[RecordedFrame]]]:
    manifest = data_dir / "gmdcsa24-dev-arm64" / "manifest.json"
    return [(clip, list(read_recording(clip.path))) for clip in load_manifest(manifest)]


def _jittered(people: list[PersonPose], rng: np.random.Generator, px: float) -> list[PersonPose]:
    out = []
    for p in people:
        kps = np.array(p.keypoints, dtype=float)
        kps[:, :2] += rng.normal(0.0, px, size=(17, 2))
        out.append(PersonPose(p.track, p.box, kps))
    return out


def _replay(frames: Iterator[RecordedFrame], settings: Optional[RuleSettings] = None) -> list[Event]:
    rules = make_rules(settings or RuleSettings(), source="dev")
    events: list[Event] = []
    for fr in frames:
        events.extend(rules.update(fr.t, fr.frame, fr.people, fr.size))
    return events


def _noisy(frames: list[RecordedFrame], px: float, seed: int) -> Iterator[RecordedFrame]:
    rng = np.random.default_rng(seed)
    for fr in frames:
        yield RecordedFrame(fr.t, fr.frame, fr.size, _jittered(fr.people, rng, px))


def _long_lie(frames: list[RecordedFrame], seed: int, px: float = 1.5) -> Iterator[RecordedFrame]:
    """The clip, then its last frame held for HOLD_S at the clip's frame rate with keypoint jitter."""
    yield from frames
    last = frames[-1]
    dt = (frames[-1].t - frames[0].t) / max(len(frames) - 1, 1)
    rng = np.random.default_rng(seed)
    for i in range(1, int(HOLD_S / dt) + 1):
        yield RecordedFrame(last.t + i * dt, last.frame + i, last.size, _jittered(last.people, rng, px))


def _score(dev_clips, frames_of) -> dict:
    results = []
    for i, (clip, frames) in enumerate(dev_clips):
        events = _replay(frames_of(i, frames))
        results.append(score_clip(clip, events, frames[-1].t - frames[0].t))
    return summarize(results)


@pytest.mark.slow
@pytest.mark.parametrize("px", [2.0, 4.0])
def test_a_few_pixels_of_keypoint_noise_keep_every_fall_and_no_adl_alarm(dev_clips, px: float) -> None:
    for seed in (1, 2):
        summary = _score(dev_clips, lambda i, frames, seed=seed: _noisy(frames, px, seed * 100 + i))
        assert (summary["caught"], summary["falls"]) == (6, 6), (px, seed, json.dumps(summary))
        assert (summary["adl_false_alarm_clips"], summary["adl"]) == (0, 5), (px, seed, json.dumps(summary))


def test_half_the_frame_rate_keeps_every_fall_and_no_adl_alarm(dev_clips) -> None:
    summary = _score(dev_clips, lambda i, frames: frames[::2])
    assert (summary["caught"], summary["adl_false_alarm_clips"]) == (6, 0), json.dumps(summary)


@pytest.mark.slow
def test_long_lie_one_fall_one_person_down_no_recovery(dev_clips) -> None:
    for i, (clip, frames) in enumerate(dev_clips):
        events = _replay(_long_lie(frames, seed=i))
        got = [(e.event, e.after_fall) if e.event == "person_down" else e.event for e in events]
        if clip.label == "fall":
            assert got == ["fall", ("person_down", True)], (clip.name, got)
            fall, down = events
            assert down.t - fall.t == pytest.approx(RuleSettings().down_alert_s, abs=0.2)
        else:
            assert got == [], (clip.name, got)
