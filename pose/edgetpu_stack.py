"""Which Edge TPU stack is installed: the TFLite runtimes, the libedgetpu build, and whether they were built for
each other.

Coral's own ``libedgetpu1-std``/``-max`` 16.0 was built against TensorFlow 2.5; runtimes from 2.12 on crash when
its delegate is applied (google-coral/edgetpu#812). Rebuilds such as feranick's carry the TensorFlow version in
their Debian version ("16.0tf2.17.1-1"); MATCHED_PAIRS lists the runtimes `install.sh --with-coral` pairs with them.
"""

from __future__ import annotations

import os
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Optional, Sequence

EDGETPU_LIBRARY = "libedgetpu.so.1"
EDGETPU_PACKAGES = ("libedgetpu1-std", "libedgetpu1-max")
FIX = "install the matched pair: sudo ./systemd/install.sh --with-coral"
# import name -> distribution name. The order is the preference for Edge TPU models: tflite_runtime is what
# `install.sh --with-coral` installs as the match of its libedgetpu; ai_edge_litert stays the CPU runtime.
RUNTIMES = {"tflite_runtime": "tflite-runtime", "ai_edge_litert": "ai-edge-litert"}
_LIBRARY_DIRS = (
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/arm-linux-gnueabihf",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/local/lib",
    "/usr/lib",
    "/lib",
)
_CORAL_TF = {"16.0": "2.5"}  # Coral's own builds and the TensorFlow they were built against


def runtime_versions() -> dict[str, Optional[str]]:
    """Installed version of each known runtime (None: not installed), from package metadata (nothing imported)."""
    out: dict[str, Optional[str]] = {}
    for module, dist in RUNTIMES.items():
        try:
            out[module] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[module] = None
    return out


def runtime_label(module: str, version: Optional[str] = None) -> str:
    """ "LiteRT 2.3.0" / "tflite_runtime 2.17.1"."""
    version = version if version is not None else runtime_versions().get(module)
    name = "LiteRT" if module == "ai_edge_litert" else module
    return f"{name} {version or '(version unknown)'}"


def _ld_so_conf_dirs(conf: Path = Path("/etc/ld.so.conf")) -> list[str]:
    """The directories the loader's cache covers, read from ld.so.conf and its includes (no ldconfig run)."""
    dirs: list[str] = []
    try:
        lines = conf.read_text().splitlines()
    except OSError:
        return dirs
    for line in (raw.split("#", 1)[0].strip() for raw in lines):
        if line.startswith("include "):
            for included in sorted(Path("/").glob(line.split(None, 1)[1].lstrip("/"))):
                dirs += _ld_so_conf_dirs(included)
        elif line:
            dirs.append(line)
    return dirs


def find_library(ld_library_path: Optional[str] = None) -> Optional[Path]:
    """Where the dynamic loader would find libedgetpu.so.1, looked up by file reads only (no library loaded, no
    process started: the CPU-only machine pays nothing); None if nowhere."""
    env = os.environ.get("LD_LIBRARY_PATH", "") if ld_library_path is None else ld_library_path
    for d in [p for p in env.split(":") if p] + _ld_so_conf_dirs() + list(_LIBRARY_DIRS):
        candidate = Path(d) / EDGETPU_LIBRARY
        if candidate.exists():
            return candidate
    return None


def library_package(dpkg_query: Sequence[str] = ("dpkg-query",)) -> Optional[tuple[str, str]]:
    """(package, version) of the installed Edge TPU library package, or None if dpkg knows none."""
    for package in EDGETPU_PACKAGES:
        try:
            proc = subprocess.run(
                [*dpkg_query, "-W", "-f", "${Status}|${Version}", package], capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.SubprocessError):
            return None
        status, _, version = proc.stdout.strip().partition("|")
        if proc.returncode == 0 and status.endswith(" installed") and version:
            return package, version
    return None


def library_tf_version(version: Optional[str]) -> Optional[str]:
    """The TensorFlow version a libedgetpu package version was built against: "16.0" -> "2.5",
    "16.0tf2.17.1-1" -> "2.17.1"; None if it does not say."""
    if not version:
        return None
    m = re.search(r"tf(\d+\.\d+(?:\.\d+)?)", version)
    if m:
        return m.group(1)
    return _CORAL_TF.get(version.split("-")[0].split("+")[0].split("~")[0])


def library_label(package: Optional[tuple[str, str]]) -> str:
    """ "libedgetpu 16.0 (TF 2.5)", or "libedgetpu (version unknown)"."""
    if package is None:
        return "libedgetpu (version unknown)"
    tf = library_tf_version(package[1])
    return f"libedgetpu {package[1]}" + (f" (TF {tf})" if tf else "")


# The pairs `install.sh --with-coral` installs (systemd/install-lib.sh gives the evidence for each): the TensorFlow
# version a libedgetpu rebuild was built against -> the runtime it is matched with and that runtime's versions
# known to work with it (inclusive).
MATCHED_PAIRS: dict[str, tuple[str, str, str]] = {
    "2.17.1": ("tflite_runtime", "2.11.1", "2.17.1"),  # bookworm; feranick's 16.0TF2.17.1-1 release notes
    "2.19.1": ("ai_edge_litert", "2.2.0", "2.2.0"),  # trixie; the version paired with 16.0TF2.19.1-1 in public
}


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def stack_matches(package: Optional[tuple[str, str]], module: str, version: Optional[str]) -> Optional[bool]:
    """True if the library was built for this runtime, False if not, None if the library's build is unknown.
    A rebuild of MATCHED_PAIRS matches its runtime in the versions listed there; another rebuild matches only
    tflite_runtime of its own TensorFlow major.minor (the one feranick builds it for)."""
    tf = library_tf_version(package[1]) if package else None
    if tf is None:
        return None
    if not version:
        return False
    if tf in MATCHED_PAIRS:
        paired, low, high = MATCHED_PAIRS[tf]
        return module == paired and _version_tuple(low) <= _version_tuple(str(version)) <= _version_tuple(high)
    return module == "tflite_runtime" and _major_minor(tf) == _major_minor(str(version))


def pair_label(package: Optional[tuple[str, str]]) -> str:
    """ "tflite_runtime 2.11.1 to 2.17.1": the runtime matched with this library, or "" if none is known."""
    tf = library_tf_version(package[1]) if package else None
    if tf not in MATCHED_PAIRS:
        return ""
    module, low, high = MATCHED_PAIRS[tf]
    return runtime_label(module, low if low == high else f"{low} to {high}")


def cpu_runtime() -> Optional[str]:
    """The runtime module that runs CPU models: LiteRT if installed, else tflite_runtime."""
    versions = runtime_versions()
    return next((m for m in reversed(list(RUNTIMES)) if versions[m]), None)


def tpu_runtime() -> Optional[str]:
    """The runtime module that runs Edge TPU models: the first of RUNTIMES that is installed."""
    versions = runtime_versions()
    return next((m for m in RUNTIMES if versions[m]), None)


def stack_label(module: Optional[str] = None, package: Optional[tuple[str, str]] = None) -> str:
    """ "libedgetpu 16.0 (TF 2.5) with LiteRT 2.3.0": the pair a reason names."""
    module = module or tpu_runtime() or "ai_edge_litert"
    package = package if package is not None else library_package()
    return f"{library_label(package)} with {runtime_label(module)}"
