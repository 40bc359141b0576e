"""`fallwatch tune` on a synthetic household: two labelled false alarms (fast deep squats held for 5 s, longer
than rules.confirm_s, as when cleaning under the bed: the default rules take them for falls) and two labelled falls
(topples)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import household as hh
from fallwatch.config.loader import load_config
from fallwatch.daemon.app.settings import rule_settings
from fallwatch.rules import make_rules
from fallwatch.rules.recording import read_recording


def fallwatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fallwatch.daemon.cli.main", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def household(tmp_path: Path) -> Path:
    events = tmp_path / "events"
    hh.write_record(events, hh.squat(0.42, 30, hold_s=5.0), "false_alarm", 5.4)
    hh.write_record(events, hh.squat(0.5, 25, 0.3, hold_s=5.0), "false_alarm", 5.3)
    hh.write_record(events, hh.topple(85, 0.6), "fall", 2.73)
    hh.write_record(events, hh.topple(75, 0.8), "fall", 2.93)
    return events


def falls_in(record: Path, cfg_path: Path) -> int:
    rules = make_rules(rule_settings(load_config(cfg_path)))
    return sum(
        e.event == "fall"
        for fr in read_recording(record / "pose.jsonl")
        for e in rules.update(fr.t, fr.frame, fr.people, fr.size)
    )


@pytest.mark.slow
def test_tune_removes_the_false_alarms_keeps_the_falls_and_writes_a_valid_config(household: Path, tmp_path: Path):
    config = tmp_path / "fallwatch.yaml"
    config.write_text(yaml.safe_dump({"camera": {"name": "home"}, "mqtt": {"enabled": False}}))
    out = tmp_path / "tuned.yaml"
    proc = fallwatch("tune", "--records", str(household), "--config", str(config), "--write", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(
        line.split()[:3] == ["labelled", "false", "alarms"] and line.split()[3:] == ["2", "0"] for line in lines
    ), proc.stdout
    assert any(
        line.split()[:3] == ["labelled", "falls", "caught"] and line.split()[3:] == ["2/2", "2/2"] for line in lines
    ), proc.stdout
    assert "rules:" in proc.stdout and "searched" in proc.stdout
    assert fallwatch("check-config", str(out)).returncode == 0
    assert load_config(out).camera.name == "home"  # the rest of the configuration is kept
    # the proposal does what the table says, replayed independently
    labels = {p: json.loads((p / "event.json").read_text())["label"] for p in household.iterdir()}
    for record, label in labels.items():
        assert falls_in(record, config) == 1  # before: every one alarmed
        assert falls_in(record, out) == (1 if label == "fall" else 0), (record, label)
    # it never writes over the configuration in use
    again = fallwatch("tune", "--records", str(household), "--config", str(config), "--write", str(config))
    assert again.returncode == 2 and "in use" in again.stderr


@pytest.mark.slow
def test_tune_never_unlearns_the_manifest_falls(household: Path, data_dir: Path, tmp_path: Path):
    # Eight real falls (URFD keypoints) is enough to show it, and keeps the test short.
    full = data_dir / "urfd-falls-keypoints" / "manifest.json"
    clips = json.loads(full.read_text())["clips"][:8]
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"clips": [{**c, "path": str(full.parent / c["path"])} for c in clips]}))
    proc = fallwatch("tune", "--records", str(household), "--manifest", str(manifest))
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("manifest falls caught"))
    before, after = row.split()[3:]
    assert before == after == "8/8", proc.stdout


@pytest.mark.slow
def test_tune_skips_damaged_records_in_one_line_each_and_counts_pruned_labels(household: Path, tmp_path: Path):
    # Issue 21 item 3: `"recorded": null` and `"t": null` in a labelled record's event.json printed tracebacks.
    first = sorted(household.iterdir())[0]
    for name, field in (("bad-recorded", "recorded"), ("bad-t", "t")):
        folder = household / name
        folder.mkdir()
        (folder / "pose.jsonl").write_bytes((first / "pose.jsonl").read_bytes())
        meta = json.loads((first / "event.json").read_text())
        (folder / "event.json").write_text(json.dumps({**meta, "id": name, field: None}))
    # labelled records pruned over events.max_mb: the labels are in the index, the folders gone; one pose
    # recording kept (as prune keeps them), one not
    fall = next(p for p in sorted(household.iterdir()) if json.loads((p / "event.json").read_text())["label"] == "fall")
    meta = json.loads((fall / "event.json").read_text())
    (household / "labelled-poses").mkdir()
    (fall / "pose.jsonl").rename(household / "labelled-poses" / f"{fall.name}.jsonl")
    shutil.rmtree(fall)
    index = {
        fall.name: {"label": "fall", "event": "fall", "t": meta["t"], "recorded": 1.0},
        "gone-1": {"label": "fall", "event": "fall", "t": 2.0, "recorded": 1.0},
    }
    (household / "labels.json").write_text(json.dumps(index))
    config = tmp_path / "fallwatch.yaml"
    config.write_text(yaml.safe_dump({"camera": {"name": "home"}, "mqtt": {"enabled": False}}))
    proc = fallwatch("tune", "--records", str(household), "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "fallwatch tune: skipping record bad-recorded: event.json recorded: must be a valid number",
        "fallwatch tune: skipping record bad-t: event.json t: must be a valid number",
        "fallwatch tune: skipping record gone-1: pruned, and its pose recording too",
    ]
    # the four good records were tuned on, the pruned fall among them
    row = next(line for line in proc.stdout.splitlines() if line.startswith("labelled falls caught"))
    assert row.split()[3:] == ["2/2", "2/2"], proc.stdout
