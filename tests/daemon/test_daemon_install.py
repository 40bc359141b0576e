"""install.sh's decisions, run on any machine: the venv's numpy constraint, the Coral's matched pair and its sha256
pins, the argument handling (every case here stops before the root check: nothing is installed), shellcheck.

The installer itself is proven on emulated arm64 trixie and bookworm by `make pi-test` (tests/pi/pi_test.sh)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

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
BOOKWORM_DEB = "libedgetpu1-max_16.0tf2.17.1-1.bookworm_arm64.deb"
TRIXIE_DEB = "libedgetpu1-std_16.0tf2.19.1-1.trixie_arm64.deb"


def plan(arch: str, pytag: str, *given: str) -> list[list[str]]:
    result = lib(" ".join(["coral_plan", arch, pytag, *given]))
    assert result.returncode == 0, result.stderr
    return [line.split() for line in result.stdout.splitlines()]


def test_bookworm_pairs_feranicks_tf_2_17_1_library_with_pypis_tflite_runtime_2_14_0_both_pinned() -> None:
    (library, runtime) = plan("aarch64", "cp311")
    assert library == [
        "library",
        BOOKWORM_DEB,
        f"https://github.com/feranick/libedgetpu/releases/download/16.0TF2.17.1-1/{BOOKWORM_DEB}",
        "https://api.github.com/repos/feranick/libedgetpu/releases/tags/16.0TF2.17.1-1",
        "eab8aa4576b4dbf738135d8094f32270b24117f77147d25cbe0f49d0144d85f2",
        "pinned",
    ]
    kind, dist, version, wheel, sha, source = runtime
    assert (kind, dist, version, source) == ("runtime", "tflite-runtime", "2.14.0", "pinned")
    assert wheel == "tflite_runtime-2.14.0-cp311-cp311-manylinux_2_34_aarch64.whl" and SHA256.match(sha)


def test_trixie_pairs_the_tf_2_19_1_library_whose_sha256_comes_from_github_with_pypis_litert() -> None:
    (library, runtime) = plan("aarch64", "cp313")
    assert library[:4] == [
        "library",
        TRIXIE_DEB,
        f"https://github.com/feranick/libedgetpu/releases/download/16.0TF2.19.1-1/{TRIXIE_DEB}",
        "https://api.github.com/repos/feranick/libedgetpu/releases/tags/16.0TF2.19.1-1",
    ]
    assert library[4:] == ["-", "github"]  # no third party published it: GitHub's digest, fetched at install time
    kind, dist, version, wheel, sha, source = runtime
    assert (kind, dist, version, source) == ("runtime", "ai-edge-litert", "2.2.0", "pinned")
    assert wheel == "ai_edge_litert-2.2.0-cp313-cp313-manylinux_2_27_aarch64.whl" and SHA256.match(sha)


def test_the_pairs_agree_with_what_doctor_calls_matched() -> None:
    from fallwatch.pose import edgetpu_stack

    for pytag in ("cp311", "cp313"):
        library, runtime = plan("aarch64", pytag)
        name, version, _ = library[1].split("_")  # libedgetpu1-max, 16.0tf2.17.1-1.bookworm, arm64.deb
        package = name, version.rsplit(".", 1)[0]
        module = runtime[1].replace("-", "_")
        assert edgetpu_stack.stack_matches(package, module, runtime[2]) is True, (package, runtime)


def test_a_given_sha256_overrides_the_pin_and_githubs_digest() -> None:
    for pytag, deb in (("cp311", BOOKWORM_DEB), ("cp313", TRIXIE_DEB)):
        library, _ = plan("aarch64", pytag, f"{deb}={'ab' * 32}")
        assert library[4:] == ["ab" * 32, "override"]


def test_the_github_api_can_be_pointed_elsewhere_for_the_test_only() -> None:
    result = lib('FALLWATCH_GITHUB_API=https://127.0.0.1:1; . "$0"; coral_plan aarch64 cp313')
    assert "https://127.0.0.1:1/repos/feranick/libedgetpu/releases/tags/16.0TF2.19.1-1" in result.stdout


@pytest.mark.parametrize(
    "arch, pytag, reason",
    [
        ("x86_64", "cp311", "pinned for x86_64"),
        ("armv7l", "cp311", "pinned for armv7l"),
        ("aarch64", "cp312", "no matched Edge TPU pair is pinned for Python 3.12"),
        ("aarch64", "cp314", "no matched Edge TPU pair is pinned for Python 3.14"),
        ("aarch64", "none", "unexpected Python tag 'none'"),
    ],
)
def test_no_matched_pair_means_the_cpu_path_in_one_line(arch: str, pytag: str, reason: str) -> None:
    lines = plan(arch, pytag)
    assert len(lines) == 1 and lines[0][0] == "cpu" and reason in " ".join(lines[0]), lines


def test_published_sha256_values_are_well_formed_and_unknown_files_have_none() -> None:
    for name in (
        BOOKWORM_DEB,
        "tflite_runtime-2.14.0-cp311-cp311-manylinux_2_34_aarch64.whl",
        "ai_edge_litert-2.2.0-cp313-cp313-manylinux_2_27_aarch64.whl",
    ):
        result = lib(f"published_sha256 {name}")
        assert result.returncode == 0 and SHA256.match(result.stdout.strip()), name
    assert lib(f"published_sha256 {TRIXIE_DEB}").returncode == 1  # GitHub's digest, not a pin
    assert lib("published_sha256 libedgetpu1-std_16.0_arm64.deb").returncode == 1


# -- GitHub's digest over TLS and the sha256 check (a real TLS server with a throwaway CA) -----------------------
@pytest.fixture(scope="module")
def release_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A stand-in of GitHub's release API over TLS: (base URL, CA bundle); it serves the files under root."""
    from testnet import SERVER_EXT, free_port, issue, make_ca

    tls = tmp_path_factory.mktemp("tls")
    make_ca(tls, "fallwatch test CA")
    issue(tls, "server", "127.0.0.1", SERVER_EXT)
    root = tmp_path_factory.mktemp("api")
    tag = root / "repos/feranick/libedgetpu/releases/tags"
    tag.mkdir(parents=True)
    assets = [
        {"name": TRIXIE_DEB, "digest": "sha256:" + "cd" * 32},
        {"name": "no-digest.deb", "digest": None},
    ]
    (tag / "16.0TF2.19.1-1").write_text(json.dumps({"assets": assets}))
    port = free_port()
    code = (
        "import functools, http.server, ssl, sys\n"
        "h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])\n"
        "s = http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), h)\n"
        "c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(sys.argv[3], sys.argv[4])\n"
        "s.socket = c.wrap_socket(s.socket, server_side=True); s.serve_forever()\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", code, str(port), str(root), str(tls / "server.crt"), str(tls / "server.key")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"https://127.0.0.1:{port}", tls / "ca.crt"
    finally:
        server.terminate()
        server.wait(10)


def digest(api: str, ca: Path, name: str, path: str = "16.0TF2.19.1-1") -> subprocess.CompletedProcess[str]:
    url = f"{api}/repos/feranick/libedgetpu/releases/tags/{path}"
    return lib(f"SSL_CERT_FILE={ca} github_asset_digest {url} {name}")


def test_githubs_digest_is_read_over_tls(release_api: tuple[str, Path]) -> None:
    result = digest(*release_api, TRIXIE_DEB)
    assert result.returncode == 0 and result.stdout == "cd" * 32 + "\n", result


@pytest.mark.parametrize(
    "name, path, why",
    [
        ("other.deb", "16.0TF2.19.1-1", "gives no sha256 digest for other.deb (no such asset)"),
        ("no-digest.deb", "16.0TF2.19.1-1", "gives no sha256 digest for no-digest.deb (digest: '')"),
        (TRIXIE_DEB, "no-such-tag", "HTTP Error 404"),
    ],
)
def test_no_digest_is_one_line_and_a_failure(release_api: tuple[str, Path], name: str, path: str, why: str) -> None:
    result = digest(*release_api, name, path)
    assert result.returncode == 1 and result.stdout.count("\n") == 1 and why in result.stdout, result


def test_an_untrusted_certificate_or_plain_http_gives_no_digest(release_api: tuple[str, Path]) -> None:
    api, _ = release_api
    untrusted = digest(api, Path("/nonexistent-ca.crt"), TRIXIE_DEB)
    assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stdout, untrusted
    plain = lib(f"github_asset_digest {api.replace('https', 'http')}/x {TRIXIE_DEB}")
    assert plain.returncode == 1 and "must come over TLS" in plain.stdout


def test_check_sha256_passes_the_right_file_and_names_a_mismatch_in_one_line(tmp_path: Path) -> None:
    deb = tmp_path / TRIXIE_DEB
    deb.write_bytes(b"the stand-in")
    right = hashlib.sha256(b"the stand-in").hexdigest()
    assert lib(f"check_sha256 {deb} {right}").returncode == 0
    wrong = lib(f"check_sha256 {deb} {'cd' * 32}")
    assert wrong.returncode == 1 and wrong.stdout == f"{TRIXIE_DEB} has sha256 {right}, not the expected {'cd' * 32}\n"


def fetch(plan: list[str], tmp_path: Path, ca: Path, source: Path) -> subprocess.CompletedProcess[str]:
    """coral_fetch on a plan, the library taken from ``source`` (install.sh --coral-from); prints its variables."""
    script = (
        f"SSL_CERT_FILE={ca}; export SSL_CERT_FILE; "
        f'if coral_fetch {tmp_path / "fetched"} {source} {sys.executable} <<<"$PLAN"; '
        'then echo "ok $LIB_DEB $LIB_SUM $LIB_SOURCE"; else echo "refused: $CORAL_WHY"; fi'
    )
    return subprocess.run(
        ["bash", "-c", f'set -euo pipefail; . "$0"; {script}', str(LIB)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PLAN": "\n".join(plan)},
    )


def test_the_library_is_fetched_and_checked_against_githubs_digest(
    release_api: tuple[str, Path], tmp_path: Path
) -> None:
    api, ca = release_api
    source = tmp_path / "debs"
    source.mkdir()
    (source / TRIXIE_DEB).write_bytes(b"stand-in")
    good = hashlib.sha256(b"stand-in").hexdigest()
    tags = f"{api}/repos/feranick/libedgetpu/releases/tags"
    line = f"library {TRIXIE_DEB} https://unused/{TRIXIE_DEB} {tags}/16.0TF2.19.1-1"
    # the served digest is "cd"*32: the stand-in does not match it, and is refused in one line
    result = fetch([f"{line} - github"], tmp_path, ca, source)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"fallwatch install: GitHub's published sha256 of {TRIXIE_DEB}: {'cd' * 32} (from {tags}/16.0TF2.19.1-1)",
        f"fallwatch install: took {TRIXIE_DEB} from {source}",
        f"refused: {TRIXIE_DEB} has sha256 {good}, not the expected {'cd' * 32}",
    ]
    # with the right sha256 (here an override: the stand-in's own) it passes, and is not asked of GitHub
    result = fetch([f"{line} {good} override"], tmp_path, ca, source)
    assert result.stdout.splitlines()[-2:] == [
        f"fallwatch install: {TRIXIE_DEB}: sha256 {good} matches (override)",
        f"ok {TRIXIE_DEB} {good} override",
    ]
    assert (tmp_path / "fetched" / TRIXIE_DEB).read_bytes() == b"stand-in"
    # no digest to be had, or no file where it was said to be: refused before anything else is fetched
    missing = fetch([f"{line.replace('16.0TF2.19.1-1', 'no-such-tag')} - github"], tmp_path, ca, source)
    assert missing.stdout.startswith("refused: could not read ") and "HTTP Error 404" in missing.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    absent = fetch([f"{line} {good} pinned", "runtime x 1 x.whl " + "ab" * 32 + " pinned"], tmp_path, ca, empty)
    assert absent.stdout == f"refused: {TRIXIE_DEB} is not in {empty}\n"


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
        (["--coral-from"], "--coral-from needs a directory"),
        (["--coral-from", "/nonexistent/debs"], "--coral-from /nonexistent/debs: no such directory"),
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
