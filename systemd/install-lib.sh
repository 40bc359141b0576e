# shellcheck shell=bash
# Decisions of install.sh that depend only on their arguments, kept apart so tests run them on any machine:
#   . systemd/install-lib.sh; numpy_constraint 1.24.2; coral_pair aarch64 cp311
# Sourced, never run; defines functions and constants only.

# "Keep the system's numpy major version": apt's compiled modules (picamera2's simplejpeg, python3-bottleneck, ...)
# were built against the system numpy. In a venv with --system-site-packages a numpy of another major installed by
# pip would shadow it and those modules would stop importing: bookworm has numpy 1.24 and opencv-python-headless 5
# wants numpy>=2; trixie has numpy 2 (and numpy<2 has no wheel for its Python 3.13).
# Prints the pip constraint for a system numpy version, nothing when there is no system numpy; 1 on a bad version.
numpy_constraint() {
  local version="${1:-}" major
  [ -n "$version" ] || return 0
  major="${version%%.*}"
  case "$major" in
    '' | *[!0-9]*) return 1 ;;
  esac
  printf 'numpy>=%s,<%s\n' "$major" "$((major + 1))"
}

# The Edge TPU stack: a TFLite runtime and an Edge TPU library built for each other. Coral's own libedgetpu1-std
# 16.0 (apt) is a TF 2.5 build and crashes TFLite >= 2.12 when its delegate is applied (google-coral/edgetpu
# issue 812). Frigate ships this pair (docker/main/install_deps.sh, docker/main/requirements-wheels.txt):
# feranick's libedgetpu 16.0 rebuilt for TF 2.17.1, and feranick's tflite_runtime 2.17.1 wheels.
TFLITE_RUNTIME_VERSION=2.17.1
LIBEDGETPU_VERSION=16.0tf2.17.1-1
TFLITE_RUNTIME_URL=https://github.com/feranick/TFlite-builds/releases/download/v2.17.1
LIBEDGETPU_URL=https://github.com/feranick/libedgetpu/releases/download/16.0TF2.17.1-1
# Only Debian bookworm builds of the library are pinned (it links only libc, libstdc++ and libusb-1.0); "max" is
# the build Frigate pins (the Edge TPU at full clock; the USB accelerator gets hot).
LIBEDGETPU_DEB_ARM64=libedgetpu1-max_${LIBEDGETPU_VERSION}.bookworm_arm64.deb

# sha256 of each asset, ONLY where one is published; nothing here was computed on this side (GitHub release
# downloads were not reachable when this was written). An asset without an entry is refused, not downloaded.
published_sha256() {
  case "$1" in
    # Published in a Frigate docker/main/install_deps.sh ("sha256 digests of the release debs"), next to the same
    # download URL, found with a public code search (the blakeblackshear/frigate snapshot searched, of 2026-07-23,
    # downloads the same file without a check).
    libedgetpu1-max_16.0tf2.17.1-1.bookworm_arm64.deb)
      echo eab8aa4576b4dbf738135d8094f32270b24117f77147d25cbe0f49d0144d85f2 ;;
    # Published in a public Raspberry Pi 5 Coral install script (vision/install_coral.sh of an InMoov robot
    # project, TFL_SUM) that downloads this exact URL and checks it with sha256sum. Python 3.12: neither bookworm (3.11) nor trixie (3.13).
    tflite_runtime-2.17.1-cp312-cp312-linux_aarch64.whl)
      echo 8e544b9001d713dec0c220626ded61e25d7e60b8485e3c78c9a2ff652dbfbd00 ;;
    # No published sha256 found for tflite_runtime-2.17.1-cp311-cp311-linux_aarch64.whl (bookworm) nor
    # tflite_runtime-2.17.1-cp313-cp313-linux_aarch64.whl (trixie): install.sh refuses them (see the README).
    *) return 1 ;;
  esac
}

# The matched pair for a machine (uname -m) and a CPython tag (cp311): prints "NAME URL" for the library's .deb and
# then the runtime's wheel; returns 1 with the reason on stdout when there is no pair for it.
coral_pair() {
  local arch="$1" pytag="$2" wheel
  if [ "$arch" != aarch64 ]; then
    echo "no matched Edge TPU library and TFLite runtime are pinned for $arch (only aarch64, a 64-bit Raspberry Pi OS)"
    return 1
  fi
  case "$pytag" in
    cp3[0-9] | cp3[0-9][0-9]) ;;
    *) echo "unexpected Python tag '$pytag'"; return 1 ;;
  esac
  wheel="tflite_runtime-${TFLITE_RUNTIME_VERSION}-${pytag}-${pytag}-linux_aarch64.whl"
  case "$pytag" in
    cp311 | cp312 | cp313) ;;
    *) echo "no tflite_runtime ${TFLITE_RUNTIME_VERSION} build for Python 3.${pytag#cp3} (feranick builds cp311-cp313)"
       return 1 ;;
  esac
  echo "$LIBEDGETPU_DEB_ARM64 $LIBEDGETPU_URL/$LIBEDGETPU_DEB_ARM64"
  echo "$wheel $TFLITE_RUNTIME_URL/$wheel"
}

# What --with-coral does on a machine: "asset NAME URL SHA256" for each file of the pair, or one line
# "cpu REASON" when the pair cannot be installed checked (then neither file is: the library alone would meet
# LiteRT, which it was not built for). Extra arguments NAME=SHA256 supply sha256 values the user checked.
coral_plan() {
  local arch="$1" pytag="$2" pair name url sum given plan=
  shift 2
  if ! pair="$(coral_pair "$arch" "$pytag")"; then
    echo "cpu $pair"
    return 0
  fi
  while read -r name url; do
    sum=
    for given in "$@"; do
      [ "${given%%=*}" != "$name" ] || sum="${given#*=}"
    done
    if [ -z "$sum" ] && ! sum="$(published_sha256 "$name")"; then
      echo "cpu refusing $name: no published sha256 to check it against (pass --coral-sha256 $name=<sha256>" \
           "once you have one from a source you trust)"
      return 0
    fi
    plan+="asset $name $url $sum"$'\n'
  done <<<"$pair"
  printf '%s' "$plan"
}
