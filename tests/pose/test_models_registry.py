"""The model registry against the real files in ../shared/models, and the model directory search order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fallwatch.pose.models import MODELS, ModelError, model_path, resolve_model_dir, sha256_of

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _shared_sums(model_dir: Path) -> dict[str, str]:
    sums = {}
    for line in (model_dir / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        sums[name] = digest
    return sums


def test_every_shared_model_is_registered_with_its_published_sha256(model_dir: Path) -> None:
    sums = _shared_sums(model_dir)
    by_file = {spec.file: spec for spec in MODELS.values()}
    shared_models = [f for f in sums if f.endswith(".tflite")]
    assert len(shared_models) >= 6
    for file in shared_models:
        assert file in by_file, f"{file} from ../shared/models is not in the registry"
        assert by_file[file].sha256 == sums[file]


def test_registered_shared_models_verify_on_disk(model_dir: Path) -> None:
    for spec in MODELS.values():
        if (model_dir / spec.file).is_file():
            assert sha256_of(model_dir / spec.file) == spec.sha256, spec.name
            assert model_path(spec.name, model_dir) == model_dir / spec.file


def test_registry_entries_are_consistent() -> None:
    files = [s.file for s in MODELS.values()]
    assert len(files) == len(set(files)), "two registry entries share a file name"
    for name, spec in MODELS.items():
        assert spec.name == name
        assert spec.sha256 is None or HEX64.match(spec.sha256), name
        assert spec.url.startswith("https://"), name
        assert spec.input_size[0] > 0 and spec.input_size[1] > 0
        assert spec.keypoints in ("coco17", "blazepose33", "none")
        is_edgetpu_file = spec.file.endswith("_edgetpu.tflite")
        assert spec.edgetpu == is_edgetpu_file, name
        if spec.edgetpu:
            twin = MODELS[spec.cpu_twin]  # every Edge TPU build names a registered CPU twin
            assert not twin.edgetpu
            assert (twin.kind, twin.input_size, twin.keypoints) == (spec.kind, spec.input_size, spec.keypoints)
        else:
            assert spec.cpu_twin is None


def test_issue_models_are_registered() -> None:
    thunder = MODELS["movenet_thunder"]
    assert thunder.input_size == (256, 256) and thunder.kind == "estimator"
    assert MODELS["movenet_thunder_edgetpu"].cpu_twin == "movenet_thunder"
    for version in ("v1", "v2"):
        files = {s.file for s in MODELS.values()}
        assert f"ssd_mobilenet_{version}_coco_quant_postprocess.tflite" in files
        assert f"ssd_mobilenet_{version}_coco_quant_postprocess_edgetpu.tflite" in files
    for spec in MODELS.values():
        if "coco_quant_postprocess" in spec.file:
            assert spec.input_size == (300, 300) and spec.kind == "detector"
            assert spec.url.startswith("https://raw.githubusercontent.com/google-coral/test_data/")
    assert MODELS["ssd_mobilenet_v1"].archive_member == "detect.tflite"


def test_model_path_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        model_path("nope", tmp_path)
    with pytest.raises(ModelError, match="run: fallwatch models fetch movenet_lightning"):
        model_path("movenet_lightning", tmp_path)
    (tmp_path / MODELS["movenet_lightning"].file).write_bytes(b"not the model")
    with pytest.raises(ModelError, match="fails its sha256 check"):
        model_path("movenet_lightning", tmp_path)


def test_model_dir_search_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("FALLWATCH_MODEL_DIR", "/from/env")
    assert resolve_model_dir("/from/cli", "/from/config") == Path("/from/cli")
    assert resolve_model_dir(None, "/from/config") == Path("/from/env")
    monkeypatch.delenv("FALLWATCH_MODEL_DIR")
    assert resolve_model_dir(None, "/from/config") == Path("/from/config")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_model_dir(None, None) == tmp_path / ".cache" / "fallwatch" / "models"
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/fallwatch")  # systemd StateDirectory=fallwatch
    assert resolve_model_dir(None, None) == Path("/var/lib/fallwatch/models")
