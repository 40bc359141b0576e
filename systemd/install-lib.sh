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
# issue 812); Google's apt repository is reported to answer 403 anyway. feranick rebuilds libedgetpu 16.0 for
# newer TensorFlow releases (github.com/feranick/libedgetpu, Debian packages per release in its GitHub releases;
# debian/changelog: "16.0tf2.17.1-1 Build against TF v2.17.1", "16.0tf2.18.1-1 ...", tag 16.0TF2.19.1-1).
# Checked on 2026-12-07 in a snapshot of github.com/feranick/libedgetpu (commit c38ac3f): debian/changelog has
# "libedgetpu (16.0tf2.17.1-1) stable ... * Build against TF v2.17.1" and "libedgetpu (16.0tf2.19.1-1) stable ...
# * Build against TF v2.19.1"; README.md: "The current version of Tensorflow supported is `2.19.1`." The release
# notes themselves (the text of github.com/feranick/libedgetpu/releases/tag/16.0TF2.17.1-1 and .../16.0TF2.19.1-1)
# are not in the repository and could not be read from here (no api.github.com; no stored copy of either page or
# of a quote of their runtime ranges was found), so the ranges below are the issue's leads, not verified quotes.
# What was verified of the ranges: feranick on github.com/google-coral/edgetpu/issues/812 (2024-01-28), of his
# TF 2.13.1 build: "edgeTPU works perfectly with tflite_runtime 2.13.1, 2.14.1, and 2.15.0. No more segmentation
# faults." (a library works with runtimes of other TF versions than its own, within a range).
# One pair per Raspberry Pi OS release, chosen so that the runtime comes from PyPI (its sha256 published there,
# checked by pip --require-hashes) and the library's sha256 is published too:
#
# bookworm, Python 3.11: libedgetpu1-max 16.0tf2.17.1-1 (bookworm arm64 .deb) with tflite-runtime 2.14.0 (PyPI's
#   cp311 manylinux_2_34_aarch64 wheel; bookworm has glibc 2.36). feranick's release notes of 16.0TF2.17.1-1 give
#   tflite_runtime 2.11.1 to 2.17.1 as compatible (the lead of fallwatch issue 20; not verified, see above). PyPI has no newer tflite-runtime for aarch64 (2.14.0 is its last release with that wheel).
#   The .deb's sha256 is published beside Frigate's download of it (docker/main/install_deps.sh); "max" is the
#   build Frigate pins (full clock; the accelerator gets hot).
# trixie, Python 3.13: libedgetpu1-std 16.0tf2.19.1-1 (trixie arm64 .deb, built against TF 2.19.1) with
#   ai-edge-litert 2.2.0 (PyPI's cp313 manylinux_2_27_aarch64 wheel). PyPI has no tflite-runtime for Python 3.13;
#   ai-edge-litert has cp313 aarch64 wheels from 2.1.0 on, and feranick wrote that it works with the updated
#   library (google-ai-edge/LiteRT issue 3611); Frigate loads the delegate through tflite_runtime and falls back
#   to ai_edge_litert (frigate/detectors/plugins/edgetpu_tfl.py, PR 21876). 2.2.0 is the version a public
#   Raspberry Pi OS 12/13 installer pins with this very library ("must match the TensorFlow version libedgetpu is
#   built against": jiteshsaini/model_garden install.sh, LITERT_PIN with CORAL_TAG 16.0TF2.19.1-1); public
#   Dockerfiles install this trixie .deb by name (the "std" build: only it was seen for trixie). No third party
#   published its sha256: GitHub's own digest of the release asset (REST API, assets[].digest) is fetched over
#   TLS at install time, printed, checked and recorded.
LIBEDGETPU_REPO=feranick/libedgetpu
GITHUB_API="${FALLWATCH_GITHUB_API:-https://api.github.com}"  # a local stand-in in tests/pi/pi_test.sh only

