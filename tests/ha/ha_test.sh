#!/usr/bin/env bash
# `make ha-test`: fallwatch against a real Home Assistant (PyPI homeassistant, in a Debian trixie chroot, since
# Home Assistant 2026.2 needs Python 3.13). Builds (or reuses) an amd64 trixie root filesystem with mmdebstrap,
# installs Home Assistant into a venv there, starts a mosquitto on the host's loopback and `hass` in the chroot
# (which shares the host's network), then runs tests/ha/ha_harness.py with this checkout's venv: onboarding, the
# MQTT integration through its config flow, the blueprint, discovery, a fall, the blueprint's notifications,
# the buttons, escalation, a camera removed. Prints the time of each phase; exits non-zero on any failure.
# Needs root (chroot, mounts).
#
#   sudo tests/ha/ha_test.sh [--rebuild] [--keep]
#
# Cached outside the checkout, in $HA_TEST_CACHE (/var/cache/fallwatch-ha-test): Debian's root filesystem
# (trixie-amd64.tar), the same with Home Assistant installed, unpacked (trixie-amd64-ha-<version>/, rebuilt when the
# package list or the version changes), and pip's cache; so a warm run starts Home Assistant at once.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${HA_TEST_CACHE:-/var/cache/fallwatch-ha-test}"
MIRROR="${HA_TEST_MIRROR:-http://deb.debian.org/debian}"
HA_VERSION="${HA_TEST_VERSION:-2026.2.3}"  # the newest Home Assistant for Python 3.13 (trixie's)
PYTHON="${HA_TEST_PYTHON:-$REPO/.venv/bin/python}"  # runs the harness: fallwatch's own venv
# gcc, g++ and python3-dev: for the requirements without a wheel for Python 3.13 that Home Assistant builds at its
# start (pymicro-vad and pyspeex-noise, for the voice pipeline the companion app pulls in)
PACKAGES="python3,python3-venv,python3-dev,ca-certificates,gcc,g++,libc6-dev"
REBUILD=0
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rebuild) REBUILD=1 ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "ha_test.sh: unknown argument $1 (options: --rebuild --keep)" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '[ha-test %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf '[ha-test] error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (chroot and mounts): sudo $0"
[ -x "$PYTHON" ] || die "no $PYTHON: run make install-dev first (or set HA_TEST_PYTHON)"

need=()
for pkg in mmdebstrap mosquitto; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

RUN="$(mktemp -d /tmp/fallwatch-ha-test.XXXXXX)"
ROOT=
PHASE=
phase_start() { PHASE="$1"; T0=$(date +%s); log "$PHASE"; }
phase_end() { log "$PHASE took $(($(date +%s) - T0)) s"; }
fail() { printf '[ha-test] %s FAILED: %s\n' "$PHASE" "$*" >&2; exit 1; }
# shellcheck disable=SC2317  # (a trap)
cleanup() {
  if [ -n "$ROOT" ]; then
    umount -R "$ROOT/dev" "$ROOT/proc" "$ROOT/root/.cache/pip" 2>/dev/null || true
  fi
  if [ "$KEEP" -eq 0 ]; then rm -rf "$RUN"; else log "kept $RUN (hass.log)"; fi
}
trap cleanup EXIT
in_root() {
  chroot "$ROOT" /usr/bin/env -i PATH=/opt/ha/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt "$@"
}
mount_root() {
  cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
  # The host's CA bundle, so pip in the chroot trusts what the host trusts (a TLS-intercepting proxy's CA).
  cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
  mount --bind /proc "$ROOT/proc"
  mount --rbind /dev "$ROOT/dev"
  mount --make-rslave "$ROOT/dev"
  mkdir -p "$CACHE/pip" "$ROOT/root/.cache/pip"
  mount --bind "$CACHE/pip" "$ROOT/root/.cache/pip"
}

