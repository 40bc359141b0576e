"""The system: the OS, the board and its USB power, Python."""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Optional

from fallwatch.daemon.cli.admin.doctor.report import Check, Environment

# USB power, from Raspberry Pi's documentation: "Power supply" (raspberrypi.com/documentation/computers/
# raspberry-pi.html#power-supply: the USB ports of a Pi 4, 400 and 3B/3B+ give 1.2 A in all; a Pi 5 gives 1.6 A
# with a 5 A USB-PD supply and 600 mA otherwise) and config.txt's `usb_max_current_enable` (raspberrypi.com/
# documentation/computers/config_txt.html: on a Pi 5, 1 lifts the 600 mA limit for a supply that does not
# negotiate 5 A). The Pi 5 firmware leaves what it negotiated in the device tree, chosen/power/max_current and
# usb_max_current_enable (big-endian u32). A Coral USB Accelerator draws up to 900 mA (a USB 3 port's budget).
CORAL_MAX_MA = 900
PI5_USB_LIMITED_MA = 600


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
