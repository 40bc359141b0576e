"""`fallwatch doctor`: a real broker (anonymous and with a password), an unreachable port, fake sysfs trees with a
Coral on USB 2 and USB 3, the fake libedgetpu segfaulting in the probe, a busy debug port, and the JSON output."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fallwatch.daemon.cli.admin import doctor
from fallwatch.daemon.cli.admin.doctor import Environment, run_checks
from fallwatch.pose import edgetpu_stack
from testnet import SERVER_EXT, free_port, issue, make_ca, tls_listener


def _config(tmp_path: Path, clip: Path, **sections) -> str:
    cfg = {
        "camera": {"source": str(clip)},
        "mqtt": {"enabled": False},
        "debug": {"bind": f"127.0.0.1:{free_port()}"},
        **sections,
    }
    path = tmp_path / "fallwatch.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture
def clip(data_dir: Path) -> Path:
    return data_dir / "gmdcsa24-dev" / "Subject 1" / "Fall" / "13.mp4"


@pytest.fixture
def no_tpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever this machine has, the library is not found (the CPU-only Pi)."""
    monkeypatch.setattr(edgetpu_stack, "find_library", lambda *args: None)


def _by_name(checks) -> dict:
    return {c.name: c for c in checks}


def _usb_tree(root: Path, vendor: str, product: str, speed: str) -> Path:
    dev = root / "bus" / "usb" / "devices" / "2-1"
    dev.mkdir(parents=True)
    (dev / "idVendor").write_text(vendor + "\n")
    (dev / "idProduct").write_text(product + "\n")
    (dev / "speed").write_text(speed + "\n")
    hub = root / "bus" / "usb" / "devices" / "usb2"
    hub.mkdir()
    (hub / "idVendor").write_text("1d6b\n")
    (hub / "idProduct").write_text("0003\n")
    return root


def test_coral_on_usb2_warns_and_on_usb3_is_ok(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_tpu) -> None:
    monkeypatch.setattr(doctor, "check_mqtt", lambda cfg: doctor.Check("ok", "mqtt", "not checked here"))
    usb2 = doctor.check_coral_usb(_usb_tree(tmp_path / "a", "1a6e", "089a", "480"), expected=True, must=False)
    assert usb2.status == "warn" and "not yet initialised" in usb2.detail and "480 Mb/s" in usb2.detail
    assert "USB 2" in usb2.detail and "USB 3" in usb2.fix
    usb3 = doctor.check_coral_usb(_usb_tree(tmp_path / "b", "18d1", "9302", "5000"), expected=True, must=False)
    assert usb3.status == "ok" and "initialised" in usb3.detail and "5000 Mb/s" in usb3.detail
    none = doctor.check_coral_usb(tmp_path / "empty", expected=False, must=False)
    assert none.status == "ok" and "none on the bus" in none.detail
    forced = doctor.check_coral_usb(tmp_path / "empty", expected=True, must=True)
    assert forced.status == "fail" and forced.fix
    # a Coral on the bus without the Edge TPU library: worth a warning with the install command
    checks = _by_name(run_checks(None, None, Environment(sysfs=tmp_path / "b")))
    assert checks["edgetpu library"].status == "warn" and "a Coral is plugged in" in checks["edgetpu library"].detail
    assert checks["coral usb"].status == "ok"


