"""Night at a Pi's price: a track held through dark frames without searching the whole frame on every one of
them, and `fallwatch bench --baseline` pricing the night's model work against the day's from counted calls."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fallwatch.daemon.cli.main import main as cli_main
from fallwatch.pose.engine import PoseEngine, PoseSettings
from pose_testlib import video_frames

DARK_FRAMES = 15  # one second of a 15 fps night clip: longer than the tracker's idle_after_s


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> PoseEngine:
    return PoseEngine(PoseSettings(backend="cpu"), model_dir)


def test_a_person_is_held_through_dark_frames_at_a_bounded_cost(engine: PoseEngine, data_dir: Path) -> None:
    clip = data_dir / "gmdcsa24-dev-night" / "Subject 2" / "ADL" / "23.mp4"  # eating, sitting on the bed, by night
    engine.reset()
    frames = list(video_frames(clip))
    fps = 1.0 / (frames[1][0] - frames[0][0])
    before_ids: set[int] = set()
    for t, rgb in frames[:30]:
        before_ids |= {p.track_id for p in engine.process(rgb, t).persons}
    assert len(before_ids) == 1, "the person is tracked before the lights go out"
    # The picture goes black for DARK_FRAMES frames (the IR lamp switching over), then comes back.
    dark_detector = 0
    dark_calls: list[int] = []
    dark_ids: set[int] = set()
    for t, rgb in frames[30 : 30 + DARK_FRAMES]:
        result = engine.process(np.zeros_like(rgb), t)
        dark_ids |= {p.track_id for p in result.persons}
        dark_detector += result.detector_ran
        dark_calls.append(result.estimator_calls)
    assert not dark_ids, "nobody is seen in a black frame"
    # Searched every frame for idle_after_s, then every idle_search_every_s: not the detector on every dark frame.
    s = engine.tracker.s
    expected = round(s.idle_after_s * fps) + DARK_FRAMES / (s.idle_search_every_s * fps) + 1
    assert dark_detector <= expected < DARK_FRAMES
    # One look per frame at most (three angles): a lost track's search grown to the frame is not repeated by the
    # whole-frame pass; and frames without any look once the search is on the idle schedule.
    assert max(dark_calls[DARK_FRAMES // 2 :]) <= 3, dark_calls  # by then the lost search has grown to the frame
    assert sum(1 for n in dark_calls if n) <= expected
    after_ids: list[int] = []
    for t, rgb in frames[30 + DARK_FRAMES : 75 + DARK_FRAMES]:
        after_ids.extend(p.track_id for p in engine.process(rgb, t).persons)
    assert len(after_ids) >= 30, "the person is found again once the light is back"
    assert set(after_ids) == before_ids, "and it is the same track: held, not restarted"


def test_bench_baseline_prices_both_clips_from_counted_calls(
    data_dir: Path, model_dir: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    monkeypatch.delenv("FALLWATCH_CONFIG", raising=False)
    night = data_dir / "gmdcsa24-dev-night" / "Subject 2" / "ADL" / "23.mp4"
    day = data_dir / "gmdcsa24-dev" / "Subject 2" / "ADL" / "23.mp4"
    args = ["bench", "--model-dir", str(model_dir), "--source", str(night), "--baseline", str(day)]
    assert cli_main(args + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    work = out["model_work"]
    det_ms, est_ms = work["detector_invoke_ms"], work["estimator_invoke_ms"]
    assert det_ms > 0 and est_ms > 0
    for name in ("source", "baseline"):
        r = out[name]
        assert r["detector_runs"] == round(r["detector_run_fraction"] * r["frames"])
        assert r["estimator_calls"] == round(r["estimator_calls_per_frame"] * r["frames"])
        priced = (r["detector_runs"] * det_ms + r["estimator_calls"] * est_ms) / r["frames"]
        assert work[f"{name}_ms_per_frame"] == pytest.approx(priced, rel=1e-3)
    assert out["source"]["source"] == str(night) and out["baseline"]["source"] == str(day)
    assert work["ratio"] == pytest.approx(work["source_ms_per_frame"] / work["baseline_ms_per_frame"], rel=1e-3)

    assert cli_main(args + ["--cameras", "2"]) == 2
    assert capsys.readouterr().err.strip() == "fallwatch bench: --baseline and --cameras do not go together"
    assert cli_main(["bench", "--model-dir", str(model_dir), "--source", str(night), "--baseline", "nope.mp4"]) == 1
    assert capsys.readouterr().err.strip() == "fallwatch bench: nope.mp4: no such file"
