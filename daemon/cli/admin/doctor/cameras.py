"""The cameras the configuration names, asked through their libraries in a child process."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fallwatch.config.schema import Config
from fallwatch.daemon.cli.admin.doctor.report import Check, Environment

CAMERA_TIMEOUT_S = 10.0

# What each camera library lists, asked in a child (an import statement, then an expression for the names).
CAMERA_PROBES = {
    "picamera2": (
        "from picamera2 import Picamera2",
        "[c.get('Model') or c.get('Id') for c in Picamera2.global_camera_info()]",
    ),
    "libcamera": ("import libcamera", "[c.id for c in libcamera.CameraManager.singleton().cameras]"),
}


@dataclass
class CameraProbe:
    cameras: Optional[list[str]]  # None: the library could not be asked
    why: str = ""  # why not, one line
    imported: bool = True  # False: the library cannot be imported at all


def _probe_cameras(library: str) -> CameraProbe:
    """The cameras ``library`` (picamera2 or libcamera's Python bindings) sees, in a child with a timeout
    (libcamera can block on a wedged camera)."""
    imports, names = CAMERA_PROBES[library]
    code = (
        f"import json, sys\ntry:\n    {imports}\nexcept Exception as e:\n"
        f"    print(json.dumps({{'error': f'{{type(e).__name__}}: {{e}}'}})); sys.exit()\n"
        f"print(json.dumps({{'cameras': [str(n) for n in {names}]}}))"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=CAMERA_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return CameraProbe(None, f"{library} did not answer within {CAMERA_TIMEOUT_S:g} s")
    try:
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return CameraProbe(None, f"{library}: {last[:120]}")
    if "error" in answer:
        return CameraProbe(None, f"{library} cannot be imported ({answer['error'][:120]})", imported=False)
    return CameraProbe(list(answer["cameras"]))


LIBCAMERA_FIX = "apt install python3-libcamera; venv with --system-site-packages"


def check_libcamera_source(spec: str) -> Check:
    """camera.source libcamera, or picamera2 (which reads the camera through libcamera's Python bindings where
    picamera2 cannot be imported but they can)."""
    picamera2 = _probe_cameras("picamera2") if spec == "picamera2" else CameraProbe(None, imported=False)
    if spec == "picamera2" and picamera2.cameras:
        return Check("ok", "camera", f"camera.source picamera2; found: {', '.join(picamera2.cameras)} via picamera2")
    if spec == "picamera2" and picamera2.imported:
        return Check(
            "fail",
            "camera",
            f"camera.source picamera2: {picamera2.why or 'no Pi camera found'}",
            "connect the camera ribbon; apt install python3-picamera2; venv with --system-site-packages",
        )
    libcamera = _probe_cameras("libcamera")
    if spec == "picamera2" and not libcamera.imported:
        return Check(
            "fail",
            "camera",
            f"camera.source picamera2: {picamera2.why}, nor can libcamera's Python bindings",
            "apt install python3-picamera2 (Raspberry Pi OS) or python3-libcamera; venv with --system-site-packages",
        )
    via = "libcamera's Python bindings"
    if not libcamera.cameras:
        return Check(
            "fail",
            "camera",
            f"camera.source {spec}: {libcamera.why or f'{via} see no camera'}",
            "connect the camera; " + LIBCAMERA_FIX,
        )
    found = f"{', '.join(libcamera.cameras)} via {via}"
    if spec == "picamera2":
        return Check(
            "warn",
            "camera",
            f"camera.source picamera2: {picamera2.why}; the daemon falls back to {via}, found: {found}",
            "apt install python3-picamera2 (Raspberry Pi OS), or set camera.source: libcamera",
        )
    return Check("ok", "camera", f"camera.source libcamera; found: {found}")


def check_cameras(cfg: Config, env: Environment) -> Check:
    from fallwatch.daemon.capture.sources import STREAM_SCHEMES, v4l2_cameras

    spec = cfg.camera.source.strip()
    if spec.startswith(STREAM_SCHEMES):
        return Check("ok", "camera", f"camera.source is the stream {spec.split('@')[-1]} (not checked)")
    if spec in ("picamera2", "libcamera"):
        return check_libcamera_source(spec)
    if spec != "auto" and not spec.startswith(("v4l2:", "/dev/")):
        path = Path(spec).expanduser()
        if path.exists():
            return Check("ok", "camera", f"camera.source is the file {path}")
        return Check("fail", "camera", f"camera.source {spec}: no such file or folder", "set camera.source")
    v4l2 = v4l2_cameras(str(env.dev), str(env.sysfs / "class" / "video4linux"))
    if spec.startswith(("v4l2:", "/dev/")):
        text = ", ".join(v4l2) if v4l2 else "no camera found"
        dev = spec[len("v4l2:") :] if spec.startswith("v4l2:") else spec
        if not Path(dev or "/dev/video0").exists():
            return Check(
                "fail",
                "camera",
                f"camera.source {spec}: {dev} does not exist ({text})",
                "plug the camera in or set camera.source",
            )
        return Check("ok", "camera", f"camera.source {spec}; found: {text}")
    picamera2 = _probe_cameras("picamera2")
    found = ([f"{len(picamera2.cameras)} Pi camera(s) via picamera2"] if picamera2.cameras else []) + v4l2
    if not found:
        return Check(
            "fail",
            "camera",
            f"camera.source auto: no camera found ({picamera2.why or 'no Pi camera'}; no /dev/video* camera)",
            "connect a camera, or set camera.source",
        )
    return Check("ok", "camera", f"camera.source auto; found: {', '.join(found)}")