def test_library_versions_and_whether_they_match(tmp_path: Path) -> None:
    assert edgetpu_stack.library_tf_version("16.0") == "2.5"
    assert edgetpu_stack.library_tf_version("16.0tf2.17.1-1") == "2.17.1"
    assert edgetpu_stack.library_tf_version("15.9") is None
    assert edgetpu_stack.stack_matches(("libedgetpu1-std", "16.0tf2.17.1-1"), "tflite_runtime", "2.17.1") is True
    assert edgetpu_stack.stack_matches(("libedgetpu1-std", "16.0"), "tflite_runtime", "2.17.1") is False
    assert edgetpu_stack.stack_matches(("libedgetpu1-std", "16.0"), "ai_edge_litert", "2.3.0") is False
    assert edgetpu_stack.stack_matches(None, "tflite_runtime", "2.17.1") is None
    # the package as dpkg reports it, through a stand-in dpkg-query
    fake = tmp_path / "dpkg-query"
    fake.write_text(
        '#!/bin/sh\nfor a; do p="$a"; done\n'
        '[ "$p" = libedgetpu1-max ] && { printf "install ok installed|16.0"; exit 0; }\nexit 1\n'
    )
    fake.chmod(0o755)
    package = edgetpu_stack.library_package([str(fake)])
    assert package == ("libedgetpu1-max", "16.0")
    check = doctor.check_library(tmp_path / "libedgetpu.so.1", package, must=False)
    assert check.status == "warn" and "libedgetpu1-max libedgetpu 16.0 (TF 2.5)" in check.detail
    assert "NOT built for each other" in check.detail and check.fix == edgetpu_stack.FIX
    assert doctor.check_library(tmp_path / "libedgetpu.so.1", package, must=True).status == "fail"


def test_broker_checks_connect_for_real(mosquitto, mosquitto_factory, tmp_path: Path, clip: Path, no_tpu) -> None:
    ok = _by_name(run_checks(_config(tmp_path, clip, mqtt={"host": "127.0.0.1", "port": mosquitto.port})))
    assert ok["mqtt"].status == "ok" and ok["mqtt"].detail == f"connected to 127.0.0.1:{mosquitto.port}"
    # with credentials: the wrong password is refused, the right one connects
    pwfile = tmp_path / "mosquitto.passwd"
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    subprocess.run([passwd, "-b", "-c", str(pwfile), "fallwatch", "s3cret"], check=True, capture_output=True)
    pwfile.chmod(0o600)
    broker = mosquitto_factory(f"allow_anonymous false\npassword_file {pwfile}\n").start()
    mqtt = {"host": "127.0.0.1", "port": broker.port, "username": "fallwatch", "password": "wrong"}
    wrong = _by_name(run_checks(_config(tmp_path, clip, mqtt=mqtt)))["mqtt"]
    assert wrong.status == "fail" and "refused" in wrong.detail and "password" in wrong.fix
    right = _by_name(run_checks(_config(tmp_path, clip, mqtt={**mqtt, "password": "s3cret"})))["mqtt"]
    assert right.status == "ok" and "as fallwatch" in right.detail


def test_unreachable_broker_fails_fast_with_one_clear_line(tmp_path: Path, clip: Path, no_tpu) -> None:
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    checks = run_checks(_config(tmp_path, clip, mqtt={"host": "127.0.0.1", "port": port}))
    elapsed = time.monotonic() - t0
    mqtt = _by_name(checks)["mqtt"]
    assert mqtt.status == "fail"
    assert mqtt.line() == (
        f"fail  mqtt: cannot reach the broker at 127.0.0.1:{port}: Connection refused "
        "[fix: start the broker or correct mqtt.host/mqtt.port]"
    )
    assert elapsed < doctor.MQTT_TIMEOUT_S * 4  # bounded: nothing waits past its timeout


def test_segfaulting_tpu_is_reported_and_doctor_survives(
    fake_tpu, tpu_models: Path, tmp_path: Path, clip: Path
) -> None:
    fake_tpu("segv")
    checks = _by_name(run_checks(_config(tmp_path, clip), str(tpu_models)))
    probe = checks["edgetpu probe"]
    assert probe.status == "warn"  # backend auto: the daemon still runs, on the CPU
    assert "crashed: " in probe.line() and "the Edge TPU delegate crashed (SIGSEGV)" in probe.detail
    assert probe.fix == edgetpu_stack.FIX
    assert checks["edgetpu library"].status == "warn"  # found, but its build cannot be told
    forced = _by_name(
        run_checks(_config(tmp_path, clip, pose={"backend": "edgetpu", "estimator": "blazepose_full"}), str(tpu_models))
    )
    assert forced["edgetpu probe"].status == "fail"


