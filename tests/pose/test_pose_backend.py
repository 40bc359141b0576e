"""Backend selection with no Edge TPU on this machine, and the CPU interpreter refusing Edge TPU builds."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from fallwatch.pose import runtime
from fallwatch.pose.engine import BackendError, PoseEngine, PoseSettings
from fallwatch.pose.models import MODELS, ModelError


def test_auto_picks_cpu_and_says_why(model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fallwatch.pose.engine"):
        engine = PoseEngine(PoseSettings(backend="auto"), model_dir)
    assert engine.backend == "cpu"
    assert "libedgetpu.so.1" in engine.backend_reason and "CPU" in engine.backend_reason
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "libedgetpu.so.1" in warnings[0]
    # the line the README tells users to grep for names the backend and why
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pose engine on ")]
    assert summary and summary[0].startswith(f"pose engine on cpu ({engine.backend_reason}): ")
    # The Edge TPU build of the estimator is present in the model directory, yet the CPU runs its twin.
    assert (model_dir / MODELS["movenet_lightning_edgetpu"].file).is_file()
    for model in (engine.estimator_model, engine.detector_model):
        assert model.backend == "cpu" and not model.path.name.endswith("_edgetpu.tflite")


def test_forced_edgetpu_fails_clearly(model_dir: Path) -> None:
    with pytest.raises(BackendError) as err:
        PoseEngine(PoseSettings(backend="edgetpu"), model_dir)
    msg = str(err.value)
    assert "\n" not in msg and "edgetpu" in msg and "libedgetpu.so.1" in msg


def test_cpu_backend_says_so(model_dir: Path) -> None:
    engine = PoseEngine(PoseSettings(backend="cpu", num_threads=1), model_dir)
    assert engine.backend == "cpu" and "pose.backend is cpu" in engine.backend_reason


def test_bad_backend_name(model_dir: Path) -> None:
    with pytest.raises(BackendError, match="auto, edgetpu or cpu"):
        PoseEngine(PoseSettings(backend="gpu"), model_dir)


def test_edgetpu_model_never_goes_to_the_cpu(model_dir: Path, tmp_path: Path) -> None:
    tpu_file = model_dir / MODELS["movenet_lightning_edgetpu"].file
    with pytest.raises(BackendError, match="Edge TPU.*CPU twin"):
        runtime.make_cpu_interpreter(tpu_file)
    # The refusal is by the build, not the folder: a copy elsewhere is refused too.
    copy = tmp_path / tpu_file.name
    shutil.copyfile(tpu_file, copy)
    with pytest.raises(BackendError):
        runtime.make_cpu_interpreter(copy)
    # while its CPU twin loads
    interp = runtime.make_cpu_interpreter(model_dir / MODELS["movenet_lightning"].file, 1)
    assert interp.get_input_details()[0]["shape"].tolist() == [1, 192, 192, 3]


def test_delegate_load_without_library_is_backend_error() -> None:
    with pytest.raises(BackendError, match="libedgetpu.so.1 not found"):
        runtime.load_edgetpu_delegate("usb")


def test_missing_model_names_file_and_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        PoseEngine(PoseSettings(), tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "ssd_mobilenet_v1_coco_quant_detect.tflite" in msg
    assert "fallwatch models fetch ssd_mobilenet_v1" in msg


def test_unknown_or_wrong_kind_model(model_dir: Path) -> None:
    with pytest.raises(ModelError, match="unknown estimator"):
        PoseEngine(PoseSettings(estimator="movenet_giant"), model_dir)
    with pytest.raises(ModelError, match="not a estimator|not a detector"):
        PoseEngine(PoseSettings(detector="movenet_lightning"), model_dir)
