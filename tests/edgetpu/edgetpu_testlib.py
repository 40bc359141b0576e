"""The fake libedgetpu.so.1 (tests/edgetpu/fake_edgetpu.c, compiled with `cc` during the run) and model directories
whose ``*_edgetpu.tflite`` files are copies of CPU models, so the fake's do-nothing delegate leaves them to the
CPU kernels."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from fallwatch.pose.models import MODELS

FAKE_SOURCE = Path(__file__).resolve().parent / "fake_edgetpu.c"
SSD_TPU = MODELS["ssd_mobilenet_v1_edgetpu"].file  # unpinned upstream, so a copy passes the registry's check


def build_fake_edgetpu(out_dir: Path) -> Path:
    """Compile the fake into out_dir/libedgetpu.so.1; returns out_dir (for LD_LIBRARY_PATH)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler: apt-get install gcc libc6-dev (.ci/run does this)"
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [cc, "-shared", "-fPIC", "-o", str(out_dir / "libedgetpu.so.1"), str(FAKE_SOURCE), "-lpthread"], check=True
    )
    return out_dir


def tpu_model_dir(shared_models: Path, out_dir: Path, perturbed: bool = False) -> Path:
    """The CPU models (links) plus an SSD "Edge TPU build" that is a copy of the CPU SSD; ``perturbed``
    inverts the bytes of its first large weight tensors, so its answers differ from the CPU's."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for model in shared_models.glob("*.tflite"):  # the CPU models, not the real Edge TPU builds
        if not model.name.endswith("_edgetpu.tflite") and not (out_dir / model.name).exists():
            (out_dir / model.name).symlink_to(model)
    cpu = shared_models / MODELS["ssd_mobilenet_v1"].file
    data = bytearray(cpu.read_bytes())
    if perturbed:
        _invert_weights(cpu, data)
    (out_dir / SSD_TPU).write_bytes(bytes(data))
    return out_dir


def _invert_weights(model: Path, data: bytearray, tensors: int = 3) -> None:
    """Invert (255 - v) the bytes of the first large constant tensors, found by their content in the file."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model))
    interp.allocate_tensors()
    done = 0
    source = bytes(data)
    for detail in interp.get_tensor_details():
        try:
            raw = interp.get_tensor(detail["index"]).tobytes()
        except ValueError:
            continue
        at = source.find(raw) if len(raw) > 1000 else -1
        if at > 0 and source.find(raw, at + 1) < 0:
            data[at : at + len(raw)] = bytes(255 - v for v in raw)
            done += 1
            if done == tensors:
                return
    raise AssertionError(f"no weight tensors found to perturb in {model}")


class FailingInterpreter:
    """Stands in for an Edge TPU interpreter whose device went away: every invoke raises."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def invoke(self) -> None:
        raise RuntimeError("Failed to invoke: USB transfer error (device unplugged)")