def test_working_fake_tpu_reports_invoke_times(fake_tpu, tpu_models: Path, tmp_path: Path, clip: Path) -> None:
    fake_tpu("ok")
    probe = _by_name(run_checks(_config(tmp_path, clip), str(tpu_models)))["edgetpu probe"]
    assert probe.status == "ok" and "Edge TPU probe ok (ssd_mobilenet_v1_edgetpu " in probe.detail
    assert probe.detail.endswith(" ms)")


def test_busy_debug_port_names_the_listener(tmp_path: Path, clip: Path, no_tpu) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = _config(tmp_path, clip)
        cfg = yaml.safe_load(Path(path).read_text())
        cfg["debug"]["bind"] = f"127.0.0.1:{port}"
        Path(path).write_text(yaml.safe_dump(cfg))
        check = _by_name(run_checks(path))["debug bind"]
    assert check.status == "fail" and f"127.0.0.1:{port} is in use by " in check.detail
    assert f"(pid {os.getpid()})" in check.detail
    free = _by_name(run_checks(path))["debug bind"]
    assert free.status == "ok" and free.detail.endswith("is free")


def test_cameras_and_models(tmp_path: Path, clip: Path, model_dir: Path, no_tpu) -> None:
    dev, sysfs = tmp_path / "dev", tmp_path / "sys"
    (dev).mkdir()
    (dev / "video0").touch()
    v4l = sysfs / "class" / "video4linux" / "video0"
    v4l.mkdir(parents=True)
    (v4l / "name").write_text("USB Camera\n")
    (v4l / "index").write_text("0\n")
    env = Environment(sysfs=sysfs, dev=dev)
    checks = _by_name(
        run_checks(_config(tmp_path, clip, camera={"source": "v4l2:" + str(dev / "video0")}), str(model_dir), env)
    )
    assert checks["camera"].status == "ok" and str(dev / "video0") in checks["camera"].detail
    assert checks["models"].status == "ok" and "ssd_mobilenet_v1 ok" in checks["models"].detail
    missing = _by_name(run_checks(_config(tmp_path, tmp_path / "no-such.mp4"), str(tmp_path), env))
    assert missing["camera"].status == "fail" and "no such file" in missing["camera"].detail
    assert missing["models"].status == "fail" and missing["models"].fix.startswith("fallwatch models fetch")
    assert missing["config"].status == "ok"


def test_bad_config_is_a_fail_line_and_the_rest_still_runs(tmp_path: Path, no_tpu) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("pose:\n  backend: gpu\n")
    checks = run_checks(str(bad))
    config = _by_name(checks)["config"]
    assert config.status == "fail" and "backend" in config.detail
    assert len(checks) == 14 and _by_name(checks)["models"].status in ("ok", "fail")


