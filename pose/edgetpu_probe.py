"""The isolated Edge TPU probe: before the engine touches the TPU, a child process loads the delegate (through the
runtime's real ``load_delegate``), allocates each ``*_edgetpu`` model, invokes it on a fixed input and compares
the outputs with the CPU twin's. A crash (signal), hang (timeout) or wrong answer then costs a child process,
not the daemon.

The input is a drawn figure of a person (MoveNet finds its joints with scores 0.5-0.8), so the comparison is
about a real answer, not noise. Agreement, in physical terms; the margins come from Coral's own reference outputs
of MoveNet Lightning on the same image (google-coral/test_data), where the Edge TPU's keypoints lie within 2 % of
the image of the CPU's while single keypoint scores differ by up to 0.4 (their mean by 0.13):
- MoveNet: each keypoint both runs score >= 0.3 within 5 % of the image side; the mean score difference <= 0.25;
- SSD: each detection scoring >= 0.5 in either run has a partner scoring >= 0.2 in the other with box IoU >= 0.5
  (and the same class, and the sorted scores within 0.2 on average, when the reference is the TPU build's own
  CPU twin rather than another conversion of the same network);
- anything else: the mean difference of each output within 5 % of the CPU output's range.

Run as ``python -m fallwatch.pose.edgetpu_probe SPEC_JSON``; it prints one JSON line (prefixed ``PROBE ``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from . import edgetpu_stack
from .models import ProbeCompare

PROBE_TIMEOUT_S = 20.0
KEYPOINT_TOLERANCE = 0.05  # of the image side
KEYPOINT_MIN_SCORE = 0.3
MEAN_SCORE_TOLERANCE = 0.25  # MoveNet: mean |score difference| over the 17 keypoints
DETECTION_MIN_SCORE = 0.5  # SSD: detections that must be found by both runs
PARTNER_MIN_SCORE = 0.2
IOU_MIN = 0.5
SSD_MEAN_SCORE_TOLERANCE = 0.2
OUTPUT_TOLERANCE = 0.05  # of the CPU output's range, for models without a specific rule
_PREFIX = "PROBE "


@dataclass
class ProbeModel:
    name: str  # registry name of the Edge TPU build
    tpu_path: Path
    cpu_path: Path  # the reference: its CPU twin, or the CPU model the engine runs instead
    compare: ProbeCompare  # how its outputs are compared with the CPU's (the catalogue entry's probe_compare)
    exact_twin: bool = True  # cpu_path is the CPU build of the same file (else: another conversion)


@dataclass
class ProbeResult:
    outcome: str  # ok | crashed | hung | failed | disagreed
    detail: str  # what happened, without the stack or the fix
    stack: str  # "libedgetpu 16.0 (TF 2.5) with LiteRT 2.3.0"
    matched: Optional[bool] = None  # were library and runtime built for each other (None: cannot tell)
    invoke_ms: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def fix(self) -> str:
        if self.outcome == "failed" and self.matched is not False:
            return "check that the Coral is plugged in and answering: fallwatch doctor"
        return edgetpu_stack.FIX

    @property
    def reason(self) -> str:
        """One line: the stack, what went wrong, the fix (or, when ok, the per-model invoke times)."""
        if self.ok:
            times = ", ".join(f"{n} {ms:.1f} ms" for n, ms in self.invoke_ms.items())
            return f"{self.stack}: Edge TPU probe ok ({times})"
        return f"{self.stack}: {self.detail}; {self.fix}"


def probe_model(tpu_name: str, tpu_path: Path, cpu_path: Path, model_dir: Path) -> ProbeModel:
    """The probe's view of one TPU build: compared with its registered CPU twin when that is present and verified,
    else with ``cpu_path`` (the CPU model the engine runs instead, e.g. the TF zoo's conversion of Coral's SSD)."""
    from .models import MODELS, ModelError, model_path

    spec = MODELS[tpu_name]
    twin = spec.cpu_twin
    if twin:
        try:
            return ProbeModel(tpu_name, tpu_path, model_path(twin, model_dir), spec.probe_compare)
        except ModelError:
            pass
    return ProbeModel(tpu_name, tpu_path, cpu_path, spec.probe_compare, exact_twin=False)


def run_probe(
    models: list[ProbeModel],
    device: str = "usb",
    timeout_s: float = PROBE_TIMEOUT_S,
    package: Optional[tuple[str, str]] = None,
) -> ProbeResult:
    """Probe the Edge TPU in a child process; never raises for what the TPU does, never waits past timeout_s."""
    from .runtime import BackendError, _import_runtime

    package = package if package is not None else edgetpu_stack.library_package()
    try:
        module = _import_runtime(for_edgetpu=True)[2]
    except BackendError as e:
        return ProbeResult("failed", str(e), edgetpu_stack.library_label(package))
    version = edgetpu_stack.runtime_versions().get(module)
    result = ProbeResult(
        "failed", "", edgetpu_stack.stack_label(module, package), edgetpu_stack.stack_matches(package, module, version)
    )
    spec = {
        "device": device,
        "models": [
            {"name": m.name, "tpu": str(m.tpu_path), "cpu": str(m.cpu_path), "compare": m.compare}
            | {"exact": m.exact_twin}
            for m in models
        ],
    }
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fallwatch.pose.edgetpu_probe", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:  # run() has killed the child
        result.outcome, result.detail = "hung", f"the Edge TPU delegate hung (no answer in {timeout_s:g} s)"
        result.elapsed_s = time.monotonic() - t0
        return result
    result.elapsed_s = time.monotonic() - t0
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        result.outcome, result.detail = "crashed", f"the Edge TPU delegate crashed ({name})"
        return result
    report = next(
        (json.loads(line[len(_PREFIX) :]) for line in reversed(proc.stdout.splitlines()) if line.startswith(_PREFIX)),
        None,
    )
    if report is None:
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        result.detail = f"the Edge TPU probe failed ({last[:200]})"
        return result
    result.outcome, result.detail = report["outcome"], report.get("detail", "")
    result.invoke_ms = report.get("invoke_ms", {})
    return result


# -- comparison ------------------------------------------------------------------------------------------------
def probe_input(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A fixed drawing of a standing person (the same on every run and machine), as the model's input tensor."""
    import cv2

    h, w = int(shape[1]), int(shape[2])
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (150, 140, 120)
    sx, sy = w / 192.0, h / 192.0

    def at(x: float, y: float) -> tuple[int, int]:
        return int(x * sx), int(y * sy)

    skin, shirt, trousers = (200, 160, 130), (40, 80, 170), (50, 50, 60)
    cv2.circle(img, at(96, 30), int(13 * sy), skin, -1)  # head
    cv2.line(img, at(96, 45), at(96, 100), shirt, int(30 * sy))  # torso
    for shoulder, elbow, hand in ((80, 62, 55), (112, 130, 137)):
        cv2.line(img, at(shoulder, 52), at(elbow, 80), shirt, int(10 * sy))
        cv2.line(img, at(elbow, 80), at(hand, 108), skin, int(8 * sy))
    for hip, knee, ankle in ((88, 84, 82), (104, 108, 110)):
        cv2.line(img, at(hip, 100), at(knee, 140), trousers, int(13 * sy))
        cv2.line(img, at(knee, 140), at(ankle, 178), trousers, int(11 * sy))
    img = img[..., : int(shape[3])].astype(np.float32)
    if np.dtype(dtype) == np.uint8:
        return img.astype(np.uint8)[None]
    if np.dtype(dtype) == np.int8:
        return (img - 128).astype(np.int8)[None]
    return (img / 127.5 - 1.0).astype(np.dtype(dtype))[None]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    y0, x0 = max(a[0], b[0]), max(a[1], b[1])
    y1, x1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, y1 - y0) * max(0.0, x1 - x0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def compare(mode: str, tpu: list[np.ndarray], cpu: list[np.ndarray], exact_twin: bool = True) -> Optional[str]:
    """None if the Edge TPU's outputs agree with the CPU's (see the module doc), else how far off they are.
    ``mode`` is the catalogue entry's probe_compare; outputs of another shape than it expects fall back to
    "outputs"."""
    if [o.shape for o in tpu] != [o.shape for o in cpu]:
        return f"output shapes differ ({[o.shape for o in tpu]} vs {[o.shape for o in cpu]})"
    tpu = [o.astype(np.float64) for o in tpu]
    cpu = [o.astype(np.float64) for o in cpu]
    if mode == "keypoints" and len(cpu) == 1 and cpu[0].shape[-2:] == (17, 3):
        t, c = tpu[0].reshape(17, 3), cpu[0].reshape(17, 3)
        both = (t[:, 2] >= KEYPOINT_MIN_SCORE) & (c[:, 2] >= KEYPOINT_MIN_SCORE)
        off = float(np.abs(t[both, :2] - c[both, :2]).max()) if both.any() else 0.0
        score = float(np.abs(t[:, 2] - c[:, 2]).mean())
        if off > KEYPOINT_TOLERANCE or score > MEAN_SCORE_TOLERANCE:
            return (
                f"keypoints off by {100 * off:.0f}% of the image (allowed {100 * KEYPOINT_TOLERANCE:.0f}%), "
                f"scores by {score:.2f} on average (allowed {MEAN_SCORE_TOLERANCE})"
            )
        return None
    if mode == "detections" and len(cpu) == 4:
        (tb, tc, ts, _), (cb, cc, cs, _) = tpu, cpu
        if exact_twin:
            score = float(np.abs(np.sort(ts.ravel()) - np.sort(cs.ravel())).mean())
            if score > SSD_MEAN_SCORE_TOLERANCE:
                return f"detection scores off by {score:.2f} on average (allowed {SSD_MEAN_SCORE_TOLERANCE})"
        for (b1, c1, s1), (b2, c2, s2) in (((tb, tc, ts), (cb, cc, cs)), ((cb, cc, cs), (tb, tc, ts))):
            boxes, partners = b2.reshape(-1, 4), [j for j in range(s2.size) if s2.ravel()[j] >= PARTNER_MIN_SCORE]
            for i in np.flatnonzero(s1.ravel() >= DETECTION_MIN_SCORE):
                box, cls = b1.reshape(-1, 4)[i], c1.ravel()[i]
                ious = [_iou(box, boxes[j]) for j in partners if not exact_twin or c2.ravel()[j] == cls]
                if max(ious, default=0.0) < IOU_MIN:
                    return f"a detection (score {s1.ravel()[i]:.2f}) has no partner with IoU >= {IOU_MIN}"
        return None
    for t, c in zip(tpu, cpu, strict=True):  # as many outputs: their shapes matched above
        span = max(float(c.max() - c.min()), 1e-6)
        off = float(np.abs(t - c).mean()) / span
        if off > OUTPUT_TOLERANCE:
            return f"outputs off by {100 * off:.0f}% of their range (allowed {100 * OUTPUT_TOLERANCE:.0f}%)"
    return None


# -- the child ---------------------------------------------------------------------------------------------------
def _outputs(interp: Any, x: np.ndarray) -> tuple[list[np.ndarray], float]:
    """Invoke on x; (outputs in name order, fastest of three timed invokes in ms after one warm-up)."""
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()  # the first invoke also uploads the model to the TPU
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        interp.invoke()
        best = min(best, (time.perf_counter() - t0) * 1000.0)
    details = sorted(interp.get_output_details(), key=lambda d: d["name"])
    return [np.array(interp.get_tensor(d["index"])) for d in details], best


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    from . import runtime

    invoke_ms: dict[str, float] = {}
    for m in spec["models"]:
        try:
            delegate = runtime.load_edgetpu_delegate(spec["device"])
            tpu = runtime.make_edgetpu_interpreter(Path(m["tpu"]), delegate, 1)
            cpu = runtime.make_cpu_interpreter(Path(m["cpu"]), 1)
        except runtime.BackendError as e:
            return {"outcome": "failed", "detail": str(e), "invoke_ms": invoke_ms}
        inp = tpu.get_input_details()[0]
        x = probe_input(tuple(inp["shape"]), inp["dtype"])
        try:
            tpu_out, invoke_ms[m["name"]] = _outputs(tpu, x)
        except (RuntimeError, ValueError) as e:
            return {
                "outcome": "failed",
                "detail": f"{m['name']} failed to run on the Edge TPU ({runtime._first_line(e)})",
                "invoke_ms": invoke_ms,
            }
        cpu_out, _ = _outputs(cpu, x)
        diff = compare(m["compare"], tpu_out, cpu_out, m.get("exact", True))
        if diff:
            return {
                "outcome": "disagreed",
                "invoke_ms": invoke_ms,
                "detail": f"the Edge TPU's answers disagree with the CPU's: {m['name']} {diff}",
            }
    return {"outcome": "ok", "detail": "", "invoke_ms": {k: round(v, 2) for k, v in invoke_ms.items()}}


def main(argv: list[str]) -> int:
    report = _child(json.loads(argv[0]))
    print(_PREFIX + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
