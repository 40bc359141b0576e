#!/usr/bin/env bash
# Install fallwatch as a systemd service on Raspberry Pi OS / Debian 12 bookworm or 13 trixie (64-bit).
#
#   sudo ./systemd/install.sh [--with-mosquitto] [--with-coral] [--no-models | --models-from DIR] [--no-start]
#                             [--no-systemd] [--source PATH] [--coral-from DIR] [--coral-sha256 FILE=SHA256]...
#
# Idempotent: run it again after `git pull` to upgrade. It never overwrites an edited
# /etc/fallwatch/fallwatch.yaml (a newer default goes beside it as fallwatch.yaml.dist).
# --with-coral installs a TFLite runtime and an Edge TPU library built for each other (pinned, sha256-checked);
#   --coral-from DIR takes the library's .deb from DIR instead of GitHub (it is checked all the same).
# --models-from DIR copies the models from DIR instead of downloading them (they are verified all the same).
# --no-systemd (automatic where systemd is not running, e.g. a chroot) installs everything, the unit included,
#   but does not reload, enable or start anything.
set -euo pipefail

PREFIX=/opt/fallwatch
VENV=$PREFIX/venv
ETC=/etc/fallwatch
STATE=/var/lib/fallwatch
MODELS=$STATE/models
UNIT=/etc/systemd/system/fallwatch.service
SERVICE_USER=fallwatch
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$(cd "$HERE/.." && pwd)"
WITH_MOSQUITTO=0
WITH_CORAL=0
FETCH_MODELS=1
MODELS_FROM=
START=1
SYSTEMD=auto
CORAL_SHA256=()  # FILE=SHA256 given on the command line: overrides any other sha256 of that file
CORAL_FROM=

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
bad_usage() { printf 'install.sh: %s (see --help)\n' "$*" >&2; exit 2; }
# shellcheck source=systemd/install-lib.sh
. "$HERE/install-lib.sh"

while [ $# -gt 0 ]; do
  case "$1" in
    --with-mosquitto) WITH_MOSQUITTO=1 ;;
    --with-coral) WITH_CORAL=1 ;;
    --no-models) FETCH_MODELS=0 ;;
    --models-from)
      [ $# -ge 2 ] || bad_usage "--models-from needs a directory"
      shift; [ -d "$1" ] || bad_usage "--models-from $1: no such directory"
      MODELS_FROM="$(cd "$1" && pwd)" ;;
    --coral-from)
      [ $# -ge 2 ] || bad_usage "--coral-from needs a directory"
      shift; [ -d "$1" ] || bad_usage "--coral-from $1: no such directory"
      CORAL_FROM="$(cd "$1" && pwd)" ;;
    --no-start) START=0 ;;
    --no-systemd) SYSTEMD=0 ;;
    --coral-sha256)
      [ $# -ge 2 ] || bad_usage "--coral-sha256 needs FILE=SHA256"
      shift
      [[ "$1" =~ ^[^=/]+=[0-9a-f]{64}$ ]] || bad_usage "--coral-sha256 $1: expected FILE=SHA256 (64 hex digits)"
      CORAL_SHA256+=("$1") ;;
    --source)
      [ $# -ge 2 ] || bad_usage "--source needs a path"
      shift; [ -d "$1" ] || bad_usage "--source $1: no such directory"
      SRC="$(cd "$1" && pwd)" ;;
    -h|--help) usage; exit 0 ;;
    *) bad_usage "unknown option $1" ;;
  esac
  shift
done
[ "$FETCH_MODELS" -eq 1 ] || [ -z "$MODELS_FROM" ] || bad_usage "--no-models and --models-from exclude each other"

cd /  # the service user may not be able to enter the caller's directory (runuser below)

