"""bench/abuse.py's own parts: the looping source it makes (real ffmpeg, a real dev clip) and its accounting of
loops and events. The run itself (``make abuse``) is a command, not a test: it takes minutes."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_abuse():
    spec = importlib.util.spec_from_file_location("bench_abuse", REPO / "bench" / "abuse.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_abuse"] = module
    spec.loader.exec_module(module)
    return module


abuse = _load_abuse()


def test_whole_loops_are_those_that_began_and_ended_inside():
    starts = [0.0, 10.0, 20.0, 30.0, 40.0]  # loop 4 still running
    assert abuse.whole_loops(starts, 5.0, 35.0) == [1, 2]
    assert abuse.whole_loops(starts, 0.0, 100.0) == [0, 1, 2, 3]
    assert abuse.whole_loops(starts, 10.0, 19.9) == []


def test_events_are_counted_in_the_loop_of_their_media_time():
    loop_s = 13.67
    events = [("fall", 7.07), ("recovered", 16.37), ("fall", 20.37), ("fall", 21.0), ("recovered", 43.7)]
    counts = abuse.per_loop(events, loop_s, [0, 1, 2, 5])
    assert counts[0] == Counter(fall=1)
    assert counts[1] == Counter(fall=2, recovered=1)
    assert counts[2] == Counter()  # 43.7 s is loop 3, not listed
    assert counts[5] == Counter()


def test_rate_is_the_counters_rise_per_second_inside_the_window():
    samples = [(0.0, 0.0), (1.0, 10.0), (2.0, 25.0), (3.0, 30.0), (10.0, 100.0)]
    assert abuse.rate(samples, 1.0, 3.0) == pytest.approx(10.0)
    assert abuse.rate(samples, 0.5, 1.5) is None  # one sample: no rate


def test_tolerance_is_one_loop_in_twenty_and_at_least_one():
    assert [abuse.tolerance(n) for n in (0, 5, 20, 21, 45)] == [1, 1, 1, 2, 3]


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_the_source_falls_gets_up_and_joins_its_own_start(tmp_path: Path, data_dir: Path):
    clip = data_dir / abuse.DEFAULT_CLIP
    out = tmp_path / "loop.mp4"
    abuse.build_source(clip, out)

    src = cv2.VideoCapture(str(clip))
    n_clip = int(src.get(cv2.CAP_PROP_FRAME_COUNT))
    src.release()
    cap = cv2.VideoCapture(str(out))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32))
    cap.release()
    # the hold, the clip, the clip reversed (ffmpeg may add a frame or two where the source's rate wavers)
    hold = round(abuse.HOLD_S * fps)
    assert abs(len(frames) - (hold + 2 * n_clip)) <= 6
    assert abuse.loop_seconds(out) == pytest.approx(len(frames) / fps)

    def diff(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean(np.abs(a - b)))

    lying = frames[len(frames) - n_clip - 1]  # the clip's last frame: on the floor
    # the loop's end is its start again (no jump at the join), and both differ from the person lying
    assert diff(frames[-1], frames[0]) < diff(frames[0], lying) / 3
    # the start is held still, noise apart
    assert diff(frames[0], frames[hold - 1]) < diff(frames[0], lying) / 3
