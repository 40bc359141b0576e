"""The pose engine with a misbehaving Edge TPU stack (the fake libedgetpu.so.1, reached through the runtime's real
load_delegate): the isolated probe turns each failure into the CPU backend with one line naming cause and fix."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from edgetpu_testlib import FailingInterpreter
from fallwatch.pose import edgetpu_probe
from fallwatch.pose import engine as engine_module
from fallwatch.pose.edgetpu_probe import compare
from fallwatch.pose.edgetpu_stack import FIX
from fallwatch.pose.engine import BackendError, PoseEngine, PoseSettings


def _engine(models: Path, state: Path, caplog: pytest.LogCaptureFixture, **kw) -> PoseEngine:
    settings = PoseSettings(num_threads=1, state_dir=str(state), **kw)
    with caplog.at_level(logging.INFO, logger="fallwatch.pose.engine"):
        return PoseEngine(settings, models)


def _one_warning(caplog: pytest.LogCaptureFixture) -> str:
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "\n" not in warnings[0]
    return warnings[0]


@pytest.mark.solo  # the hang case: the probe child must reach the library within its 2 s
@pytest.mark.parametrize(
    "mode, cause, fix",
    [
        ("segv", "the Edge TPU delegate crashed (SIGSEGV)", FIX),
        ("null", "no Edge TPU answered on device 'usb'", "check that the Coral is plugged in"),
        ("hang", "the Edge TPU delegate hung (no answer in 2 s)", FIX),
    ],
)
def test_failing_delegate_ends_on_the_cpu_with_the_reason(
    mode: str, cause: str, fix: str, fake_tpu, tpu_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls = fake_tpu(mode)
    # a short timeout only where the hang is the point: on a busy machine the child's imports alone take seconds
    engine = _engine(tpu_models, tmp_path / "state", caplog, edgetpu_probe_timeout_s=2 if mode == "hang" else 60)
    assert engine.backend == "cpu"
    assert engine.detector_model.backend == engine.estimator_model.backend == "cpu"
    assert (
        engine.probe is not None and engine.probe.outcome == {"segv": "crashed", "null": "failed", "hang": "hung"}[mode]
    )
    line = _one_warning(caplog)
    assert line == engine.backend_reason
    assert line.startswith("libedgetpu (version unknown) with LiteRT ")  # the stack, as far as it is known
    assert cause in line and fix in line and line.endswith("using CPU (XNNPACK, 1 threads)")
    # the real load_delegate reached the library, in the probe's child only
    pids = {int(line.split()[1]) for line in calls.read_text().splitlines()}
    assert pids and os.getpid() not in pids
    assert not list((tmp_path / "state").glob("*"))  # no marker: the TPU was never used


def test_disagreeing_tpu_ends_on_the_cpu(
    fake_tpu, wrong_tpu_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_tpu("ok")
    engine = _engine(wrong_tpu_models, tmp_path / "state", caplog)
    assert engine.backend == "cpu" and engine.probe.outcome == "disagreed"
    line = _one_warning(caplog)
    # compared with the CPU SSD the engine would run (not the TPU build's registered twin): by the boxes
    assert (
        "the Edge TPU's answers disagree with the CPU's: ssd_mobilenet_v1_edgetpu a detection (score " in line
        and "has no partner with IoU >= 0.5" in line
    )
    assert FIX in line


def test_working_tpu_is_used_and_marked_while_in_use(
    fake_tpu, tpu_models: Path, tmp_path: Path, images_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls = fake_tpu("ok")
    engine = _engine(tpu_models, tmp_path / "state", caplog)
    assert engine.backend == "edgetpu", engine.backend_reason
    assert engine.detector_model.backend == "edgetpu" and engine.detector_model.path.name.endswith("_edgetpu.tflite")
    assert engine.estimator_model.backend == "cpu"  # no Edge TPU build of MoveNet in this directory
    assert engine.probe.ok and set(engine.probe.invoke_ms) == {"ssd_mobilenet_v1_edgetpu"}
    assert any("Edge TPU probe ok (ssd_mobilenet_v1_edgetpu " in r.getMessage() for r in caplog.records)
    # the probe's child and this process each created a delegate through the real load_delegate
    pids = [int(line.split()[1]) for line in calls.read_text().splitlines()]
    assert os.getpid() in pids and len(set(pids)) == 2
    markers = list((tmp_path / "state").glob("edgetpu-in-use.*.json"))
    assert len(markers) == 1 and json.loads(markers[0].read_text())["pid"] == os.getpid()
    bgr = cv2.imread(str(images_dir / "fall_img_1.png"))
    result = engine.process(np.ascontiguousarray(bgr[:, :, ::-1]), 0.0)
    assert result.backend == "edgetpu" and len(result.persons) == 1
    engine.close()  # a clean exit removes the marker
    assert not markers[0].exists()


@pytest.mark.slow
def test_leftover_marker_keeps_the_next_start_on_the_cpu(
    fake_tpu, tpu_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_tpu("ok")
    state = tmp_path / "state"
    first = _engine(tpu_models, state, caplog)
    assert first.backend == "edgetpu"
    marker = next(state.glob("edgetpu-in-use.*.json"))
    # as if that process had died on a TPU crash: its marker stays, its pid is gone
    info = json.loads(marker.read_text())
    left = state / "edgetpu-in-use.999999999.json"
    left.write_text(json.dumps({**info, "pid": 999999999}))
    first.close()
    caplog.clear()
    again = _engine(tpu_models, state, caplog)
    assert again.backend == "cpu" and again.probe is None  # no probe: the TPU already took a run down
    line = _one_warning(caplog)
    assert "the Edge TPU took fallwatch down while running (pid 999999999" in line and str(left) in line
    assert FIX in line and left.exists()  # it stays until the user deletes it or the stack changes
    # a marker written under another stack is stale (an upgrade since): removed, and the TPU is tried again
    left.write_text(json.dumps({**info, "pid": 999999999, "stack": "libedgetpu 16.0 (TF 2.5) with LiteRT 2.3.0"}))
    upgraded = _engine(tpu_models, state, caplog)
    assert upgraded.backend == "edgetpu" and not left.exists()
    upgraded.close()


def test_forced_edgetpu_refuses_with_the_one_line(fake_tpu, tpu_models: Path, tmp_path: Path) -> None:
    fake_tpu("segv")
    with pytest.raises(BackendError) as err:
        # BlazePose has no Edge TPU build: with it, the SSD's fake TPU build is all pose.backend edgetpu needs
        PoseEngine(PoseSettings(backend="edgetpu", estimator="blazepose_full", num_threads=1), tpu_models)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("pose.backend is edgetpu but libedgetpu")
    assert "crashed (SIGSEGV)" in msg and FIX in msg


def test_cpu_paths_start_no_child(
    fake_tpu, tpu_models: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def no_probe(*args, **kwargs):
        raise AssertionError("the probe ran")

    monkeypatch.setattr(engine_module, "run_probe", no_probe)
    monkeypatch.setattr(subprocess, "Popen", no_probe)  # nor any other child process
    fake_tpu("ok")
    assert _engine(tpu_models, tmp_path, caplog, backend="cpu").probe is None
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path))  # no libedgetpu.so.1 anywhere
    engine = _engine(tpu_models, tmp_path, caplog)
    assert engine.backend == "cpu" and engine.probe is None and "libedgetpu.so.1 not found" in engine.backend_reason


def _rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])


def _clip_frames(path: Path, n: int) -> list[tuple[float, np.ndarray]]:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while len(frames) < n and (got := cap.read())[0]:
        frames.append((len(frames) / fps, np.ascontiguousarray(got[1][:, :, ::-1])))
    cap.release()
    return frames


def test_tpu_failure_while_running_switches_to_cpu(
    fake_tpu, tpu_models: Path, tmp_path: Path, images_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_tpu("ok")
    engine = _engine(tpu_models, tmp_path / "state", caplog)
    assert engine.backend == "edgetpu" and engine.detector_model.backend == "edgetpu", engine.backend_reason
    frame = _rgb(images_dir / "fall_img_1.png")
    # the TPU's device goes away: its next invoke fails (the first frame runs the detector)
    engine.detector_model.interpreter = FailingInterpreter(engine.detector_model.interpreter)
    with caplog.at_level(logging.ERROR, logger="fallwatch.pose.engine"):
        result = engine.process(frame, 0.0)
    assert engine.backend == "cpu" and result.backend == "cpu"
    assert "USB transfer error" in engine.backend_reason
    assert any("switching to the CPU" in r.getMessage() for r in caplog.records)
    assert len(result.persons) == 1
    assert not isinstance(engine.detector_model.interpreter, FailingInterpreter)
    assert engine.detector_model.backend == "cpu"
    # On the CPU a failing invoke is a real error, not a silent loop.
    engine.estimator_model.interpreter = FailingInterpreter(engine.estimator_model.interpreter)
    with pytest.raises(RuntimeError):
        engine.process(frame, 0.1)
    engine.close()


@pytest.mark.slow
def test_tpu_failing_mid_run_keeps_tracks_and_output(
    fake_tpu, tpu_models: Path, model_dir: Path, data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The detector's TPU dies on a frame where the estimator (on the CPU) already followed the person: the
    switch to the CPU twins must give exactly what an engine that never failed gives, for that frame and after
    (same id, same smoothed keypoints, same detector schedule)."""
    frames = _clip_frames(data_dir / "gmdcsa24-dev" / "Subject 1" / "ADL" / "10.mp4", 40)
    steady_engine = PoseEngine(PoseSettings(backend="cpu", num_threads=1), model_dir)
    steady = [steady_engine.process(rgb, t) for t, rgb in frames]
    # the TPU fails on the first frame after the start where the detector is due again
    fail_at = next(i for i, r in enumerate(steady) if i >= 10 and r.detector_ran)
    fake_tpu("ok")
    failing = _engine(tpu_models, tmp_path / "state", caplog)
    assert failing.backend == "edgetpu", failing.backend_reason
    for i, (t, rgb) in enumerate(frames):
        if i == fail_at:
            failing.detector_model.interpreter = FailingInterpreter(failing.detector_model.interpreter)
        a, b = steady[i], failing.process(rgb, t)
        assert [p.track_id for p in a.persons] == [p.track_id for p in b.persons], i
        assert a.detector_ran == b.detector_ran, i
        for pa, pb in zip(a.persons, b.persons, strict=True):
            np.testing.assert_allclose(pa.keypoints, pb.keypoints, atol=1e-3, err_msg=f"frame {i}")
    assert failing.backend == "cpu" and len(b.persons) == 1
    failing.close()