say() { printf 'fallwatch install: %s\n' "$*"; }
die() { printf 'fallwatch install: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: sudo $0"
[ -f "$SRC/pyproject.toml" ] || die "$SRC does not look like the fallwatch source tree (no pyproject.toml)"
if [ "$SYSTEMD" = auto ]; then
  if [ -d /run/systemd/system ]; then SYSTEMD=1; else
    SYSTEMD=0
    say "systemd is not running here (no /run/systemd/system: a chroot or a container?); installing without" \
        "reloading, enabling or starting anything (as with --no-systemd)"
  fi
fi
[ "$SYSTEMD" -eq 0 ] || command -v systemctl >/dev/null || die "systemd is required (or use --no-systemd)"
CODENAME=
if [ -r /etc/os-release ]; then
  # shellcheck source=/dev/null
  . /etc/os-release
  CODENAME="${VERSION_CODENAME:-}"
fi
case "$CODENAME" in
  bookworm|trixie) say "${PRETTY_NAME:-$CODENAME}: supported (Debian 12 bookworm and 13 trixie, 64-bit)" ;;
  *) say "warning: supported are Debian / Raspberry Pi OS 12 bookworm and 13 trixie (64-bit); this is" \
         "${PRETTY_NAME:-unknown}: going on, untested" ;;
esac
ARCH="$(uname -m)"
case "$ARCH" in
  aarch64|x86_64) ;;
  *) say "warning: $ARCH is not 64-bit; LiteRT wheels exist for aarch64 and x86_64 only" ;;
esac

# The Coral's matched pair, decided before anything is installed: both files sha256-checked, or neither installed.
CORAL_PLAN=
if [ "$WITH_CORAL" -eq 1 ]; then
  PYTAG="$(python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")' 2>/dev/null || echo none)"
  CORAL_PLAN="$(coral_plan "$ARCH" "$PYTAG" "${CORAL_SHA256[@]}")"
  if [ "${CORAL_PLAN%% *}" = cpu ]; then
    say "--with-coral: ${CORAL_PLAN#cpu }; installing the CPU path only"
    CORAL_PLAN=
  fi
fi
# One line, then the CPU path goes on: nothing of the pair is installed.
coral_refuse() {
  say "--with-coral: refusing the Edge TPU pair: $*; nothing of it was installed, installing the CPU path only"
  CORAL_PLAN=
}

# 1. System packages. picamera2 comes from apt (it is tied to the system's libcamera), hence the venv below
#    uses --system-site-packages. gcc and the headers build systemd-python; passwd (useradd) is no longer
#    essential on trixie.
packages=(python3-venv python3-pip python3-dev gcc libc6-dev pkg-config libsystemd-dev ca-certificates passwd)
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
  if [ "$SYSTEMD" -eq 1 ]; then
    systemctl enable --now mosquitto.service >/dev/null || die "could not enable and start mosquitto.service"
    say "mosquitto enabled and running"
  else
    say "mosquitto installed; not enabled or started (no systemd)"
  fi
fi
if dpkg-query -W -f='${Version}' libedgetpu1-std 2>/dev/null | grep -qx '16\.0'; then
  say "warning: libedgetpu1-std 16.0 from Coral's apt repository is a TensorFlow 2.5 build that crashes TFLite" \
      ">= 2.12 (fallwatch then runs on the CPU); --with-coral installs a matched pair instead"
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
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
CONSTRAINTS="$WORK/constraints.txt"
# The system interpreter, isolated from user site and PYTHONPATH: the numpy apt's compiled modules were built for.
SYSTEM_NUMPY="$(python3 -I -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)"
numpy_constraint "$SYSTEM_NUMPY" >"$CONSTRAINTS" || die "cannot read the system numpy version '$SYSTEM_NUMPY'"
if [ -s "$CONSTRAINTS" ]; then
  say "system numpy $SYSTEM_NUMPY: keeping the venv on $(cat "$CONSTRAINTS") so apt's compiled modules" \
      "(picamera2's simplejpeg, ...) keep importing"
fi

# 3a. The Coral's pair: both files fetched and their sha256 checked before either is installed (3b).
CORAL_DIR="$WORK/coral"
if [ -n "$CORAL_PLAN" ] && ! coral_fetch "$CORAL_DIR" "$CORAL_FROM" "$VENV/bin/python" <<<"$CORAL_PLAN"; then
  coral_refuse "$CORAL_WHY"
fi

if ! "$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS" "${SRC}[systemd]"; then
  # systemd-python builds from source and needs libsystemd-dev and pkg-config; fall back to the plain package,
  # which speaks the sd_notify protocol itself and logs to stderr (which journald captures).
  say "warning: installing with the systemd extra failed; installing without it"
  "$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS" "$SRC"
fi
say "installed fallwatch $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("fallwatch"))')" \
    "into $VENV (numpy $("$VENV/bin/python" -c 'import numpy; print(numpy.__version__)'))"

