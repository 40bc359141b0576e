"""`fallwatch doctor`: one line per check (ok / warn / fail, with the fix) for a Pi owner when something is off.

A check fails when the daemon cannot work as configured; it warns when the daemon works but worse than it could
(an Edge TPU left unused, a Coral on a USB 2 port). Nothing here can hang: the TPU probe runs in a child process
with a timeout, the broker connect has a timeout, sysfs and /proc reads are instant.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import platform
import socket
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from fallwatch.config.loader import ConfigError, default_config_path, load_config
from fallwatch.config.schema import Config
from fallwatch.pose import edgetpu_stack

CORAL_IDS = {("1a6e", "089a"): "not yet initialised", ("18d1", "9302"): "initialised"}
# USB power, from Raspberry Pi's documentation: "Power supply" (raspberrypi.com/documentation/computers/
# raspberry-pi.html#power-supply: the USB ports of a Pi 4, 400 and 3B/3B+ give 1.2 A in all; a Pi 5 gives 1.6 A
# with a 5 A USB-PD supply and 600 mA otherwise) and config.txt's `usb_max_current_enable` (raspberrypi.com/
# documentation/computers/config_txt.html: on a Pi 5, 1 lifts the 600 mA limit for a supply that does not
# negotiate 5 A). The Pi 5 firmware leaves what it negotiated in the device tree, chosen/power/max_current and
# usb_max_current_enable (big-endian u32). A Coral USB Accelerator draws up to 900 mA (a USB 3 port's budget).
CORAL_MAX_MA = 900
PI5_USB_LIMITED_MA = 600
MQTT_TIMEOUT_S = 5.0
CAMERA_TIMEOUT_S = 10.0


@dataclass
class Check:
    status: str  # ok | warn | fail
    name: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:<4}  {self.name}: {self.detail}" + (f" [fix: {self.fix}]" if self.fix else "")


@dataclass
class Environment:
    """Where the checks look; tests point these at fake trees."""

    sysfs: Path = Path("/sys")
    dev: Path = Path("/dev")
    proc: Path = Path("/proc")
    dpkg_query: Sequence[str] = ("dpkg-query",)
    os_release: Path = Path("/etc/os-release")


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args.config, getattr(args, "model_dir", None))
    if args.json:
        print(
            json.dumps(
                {
                    "checks": [asdict(c) for c in checks],
                    "summary": {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "fail")},
                }
            )
        )
    else:
        for check in checks:
            print(check.line(), flush=True)
    return 1 if any(c.status == "fail" for c in checks) else 0


def run_checks(
    config_file: Optional[str] = None, model_dir: Optional[str] = None, env: Optional[Environment] = None
) -> list[Check]:
    env = env or Environment()
    checks = [check_os(env), check_python()]
    try:
        cfg = load_config(config_file)
        checks.append(Check("ok", "config", f"{config_file or default_config_path()} is valid"))
    except ConfigError as exc:
        checks.append(Check("fail", "config", "; ".join(exc.errors), "correct the file; see fallwatch check-config"))
        cfg = Config()
    from fallwatch.pose.models import resolve_model_dir

    models_dir = resolve_model_dir(model_dir, cfg.models.dir)
    wants_tpu = cfg.pose.backend != "cpu"
    must_tpu = cfg.pose.backend == "edgetpu"
    checks += check_runtimes()
    package = edgetpu_stack.library_package(env.dpkg_query)
    library = edgetpu_stack.find_library()
    coral_plugged = wants_tpu and bool(coral_devices(env.sysfs))
    checks.append(check_library(library, package, must_tpu, coral_plugged))
    checks.append(check_coral_usb(env.sysfs, wants_tpu and library is not None, must_tpu))
    checks.append(check_board(env, coral_plugged or (wants_tpu and library is not None)))
    checks.append(check_crash_marker(cfg, package))
    checks.append(check_probe(cfg, models_dir, library, package, must_tpu))
    checks.append(check_cameras(cfg, env))
    checks.append(check_models(cfg, models_dir, library is not None))
    checks.append(check_mqtt(cfg))
    checks.append(check_debug_bind(cfg, env.proc))
    return checks


# -- the system ----------------------------------------------------------------------------------------------
def check_os(env: Environment) -> Check:
    name = platform.system()
    try:
        fields = dict(line.split("=", 1) for line in env.os_release.read_text().splitlines() if "=" in line)
        name = fields.get("PRETTY_NAME", name).strip('"')
    except OSError:
        pass
    machine = platform.machine()
    if machine in ("armv7l", "armv6l"):
        return Check(
            "warn",
            "os",
            f"{name}, {machine} (32-bit)",
            "use the 64-bit Raspberry Pi OS: TFLite wheels and the Coral runtime are built for aarch64",
        )
    return Check("ok", "os", f"{name}, {machine}, kernel {platform.release()}")


def _device_tree(env: Environment) -> Optional[Path]:
    """The device tree the firmware passed to the kernel (/proc/device-tree, or its sysfs path), None if absent."""
    for base in (env.proc / "device-tree", env.sysfs / "firmware" / "devicetree" / "base"):
        if (base / "model").is_file():
            return base
    return None


def _dt_u32(path: Path) -> Optional[int]:
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    return int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None


def check_board(env: Environment, coral: bool) -> Check:
    """The board's model (from the device tree) and, where a Coral is used, whether its USB ports can power it."""
    tree = _device_tree(env)
    if tree is None:
        return Check(
            "ok",
            "board",
            f"no device-tree model ({env.proc / 'device-tree/model'} absent): not a Raspberry Pi, or a container",
        )
    model = (tree / "model").read_bytes().rstrip(b"\0").decode(errors="replace").strip()
    if not coral:
        return Check("ok", "board", model)
    need = f"a Coral USB Accelerator draws up to {CORAL_MAX_MA} mA"
    if "Raspberry Pi 5" not in model:
        return Check(
            "ok",
            "board",
            f"{model}; {need}: the USB ports of a Pi 4 give 1.2 A in all, so keep other power-hungry USB devices "
            "on a powered hub",
        )
    supply = _dt_u32(tree / "chosen" / "power" / "max_current")
    lifted = _dt_u32(tree / "chosen" / "power" / "usb_max_current_enable")
    if supply is None and lifted is None:
        return Check(
            "warn",
            "board",
            f"{model}; {need}, and this Pi 5's firmware does not say what its supply negotiated "
            f"(no {tree / 'chosen/power/max_current'}): with less than a 5 A supply the USB ports give "
            f"{PI5_USB_LIMITED_MA} mA in all",
            "use the official 27 W (5 V, 5 A) USB-C supply, or (if yours can give it) set usb_max_current_enable=1 "
            "in /boot/firmware/config.txt and reboot",
        )
    if (supply or 0) >= 5000 or lifted:
        why = f"the supply negotiated {supply} mA" if (supply or 0) >= 5000 else "usb_max_current_enable=1"
        return Check("ok", "board", f"{model}; {need}: {why}, the USB ports give up to 1.6 A in all")
    return Check(
        "warn",
        "board",
        f"{model}; {need}, but the supply negotiated {supply} mA, so the USB ports give {PI5_USB_LIMITED_MA} mA "
        "in all: the Coral may drop off the bus under load",
        "use the official 27 W (5 V, 5 A) USB-C supply, or (if yours can give it) set usb_max_current_enable=1 in "
        "/boot/firmware/config.txt and reboot",
    )