# The pair for a machine (uname -m) and a CPython tag (cp311), one line each:
#   library DEB_FILE RELEASE_TAG
#   runtime PYPI_NAME VERSION WHEEL_FILE
# or the reason there is none, on stdout, with status 1.
coral_pair() {
  local arch="$1" pytag="$2"
  if [ "$arch" != aarch64 ]; then
    echo "no matched Edge TPU library and TFLite runtime are pinned for $arch (only aarch64, a 64-bit Raspberry Pi OS)"
    return 1
  fi
  case "$pytag" in
    cp311)
      echo "library libedgetpu1-max_16.0tf2.17.1-1.bookworm_arm64.deb 16.0TF2.17.1-1"
      echo "runtime tflite-runtime 2.14.0 tflite_runtime-2.14.0-cp311-cp311-manylinux_2_34_aarch64.whl" ;;
    cp313)
      echo "library libedgetpu1-std_16.0tf2.19.1-1.trixie_arm64.deb 16.0TF2.19.1-1"
      echo "runtime ai-edge-litert 2.2.0 ai_edge_litert-2.2.0-cp313-cp313-manylinux_2_27_aarch64.whl" ;;
    cp3[0-9] | cp3[0-9][0-9])
      echo "no matched Edge TPU pair is pinned for Python 3.${pytag#cp3} (bookworm's 3.11 and trixie's 3.13 are)"
      return 1 ;;
    *) echo "unexpected Python tag '$pytag'"; return 1 ;;
  esac
}

# sha256 of each file, pinned ONLY where a party other than GitHub's release page published one (a pin always wins
# over GitHub's digest). Nothing here was computed on this side.
published_sha256() {
  case "$1" in
    # Published in a Frigate docker/main/install_deps.sh ("sha256 digests of the release debs"), next to the same
    # download URL, found with a public code search.
    libedgetpu1-max_16.0tf2.17.1-1.bookworm_arm64.deb)
      echo eab8aa4576b4dbf738135d8094f32270b24117f77147d25cbe0f49d0144d85f2 ;;
    # Published by PyPI (pypi.org/pypi/<name>/json, digests.sha256 of the file).
    tflite_runtime-2.14.0-cp311-cp311-manylinux_2_34_aarch64.whl)
      echo ce9fa5d770a9725c746dcbf6f59f3178233b3759f09982e8b2db8d2234c333b0 ;;
    ai_edge_litert-2.2.0-cp313-cp313-manylinux_2_27_aarch64.whl)
      echo 37da7ff26c5c9a3312f1a19d9190cd7d2270aeb65b3ee55a05e1047c5244bdae ;;
    *) return 1 ;;
  esac
}

# What --with-coral does on a machine, one line per file:
#   library DEB_FILE URL API_URL SHA256 SOURCE   (SHA256 "-" and SOURCE "github": ask GitHub's API at install time)
#   runtime PYPI_NAME VERSION WHEEL_FILE SHA256 SOURCE
# or one line "cpu REASON" when there is no pair. Extra arguments FILE=SHA256 override any other sha256 (the user
# checked the file); SOURCE says where each sha256 comes from: override, pinned, or github.
coral_plan() {
  local arch="$1" pytag="$2" pair kind a b c sum source given plan=
  shift 2
  if ! pair="$(coral_pair "$arch" "$pytag")"; then
    echo "cpu $pair"
    return 0
  fi
  while read -r kind a b c; do
    local file="$a"
    [ "$kind" = library ] || file="$c"
    sum='' source=''
    for given in "$@"; do
      [ "${given%%=*}" != "$file" ] || { sum="${given#*=}"; source=override; }
    done
    if [ -z "$sum" ] && sum="$(published_sha256 "$file")"; then source=pinned; fi
    if [ "$kind" = library ]; then
      [ -n "$source" ] || { sum=-; source=github; }
      plan+="library $a https://github.com/$LIBEDGETPU_REPO/releases/download/$b/$a"
      plan+=" $GITHUB_API/repos/$LIBEDGETPU_REPO/releases/tags/$b $sum $source"$'\n'
    else
      if [ -z "$source" ]; then
        echo "cpu refusing $c: no published sha256 to check it against"
        return 0
      fi
      plan+="runtime $a $b $c $sum $source"$'\n'
    fi
  done <<<"$pair"
  printf '%s' "$plan"
}

# GitHub's sha256 digest of release asset NAME, from the release's REST API document at API_URL (https only): the
# 64 hex digits on stdout, or one line saying why not on stdout with status 1.
github_asset_digest() {
  local api="$1" name="$2"
  case "$api" in
    https://*) ;;
    *) echo "refusing $api: the digest must come over TLS (https)"; return 1 ;;
  esac
  python3 - "$api" "$name" <<'PY'
