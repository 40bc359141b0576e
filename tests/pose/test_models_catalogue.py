"""The one model catalogue (pose/models.py): every kind has its adapter, and a new entry is all it takes for the
config, the engine, the Edge TPU mapping and the probe to know a model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fallwatch.config.schema import PoseConfig
from fallwatch.pose.detector import DETECTORS
from fallwatch.pose.edgetpu_probe import probe_model
from fallwatch.pose.engine import PoseEngine, PoseSettings
from fallwatch.pose.estimator import ESTIMATORS
from fallwatch.pose.models import KINDS, MODELS, ModelSpec, cpu_models, edgetpu_build
from pose_testlib import load_rgb
from pydantic import ValidationError


def test_every_kind_has_an_adapter_for_its_role_and_every_entry_a_known_kind() -> None:
    adapters = {"detector": DETECTORS, "estimator": ESTIMATORS}
    for name, kind in KINDS.items():
        assert name in adapters[kind.role], f"kind {name} ({kind.role}) has no adapter"
    assert set(DETECTORS) | set(ESTIMATORS) == set(KINDS)
    assert {s.kind for s in MODELS.values()} <= set(KINDS)
    with pytest.raises(ValueError, match="unknown kind 'segmenter'"):
        ModelSpec("x", "x.tflite", None, "http://x", "segmenter", (1, 1), "none")


def test_config_accepts_each_role_s_cpu_models_and_names_the_cpu_twin_of_a_tpu_build() -> None:
    assert cpu_models("detector") == (
        "blazepose_detector",
        "movenet_multipose",
        "ssd_mobilenet_v1",
        "ssd_mobilenet_v1_coral",
        "ssd_mobilenet_v2",
    )
    assert PoseConfig(detector="movenet_multipose", estimator="blazepose_full").estimator == "blazepose_full"
    with pytest.raises(ValidationError, match=r"name the CPU model \(movenet_lightning\)"):
        PoseConfig(estimator="movenet_lightning_edgetpu")
    with pytest.raises(ValidationError, match="movenet_lightning is a pose estimator, not a detector"):
        PoseConfig(detector="movenet_lightning")


def test_a_new_model_is_one_catalogue_entry(
    monkeypatch: pytest.MonkeyPatch, model_dir: Path, images_dir: Path, tmp_path: Path
) -> None:
    # Another build of MoveNet Lightning and of the SSD, under new names, with an Edge TPU build: nothing but
    # these entries is added, and config, engine, TPU mapping and probe all know them.
    movenet, ssd = MODELS["movenet_lightning"], MODELS["ssd_mobilenet_v1"]
    entries = [
        dataclasses.replace(movenet, name="movenet_lightning_v2"),
        dataclasses.replace(
            MODELS["movenet_lightning_edgetpu"], name="movenet_lightning_v2_edgetpu", cpu_twin="movenet_lightning_v2"
        ),
        dataclasses.replace(ssd, name="ssd_mobilenet_v1_b", edgetpu_stand_in=None),
    ]
    for spec in entries:
        monkeypatch.setitem(MODELS, spec.name, spec)

    cfg = PoseConfig(detector="ssd_mobilenet_v1_b", estimator="movenet_lightning_v2")
    with pytest.raises(ValidationError, match=r"name the CPU model \(movenet_lightning_v2\)"):
        PoseConfig(estimator="movenet_lightning_v2_edgetpu")
    assert edgetpu_build("movenet_lightning_v2") == "movenet_lightning_v2_edgetpu"
    assert edgetpu_build("ssd_mobilenet_v1_b") is None

    engine = PoseEngine(PoseSettings(backend="cpu", detector=cfg.detector, estimator=cfg.estimator), model_dir)
    result = engine.process(load_rgb(images_dir / "person.jpg"), 0.0)
    assert len(result.persons) == 1 and float(result.persons[0].keypoints[:, 2].mean()) > 0.3

    tpu_file = tmp_path / "movenet_v2_edgetpu.tflite"
    probed = probe_model("movenet_lightning_v2_edgetpu", tpu_file, Path("unused"), model_dir)
    assert probed.compare == "keypoints" and probed.exact_twin
    assert probed.cpu_path == model_dir / movenet.file