def _coral_reference(path: Path) -> np.ndarray:
    rows = list(csv.DictReader(path.open()))
    return np.array(
        [[float(r["keypoint_y"]), float(r["keypoint_x"]), float(r["keypoint_score"])] for r in rows], np.float32
    ).reshape(1, 1, 17, 3)


def test_compare_accepts_a_real_edge_tpu_and_rejects_wrong_keypoints(model_dir: Path) -> None:
    # Coral's published outputs of MoveNet Lightning on one image, from a real Edge TPU and from the CPU build:
    # keypoints within 2 % of the image, single scores up to 0.4 apart. That must count as agreeing.
    tpu = _coral_reference(model_dir / "movenet_single_pose_lightning_ptq_edgetpu_reference.csv")
    cpu = _coral_reference(model_dir / "movenet_single_pose_lightning_ptq_reference.csv")
    assert float(np.abs(tpu - cpu)[..., 2].max()) > 0.35
    assert compare("keypoints", [tpu], [cpu]) is None
    far = tpu.copy()
    far[0, 0, 5, 1] += 0.2  # one confident shoulder 20 % of the image away
    assert "keypoints off by 2" in compare("keypoints", [far], [cpu])
    low = tpu.copy()
    low[..., 2] = 0.0  # no confident keypoint left: the scores give it away
    assert "on average (allowed 0.25)" in compare("keypoints", [low], [cpu])


