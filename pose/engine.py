"""The pose engine: frame in, tracked persons with COCO-17 keypoints out.

Picks the backend (Edge TPU with each model's ``*_edgetpu.tflite`` build, else the CPU twins on XNNPACK), builds
the detector and estimator adapters, and runs the tracker. If the Edge TPU fails while running, it switches to the
CPU twins and carries on.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from . import edgetpu_stack, runtime
from .detector import DETECTORS, Detector
from .edgetpu_marker import Marker
from .edgetpu_marker import describe as describe_marker
from .edgetpu_marker import leftover as leftover_marker
from .edgetpu_probe import ProbeResult, probe_model, run_probe
from .enhance import Enhancer, EnhanceSettings
from .estimator import ESTIMATORS, Estimator
from .models import MODELS, ModelError, ModelSpec, Role, cpu_models, edgetpu_build, model_path
from .runtime import BackendError, Model
from .tracker import Tracker, TrackerSettings
from .types import PoseResult

log = logging.getLogger(__name__)

__all__ = [
    "SmoothingSettings",
    "EnhanceSettings",
    "PoseSettings",
    "PoseEngine",
    "FrameError",
    "BackendError",
    "ModelError",
]


class FrameError(ValueError):
    """A frame the engine cannot use (wrong shape or type). The caller skips it and counts it."""


@dataclass
class SmoothingSettings:
    enabled: bool = True
    min_cutoff: float = 1.0  # Hz: cutoff when still (lower = smoother)
    beta: float = 5.0  # cutoff rise (Hz) per person-size-per-second of speed (higher = less lag)
    d_cutoff: float = 1.0  # Hz: cutoff of the speed estimate


@dataclass
class PoseSettings:
    backend: str = "auto"  # auto | edgetpu | cpu
    edgetpu_device: str = "usb"  # usb | pci | "" (first found); "usb:0" etc. also work
    edgetpu_probe_timeout_s: float = 20.0  # the isolated probe (a child process) counts as hung after this
    state_dir: Optional[str] = None  # where the Edge TPU crash marker lives (None: no marker)
    num_threads: Optional[int] = None  # None = all cores
    detector: str = "ssd_mobilenet_v1"  # registry name of the CPU build
    estimator: str = "movenet_lightning"
    detect_threshold: float = 0.5
    detect_every: int = 15  # the SSD costs ~2.5 Lightning invokes on a CPU: every 15th frame adds ~17%
    track_timeout_s: float = 2.0
    max_persons: int = 4
    min_torso_score: float = 0.2
    rotation_retry: bool = True
    smoothing: SmoothingSettings = field(default_factory=SmoothingSettings)
    ignore_zones: tuple = ()  # polygons (normalised 0-1 points) whose people are not tracked (TV, mirror)
    enhance: EnhanceSettings = field(default_factory=EnhanceSettings)


def _spec(name: str, role: Role) -> ModelSpec:
    spec = MODELS.get(name)
    if spec is None:
        raise ModelError(f"unknown {role} model {name!r}; known: {', '.join(cpu_models(role))}")
    if spec.role != role:
        raise ModelError(f"model {name!r} is a {spec.kind}, not a {role}")
    if spec.edgetpu:
        raise ModelError(
            f"pose.{role}: name the CPU model ({spec.cpu_twin!r}); the engine picks the Edge TPU build itself"
        )
    return spec


class PoseEngine:
    def __init__(self, settings: PoseSettings, model_dir: Path):
        if settings.backend not in ("auto", "edgetpu", "cpu"):
            raise BackendError(f"pose.backend must be auto, edgetpu or cpu, not {settings.backend!r}")
        self.settings = settings
        self.model_dir = Path(model_dir)
        self.enhancer = Enhancer(settings.enhance)  # night enhancement of every model input (pose/enhance.py)
        self._det_spec = _spec(settings.detector, "detector")
        self._est_spec = _spec(settings.estimator, "estimator")
        # Fail early on missing CPU models: they are the fallback whatever the backend.
        self._cpu_paths = {s.name: model_path(s.name, self.model_dir) for s in (self._det_spec, self._est_spec)}
        self.probe: Optional[ProbeResult] = None  # the isolated Edge TPU probe's result, if it ran
        # every tracker made here (the default one, one per camera): a backend switch rebinds them all
        self._trackers: weakref.WeakSet[Tracker] = weakref.WeakSet()
        self._marker: Optional[Marker] = None
        self._backend, self.backend_reason, models = self._open_models()
        try:
            self._build(models)
        except ValueError as e:  # a model file whose inputs/outputs are not what its registry entry says
            raise ModelError(str(e)) from e
        self.frames = 0
        self.bad_frames = 0
        log.info(
            "pose engine on %s (%s): detector %s, estimator %s",
            self._backend,
            self.backend_reason,
            self.detector_model.path.name,
            self.estimator_model.path.name,
        )

    # -- backend ---------------------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self._backend

    def _open_models(self) -> tuple[str, str, dict[str, Model]]:
        s = self.settings
        threads = runtime.default_threads(s.num_threads)
        if s.backend in ("auto", "edgetpu"):
            tpu_names = {spec.name: edgetpu_build(spec.name) for spec in (self._det_spec, self._est_spec)}
            if not any(tpu_names.values()):
                reason = f"no Edge TPU build of {self._det_spec.name} or {self._est_spec.name}"
                if s.backend == "edgetpu":
                    raise BackendError(f"pose.backend is edgetpu but {reason}")
            else:
                try:
                    return self._open_edgetpu(tpu_names, threads)
                except BackendError as e:
                    if s.backend == "edgetpu":
                        raise BackendError(f"pose.backend is edgetpu but {e}") from e
                    reason = str(e)
        else:
            reason = "pose.backend is cpu"
        models = {
            name: Model(runtime.make_cpu_interpreter(path, threads), path, "cpu")
            for name, path in self._cpu_paths.items()
        }
        tpu_wanted = (
            s.backend == "auto" and reason != "pose.backend is cpu" and not reason.startswith("no Edge TPU build")
        )
        reason = f"{reason}; using CPU (XNNPACK, {threads} threads)"
        # A missing or silent TPU is worth a warning; CPU-only models on the CPU are just information.
        log.log(logging.WARNING if tpu_wanted else logging.INFO, "%s", reason)
        return "cpu", reason, models

    def _open_edgetpu(self, tpu_names: dict[str, Optional[str]], threads: int) -> tuple[str, str, dict[str, Model]]:
        if edgetpu_stack.find_library() is None:  # the CPU-only machine: no child process, no cost
            raise BackendError(f"Edge TPU library {edgetpu_stack.EDGETPU_LIBRARY} not found")
        paths: dict[str, Path] = {}
        for cpu_name, tpu_name in tpu_names.items():
            if tpu_name is None:
                continue
            try:
                paths[cpu_name] = model_path(tpu_name, self.model_dir)
            except ModelError:
                if self.settings.backend == "edgetpu":
                    raise
                log.info("no Edge TPU build of %s present; it runs on the CPU", cpu_name)
        if not paths:
            raise BackendError("no Edge TPU model file present")
        self._check_edgetpu({c: (str(tpu_names[c]), p) for c, p in paths.items()})
        models: dict[str, Model] = {}
        try:
            for cpu_name in tpu_names:
                if cpu_name in paths:  # one delegate per interpreter, as pycoral does
                    delegate = runtime.load_edgetpu_delegate(self.settings.edgetpu_device)
                    interp = runtime.make_edgetpu_interpreter(paths[cpu_name], delegate, threads)
                    models[cpu_name] = Model(interp, paths[cpu_name], "edgetpu")
                else:
                    path = self._cpu_paths[cpu_name]
                    models[cpu_name] = Model(runtime.make_cpu_interpreter(path, threads), path, "cpu")
        except BackendError:
            self._drop_marker()
            raise
        used = ", ".join(p.name for p in paths.values())
        return "edgetpu", f"Edge TPU ({self.settings.edgetpu_device or 'first found'}) runs {used}", models

    def _check_edgetpu(self, tpu_models: dict[str, tuple[str, Path]]) -> None:
        """Before this process touches the TPU: did the TPU take a run down before, and does the isolated probe
        pass? BackendError with the one-line reason if not; else write the crash marker."""
        s = self.settings
        package = edgetpu_stack.library_package()
        stack = edgetpu_stack.stack_label(runtime._import_runtime(for_edgetpu=True)[2], package)
        state_dir = Path(s.state_dir) if s.state_dir else None
        left = leftover_marker(state_dir, stack) if state_dir else None
        if left:
            raise BackendError(f"{stack}: {describe_marker(*left)}; {edgetpu_stack.FIX} (a new stack clears it)")
        probe = [
            probe_model(tpu_name, path, self._cpu_paths[cpu_name], self.model_dir)
            for cpu_name, (tpu_name, path) in tpu_models.items()
        ]
        self.probe = run_probe(probe, s.edgetpu_device, s.edgetpu_probe_timeout_s, package)
        if not self.probe.ok:
            raise BackendError(self.probe.reason)
        log.info("%s", self.probe.reason)
        if state_dir:
            try:
                self._marker = Marker(state_dir, stack)
            except OSError as e:
                log.warning(
                    "cannot write the Edge TPU crash marker in %s (%s); a TPU crash mid-run would restart on the TPU",
                    state_dir,
                    e,
                )

    def _drop_marker(self) -> None:
        if self._marker is not None:
            self._marker.remove()
            self._marker = None

    def close(self) -> None:
        """Done with the TPU (a clean exit): the crash marker goes."""
        self._drop_marker()

    def _build(self, models: dict[str, Model]) -> None:
        s = self.settings
        self.detector_model = models[self._det_spec.name]
        self.estimator_model = models[self._est_spec.name]
        self.detector: Detector = DETECTORS[self._det_spec.kind](self.detector_model, s.detect_threshold)
        self.estimator: Estimator = ESTIMATORS[self._est_spec.kind](self.estimator_model)
        self.detector.enhancer = self.estimator.enhancer = self.enhancer
        if not self._trackers:
            self.tracker = self.make_tracker()  # the one process() uses unless given another
        for tracker in self._trackers:  # a backend switch: tracks, ids and the detector's schedule stay
            tracker.estimator, tracker.detector = self.estimator, self.detector

    def make_tracker(self) -> Tracker:
        """A tracker of its own (one per camera when several share this engine) on this engine's models; pass it
        to :meth:`process`."""
        s = self.settings
        sm = s.smoothing
        ts = TrackerSettings(
            detect_every=max(1, s.detect_every),
            track_timeout_s=s.track_timeout_s,
            max_persons=max(1, s.max_persons),
            min_torso_score=s.min_torso_score,
            rotation_retry=s.rotation_retry,
            smoothing=sm.enabled,
            min_cutoff=sm.min_cutoff,
            beta=sm.beta,
            d_cutoff=sm.d_cutoff,
            ignore_zones=tuple(s.ignore_zones),
        )
        tracker = Tracker(self.estimator, self.detector, ts)
        self._trackers.add(tracker)
        return tracker

    def _fall_back_to_cpu(self, error: Exception) -> None:
        log.error("Edge TPU failed while running (%s); switching to the CPU twins", runtime._first_line(error))
        threads = runtime.default_threads(self.settings.num_threads)
        models = {
            name: Model(runtime.make_cpu_interpreter(path, threads), path, "cpu")
            for name, path in self._cpu_paths.items()
        }
        self._backend = "cpu"
        self._drop_marker()  # the TPU is no longer in use; this failure was caught, not a crash
        self.backend_reason = f"Edge TPU failed while running ({runtime._first_line(error)}); using CPU (XNNPACK)"
        self._build(models)

    # -- frames ----------------------------------------------------------------------------------------------
    def process(self, frame_rgb: np.ndarray, t: float, tracker: Optional[Tracker] = None) -> PoseResult:
        """Tracked persons in one HxWx3 uint8 RGB frame taken at time ``t`` (seconds), followed by ``tracker``
        (one from :meth:`make_tracker`; default: the engine's own)."""
        tracker = self.tracker if tracker is None else tracker
        frame = self._check(frame_rgb)
        try:
            t = float(t)
        except (TypeError, ValueError):
            t = float("nan")
        if not math.isfinite(t):
            self.bad_frames += 1
            raise FrameError(f"frame time must be a finite number of seconds, got {t!r}")
        det_ms0, est_ms0 = self.detector_model.total_invoke_ms, self.estimator_model.total_invoke_ms
        enh_ms0 = self.enhancer.total_ms
        # On the TPU, keep the tracker's state: an invoke that fails half-way through a step leaves some tracks
        # already moved on to this frame, and the CPU retry of the frame must start from where it started.
        before = tracker.snapshot() if self._backend == "edgetpu" else None
        t0 = time.perf_counter()
        try:
            persons, st = tracker.step(frame, t)
        except (RuntimeError, ValueError) as e:
            if before is None:
                raise
            tracker.restore(before)
            self._fall_back_to_cpu(e)
            return self.process(frame, t, tracker)
        total = (time.perf_counter() - t0) * 1000.0
        self.frames += 1
        stage = {
            "detect": st.detect_ms,
            "estimate": st.estimate_ms,
            "track": max(0.0, total - st.detect_ms - st.estimate_ms),
            "total": total,
            "detect_invoke": self.detector_model.total_invoke_ms - det_ms0,
            "estimate_invoke": self.estimator_model.total_invoke_ms - est_ms0,
            "enhance": self.enhancer.total_ms - enh_ms0,  # inside detect and estimate, reported apart too
        }
        return PoseResult(
            persons=persons,
            backend=self._backend,
            stage_ms=stage,
            detector_ran=st.detector_ran,
            estimator_calls=st.estimator_calls,
        )

    def _check(self, frame: Any) -> np.ndarray:
        if not isinstance(frame, np.ndarray):
            self.bad_frames += 1
            raise FrameError(f"frame must be a numpy array, not {type(frame).__name__}")
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or min(frame.shape[:2]) < 8:
            self.bad_frames += 1
            raise FrameError(
                f"frame must be HxWx3 uint8 RGB of at least 8x8 pixels, got shape {frame.shape} dtype {frame.dtype}"
            )
        return frame if frame.flags.c_contiguous else np.ascontiguousarray(frame)

    def reset(self) -> None:
        self.tracker.reset()

    def set_ignore_zones(self, zones: tuple) -> None:
        """Polygons (normalised 0-1 points) whose people are not tracked from now on (a configuration reload)."""
        self.settings.ignore_zones = tuple(zones)
        self.tracker.s.ignore_zones = tuple(zones)
