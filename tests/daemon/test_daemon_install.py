"""install.sh's decisions, run on any machine: the venv's numpy constraint, the Coral's matched pair and its sha256
pins, the argument handling (every case here stops before the root check: nothing is installed), shellcheck.

The installer itself is proven on emulated arm64 trixie and bookworm by `make pi-test` (tests/pi/pi_test.sh)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "systemd" / "install.sh"
LIB = REPO / "systemd" / "install-lib.sh"
PI_TEST = REPO / "tests" / "pi" / "pi_test.sh"
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def lib(call: str) -> subprocess.CompletedProcess[str]:
    """Run one function of install-lib.sh in a fresh bash."""
    return subprocess.run(
        ["bash", "-c", f'set -euo pipefail; . "$0"; {call}', str(LIB)], capture_output=True, text=True, timeout=30
    )


def install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )


# -- numpy: keep the system's major version ---------------------------------------------------------------------
@pytest.mark.parametrize("system", ["1.24.2", "1.26.4", "2.2.4", "2.3.0rc1", "3.0.0"])
def test_numpy_constraint_keeps_the_system_major(system: str) -> None:
    result = lib(f"numpy_constraint {system}")
    assert result.returncode == 0, result.stderr
    req = Requirement(result.stdout.strip())
    major = int(system.split(".")[0])
    assert req.name == "numpy"
    # The system's own numpy satisfies it (pip then keeps apt's), the neighbouring majors do not.
    assert req.specifier.contains(system, prereleases=True)
    assert req.specifier.contains(f"{major}.99.0")
    assert not req.specifier.contains(f"{major + 1}.0.0")
    assert not req.specifier.contains(f"{major - 1}.99.0")


def test_numpy_constraint_for_bookworm_and_trixie() -> None:
    # bookworm's apt numpy 1.24 (opencv-python-headless 5 would pull numpy 2); trixie's numpy 2.2 (no numpy<2 for 3.13).
    assert lib("numpy_constraint 1:1.24.2").returncode == 1  # a dpkg version (epoch) is not what it takes
    assert lib("numpy_constraint 1.24.2").stdout == "numpy>=1,<2\n"
    assert lib("numpy_constraint 2.2.4").stdout == "numpy>=2,<3\n"


def test_no_system_numpy_means_no_constraint_and_garbage_is_refused() -> None:
    empty = lib('numpy_constraint ""')
    assert empty.returncode == 0 and empty.stdout == ""
    for bad in ("abc", "v2.0", ".1"):
        assert lib(f"numpy_constraint {bad}").returncode == 1, bad


# -- the Coral's matched pair -----------------------------------------------------------------------------------
def plan(arch: str, pytag: str, *given: str) -> list[str]:
    result = lib(" ".join(["coral_plan", arch, pytag, *given]))
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_coral_pair_is_feranicks_libedgetpu_for_tf_2_17_1_with_tflite_runtime_2_17_1() -> None:
    result = lib("coral_pair aarch64 cp313")
    assert result.returncode == 0, result.stderr
    (deb, deb_url), (wheel, wheel_url) = (line.split() for line in result.stdout.splitlines())
    assert deb == "libedgetpu1-max_16.0tf2.17.1-1.bookworm_arm64.deb"
    assert deb_url == f"https://github.com/feranick/libedgetpu/releases/download/16.0TF2.17.1-1/{deb}"
    assert wheel == "tflite_runtime-2.17.1-cp313-cp313-linux_aarch64.whl"
    assert wheel_url == f"https://github.com/feranick/TFlite-builds/releases/download/v2.17.1/{wheel}"


def test_a_pinned_pair_is_installed_whole_with_its_sha256() -> None:
    lines = plan("aarch64", "cp312")  # the one Python for which both files have a published sha256
    assert len(lines) == 2 and all(line.startswith("asset ") for line in lines), lines
    for line in lines:
        _, name, url, sha = line.split()
        assert url.endswith("/" + name) and SHA256.match(sha), line


@pytest.mark.parametrize("pytag", ["cp311", "cp313"])
def test_an_asset_without_a_published_sha256_is_refused_in_one_line(pytag: str) -> None:
    # bookworm (3.11) and trixie (3.13): no published sha256 was found for these wheels, so nothing is downloaded
    # unchecked, and the library is not installed alone either (it would meet LiteRT, which it was not built for).
    lines = plan("aarch64", pytag)
    assert len(lines) == 1 and lines[0].startswith("cpu refusing tflite_runtime-2.17.1-"), lines
    assert f"{pytag}-{pytag}-linux_aarch64.whl" in lines[0] and "no published sha256" in lines[0]


def test_a_sha256_the_user_checked_completes_the_pair() -> None:
    wheel = "tflite_runtime-2.17.1-cp311-cp311-linux_aarch64.whl"
    lines = plan("aarch64", "cp311", f"{wheel}={'ab' * 32}")
    assert [line.split()[1] for line in lines] == ["libedgetpu1-max_16.0tf2.17.1-1.bookworm_arm64.deb", wheel]
    assert lines[1].split()[3] == "ab" * 32


@pytest.mark.parametrize(
    "arch, pytag, reason",
    [
        ("x86_64", "cp311", "pinned for x86_64"),
        ("armv7l", "cp311", "pinned for armv7l"),
        ("aarch64", "cp310", "no tflite_runtime 2.17.1 build for Python 3.10"),
        ("aarch64", "cp314", "no tflite_runtime 2.17.1 build for Python 3.14"),
    ],
)
def test_no_matched_pair_means_the_cpu_path_in_one_line(arch: str, pytag: str, reason: str) -> None:
    lines = plan(arch, pytag)
    assert len(lines) == 1 and lines[0].startswith("cpu ") and reason in lines[0], lines


def test_published_sha256_values_are_well_formed_and_unknown_files_have_none() -> None:
    for name in (
        "libedgetpu1-max_16.0tf2.17.1-1.bookworm_arm64.deb",
        "tflite_runtime-2.17.1-cp312-cp312-linux_aarch64.whl",
    ):
        result = lib(f"published_sha256 {name}")
        assert result.returncode == 0 and SHA256.match(result.stdout.strip()), name
    assert lib("published_sha256 libedgetpu1-std_16.0_arm64.deb").returncode == 1


def test_install_never_uses_corals_tf_2_5_library_nor_the_unrelated_pypi_pycoral() -> None:
    text = INSTALL.read_text() + LIB.read_text()
    assert "packages.cloud.google.com" not in text and "coral-edgetpu-stable" not in text
    assert "apt-get install -y libedgetpu1-std" not in text
    assert not re.search(r"pip[^\n]*install[^\n]*pycoral", text)


# -- argument handling (all of these exit before the root check) ------------------------------------------------
def test_help_names_the_modes() -> None:
    result = install("--help")
    assert result.returncode == 0
    for option in ("--with-coral", "--no-systemd", "--models-from", "bookworm", "trixie"):
        assert option in result.stdout, option


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bogus"], "unknown option --bogus"),
        (["--models-from"], "--models-from needs a directory"),
        (["--models-from", "/nonexistent/models"], "--models-from /nonexistent/models: no such directory"),
        (["--source", "/nonexistent/src"], "--source /nonexistent/src: no such directory"),
        (["--coral-sha256", "x.whl=1234"], "--coral-sha256 x.whl=1234: expected FILE=SHA256"),
        (["--coral-sha256"], "--coral-sha256 needs FILE=SHA256"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = install(*args)
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_no_models_and_models_from_exclude_each_other(tmp_path: Path) -> None:
    result = install("--no-models", "--models-from", str(tmp_path))
    assert result.returncode == 2 and "exclude each other" in result.stderr


def test_the_no_systemd_mode_installs_the_unit_and_stops_before_any_systemctl() -> None:
    # (Proven for real by `make pi-test`, where install.sh runs in a chroot without systemd.)
    lines = [line.strip() for line in INSTALL.read_text().splitlines()]
    unit = lines.index('install -m 0644 "$SRC/systemd/fallwatch.service" "$UNIT"')
    guard = lines.index('if [ "$SYSTEMD" -eq 0 ]; then', unit)
    leave = lines.index("exit 0", guard)
    commands = [n for n, line in enumerate(lines) if line.startswith("systemctl ")]
    assert commands and all(n > leave for n in commands if n > unit), commands
    mosquitto = lines.index(
        'systemctl enable --now mosquitto.service >/dev/null || die "could not enable and start mosquitto.service"'
    )
    assert lines[mosquitto - 1] == 'if [ "$SYSTEMD" -eq 1 ]; then'
    assert "if [ -d /run/systemd/system ]; then SYSTEMD=1; else" in lines  # automatic where systemd does not run


def test_pi_test_rejects_unknown_arguments_before_needing_root() -> None:
    result = subprocess.run(["bash", str(PI_TEST), "--bogus"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "unknown argument --bogus" in result.stderr


@pytest.mark.parametrize("script", [INSTALL, LIB, PI_TEST], ids=lambda p: p.name)
def test_shellcheck_clean(script: Path) -> None:
    tool = shutil.which("shellcheck")
    if not tool:
        pytest.skip("shellcheck is not installed")
    result = subprocess.run(
        [tool, "-x", "-S", "info", str(script)], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stdout
