"""rules.signals: the fall rule's signals over a pose sequence (the events page and `replay --plot` draw them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import household as hh
from fallwatch.rules import RuleSettings
from fallwatch.rules.recording import parse_line
from fallwatch.rules.signals import fall_signals


def frames(data: list[dict]) -> list:
    return [parse_line(json.dumps(d)) for d in data]


def test_signals_of_a_topple_cross_the_thresholds_and_standing_does_not() -> None:
    s = RuleSettings()
    sig = fall_signals(frames(hh.topple(85, 0.6)), s)
    assert sig["track"] == 1 and len(sig["t"]) == len(sig["drop"]) == len(sig["spine_angle_deg"])
    before = [d for t, d in zip(sig["t"], sig["drop"], strict=True) if d is not None and t < 1.9]
    # within the rule's window after the fall (later the "before" poses are all lying ones: the drop reads 0 again)
    after = [d for t, d in zip(sig["t"], sig["drop"], strict=True) if d is not None and 2.7 < t < 2.0 + s.window_max_s]
    assert before and max(abs(d) for d in before) < 0.05
    assert min(after) > s.min_drop
    assert max(a for a in sig["spine_angle_deg"] if a is not None) > s.fall_angle_deg
    assert max(r for r in sig["descent_rate"] if r is not None) > s.min_descent_rate
    assert sig["thresholds"]["min_drop"] == s.min_drop
    # "on the floor" as the rules hold it: not while standing, yes once lying after the fall
    floor = dict(zip(sig["t"], sig["on_floor"], strict=True))
    assert not any(v for t, v in floor.items() if t < 1.9) and floor[sig["t"][-1]] == 1


@pytest.mark.slow
def test_replay_plot_writes_a_self_contained_html(tmp_path: Path) -> None:
    rec = tmp_path / "topple.jsonl"
    rec.write_text("".join(json.dumps(f) + "\n" for f in hh.topple()))
    out = tmp_path / "plot.html"
    proc = subprocess.run(
        [sys.executable, "-m", "fallwatch.daemon.cli.main", "replay", str(rec), "--plot", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "fall at t=" in proc.stdout
    page = out.read_text()
    assert "uPlot" in page and "plotSignals(" in page and '"event_t": 2.' in page and "<script src" not in page
    bad = subprocess.run(
        [sys.executable, "-m", "fallwatch.daemon.cli.main", "replay", str(rec), "--plot", str(tmp_path / "plot.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "only .html" in bad.stderr
