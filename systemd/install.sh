#!/usr/bin/env bash
# Install fallwatch as a systemd service on Raspberry Pi OS bookworm (64-bit).
#
#   sudo ./systemd/install.sh [--with-mosquitto] [--with-coral] [--no-models] [--no-start] [--source PATH]
#
# Idempotent: run it again after `git pull` to upgrade. It never overwrites an edited
# /etc/fallwatch/fallwatch.yaml (a newer default goes beside it as fallwatch.yaml.dist).
# --with-coral adds Coral's apt repository and installs the Edge TPU runtime (libedgetpu1-std).
set -euo pipefail

PREFIX=/opt/fallwatch
VENV=$PREFIX/venv
ETC=/etc/fallwatch
STATE=/var/lib/fallwatch
MODELS=$STATE/models
UNIT=/etc/systemd/system/fallwatch.service
SERVICE_USER=fallwatch
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WITH_MOSQUITTO=0
WITH_CORAL=0
FETCH_MODELS=1
START=1

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --with-mosquitto) WITH_MOSQUITTO=1 ;;
    --with-coral) WITH_CORAL=1 ;;
    --no-models) FETCH_MODELS=0 ;;
    --no-start) START=0 ;;
    --source) shift; SRC="$(cd "${1:?--source needs a path}" && pwd)" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

cd /  # the service user may not be able to enter the caller's directory (runuser below)

say() { printf 'fallwatch install: %s\n' "$*"; }
die() { printf 'fallwatch install: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: sudo $0"
[ -f "$SRC/pyproject.toml" ] || die "$SRC does not look like the fallwatch source tree (no pyproject.toml)"
command -v systemctl >/dev/null || die "systemd is required"
if [ -r /etc/os-release ]; then
  # shellcheck source=/dev/null
  . /etc/os-release
  [ "${VERSION_CODENAME:-}" = bookworm ] || say "warning: tested on bookworm, this is ${PRETTY_NAME:-unknown}"
fi
case "$(uname -m)" in
  aarch64|x86_64) ;;
  *) say "warning: $(uname -m) is not 64-bit; LiteRT wheels exist for aarch64 and x86_64 only" ;;
esac

# 1. System packages. picamera2 comes from apt (it is tied to the system's libcamera), hence the venv below
#    uses --system-site-packages.
packages=(python3-venv python3-pip python3-dev pkg-config libsystemd-dev)
if apt-cache show python3-picamera2 >/dev/null 2>&1; then
  packages+=(python3-picamera2)
else
  say "warning: python3-picamera2 is not in the apt sources (not Raspberry Pi OS?); use a V4L2/RTSP/file source"
fi
[ "$WITH_MOSQUITTO" -eq 1 ] && packages+=(mosquitto mosquitto-clients)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing apt packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
else
  say "apt packages already installed: ${packages[*]}"
fi
if [ "$WITH_MOSQUITTO" -eq 1 ]; then
  systemctl enable --now mosquitto.service >/dev/null || die "could not enable and start mosquitto.service"
  say "mosquitto enabled and running"