def test_compare_ssd_tolerance() -> None:
    boxes = np.array([[[0.1, 0.1, 0.5, 0.4], [0.6, 0.6, 0.9, 0.9]]], np.float32)
    classes = np.zeros((1, 2), np.float32)
    scores = np.array([[0.8, 0.2]], np.float32)
    count = np.array([2.0], np.float32)
    cpu = [boxes, classes, scores, count]
    shifted = boxes.copy()
    shifted[0, 0] += 0.02
    assert compare("detections", [shifted, classes, scores - 0.1, count], cpu) is None
    moved = boxes.copy()
    moved[0, 0] = [0.5, 0.5, 0.9, 0.8]
    assert "no partner with IoU >= 0.5" in compare("detections", [moved, classes, scores, count], cpu)
    other_class = classes + 1
    assert "no partner" in compare("detections", [boxes, other_class, scores, count], cpu)
    # another conversion of the network (not the exact twin): classes and score levels may differ, boxes not
    assert compare("detections", [boxes, other_class, scores - 0.25, count], cpu, exact_twin=False) is None
    assert "scores off by 0.30 on average" in compare("detections", [boxes, classes, scores - 0.3, count], cpu)


def test_probe_input_is_a_person_movenet_sees(model_dir: Path) -> None:
    from fallwatch.pose.runtime import make_cpu_interpreter

    a = edgetpu_probe.probe_input((1, 192, 192, 3), np.uint8)
    assert a.shape == (1, 192, 192, 3) and a.dtype == np.uint8
    assert np.array_equal(a, edgetpu_probe.probe_input((1, 192, 192, 3), np.uint8))
    interp = make_cpu_interpreter(model_dir / "movenet_single_pose_lightning_ptq.tflite", 1)
    interp.set_tensor(interp.get_input_details()[0]["index"], a)
    interp.invoke()
    keypoints = interp.get_tensor(interp.get_output_details()[0]["index"]).reshape(17, 3)
    assert (keypoints[:, 2] >= 0.5).sum() >= 12  # a real answer to compare, not noise
    assert keypoints[0, 0] < keypoints[11, 0] < keypoints[15, 0]  # nose above hip above ankle


