"""The tracker's snapshot/restore (pose/engine.py puts the tracker back when an Edge TPU step fails half-way)."""

import numpy as np
from fallwatch.pose.tracker import Track, Tracker, TrackerSettings, TrackerState


def test_restore_puts_back_tracks_and_every_state_field():
    tracker = Tracker(estimator=None, detector=None, settings=TrackerSettings())  # type: ignore[arg-type]
    tracker.tracks = [Track(1, (0.1, 0.1, 0.5, 0.9), np.zeros((17, 3)), last_seen=2.0)]
    tracker.state = TrackerState(next_id=2, since_detect=3, anyone_last_frame=True, empty_since=1.0, last_search=1.5)
    before = tracker.snapshot()
    # what a step does half-way: reassigns track fields, adds a track, moves every state field on
    tracker.tracks[0].box, tracker.tracks[0].lost = (0.2, 0.2, 0.6, 1.0), 4
    tracker.tracks.append(Track(2, (0.0, 0.0, 0.1, 0.1), np.zeros((17, 3)), last_seen=3.0))
    tracker.state.next_id, tracker.state.since_detect, tracker.state.dark = 3, 0, True
    tracker.state.anyone_last_frame, tracker.state.empty_since, tracker.state.last_search = False, None, 3.0
    tracker.restore(before)
    assert [(t.id, t.box, t.lost) for t in tracker.tracks] == [(1, (0.1, 0.1, 0.5, 0.9), 0)]
    assert tracker.state == TrackerState(2, 3, True, False, 1.0, 1.5)
    tracker.state.next_id = 9  # the snapshot is not the live state: a second failure restores it again
    tracker.restore(before)
    assert tracker.state.next_id == 2