import json, re, sys, urllib.request
api, name = sys.argv[1], sys.argv[2]
try:
    request = urllib.request.Request(api, headers={"Accept": "application/vnd.github+json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        release = json.load(answer)
except Exception as exc:  # one line, whatever went wrong (TLS, network, HTTP status, not JSON)
    print(f"could not read {api}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    sys.exit(1)
assets = [a for a in release.get("assets", []) if isinstance(a, dict) and a.get("name") == name]
digest = str(assets[0].get("digest") or "") if assets else ""
m = re.fullmatch(r"sha256:([0-9a-f]{64})", digest)
if not m:
    print(f"{api} gives no sha256 digest for {name}" + (f" (digest: {digest!r})" if assets else " (no such asset)"))
    sys.exit(1)
print(m.group(1))
PY
}

# FILE's sha256 against SUM: nothing on a match; one line and status 1 on a mismatch.
check_sha256() {
  local file="$1" sum="$2" got
  got="$(sha256sum "$file" | cut -d' ' -f1)"
  [ "$got" = "$sum" ] || { echo "$(basename "$file") has sha256 $got, not the expected $sum"; return 1; }
}

# Fetches the files of a plan (coral_plan's lines, on stdin) into DIR and checks each one's sha256, before anything
# is installed: the library's .deb from FROM (a directory; "" for its GitHub URL), its sha256 from GitHub's API when
# the plan says so; the runtime's wheel with PYTHON's pip, which checks it against PyPI's sha256 (--require-hashes;
# --no-deps: its dependencies are fallwatch's own). Says what it did, a line each; sets LIB_DEB LIB_SUM LIB_SOURCE
# RUNTIME RUNTIME_WHEEL. On the first failure: status 1 with the reason, one line, in CORAL_WHY.
# shellcheck disable=SC2034  # (the variables it sets are install.sh's)
coral_fetch() {
  local dir="$1" from="$2" python="$3" kind a b c d e why
  CORAL_WHY=
  mkdir -p "$dir"
  while read -r kind a b c d e; do
    if [ "$kind" = library ]; then
      LIB_DEB="$a" LIB_SUM="$d" LIB_SOURCE="$e"
      if [ "$LIB_SOURCE" = github ]; then
        # No other party published this file's sha256: GitHub's digest of the release asset is the published one.
        if ! LIB_SUM="$(github_asset_digest "$c" "$LIB_DEB")"; then CORAL_WHY="$LIB_SUM"; return 1; fi
        coral_say "GitHub's published sha256 of $LIB_DEB: $LIB_SUM (from $c)"
      fi
      if [ -n "$from" ]; then
        [ -f "$from/$LIB_DEB" ] || { CORAL_WHY="$LIB_DEB is not in $from"; return 1; }
        cp "$from/$LIB_DEB" "$dir/"
        coral_say "took $LIB_DEB from $from"
      else
        coral_say "downloading $b"
        if ! why="$(python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
            "$b" "$dir/$LIB_DEB" 2>&1)"; then
          CORAL_WHY="could not download $b: $(tail -n 1 <<<"$why")"; return 1
        fi
      fi
      if ! why="$(check_sha256 "$dir/$LIB_DEB" "$LIB_SUM")"; then CORAL_WHY="$why"; return 1; fi
      coral_say "$LIB_DEB: sha256 $LIB_SUM matches ($LIB_SOURCE)"
    elif [ "$kind" = runtime ]; then
      RUNTIME="$a $b" RUNTIME_WHEEL="$c"
      echo "$a==$b --hash=sha256:$d" >"$dir/runtime.txt"
      if ! why="$("$python" -m pip download --quiet --no-deps --only-binary :all: --require-hashes \
          -r "$dir/runtime.txt" -d "$dir" 2>&1)"; then
        CORAL_WHY="pip could not fetch $a $b with PyPI's sha256 $d: $(grep -m 1 -i -e 'do not match' -e 'error' \
          <<<"$why" || tail -n 1 <<<"$why")"
        return 1
      fi
      [ -f "$dir/$c" ] || { CORAL_WHY="PyPI served another file than $c for this Python"; return 1; }
      coral_say "$c: sha256 $d matches (published by PyPI, checked by pip)"
    fi
  done
}

coral_say() { printf 'fallwatch install: %s\n' "$*"; }
