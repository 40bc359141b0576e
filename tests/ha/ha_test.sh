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
# Cached outside the checkout, in $HA_TEST_CACHE (/var/cache/fallwatch-ha-test): the root filesystem with Home
# Assistant installed (trixie-amd64-ha-<version>.tar, rebuilt when the package list or the version changes) and
# pip's cache, so a warm run only unpacks it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${HA_TEST_CACHE:-/var/cache/fallwatch-ha-test}"
MIRROR="${HA_TEST_MIRROR:-http://deb.debian.org/debian}"
HA_VERSION="${HA_TEST_VERSION:-2026.2.3}"  # the newest Home Assistant for Python 3.13 (trixie's)
PYTHON="${HA_TEST_PYTHON:-$REPO/.venv/bin/python}"  # runs the harness: fallwatch's own venv
# gcc and python3-dev: for a requirement without a wheel (Home Assistant installs the MQTT integration's at start)
PACKAGES="python3,python3-venv,python3-dev,ca-certificates,gcc,libc6-dev"
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
HASS=
PHASE=
phase_start() { PHASE="$1"; T0=$(date +%s); log "$PHASE"; }
phase_end() { log "$PHASE took $(($(date +%s) - T0)) s"; }
fail() { printf '[ha-test] %s FAILED: %s\n' "$PHASE" "$*" >&2; exit 1; }
# shellcheck disable=SC2317  # (a trap)
cleanup() {
  if [ -n "$HASS" ]; then
    kill "$HASS" 2>/dev/null || true
    wait "$HASS" 2>/dev/null || true
  fi
  if [ -n "$ROOT" ]; then
    umount -R "$ROOT/dev" "$ROOT/proc" "$ROOT/root/.cache/pip" 2>/dev/null || true
    if [ "$KEEP" -eq 0 ]; then rm -rf --one-file-system "$ROOT"; else log "kept $ROOT"; fi
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
tar_ha="$CACHE/trixie-amd64-ha-$HA_VERSION.tar" stamp="$CACHE/trixie-amd64-ha-$HA_VERSION.packages"
base="$CACHE/trixie-amd64.tar" base_stamp="$CACHE/trixie-amd64.packages"
ROOT="$(mktemp -d /var/tmp/fallwatch-ha-test-root.XXXXXX)"
if [ "$REBUILD" -eq 0 ] && [ -f "$tar_ha" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$PACKAGES" ]; then
  log "reusing $tar_ha"
  tar -xf "$tar_ha" -C "$ROOT"
  mount_root
else
  rm -f "$tar_ha" "$stamp"
  if [ "$REBUILD" -eq 1 ] || [ ! -f "$base" ] || [ "$(cat "$base_stamp" 2>/dev/null)" != "$PACKAGES" ]; then
    rm -f "$base" "$base_stamp"
    mmdebstrap --quiet --variant=apt --format=tar --include="$PACKAGES" trixie "$base.partial" "$MIRROR" \
      || fail "mmdebstrap could not build the root filesystem"
    mv "$base.partial" "$base"
    echo "$PACKAGES" >"$base_stamp"
  fi
  tar -xf "$base" -C "$ROOT"
  mount_root
  in_root python3 -m venv /opt/ha
  in_root pip install --quiet --upgrade pip
  in_root pip install --quiet "homeassistant==$HA_VERSION" || fail "pip could not install homeassistant==$HA_VERSION"
  # The requirements of the integrations the test loads (MQTT: paho-mqtt; mobile_app: PyNaCl; ...), as their
  # manifests pin them, installed now rather than by hass at start (so a warm run needs no network).
  in_root python3 - >"$RUN/requirements.txt" <<'EOF' || fail "cannot read the integrations' manifests"
import json, pathlib
components = next(pathlib.Path("/opt/ha/lib").glob("python3*/site-packages/homeassistant/components"))
for name in ("mqtt", "mobile_app", "http", "api", "config", "onboarding", "person", "tag", "webhook", "automation"):
    manifest = components / name / "manifest.json"
    if manifest.exists():
        print("\n".join(json.loads(manifest.read_text()).get("requirements", [])))
EOF
  cp "$RUN/requirements.txt" "$ROOT/tmp/requirements.txt"
  in_root pip install --quiet -r /tmp/requirements.txt || fail "pip could not install $(tr '\n' ' ' <"$RUN/requirements.txt")"
  umount -R "$ROOT/dev" "$ROOT/proc" "$ROOT/root/.cache/pip"
  tar -cf "$tar_ha.partial" -C "$ROOT" .
  mv "$tar_ha.partial" "$tar_ha"
  echo "$PACKAGES" >"$stamp"
  mount_root
fi
[ -x "$ROOT/opt/ha/bin/hass" ] || fail "no hass in the root filesystem"
phase_end

# --- the harness: broker, Home Assistant, fallwatch ----------------------------------------------------------------
# ha_harness.py starts mosquitto and a push endpoint on the host, writes Home Assistant's configuration into
# $ROOT/tmp/ha-config, and starts hass in the chroot through the command given (so it can also stop it).
phase_start harness
HASS_CMD="chroot $ROOT /usr/bin/env -i PATH=/opt/ha/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 hass -c /tmp/ha-config"
"$PYTHON" "$REPO/tests/ha/ha_harness.py" --root "$ROOT" --hass "$HASS_CMD" --blueprint \
  "$REPO/homeassistant/blueprints/automation/fallwatch/fallwatch_alarm.yaml" --log-dir "$RUN" \
  || fail "see the lines above (and $RUN/hass.log with --keep)"
phase_end
log "passed"