fi
if [ "$WITH_CORAL" -eq 1 ]; then
  if dpkg-query -W -f='${Status}' libedgetpu1-std 2>/dev/null | grep -q "ok installed" ||
     dpkg-query -W -f='${Status}' libedgetpu1-max 2>/dev/null | grep -q "ok installed"; then
    say "Edge TPU runtime already installed"
  else
    CORAL_KEY=/etc/apt/keyrings/coral-edgetpu.gpg
    install -d -m 0755 /etc/apt/keyrings
    if [ ! -s "$CORAL_KEY" ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl gnupg ca-certificates
      curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | gpg --dearmor --yes -o "$CORAL_KEY"
    fi
    echo "deb [signed-by=$CORAL_KEY] https://packages.cloud.google.com/apt coral-edgetpu-stable main" \
      >/etc/apt/sources.list.d/coral-edgetpu.list
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y libedgetpu1-std
    say "installed the Edge TPU runtime libedgetpu1-std; replug the Coral USB accelerator once"
  fi
fi

# 2. The service user, in the groups that own the camera (video) and the Coral USB accelerator (plugdev).
if id "$SERVICE_USER" >/dev/null 2>&1; then
  say "user $SERVICE_USER exists"
else
  useradd --system --user-group --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
  say "created system user $SERVICE_USER"
fi
for g in video plugdev; do
  getent group "$g" >/dev/null || groupadd --system "$g"
  if id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx "$g"; then :; else
    usermod -aG "$g" "$SERVICE_USER"
    say "added $SERVICE_USER to group $g"
  fi
done

# 3. The virtual environment and fallwatch itself (with systemd-python for journald and sd_notify).
if [ ! -x "$VENV/bin/python" ]; then
  install -d -m 0755 "$PREFIX"
  python3 -m venv --system-site-packages "$VENV"
  say "created venv $VENV (with system site packages, for picamera2)"
else
  say "venv $VENV exists"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# apt's picamera2 (and its simplejpeg) is built against the system's numpy 1.x: keep numpy below 2 in the venv,
# pip then picks an OpenCV build that works with it.
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
if "$VENV/bin/python" -c 'import picamera2' >/dev/null 2>&1; then
  echo 'numpy<2' >"$CONSTRAINTS"
fi
if ! "$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS" "${SRC}[systemd]"; then
  # systemd-python builds from source and needs libsystemd-dev and pkg-config; fall back to the plain package,
  # which speaks the sd_notify protocol itself and logs to stderr (which journald captures).
  say "warning: installing with the systemd extra failed; installing without it"
  "$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS" "$SRC"
fi
say "installed fallwatch $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("fallwatch"))') into $VENV"

# 4. Configuration: install the default once; afterwards never overwrite the administrator's file.
install -d -m 0755 "$ETC"
DEFAULT_CONFIG="$("$VENV/bin/python" -c 'import fallwatch.config.loader as l; print(l.DEFAULT_CONFIG)')"
if [ ! -e "$ETC/fallwatch.yaml" ]; then
  install -m 0644 "$DEFAULT_CONFIG" "$ETC/fallwatch.yaml"
  say "installed the default configuration to $ETC/fallwatch.yaml (edit it: camera, mqtt host, ...)"
elif cmp -s "$DEFAULT_CONFIG" "$ETC/fallwatch.yaml"; then
  say "configuration $ETC/fallwatch.yaml is the default; left as is"
else
  install -m 0644 "$DEFAULT_CONFIG" "$ETC/fallwatch.yaml.dist"
  say "kept your edited $ETC/fallwatch.yaml; the current default is in $ETC/fallwatch.yaml.dist"
fi
if ! "$VENV/bin/fallwatch" check-config "$ETC/fallwatch.yaml" >/dev/null; then
  say "warning: $ETC/fallwatch.yaml has errors (see above); fix them before starting the service"
fi

# 5. Models into the state directory (owned by the service user; the unit's StateDirectory= keeps it so).
install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE"
install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$MODELS"
if [ "$FETCH_MODELS" -eq 1 ]; then
  say "fetching the models named in the configuration into $MODELS"
  runuser -u "$SERVICE_USER" -- "$VENV/bin/fallwatch" models fetch --config "$ETC/fallwatch.yaml" \
    --model-dir "$MODELS"
  if runuser -u "$SERVICE_USER" -- "$VENV/bin/fallwatch" models verify --config "$ETC/fallwatch.yaml" \
      --model-dir "$MODELS"; then
    say "models verified"
  else
    say "warning: the models in $MODELS did not verify (see above); the service will not start without them"
  fi
else
  say "skipped fetching models (--no-models); run: sudo -u $SERVICE_USER $VENV/bin/fallwatch models fetch --model-dir $MODELS"
fi

# 6. The unit.
if cmp -s "$SRC/systemd/fallwatch.service" "$UNIT"; then
  say "unit $UNIT is up to date"
else
  install -m 0644 "$SRC/systemd/fallwatch.service" "$UNIT"
  say "installed unit $UNIT"
fi
systemctl daemon-reload
# (`cmd && say` would not do: under set -e a failure on the left of && is silently ignored.)
systemctl enable fallwatch.service >/dev/null 2>&1 || die "systemctl enable fallwatch.service failed"
say "enabled fallwatch.service (starts at boot)"
if [ "$START" -eq 1 ]; then
  # Type=notify: this returns once the first frame went through the pipeline, or fails.
  systemctl restart fallwatch.service ||
    die "fallwatch.service did not start; see: journalctl -u fallwatch -b --no-pager | tail -n 30"
  say "started fallwatch.service"
fi

say "done. Status: systemctl status fallwatch; logs: journalctl -u fallwatch -f;"
say "reload the configuration after editing it: sudo systemctl reload fallwatch"
say "debug page (on the Pi): http://127.0.0.1:8080/ (ssh -L 8080:127.0.0.1:8080 pi@<host> from elsewhere)"
say "is the Coral used? journalctl -u fallwatch -b | grep 'pose engine on' (edgetpu or cpu, and why);"
say "  or: curl -s http://127.0.0.1:8080/api/stats | grep backend"