def check_python() -> Check:
    v = sys.version_info
    text = f"Python {platform.python_version()} ({sys.executable})"
    if v < (3, 11):
        return Check("fail", "python", text, "fallwatch needs Python 3.11 or newer")
    return Check("ok", "python", text)


# -- the inference stack -------------------------------------------------------------------------------------
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


# -- inputs and outputs ----------------------------------------------------------------------------------------
def _picamera2_cameras() -> tuple[Optional[int], str]:
    """(number of cameras picamera2 sees, or None if it cannot be imported; detail), in a child with a timeout
    (libcamera can block on a wedged camera)."""
    code = "import json\nfrom picamera2 import Picamera2\nprint(json.dumps(len(Picamera2.global_camera_info())))"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=CAMERA_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return None, f"picamera2 did not answer within {CAMERA_TIMEOUT_S:g} s"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        return None, "picamera2 not importable" if "ModuleNotFoundError" in last else f"picamera2: {last[:120]}"
    return int(proc.stdout.strip() or 0), ""


def check_cameras(cfg: Config, env: Environment) -> Check:
    from fallwatch.daemon.capture.sources import STREAM_SCHEMES, v4l2_cameras

    spec = cfg.camera.source.strip()
    v4l2 = v4l2_cameras(str(env.dev), str(env.sysfs / "class" / "video4linux"))
    if spec.startswith(STREAM_SCHEMES):
        return Check("ok", "camera", f"camera.source is the stream {spec.split('@')[-1]} (not checked)")
    if spec not in ("auto", "picamera2") and not spec.startswith(("v4l2:", "/dev/")):
        path = Path(spec).expanduser()
        if path.exists():
            return Check("ok", "camera", f"camera.source is the file {path}")
        return Check("fail", "camera", f"camera.source {spec}: no such file or folder", "set camera.source")
    count, why = _picamera2_cameras() if spec in ("auto", "picamera2") else (None, "")
    found = ([f"{count} Pi camera(s) via picamera2"] if count else []) + v4l2
    text = ", ".join(found) if found else "no camera found"
    if spec == "picamera2" and not count:
        return Check(
            "fail",
            "camera",
            f"camera.source picamera2: {why or 'no Pi camera found'}",
            "connect the camera ribbon; apt install python3-picamera2; venv with --system-site-packages",
        )
    if spec.startswith(("v4l2:", "/dev/")):
        dev = spec[len("v4l2:") :] if spec.startswith("v4l2:") else spec
        if not Path(dev or "/dev/video0").exists():
            return Check(
                "fail",
                "camera",
                f"camera.source {spec}: {dev} does not exist ({text})",
                "plug the camera in or set camera.source",
            )
        return Check("ok", "camera", f"camera.source {spec}; found: {text}")
    if not found:
        return Check(
            "fail",
            "camera",
            f"camera.source auto: no camera found ({why or 'no Pi camera'}; no /dev/video* camera)",
            "connect a camera, or set camera.source",
        )
    return Check("ok", "camera", f"camera.source {spec}; found: {text}")


