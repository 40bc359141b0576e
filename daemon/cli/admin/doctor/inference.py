"""The inference stack: the runtimes, the Edge TPU library and its package, the Coral on USB, the probe."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from fallwatch.config.schema import Config
from fallwatch.daemon.cli.admin.doctor.report import Check
from fallwatch.pose import edgetpu_stack

CORAL_IDS = {("1a6e", "089a"): "not yet initialised", ("18d1", "9302"): "initialised"}


def check_runtimes() -> list[Check]:
    versions = edgetpu_stack.runtime_versions()
    out = []
    if versions["ai_edge_litert"]:
        out.append(
            Check(
                "ok", "runtime ai_edge_litert", f"{edgetpu_stack.runtime_label('ai_edge_litert')} (runs the CPU models)"
            )
        )
    elif versions["tflite_runtime"]:
        out.append(Check("ok", "runtime ai_edge_litert", "not installed; tflite_runtime runs the CPU models"))
    else:
        out.append(
            Check(
                "fail",
                "runtime ai_edge_litert",
                "no TFLite runtime installed",
                "reinstall: sudo ./systemd/install.sh (or pip install ai-edge-litert in the venv)",
            )
        )
    if versions["tflite_runtime"]:
        out.append(
            Check(
                "ok",
                "runtime tflite_runtime",
                f"{edgetpu_stack.runtime_label('tflite_runtime')} (runs the Edge TPU models)",
            )
        )
    else:
        out.append(
            Check(
                "ok",
                "runtime tflite_runtime",
                "not installed (the Coral's matched runtime; only needed with a Coral: "
                "sudo ./systemd/install.sh --with-coral)",
            )
        )
    return out


def check_library(
    library: Optional[Path], package: Optional[tuple[str, str]], must: bool, coral_plugged: bool = False
) -> Check:
    bad = "fail" if must else "warn"
    if library is None:
        if must or coral_plugged:
            why = "pose.backend is edgetpu" if must else "a Coral is plugged in"
            return Check(
                bad,
                "edgetpu library",
                f"{edgetpu_stack.EDGETPU_LIBRARY} not found but {why}",
                "sudo ./systemd/install.sh --with-coral",
            )
        return Check("ok", "edgetpu library", f"{edgetpu_stack.EDGETPU_LIBRARY} not installed (CPU only)")
    module = edgetpu_stack.tpu_runtime()
    if module is None:
        return Check(bad, "edgetpu library", f"{library} present but no TFLite runtime", edgetpu_stack.FIX)
    version = edgetpu_stack.runtime_versions()[module]
    where = f"{package[0]} " if package else ""
    text = (
        f"{where}{edgetpu_stack.library_label(package)} at {library}, Edge TPU runtime "
        f"{edgetpu_stack.runtime_label(module, version)}"
    )
    matched = edgetpu_stack.stack_matches(package, module, version)
    paired = edgetpu_stack.pair_label(package)
    if matched is None:
        return Check(
            "warn",
            "edgetpu library",
            f"{text}: the library's build is unknown (not from a Debian package), cannot tell whether it matches",
            edgetpu_stack.FIX,
        )
    if not matched:
        return Check(
            bad,
            "edgetpu library",
            f"{text}: NOT built for each other (the delegate is likely to crash)"
            + (f"; this library's matched runtime is {paired}" if paired else ""),
            edgetpu_stack.FIX,
        )
    which = f"the matched pair (library for {paired})" if paired else "a rebuild for this runtime's TensorFlow"
    return Check("ok", "edgetpu library", f"{text}: built for each other, {which}")


def coral_devices(sysfs: Path) -> list[tuple[str, str, Optional[int]]]:
    """(sysfs device name, state, speed in Mb/s) of each Coral USB Accelerator on the bus."""
    found = []
    for dev in sorted((sysfs / "bus" / "usb" / "devices").glob("*")):
        try:
            ids = ((dev / "idVendor").read_text().strip().lower(), (dev / "idProduct").read_text().strip().lower())
        except OSError:
            continue
        if ids in CORAL_IDS:
            try:
                speed: Optional[int] = int(float((dev / "speed").read_text().strip()))
            except (OSError, ValueError):
                speed = None
            found.append((dev.name, CORAL_IDS[ids], speed))
    return found


def check_coral_usb(sysfs: Path, expected: bool, must: bool) -> Check:
    corals = coral_devices(sysfs)
    if not corals:
        if must or expected:
            return Check(
                "fail" if must else "warn",
                "coral usb",
                "no Edge TPU found: no Coral USB Accelerator on the USB bus (ids 1a6e:089a or 18d1:9302)",
                "plug the Coral in (a USB 3 port), or set pose.backend: cpu",
            )
        return Check("ok", "coral usb", "none on the bus (CPU only)")
    name, state, speed = corals[0]
    text = f"Coral USB Accelerator at {name} ({state}), {speed if speed is not None else '?'} Mb/s"
    if speed is not None and speed < 5000:
        return Check(
            "warn",
            "coral usb",
            f"{text}: a USB 2 port; the Coral loses much of its speed there",
            "plug the Coral into a USB 3 (blue) port with a USB 3 cable",
        )
    return Check("ok", "coral usb", text + ("" if len(corals) == 1 else f" (+{len(corals) - 1} more)"))


def check_crash_marker(cfg: Config, package: Optional[tuple[str, str]]) -> Check:
    from fallwatch.daemon.mqtt.outbox import default_state_dir
    from fallwatch.pose.edgetpu_marker import describe, leftover

    module = edgetpu_stack.tpu_runtime()
    state_dir = default_state_dir(cfg.mqtt.state_dir)
    left = leftover(state_dir, edgetpu_stack.stack_label(module, package)) if module and state_dir.is_dir() else None
    if left:
        return Check(
            "fail" if cfg.pose.backend == "edgetpu" else "warn",
            "edgetpu crash marker",
            describe(*left),
            f"{edgetpu_stack.FIX}, or delete {left[0]} to try the TPU again",
        )
    return Check("ok", "edgetpu crash marker", f"none in {state_dir}")


def check_probe(
    cfg: Config, model_dir: Path, library: Optional[Path], package: Optional[tuple[str, str]], must: bool
) -> Check:
    from fallwatch.pose.edgetpu_probe import probe_model, run_probe
    from fallwatch.pose.models import ModelError, edgetpu_build, model_path

    if library is None or cfg.pose.backend == "cpu":
        return Check(
            "ok", "edgetpu probe", "skipped (" + ("pose.backend is cpu" if library else "no Edge TPU library") + ")"
        )
    models = []
    for cpu_name in (cfg.pose.detector, cfg.pose.estimator):
        tpu_name = edgetpu_build(cpu_name)
        try:
            if tpu_name:
                models.append(
                    probe_model(tpu_name, model_path(tpu_name, model_dir), model_path(cpu_name, model_dir), model_dir)
                )
        except ModelError:
            continue
    if not models:
        return Check(
            "fail" if must else "warn",
            "edgetpu probe",
            "skipped: no Edge TPU model present",
            "fallwatch models fetch "
            + " ".join(filter(None, map(edgetpu_build, (cfg.pose.detector, cfg.pose.estimator)))),
        )
    result = run_probe(models, cfg.pose.edgetpu_device, cfg.pose.edgetpu_probe_timeout_s, package)
    if result.ok:
        return Check("ok", "edgetpu probe", result.reason)
    return Check(
        "fail" if must else "warn",
        "edgetpu probe",
        f"{result.outcome}: {result.stack}: {result.detail}; the daemon runs on the CPU",
        result.fix,
    )