def test_edgetpu_models_prefer_the_matched_runtime(
    fake_tpu, tpu_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A tflite_runtime 2.17.1 as `install.sh --with-coral` installs it (here: LiteRT's classes under that name,
    # with its package metadata), visible to this process and to the probe's child.
    site = tmp_path / "site"
    (site / "tflite_runtime").mkdir(parents=True)
    (site / "tflite_runtime" / "__init__.py").write_text("")
    (site / "tflite_runtime" / "interpreter.py").write_text(
        "from ai_edge_litert.interpreter import Interpreter, load_delegate  # noqa: F401\n"
    )
    (site / "tflite_runtime-2.17.1.dist-info").mkdir()
    (site / "tflite_runtime-2.17.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tflite-runtime\nVersion: 2.17.1\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    fake_tpu("ok")
    engine = _engine(tpu_models, tmp_path / "state", caplog)
    assert engine.backend == "edgetpu"
    assert engine.detector_model.runtime == "tflite_runtime 2.17.1"  # the Edge TPU model: the matched runtime
    assert engine.estimator_model.runtime.startswith("LiteRT ")  # the CPU model: LiteRT stays
    assert engine.probe.stack == "libedgetpu (version unknown) with tflite_runtime 2.17.1"
    engine.close()


def test_marker_of_a_running_process_is_not_a_crash_unless_from_before_a_reboot(tmp_path: Path) -> None:
    from fallwatch.pose import edgetpu_marker

    stack = "libedgetpu 16.0tf2.17.1-1 (TF 2.17.1) with tflite_runtime 2.17.1"
    mine = edgetpu_marker.Marker(tmp_path, stack)
    info = json.loads(mine.path.read_text())
    assert edgetpu_marker.leftover(tmp_path, stack) is None  # this process's own marker
    other = tmp_path / "edgetpu-in-use.1.json"
    other.write_text(json.dumps({**info, "pid": os.getppid()}))  # a live process beside us (the daemon)
    assert edgetpu_marker.leftover(tmp_path, stack) is None
    other.write_text(json.dumps({**info, "pid": os.getppid(), "boot_id": "an-earlier-boot"}))
    found = edgetpu_marker.leftover(tmp_path, stack)
    assert found is not None and found[0] == other
    mine.remove()
    assert not mine.path.exists() and other.exists()
