"""Decision margins (each deciding signal against its threshold) and seeded perturbation replays (eval --perturb),
on synthetic sequences and on the real dev recordings of two CPUs (x86 with AVX2, an emulated Pi 4)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fallwatch.rules import FallRules, RuleSettings, make_rules
from fallwatch.rules.evaluate import evaluate, format_summary, summarize
from fallwatch.rules.margins import Gate
from fallwatch.rules.perturb import DROP_SHARE, perturb, seed_for
from fallwatch.rules.recording import read_recording
from rules_testlib import LYING, STAND, run, side_fall, timeline

REPO = Path(__file__).resolve().parents[2]
GATES = {"drop", "descent_rate", "hip_drop", "settle"}


@pytest.fixture(scope="module")
def dev_manifests(data_dir: Path) -> list[Path]:
    return [data_dir / "gmdcsa24-dev-arm64" / "manifest.json", data_dir / "gmdcsa24-dev-x86-avx2" / "manifest.json"]


def test_a_clear_fall_passes_every_gate_with_room_to_spare() -> None:
    rules = make_rules(RuleSettings(), source="synthetic", margins=True)
    events = run({1: side_fall(start=2.0, took=0.6)}, duration=6.0, rules=rules)
    assert [e.event for e in events] == ["fall"]
    d = rules.margins.decision(events[0].t)
    assert d is not None and d.outcome == "fall" and d.t == events[0].t
    assert {g.signal for g in d.gates} == GATES
    assert all(g.margin == pytest.approx(g.value / g.threshold - 1) for g in d.gates)
    assert d.margin > 0.2, d.to_dict()  # a textbook fall is no knife edge
    assert d.margin == min(g.margin for g in d.gates)


def test_lying_down_slowly_is_a_miss_on_the_descent_rate() -> None:
    rules = make_rules(RuleSettings(), source="synthetic", margins=True)
    slow = timeline([(0.0, STAND), (2.0, STAND), (8.0, LYING)])  # six seconds from standing to lying
    assert run({1: slow}, duration=10.0, rules=rules) == []
    d = rules.margins.decision()
    assert d is not None and d.margin < 0
    assert d.weakest.signal == "descent_rate", d.to_dict()


def _scaled(settings: RuleSettings, k: float) -> RuleSettings:
    """The drop and descent thresholds (the candidate's) all k times stricter."""
    return replace(
        settings,
        min_drop=settings.min_drop * k,
        drop_without_turn=settings.drop_without_turn * k,
        min_descent_rate=settings.min_descent_rate * k,
    )


@pytest.mark.parametrize("k, kept", [(0.95, True), (1.05, False)])
def test_the_candidate_margin_is_how_much_stricter_the_thresholds_could_be(k: float, kept: bool) -> None:
    """Drop and descent are judged together (the pair against the same "before"): their closer one to its
    threshold says how much stricter both could be and still raise the fall, and no more."""
    rules = make_rules(RuleSettings(), source="synthetic", margins=True)
    events = run({1: side_fall(start=2.0, took=0.6)}, duration=6.0, rules=rules)
    gates = {g.signal: g for g in rules.margins.decision(events[0].t).gates}
    closeness = min(gates["drop"].value / gates["drop"].threshold, gates["descent_rate"].value / 0.5)
    stricter = make_rules(_scaled(RuleSettings(), closeness * k), source="synthetic", margins=True)
    again = run({1: side_fall(start=2.0, took=0.6)}, duration=6.0, rules=stricter)
    assert bool(again) == kept, (closeness, again)


def test_gate_margin_is_relative_to_the_threshold() -> None:
    assert Gate("drop", 0.3, 0.25).margin == pytest.approx(0.2)
    assert Gate("drop", 0.2, 0.25).margin == pytest.approx(-0.2)


@pytest.mark.slow
def test_every_dev_decision_has_a_margin_on_the_side_it_went(dev_manifests: list[Path]) -> None:
    """On the real recordings of both CPUs (34 clips): a `fall` raised has a positive margin, none a negative
    one, and the table and summary show them."""
    results = evaluate(dev_manifests, RuleSettings())
    assert len(results) == 34
    for r in results:
        assert r.decision is not None, r.clip.name
        raised = r.result in ("caught", "false_alarm")
        assert (r.decision.margin > 0) == raised, (r.clip.name, r.result, r.decision.to_dict())
        if r.decision.outcome == "fall":
            assert {g.signal for g in r.decision.gates} == GATES
    summary = summarize(results)
    widths = [abs(n["margin"]) for n in summary["narrowest"]]
    assert len(widths) == 5 and widths == sorted(widths)
    # the x86 long-lie ADL clip was a knife-edge false alarm (descent 0.52 against 0.50, judged against a
    # "before" from the track's first half second, no settled reference yet); now it is far from an alarm
    lie = next(r for r in results if r.clip.name == "longlie_Subject_2_ADL_26.jsonl")
    assert lie.result == "ok" and lie.decision is not None and lie.decision.margin < -0.3, lie.decision
    assert "narrowest decisions" in format_summary(summary)


def test_perturbations_are_seeded_and_of_the_measured_size(data_dir: Path) -> None:
    frames = list(read_recording(data_dir / "gmdcsa24-dev-arm64" / "Subject_1_Fall_13.jsonl"))
    a, b = perturb(frames, seed_for("clip", 0)), perturb(frames, seed_for("clip", 0))
    assert [f.t for f in a] == [f.t for f in b]
    assert all(
        np.array_equal(p.keypoints, q.keypoints)
        for f, g in zip(a, b, strict=True)
        for p, q in zip(f.people, g.people, strict=True)
    )
    c = perturb(frames, seed_for("clip", 1))
    assert [f.t for f in a] != [f.t for f in c]
    # frames lost at about DROP_SHARE, the rest in order
    lost = 1 - len(a) / len(frames)
    assert 0 < lost < 3 * DROP_SHARE
    assert all(x.t < y.t for x, y in itertools.pairwise(a))
    # keypoints moved by about what separates two CPUs: a median of ~0.011 body heights (x86 against arm64)
    by_frame = {f.frame: f for f in frames}
    moved = []
    for f in a:
        for p, q in zip(f.people, by_frame[f.frame].people, strict=True):
            k = np.asarray(q.keypoints, float)
            seen = k[:, 2] > 0.2
            height = k[seen, 1].max() - k[seen, 1].min()
            moved.extend(np.hypot(*(np.asarray(p.keypoints, float)[seen, :2] - k[seen, :2]).T) / height)
    assert 0.011 / 2 < float(np.median(moved)) < 0.011 * 3


@pytest.mark.slow
def test_eval_perturb_reports_the_share_unchanged(dev_manifests: list[Path]) -> None:
    results = evaluate(dev_manifests[:1], RuleSettings(), perturbations=2)
    assert all(r.unchanged in (0.0, 0.5, 1.0) for r in results)
    # a decision with a wide margin does not flip under noise of the size that separates two CPUs
    wide = [r for r in results if r.decision is not None and abs(r.decision.margin) > 0.5]
    assert wide and all(r.unchanged == 1.0 for r in wide)
    summary = summarize(results)
    assert summary["perturbed_clips"] == 11 and "perturbed: 11 clips" in format_summary(summary)


def test_a_decision_on_the_edge_does_flip_under_perturbation(data_dir: Path, tmp_path: Path) -> None:
    """The perturbation can change a decision at all (a study that never flips anything proves nothing): with the
    drop and descent thresholds 3 % short of one fall's own figures, some perturbed runs lose it."""
    clip = {"path": str(data_dir / "gmdcsa24-dev-arm64" / "Subject_1_Fall_15.jsonl"), "label": "fall"}
    clip.update(fall_start_s=0.0, fall_end_s=10.0)
    manifest = tmp_path / "one.json"
    manifest.write_text(json.dumps({"clips": [clip]}))
    gates = {g.signal: g for g in evaluate([manifest], RuleSettings())[0].decision.gates}
    closeness = min(gates["drop"].value / gates["drop"].threshold, gates["descent_rate"].value / 0.5)
    edge = evaluate([manifest], _scaled(RuleSettings(), closeness * 0.97), perturbations=10)[0]
    assert edge.result == "caught" and edge.unchanged is not None and edge.unchanged < 1.0, edge.unchanged


def test_the_dark_dev_clips_decide_the_same_under_perturbation(data_dir: Path, tmp_path: Path) -> None:
    """The two x86 night clips decided on two frames each (issue 19) hold under 20 seeded perturbations of the size
    that separates two CPUs, in at least 19 of 20 runs (they held in 12 and 11). Subject 1 ADL 16 bends to the
    floor from a chair in two poses, then nobody for two frames, then poses rising: settle_s counted on the clock
    raised `fall` in the gap. Subject 2 Fall 13 lands in two poses, the torso about half its length, then is lost:
    judging each frame's "down" on the turn it showed itself lost the fall when the second torso was a little
    longer than half."""
    source = data_dir / "gmdcsa24-dev-x86-avx2" / "manifest.json"
    clips = [c for c in json.loads(source.read_text())["clips"] if c["path"] in NIGHT_EDGES]
    for c in clips:  # linked under their own names: the same seeds as `fallwatch eval --perturb 20` on the set
        (tmp_path / c["path"]).symlink_to(source.parent / c["path"])
    manifest = tmp_path / "night.json"
    manifest.write_text(json.dumps({"clips": clips}))
    results = {r.clip.path.name: r for r in evaluate([manifest], RuleSettings(), perturbations=20)}
    assert {name: r.result for name, r in results.items()} == NIGHT_EDGES
    assert all(r.unchanged is not None and r.unchanged >= 0.95 for r in results.values()), {
        name: r.unchanged for name, r in results.items()
    }


NIGHT_EDGES = {"night_Subject_1_ADL_16.jsonl": "ok", "night_Subject_2_Fall_13.jsonl": "caught"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("FALLWATCH_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "fallwatch.daemon.cli.main", *args], capture_output=True, text=True, env=env, cwd=REPO
    )


@pytest.mark.slow
def test_eval_cli_prints_margins_and_perturbation(data_dir: Path) -> None:
    manifest = str(data_dir / "gmdcsa24-dev-arm64" / "manifest.json")
    r = _cli("eval", manifest, "--perturb", "1", "--json")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "margin" in lines[0] and "deciding" in lines[0] and "unchanged" in lines[0]
    summary = json.loads(lines[-1])
    assert summary["perturbed_clips"] == 11 and len(summary["narrowest"]) == 5
    bad = _cli("eval", manifest, "--perturb", "-1")
    assert bad.returncode == 2 and "--perturb: -1 runs: give 0 to 1000" in bad.stderr


def test_only_eval_pays_for_margins() -> None:
    """The daemon's rules keep no margins (no list growing with every fall, no candidate search after one);
    eval's replay asks for them. The events are the same either way."""
    daemon_rules = FallRules(RuleSettings(), source="synthetic")
    eval_rules = FallRules(RuleSettings(), source="synthetic", margins=True)
    events = [[e.event for e in run({1: side_fall()}, duration=6.0, rules=r)] for r in (daemon_rules, eval_rules)]
    assert events[0] == events[1] == ["fall"]
    assert daemon_rules.margins is None
    assert eval_rules.margins is not None and eval_rules.margins.decision() is not None