def check_models(cfg: Config, model_dir: Path, tpu_library: bool) -> Check:
    from fallwatch.pose.fetch import MISMATCH, MISSING, configured_models, model_status
    from fallwatch.pose.models import MODELS

    required, tpu = configured_models(cfg.pose.detector, cfg.pose.estimator, cfg.pose.backend)
    status = {name: model_status(MODELS[name], model_dir) for name in [*required, *tpu]}
    bad = [n for n in required if status[n] in (MISSING, MISMATCH)]
    if bad:
        what = ", ".join(f"{n} ({'missing' if status[n] == MISSING else 'fails its sha256'})" for n in bad)
        return Check("fail", "models", f"in {model_dir}: {what}", "fallwatch models fetch " + " ".join(bad))
    absent = [n for n in tpu if status[n] in (MISSING, MISMATCH)]
    text = f"{', '.join(f'{n} {status[n]}' for n in status)} in {model_dir}"
    if absent and tpu_library:
        return Check(
            "warn",
            "models",
            f"{text}; the Edge TPU builds are not all usable",
            "fallwatch models fetch " + " ".join(absent),
        )
    return Check("ok", "models", text)


def check_mqtt(cfg: Config) -> Check:
    """A real connect with the configured credentials and TLS, CONNACK within MQTT_TIMEOUT_S."""
    m = cfg.mqtt
    if not m.enabled:
        return Check("ok", "mqtt", "disabled (mqtt.enabled: false)")
    where = f"{m.host}:{m.port}" + (" (TLS)" if m.tls.enabled else "") + (f" as {m.username}" if m.username else "")
    try:
        socket.create_connection((m.host, m.port), timeout=MQTT_TIMEOUT_S).close()
    except OSError as exc:
        return Check(
            "fail",
            "mqtt",
            f"cannot reach the broker at {where}: {exc.strerror or exc}",
            "start the broker or correct mqtt.host/mqtt.port",
        )
    import paho.mqtt.client as mqtt
    from fallwatch.daemon.mqtt.link.connection import MqttError, password_of
    from paho.mqtt.enums import CallbackAPIVersion

    done = threading.Event()
    answer: dict[str, Any] = {}

    def on_connect(client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None) -> None:
        answer["rc"] = reason_code
        done.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"fallwatch-doctor-{os.getpid()}",
        protocol=mqtt.MQTTv5 if m.protocol == "5" else mqtt.MQTTv311,
    )
    client.on_connect = on_connect
    try:
        if m.username:
            client.username_pw_set(m.username, password_of(m))
        if m.tls.enabled:
            import ssl

            client.tls_set(
                ca_certs=m.tls.ca_certs, certfile=m.tls.certfile, keyfile=m.tls.keyfile, cert_reqs=ssl.CERT_REQUIRED
            )
            client.tls_insecure_set(m.tls.insecure)
        client.connect_timeout = MQTT_TIMEOUT_S
        # TCP bounded by connect_timeout; the TLS handshake by the socket timeout paho sets from keepalive
        client.connect(m.host, m.port, keepalive=int(MQTT_TIMEOUT_S))
        client.loop_start()
        answered = done.wait(MQTT_TIMEOUT_S)
    except MqttError as exc:
        return Check("fail", "mqtt", str(exc), "correct the setting it names")
    except (OSError, ValueError) as exc:
        return Check("fail", "mqtt", f"{where}: {exc}", "check mqtt.tls and the broker's certificate")
    finally:
        client.disconnect()
        client.loop_stop()
    if not answered:
        return Check(
            "fail",
            "mqtt",
            f"{where}: no CONNACK within {MQTT_TIMEOUT_S:g} s",
            "is it an MQTT broker on that port (TLS on the TLS port)?",
        )
    rc = answer["rc"]
    if getattr(rc, "is_failure", False):
        return Check(
            "fail", "mqtt", f"{where}: the broker refused the connection ({rc})", "check mqtt.username and the password"
        )
    return Check("ok", "mqtt", f"connected to {where}")


