"""`fallwatch doctor` on the libcamera cameras: `camera.source: libcamera`, and `picamera2` where picamera2 cannot be
imported but libcamera's Python bindings can (the daemon then falls back to them).

doctor asks each library in a child Python (libcamera can block); the stand-ins below are real modules on that
child's PYTHONPATH: a picamera2 whose import fails as PyPI's does on Debian, and a libcamera that lists cameras.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest
from fallwatch.config.schema import CameraConfig, Config
from fallwatch.daemon.cli.admin import doctor
from fallwatch.daemon.cli.admin.doctor import Check, Environment

PICAMERA2_BROKEN = "raise ModuleNotFoundError(\"No module named 'pykms'\")\n"
PICAMERA2_WORKING = (
    "class Picamera2:\n"
    "    @staticmethod\n"
    "    def global_camera_info():\n"
    "        return [{'Model': 'imx708', 'Id': '/base/soc/i2c0mux/i2c@1/imx708@1a'}]\n"
)


def stand_ins(root: Path, picamera2: Optional[str], libcamera_cameras: Optional[list[str]]) -> Path:
    """A folder holding the stand-in modules (None: that module is absent)."""
    root.mkdir(parents=True)
    if picamera2 is not None:
        (root / "picamera2").mkdir()
        (root / "picamera2" / "__init__.py").write_text(picamera2)
    if libcamera_cameras is not None:
        (root / "libcamera.py").write_text(
            "import types\n"
            f"_cameras = [types.SimpleNamespace(id=i) for i in {libcamera_cameras!r}]\n"
            "class CameraManager:\n"
            "    @staticmethod\n"
            "    def singleton():\n"
            "        return types.SimpleNamespace(cameras=_cameras)\n"
        )
    return root


def camera_check(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    picamera2: Optional[str],
    libcamera_cameras: Optional[list[str]],
) -> Check:
    # only the stand-ins: whatever this machine has installed is hidden behind them or absent from the venv
    monkeypatch.setenv("PYTHONPATH", str(stand_ins(tmp_path / "modules", picamera2, libcamera_cameras)))
    env = Environment(sysfs=tmp_path / "sys", dev=tmp_path / "dev")
    check = doctor.check_cameras(Config(camera=CameraConfig(source=source)), env)
    assert check.name == "camera" and "\n" not in check.detail, check
    return check


def test_libcamera_source_lists_the_cameras_its_bindings_see(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check = camera_check(tmp_path, monkeypatch, "libcamera", None, ["FallClip"])
    assert check.status == "ok", check
    assert check.detail == "camera.source libcamera; found: FallClip via libcamera's Python bindings"


def test_libcamera_source_without_bindings_or_cameras_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = camera_check(tmp_path / "a", monkeypatch, "libcamera", None, None)
    assert missing.status == "fail" and "libcamera cannot be imported (ModuleNotFoundError" in missing.detail
    assert "python3-libcamera" in missing.fix
    none = camera_check(tmp_path / "b", monkeypatch, "libcamera", None, [])
    assert none.status == "fail", none
    assert none.detail == "camera.source libcamera: libcamera's Python bindings see no camera"


def test_picamera2_that_cannot_be_imported_says_the_daemon_falls_back_to_libcamera(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = camera_check(tmp_path, monkeypatch, "picamera2", PICAMERA2_BROKEN, ["FallClip"])
    assert check.status == "warn", check  # the daemon runs: a warning, not a failure
    assert check.detail == (
        "camera.source picamera2: picamera2 cannot be imported (ModuleNotFoundError: No module named 'pykms'); "
        "the daemon falls back to libcamera's Python bindings, found: FallClip via libcamera's Python bindings"
    )
    assert "camera.source: libcamera" in check.fix


def test_picamera2_with_no_fallback_fails_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    neither = camera_check(tmp_path / "a", monkeypatch, "picamera2", PICAMERA2_BROKEN, None)
    assert neither.status == "fail", neither
    assert "picamera2 cannot be imported" in neither.detail and "nor can libcamera's Python bindings" in neither.detail
    no_camera = camera_check(tmp_path / "b", monkeypatch, "picamera2", PICAMERA2_BROKEN, [])
    assert no_camera.status == "fail" and "see no camera" in no_camera.detail, no_camera


def test_picamera2_that_works_names_its_cameras_and_is_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = camera_check(tmp_path, monkeypatch, "picamera2", PICAMERA2_WORKING, ["other"])
    assert check.status == "ok" and check.detail == "camera.source picamera2; found: imx708 via picamera2", check