# 3b. The Coral's pair, both files checked above: the library from its .deb (apt resolves its dependencies, such as
#     libusb-1.0-0), the runtime into the venv from the checked wheel only (no index).
if [ -n "$CORAL_PLAN" ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$CORAL_DIR/$LIB_DEB" ||
    die "apt could not install $LIB_DEB (its sha256 matched; see above)"
  "$VENV/bin/python" -m pip install --quiet --no-index --no-deps --require-hashes --find-links "$CORAL_DIR" \
    -r "$CORAL_DIR/runtime.txt" || die "pip could not install $RUNTIME_WHEEL (its sha256 matched; see above)"
  # What was installed and where each sha256 came from, for whoever looks later (doctor names the pair).
  {
    echo "# fallwatch install.sh --with-coral, $(date -u +%Y-%m-%dT%H:%M:%SZ): the Edge TPU pair and its checks"
    echo "library $LIB_DEB sha256 $LIB_SUM $LIB_SOURCE"
    echo "runtime $RUNTIME_WHEEL sha256 $(sed 's/.*sha256://' "$CORAL_DIR/runtime.txt") pypi"
  } >"$PREFIX/edgetpu-pair.txt"
  say "installed the Edge TPU pair: $LIB_DEB and $RUNTIME (built for each other; recorded in" \
      "$PREFIX/edgetpu-pair.txt); replug the Coral USB accelerator once"
fi

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
if [ -n "$MODELS_FROM" ]; then
  # The files the configuration names (CPU models and their Edge TPU builds); `models fetch` below then only
  # downloads what DIR lacked, and `models verify` checks the copies.
  "$VENV/bin/python" - "$ETC/fallwatch.yaml" >"$WORK/model-files" <<'PY'
import sys
from fallwatch.config.loader import load_config
from fallwatch.pose.fetch import configured_models
from fallwatch.pose.models import MODELS
pose = load_config(sys.argv[1]).pose
required, tpu = configured_models(pose.detector, pose.estimator, pose.backend)
print("\n".join(MODELS[name].file for name in required + tpu))
PY
  while read -r file; do
    if [ -f "$MODELS_FROM/$file" ]; then
      install -m 0640 -o "$SERVICE_USER" -g "$SERVICE_USER" "$MODELS_FROM/$file" "$MODELS/$file"
      say "copied $file from $MODELS_FROM"
    else
      say "$file is not in $MODELS_FROM; it will be downloaded"
    fi
  done <"$WORK/model-files"
fi
if [ "$FETCH_MODELS" -eq 1 ]; then
  say "fetching the models named in the configuration into $MODELS (those not present and verified)"
  # A failed download is reported, not fatal: `models verify` below says whether the service can run without it
  # (an Edge TPU build that could not be fetched only costs the TPU).
  runuser -u "$SERVICE_USER" -- "$VENV/bin/fallwatch" models fetch --config "$ETC/fallwatch.yaml" \
    --model-dir "$MODELS" || say "warning: not every model could be fetched (see above)"
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
install -d -m 0755 "$(dirname "$UNIT")"
if cmp -s "$SRC/systemd/fallwatch.service" "$UNIT"; then
  say "unit $UNIT is up to date"
else
  install -m 0644 "$SRC/systemd/fallwatch.service" "$UNIT"
  say "installed unit $UNIT"
fi
if [ "$SYSTEMD" -eq 0 ]; then
  say "done, without systemd: nothing reloaded, enabled or started. Once systemd runs:"
  say "  sudo systemctl daemon-reload && sudo systemctl enable --now fallwatch"
  say "check the installation: sudo -u $SERVICE_USER STATE_DIRECTORY=$STATE $VENV/bin/fallwatch doctor"
  exit 0
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
say "something off? sudo -u $SERVICE_USER STATE_DIRECTORY=$STATE $VENV/bin/fallwatch doctor"
say "reload the configuration after editing it: sudo systemctl reload fallwatch"
say "debug page (on the Pi): http://127.0.0.1:8080/ (ssh -L 8080:127.0.0.1:8080 pi@<host> from elsewhere)"
say "is the Coral used? journalctl -u fallwatch -b | grep 'pose engine on' (edgetpu or cpu, and why);"
say "  or: curl -s http://127.0.0.1:8080/api/stats | grep backend"