def _listener(port: int, proc: Path) -> str:
    """Which process listens on TCP ``port`` ("python3 (pid 123)"), as far as /proc tells this user."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    for pid_dir in proc.glob("[0-9]*"):
        try:
            for fd in (pid_dir / "fd").iterdir():
                if os.readlink(fd).removeprefix("socket:[").removesuffix("]") in inodes:
                    comm = (pid_dir / "comm").read_text().strip()
                    return f"{comm} (pid {pid_dir.name})"
        except OSError:
            continue
    return "another process (not visible to this user)"


def check_debug_bind(cfg: Config, proc: Path = Path("/proc")) -> Check:
    d = cfg.debug
    if not d.enabled:
        return Check("ok", "debug bind", "disabled (debug.enabled: false)")
    host, port = d.bind.rsplit(":", 1)
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the debug server does
            s.bind(infos[0][4])
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            who = _listener(int(port), proc)
            return Check(
                "warn" if who.startswith("fallwatch") else "fail",
                "debug bind",
                f"{d.bind} is in use by {who}",
                "stop it or set debug.bind to a free port"
                if not who.startswith("fallwatch")
                else "the daemon is probably running already (systemctl status fallwatch)",
            )
        return Check("fail", "debug bind", f"cannot bind {d.bind}: {exc.strerror or exc}", "correct debug.bind")
    return Check("ok", "debug bind", f"{d.bind} is free")
