"""The systemd unit passes `systemd-analyze verify` and rates <= 4.5 in `systemd-analyze security`; install.sh
parses."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "fallwatch.service"
INSTALL = REPO / "systemd" / "install.sh"
EXEC_START = "/opt/fallwatch/venv/bin/fallwatch"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def analyze() -> str:
    found = shutil.which("systemd-analyze")
    if not found:
        pytest.skip("systemd-analyze is not installed")
    return found


def test_unit_declares_what_the_daemon_relies_on() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["WatchdogSec"] == ["30"] and s["Restart"] == ["on-failure"]
    assert s["ExecStart"] == [f"{EXEC_START} run --config /etc/fallwatch/fallwatch.yaml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["User"] == ["fallwatch"] and s["SupplementaryGroups"] == ["video plugdev"]
    assert s["StateDirectory"] == ["fallwatch"] and s["ConfigurationDirectory"] == ["fallwatch"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert s[key] == ["yes"], key
    assert s["ProtectSystem"] == ["strict"]
    # The camera, the Pi's DMA heaps / VideoCore, and the Coral (USB and PCIe) stay reachable.
    allowed = " ".join(s["DeviceAllow"])
    for device in ("char-video4linux", "char-media", "char-dma_heap", "/dev/vchiq", "char-usb_device", "/dev/apex_0"):
        assert device in allowed, device


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = analyze()
    # verify insists that ExecStart exists; point a copy at this checkout's installed entry point.
    entry = Path(sys.executable).with_name("fallwatch")
    if not entry.exists():
        entry = Path(shutil.which("true") or "/bin/true")
    unit = tmp_path / "fallwatch.service"
    unit.write_text(UNIT.read_text().replace(EXEC_START, str(entry)))
    result = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 0 and not problems, problems


def test_systemd_analyze_verify_only_complains_about_the_missing_binary() -> None:
    """The unit as shipped: the only complaint on a machine without /opt/fallwatch is ExecStart's binary."""
    tool = analyze()
    result = subprocess.run([tool, "verify", str(UNIT)], capture_output=True, text=True, timeout=60)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    if Path(EXEC_START).exists():
        assert result.returncode == 0 and not lines, lines
    else:
        assert lines == [f"fallwatch.service: Command {EXEC_START} is not executable: No such file or directory"]


def test_systemd_analyze_security_rates_ok() -> None:
    tool = analyze()
    result = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(UNIT)], capture_output=True, text=True, timeout=60
    )
    out = result.stdout + result.stderr
    if "offline" in out and ("unrecognized option" in out or "Unknown option" in out):
        pytest.skip("this systemd-analyze has no --offline")
    match = re.search(r"Overall exposure level for fallwatch\.service: ([\d.]+) (\w+)", out)
    assert match, out[-2000:]
    exposure, verdict = float(match.group(1)), match.group(2)
    assert exposure <= 4.5 and verdict == "OK", f"exposure {exposure} {verdict}"


def test_install_script_parses_and_is_guarded() -> None:
    bash = shutil.which("bash")
    assert bash
    result = subprocess.run([bash, "-n", str(INSTALL)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = INSTALL.read_text()
    # The promises of the issue, checked in the text: picamera2 from apt, a venv that sees it, the systemd extra,
    # models under /var/lib/fallwatch, an edited config never overwritten, the unit enabled.
    for needle in (
        "python3-picamera2",
        "--system-site-packages",
        "[systemd]",
        "/var/lib/fallwatch",
        "models fetch",
        "fallwatch.yaml.dist",
        "systemctl enable fallwatch.service",
        "set -euo pipefail",
    ):
        assert needle in text, needle
    # Not root: refuses with one clear line before touching anything.
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        result = subprocess.run([bash, str(INSTALL)], capture_output=True, text=True)
        assert result.returncode != 0 and "run as root" in result.stderr
    result = subprocess.run([bash, str(INSTALL), "--bogus"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown option --bogus" in result.stderr


def test_install_script_shellcheck_clean() -> None:
    tool = shutil.which("shellcheck")
    if not tool:
        pytest.skip("shellcheck is not installed")
    result = subprocess.run([tool, "-S", "warning", str(INSTALL)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_install_script_reports_failures_instead_of_skipping_them() -> None:
    # Under `set -e` a failure on the left of `&&` is ignored: `systemctl restart fallwatch && say started`
    # went on to print "done" (exit 0) after a service that did not start. Shown here, then checked in the text.
    demo = subprocess.run(
        ["bash", "-c", "set -euo pipefail; false && echo started; echo done"], capture_output=True, text=True
    )
    assert demo.returncode == 0 and demo.stdout == "done\n"
    for n, line in enumerate(INSTALL.read_text().splitlines(), 1):
        if not line.lstrip().startswith("#"):
            assert "&& say" not in line, f"install.sh:{n}: a failure here would pass unnoticed: {line.strip()}"