def test_cli_json_shape_exit_code_and_bounded_time(
    fake_edgetpu_dir: Path, tpu_models: Path, tmp_path: Path, clip: Path
) -> None:
    config = _config(tmp_path, clip, mqtt={"host": "127.0.0.1", "port": free_port()})
    env = dict(os.environ, LD_LIBRARY_PATH=str(fake_edgetpu_dir), FAKE_EDGETPU="hang")
    cmd = [
        sys.executable,
        "-m",
        "fallwatch.daemon.cli.main",
        "doctor",
        "--config",
        config,
        "--model-dir",
        str(tpu_models),
    ]
    Path(config).write_text(Path(config).read_text() + "pose:\n  edgetpu_probe_timeout_s: 2\n")
    # Both forms at once: each waits out the hung probe's 2 s.
    as_json = subprocess.Popen(cmd + ["--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    as_text = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = as_json.communicate(timeout=120)
    assert as_json.returncode == 1, err  # the broker is unreachable: a fail
    report = json.loads(out)
    assert set(report) == {"checks", "summary"}
    assert all(set(c) == {"status", "name", "detail", "fix"} for c in report["checks"])
    assert all(c["status"] in ("ok", "warn", "fail") for c in report["checks"])
    names = [c["name"] for c in report["checks"]]
    assert names == [
        "os",
        "python",
        "config",
        "runtime ai_edge_litert",
        "runtime tflite_runtime",
        "edgetpu library",
        "coral usb",
        "board",
        "edgetpu crash marker",
        "edgetpu probe",
        "camera",
        "models",
        "mqtt",
        "debug bind",
    ]
    assert report["summary"]["fail"] == sum(c["status"] == "fail" for c in report["checks"]) >= 1
    probe = next(c for c in report["checks"] if c["name"] == "edgetpu probe")
    assert probe["detail"].startswith("hung: ") and "no answer in 2 s" in probe["detail"]
    out, _ = as_text.communicate(timeout=120)
    lines = out.splitlines()
    assert len(lines) == len(names) and as_text.returncode == 1
    assert all(line.split("  ", 1)[0].strip() in ("ok", "warn", "fail") for line in lines)


def test_tls_broker_with_the_right_ca_and_an_unknown_one(mosquitto_factory, tmp_path: Path, clip: Path, no_tpu) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    make_ca(pki, "doctor CA")
    issue(pki, "server", "localhost", SERVER_EXT)
    port = free_port()
    mosquitto_factory(tls_listener(port, {p.name: str(p) for p in pki.iterdir()}), port).start()
    mqtt = {"host": "127.0.0.1", "port": port, "tls": {"enabled": True, "ca_certs": str(pki / "ca.crt")}}
    ok = _by_name(run_checks(_config(tmp_path, clip, mqtt=mqtt)))["mqtt"]
    assert ok.status == "ok" and ok.detail == f"connected to 127.0.0.1:{port} (TLS)"
    unknown = _by_name(run_checks(_config(tmp_path, clip, mqtt={**mqtt, "tls": {"enabled": True}})))["mqtt"]
    assert unknown.status == "fail" and "CERTIFICATE_VERIFY_FAILED" in unknown.detail and "mqtt.tls" in unknown.fix


def test_the_pairs_install_sh_installs_are_matched_and_their_neighbours_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bookworm, trixie = ("libedgetpu1-max", "16.0tf2.17.1-1"), ("libedgetpu1-std", "16.0tf2.19.1-1")
    matches = edgetpu_stack.stack_matches
    # bookworm: feranick's TF 2.17.1 build with tflite_runtime 2.11.1 to 2.17.1 (PyPI's 2.14.0 is the one installed)
    assert [matches(bookworm, "tflite_runtime", v) for v in ("2.11.1", "2.14.0", "2.17.1")] == [True] * 3
    assert [matches(bookworm, "tflite_runtime", v) for v in ("2.10.0", "2.11.0", "2.18.0")] == [False] * 3
    assert matches(bookworm, "ai_edge_litert", "2.2.0") is False
    # trixie: the TF 2.19.1 build with ai_edge_litert 2.2.0 only
    assert matches(trixie, "ai_edge_litert", "2.2.0") is True
    assert matches(trixie, "ai_edge_litert", "2.3.0") is False and matches(trixie, "tflite_runtime", "2.19.1") is False
    # another rebuild: tflite_runtime of its own TensorFlow major.minor, as before
    assert matches(("libedgetpu1-std", "16.0tf2.16.1-1"), "tflite_runtime", "2.16.1") is True
    # doctor names the pair and says whether it is the matched one
    monkeypatch.setattr(edgetpu_stack, "runtime_versions", lambda: {"tflite_runtime": None, "ai_edge_litert": "2.2.0"})
    ok = doctor.check_library(tmp_path / "libedgetpu.so.1", trixie, must=False)
    assert ok.status == "ok", ok
    assert ok.detail.startswith("libedgetpu1-std libedgetpu 16.0tf2.19.1-1 (TF 2.19.1) at ")
    assert ok.detail.endswith("LiteRT 2.2.0: built for each other, the matched pair (library for LiteRT 2.2.0)")
    monkeypatch.setattr(edgetpu_stack, "runtime_versions", lambda: {"tflite_runtime": None, "ai_edge_litert": "2.3.0"})
    bad = doctor.check_library(tmp_path / "libedgetpu.so.1", trixie, must=False)
    assert bad.status == "warn" and "NOT built for each other" in bad.detail
    assert bad.detail.endswith("this library's matched runtime is LiteRT 2.2.0") and bad.fix == edgetpu_stack.FIX


def test_no_coral_while_the_tpu_is_expected_says_no_edge_tpu_found(tmp_path: Path) -> None:
    check = doctor.check_coral_usb(tmp_path / "empty", expected=True, must=False)
    assert check.status == "warn" and check.detail.startswith("no Edge TPU found: ")


def _device_tree(root: Path, model: str, power: dict[str, int] | None = None) -> Environment:
    """A /proc with the device tree a Raspberry Pi's firmware leaves: model (NUL-terminated) and, on a Pi 5,
    chosen/power/* as big-endian u32."""
    tree = root / "proc" / "device-tree"
    tree.mkdir(parents=True)
    (tree / "model").write_bytes(model.encode() + b"\0")
    for name, value in (power or {}).items():
        (tree / "chosen" / "power").mkdir(parents=True, exist_ok=True)
        (tree / "chosen" / "power" / name).write_bytes(value.to_bytes(4, "big"))
    return Environment(proc=root / "proc", sysfs=root / "sys")


def test_board_names_the_model_or_says_cleanly_that_there_is_none(tmp_path: Path) -> None:
    none = doctor.check_board(Environment(proc=tmp_path / "proc", sysfs=tmp_path / "sys"), coral=True)
    assert (
        none.status == "ok" and none.detail.startswith("no device-tree model (") and "not a Raspberry Pi" in none.detail
    )
    pi4 = _device_tree(tmp_path / "pi4", "Raspberry Pi 4 Model B Rev 1.4")
    assert doctor.check_board(pi4, coral=False) == doctor.Check("ok", "board", "Raspberry Pi 4 Model B Rev 1.4")
    with_coral = doctor.check_board(pi4, coral=True)
    assert with_coral.status == "ok" and "draws up to 900 mA" in with_coral.detail and "1.2 A" in with_coral.detail
    # the sysfs path of the same tree, where /proc/device-tree is not there
    sysfs = tmp_path / "sysfs-only" / "sys" / "firmware" / "devicetree" / "base"
    sysfs.mkdir(parents=True)
    (sysfs / "model").write_bytes(b"Raspberry Pi 3 Model B Plus Rev 1.3\0")
    env = Environment(proc=tmp_path / "sysfs-only" / "proc", sysfs=tmp_path / "sysfs-only" / "sys")
    assert doctor.check_board(env, coral=False).detail == "Raspberry Pi 3 Model B Plus Rev 1.3"


@pytest.mark.parametrize(
    "power, status, words",
    [
        ({"max_current": 5000, "usb_max_current_enable": 0}, "ok", "the supply negotiated 5000 mA"),
        ({"max_current": 3000, "usb_max_current_enable": 1}, "ok", "usb_max_current_enable=1"),
        ({"max_current": 3000, "usb_max_current_enable": 0}, "warn", "negotiated 3000 mA, so the USB ports give 600"),
        (None, "warn", "does not say what its supply negotiated"),
    ],
)
def test_a_pi_5_with_a_coral_is_told_about_usb_power(
    tmp_path: Path, power: dict[str, int] | None, status: str, words: str
) -> None:
    env = _device_tree(tmp_path, "Raspberry Pi 5 Model B Rev 1.0", power)
    check = doctor.check_board(env, coral=True)
    assert check.status == status and words in check.detail, check
    assert check.detail.startswith("Raspberry Pi 5 Model B Rev 1.0; a Coral USB Accelerator draws up to 900 mA")
    if status == "warn":
        assert "usb_max_current_enable=1" in check.fix and "5 A" in check.fix
    assert doctor.check_board(env, coral=False) == doctor.Check("ok", "board", "Raspberry Pi 5 Model B Rev 1.0")