# --- the root filesystem with Home Assistant, built once and cached -----------------------------------------------
phase_start "root filesystem with Home Assistant $HA_VERSION"
mkdir -p "$CACHE"
# The root filesystem stays unpacked in the cache: Home Assistant installs what its built-in integrations need
# (the frontend, ...) into its venv at its first start, and keeps it for the next runs.
ROOT="$CACHE/trixie-amd64-ha-$HA_VERSION" stamp="$CACHE/trixie-amd64-ha-$HA_VERSION.packages"
base="$CACHE/trixie-amd64.tar" base_stamp="$CACHE/trixie-amd64.packages"
if [ "$REBUILD" -eq 0 ] && [ -x "$ROOT/opt/ha/bin/hass" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$PACKAGES" ]; then
  log "reusing $ROOT"
  mount_root
else
  rm -rf --one-file-system "$ROOT" "$ROOT.partial"
  rm -f "$stamp"
  if [ "$REBUILD" -eq 1 ] || [ ! -f "$base" ] || [ "$(cat "$base_stamp" 2>/dev/null)" != "$PACKAGES" ]; then
    rm -f "$base" "$base_stamp"
    mmdebstrap --quiet --variant=apt --format=tar --include="$PACKAGES" trixie "$base.partial" "$MIRROR" \
      || fail "mmdebstrap could not build the root filesystem"
    mv "$base.partial" "$base"
    echo "$PACKAGES" >"$base_stamp"
  fi
  ROOT="$ROOT.partial"
  mkdir -p "$ROOT"
  tar -xf "$base" -C "$ROOT"
  mount_root
  in_root python3 -m venv /opt/ha
  in_root pip install --quiet --upgrade pip
  # Home Assistant pins its whole dependency tree in the wheel's package_constraints.txt: without it pip
  # backtracks through dozens of versions of its Bluetooth libraries for many minutes.
  in_root pip download --quiet --no-deps -d /tmp/ha-wheel "homeassistant==$HA_VERSION" \
    || fail "pip could not download homeassistant==$HA_VERSION"
  # The requirements of the integrations the test sets up later (MQTT: paho-mqtt; the companion app: PyNaCl),
  # as their manifests pin them, and of the login's TOTP module, installed now rather than by hass.
  in_root python3 - <<'EOF' || fail "cannot read the wheel's constraints and the integrations' manifests"
import json, pathlib, re, zipfile
wheel = zipfile.ZipFile(next(pathlib.Path("/tmp/ha-wheel").glob("homeassistant-*.whl")))
pathlib.Path("/tmp/ha-wheel/constraints.txt").write_bytes(wheel.read("homeassistant/package_constraints.txt"))
wanted = []
for name in ("mqtt", "mobile_app"):
    wanted += json.loads(wheel.read(f"homeassistant/components/{name}/manifest.json")).get("requirements", [])
totp = wheel.read("homeassistant/auth/mfa_modules/totp.py").decode()
wanted += json.loads(re.search(r"REQUIREMENTS = (\[.*?\])", totp).group(1).replace("'", '"'))
pathlib.Path("/tmp/ha-wheel/requirements.txt").write_text("\n".join(wanted) + "\n")
EOF
  in_root sh -c 'pip install --quiet -c /tmp/ha-wheel/constraints.txt /tmp/ha-wheel/homeassistant-*.whl \
    -r /tmp/ha-wheel/requirements.txt' || fail "pip could not install homeassistant==$HA_VERSION"
  rm -rf "$ROOT/tmp/ha-wheel"
  umount -R "$ROOT/dev" "$ROOT/proc" "$ROOT/root/.cache/pip"
  mv "$ROOT" "${ROOT%.partial}"
  ROOT="${ROOT%.partial}"
  echo "$PACKAGES" >"$stamp"
  mount_root
fi
[ -x "$ROOT/opt/ha/bin/hass" ] || fail "no hass in the root filesystem"
phase_end

# --- the harness: broker, Home Assistant, fallwatch ----------------------------------------------------------------
# ha_harness.py starts mosquitto and a push endpoint on the host, writes Home Assistant's configuration into
# $ROOT/tmp/ha-config, and starts hass in the chroot through the command given (so it can also stop it).
phase_start harness
# SSL_CERT_FILE and UV_NATIVE_TLS: the uv that Home Assistant installs requirements with trusts what the host does
HASS_CMD="chroot $ROOT /usr/bin/env -i PATH=/opt/ha/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt UV_NATIVE_TLS=1 hass -c /tmp/ha-config"
"$PYTHON" "$REPO/tests/ha/ha_harness.py" --root "$ROOT" --hass "$HASS_CMD" --blueprint \
  "$REPO/homeassistant/blueprints/automation/fallwatch/fallwatch_alarm.yaml" --log-dir "$RUN" \
  || fail "see the lines above (and $RUN/hass.log with --keep)"
phase_end
log "passed"
