#!/usr/bin/env bash
# `make pi-test`: systemd/install.sh proven on emulated arm64 Debian 13 trixie and 12 bookworm (Raspberry Pi OS's
# bases). For each release: build (or reuse) an arm64 root filesystem with mmdebstrap under qemu-user-static,
# copy this checkout (git ls-files), a dev fall clip and the models into its /tmp, run install.sh --with-coral there
# (no systemd in a chroot: its no-systemd mode), then check that
#   - the Edge TPU pair was installed, both files checked: the runtime is the real one from PyPI (pip
#     --require-hashes); the library is a stand-in .deb built here (GitHub's release downloads cannot be reached
#     from here), given with --coral-from, its sha256 from a local TLS stand-in of GitHub's release API (trixie)
#     or given with --coral-sha256 (bookworm, whose pinned sha256 is the real file's and always wins otherwise);
#   - the runtime imports in the venv and load_delegate on the installed library, no accelerator plugged in, ends
#     in one line (no crash, no hang);
#   - python3-bottleneck, a Debian-built extension compiled against the system numpy (the stand-in for picamera2's
#     simplejpeg), still imports in the venv, whose numpy has the system's major version;
#   - `fallwatch doctor --json` passes, with the clip as camera and a mosquitto on the host's loopback as broker
#     (the chroot shares the host's network), names the matched pair, and warns "no Edge TPU found" while its
#     probe falls back to the CPU;
#   - `fallwatch detect CLIP` prints the `fall` event.
# Prints the time of each phase and exits non-zero on any failure. Needs root (chroot, mounts).
#
#   sudo tests/pi/pi_test.sh [--rebuild] [--keep] [RELEASE...]      (default: trixie bookworm)
#
# Root filesystems are cached outside the checkout, in $PI_TEST_CACHE (/var/cache/fallwatch-pi-test), as
# <release>-arm64.tar next to the package list they were built with; pip's cache for each release sits beside
# them, so a warm run skips the build and the downloads (the install itself still runs under emulation).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SHARED="${FALLWATCH_SHARED:-$(cd "$REPO/.." && pwd)/shared}"
CACHE="${PI_TEST_CACHE:-/var/cache/fallwatch-pi-test}"
MIRROR="${PI_TEST_MIRROR:-http://deb.debian.org/debian}"
CLIP="${PI_TEST_CLIP:-$SHARED/data/gmdcsa24-dev/Subject 1/Fall/13.mp4}"  # the shortest dev fall clip (4.3 s)
MODELS="${PI_TEST_MODELS:-$SHARED/models}"
# What install.sh needs, plus python3-numpy and python3-bottleneck (the system numpy and an extension built for it).
PACKAGES="python3,python3-venv,python3-pip,python3-dev,python3-numpy,python3-bottleneck,ca-certificates,gcc,libc6-dev,pkg-config,libsystemd-dev"
REBUILD=0
KEEP=0
RELEASES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rebuild) REBUILD=1 ;;
    --keep) KEEP=1 ;;
    trixie|bookworm) RELEASES+=("$1") ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "pi_test.sh: unknown argument $1 (releases: trixie bookworm; options: --rebuild --keep)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#RELEASES[@]} -gt 0 ] || RELEASES=(trixie bookworm)

log() { printf '[pi-test %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf '[pi-test] error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (chroot and mounts): sudo $0"
[ -f "$CLIP" ] || die "no clip $CLIP (set PI_TEST_CLIP)"
[ -d "$MODELS" ] || die "no model directory $MODELS (set PI_TEST_MODELS)"
# shellcheck source=systemd/install-lib.sh
. "$REPO/systemd/install-lib.sh"  # coral_pair: which .deb each release's pair names

# --- host tools: Debian's mmdebstrap, qemu-user-static and binfmt-support; mosquitto as the broker ----------------
need=()
for pkg in mmdebstrap arch-test qemu-user-static binfmt-support mosquitto openssl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64 2>/dev/null || true
grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null || die "binfmt for qemu-aarch64 is not enabled"

# --- a broker on a free loopback port, for doctor's MQTT check --------------------------------------------------
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT="$(free_port)"
RUN="$(mktemp -d /tmp/fallwatch-pi-test.XXXXXX)"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$PORT" >"$RUN/mosquitto.conf"
mosquitto -c "$RUN/mosquitto.conf" >"$RUN/mosquitto.log" 2>&1 &
BROKER=$!
# A stand-in of GitHub's REST API over TLS (a throwaway CA, trusted in the chroot by install.sh only): it serves
# $RUN/api/repos/<owner>/<repo>/releases/tags/<tag>, whose assets[].digest each release's test writes.
API_PORT="$(free_port)"
mkdir -p "$RUN/tls" "$RUN/api"
(
  cd "$RUN/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 2 \
    -subj /CN=fallwatch-pi-test-ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout api.key -out api.csr -subj /CN=127.0.0.1
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >api.ext
  openssl x509 -req -in api.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out api.crt -days 2 -extfile api.ext
) >"$RUN/tls/openssl.log" 2>&1 || die "openssl could not make the stand-in API's certificate"
python3 - "$API_PORT" "$RUN/api" "$RUN/tls/api.crt" "$RUN/tls/api.key" >"$RUN/api.log" 2>&1 <<'PY' &
import functools, http.server, ssl, sys
port, root, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
PY
API=$!
# shellcheck disable=SC2317  # (a trap)
cleanup() {
  kill "$BROKER" "$API" 2>/dev/null || true
  rm -rf "$RUN"
}
trap cleanup EXIT
for port in "$PORT" "$API_PORT"; do
  for _ in $(seq 50); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
    sleep 0.1
  done
done

# In the chroot: a clean environment (nothing of the host's FALLWATCH_* leaks in) and a Raspberry Pi 4 CPU for qemu
# (its default `max` CPU makes XNNPACK choose other kernels). /sys is not mounted: under qemu-user XNNPACK's cpuinfo
# would read the host's CPU list from it and crash.
in_root() {
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 QEMU_CPU=cortex-a72 SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt "$@"
}

phase_start() { PHASE="$1"; T0=$(date +%s); log "$RELEASE: $PHASE"; }
phase_end() {
  local took=$(($(date +%s) - T0))
  log "$RELEASE: $PHASE took $took s"
  echo "$RELEASE $PHASE $took" >>"$RUN/times"
}
fail() { printf '[pi-test] %s: %s FAILED: %s\n' "$RELEASE" "$PHASE" "$*" >&2; exit 1; }
# shellcheck disable=SC2317  # (a trap)
unmount_root() {
  [ -n "$ROOT" ] || return 0
  umount -R "$ROOT/dev" "$ROOT/proc" "$ROOT/root/.cache/pip" 2>/dev/null || true
  if [ "$KEEP" -eq 0 ]; then rm -rf --one-file-system "$ROOT"; else log "kept $ROOT"; fi
}

# Runs in a subshell with set -e: any failing command ends this release's test (its cleanup runs on exit).
test_release() {
  RELEASE="$1"
  ROOT=
  trap unmount_root EXIT
  local tar="$CACHE/$RELEASE-arm64.tar" stamp="$CACHE/$RELEASE-arm64.packages"

  phase_start rootfs
  mkdir -p "$CACHE"
  if [ "$REBUILD" -eq 1 ] || [ ! -f "$tar" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$PACKAGES" ]; then
    rm -f "$tar" "$stamp"
    # (eatmydata: dpkg without its fsyncs, which buy nothing for a root filesystem that ends up in a tar)
    mmdebstrap --quiet --arch=arm64 --variant=apt --format=tar --include="$PACKAGES" \
      --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata "$RELEASE" "$tar.partial" \
      "$MIRROR" || fail "mmdebstrap could not build the root filesystem"
    mv "$tar.partial" "$tar"
    echo "$PACKAGES" >"$stamp"
  else
    log "$RELEASE: reusing $tar"
  fi
  phase_end

  phase_start prepare
  DEBUG_PORT="$(free_port)"  # the debug page's, for doctor's bind check (the chroot shares the host's ports)
  ROOT="$(mktemp -d "/var/tmp/fallwatch-pi-test-$RELEASE.XXXXXX")"
  tar -xf "$tar" -C "$ROOT"
  cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
  # The host's CA bundle, so pip and apt in the chroot trust what the host trusts (a TLS-intercepting proxy's CA).
  cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
  mount --bind /proc "$ROOT/proc"
  mount --rbind /dev "$ROOT/dev"
  mount --make-rslave "$ROOT/dev"
  mkdir -p "$CACHE/pip-$RELEASE" "$ROOT/root/.cache/pip"
  mount --bind "$CACHE/pip-$RELEASE" "$ROOT/root/.cache/pip"
  # The checkout as git knows it (no .venv, no caches), the clip and the models: into the root fs's /tmp only.
  mkdir -p "$ROOT/tmp/fallwatch" "$ROOT/tmp/pi-test/models"
  git -C "$REPO" ls-files -z | (cd "$REPO" && tar --null -T - -cf -) | tar -xf - -C "$ROOT/tmp/fallwatch"
  cp "$CLIP" "$ROOT/tmp/pi-test/fall.mp4"
  cp "$MODELS"/*.tflite "$ROOT/tmp/pi-test/models/"
  cat >"$ROOT/tmp/pi-test/fallwatch.yaml" <<EOF
camera:
  source: /tmp/pi-test/fall.mp4
mqtt:
  host: 127.0.0.1
  port: $PORT
models:
  dir: /var/lib/fallwatch/models
debug:
  bind: 127.0.0.1:$DEBUG_PORT
pose:
  edgetpu_probe_timeout_s: 120  # the probe's child imports the runtime under emulation
EOF
  chmod -R a+rX "$ROOT/tmp/pi-test"
  phase_end

  phase_start coral-standin
  # The library's stand-in .deb, named and versioned as the release's pair names it: tests/edgetpu/fake_edgetpu.c
  # compiled for arm64 in the root fs, answering like the real library with no accelerator (NULL delegate, one
  # error line). Its sha256 is served by the API stand-in (trixie: as GitHub's digest) or given as an override.
  local pytag deb package version pkgdir sha
  case "$RELEASE" in bookworm) pytag=cp311 ;; *) pytag=cp313 ;; esac
  read -r _ deb TAG < <(coral_pair aarch64 "$pytag" | grep '^library ')
  package="${deb%%_*}" version="${deb#*_}"
  version="${version%.*_arm64.deb}"
  pkgdir="$RUN/deb-$RELEASE"
  mkdir -p "$pkgdir/DEBIAN" "$pkgdir/usr/lib/aarch64-linux-gnu" "$ROOT/tmp/pi-test/coral"
  in_root gcc -shared -fPIC -O2 "-DFAKE_EDGETPU_DEFAULT=\"null\"" -o /tmp/pi-test/libedgetpu.so.1.0 \
    /tmp/fallwatch/tests/edgetpu/fake_edgetpu.c -lpthread || fail "could not compile the stand-in library"
  mv "$ROOT/tmp/pi-test/libedgetpu.so.1.0" "$pkgdir/usr/lib/aarch64-linux-gnu/"
  ln -s libedgetpu.so.1.0 "$pkgdir/usr/lib/aarch64-linux-gnu/libedgetpu.so.1"
  # (the dependencies Coral's own libedgetpu1 packages declare; trixie's libgcc-s1 still provides libgcc1)
  printf '%s\n' "Package: $package" "Version: $version" "Architecture: arm64" "Maintainer: fallwatch pi-test" \
    "Depends: libc6, libgcc1 (>= 1:3.0), libstdc++6, libusb-1.0-0" \
    "Description: stand-in of feranick's $deb for make pi-test" >"$pkgdir/DEBIAN/control"
  dpkg-deb --root-owner-group --build "$pkgdir" "$ROOT/tmp/pi-test/coral/$deb" >/dev/null
  sha="$(sha256sum "$ROOT/tmp/pi-test/coral/$deb" | cut -d' ' -f1)"
  CORAL_ARGS=(--coral-from /tmp/pi-test/coral)
  if published_sha256 "$deb" >/dev/null; then
    CORAL_ARGS+=(--coral-sha256 "$deb=$sha")  # the real file's pin would refuse the stand-in
  else
    mkdir -p "$RUN/api/repos/feranick/libedgetpu/releases/tags"
    printf '{"tag_name": "%s", "assets": [{"name": "%s", "digest": "sha256:%s"}]}\n' "$TAG" "$deb" "$sha" \
      >"$RUN/api/repos/feranick/libedgetpu/releases/tags/$TAG"
  fi
  cat "$ROOT/etc/ssl/certs/ca-certificates.crt" "$RUN/tls/ca.crt" >"$ROOT/tmp/pi-test/ca-bundle.crt"
  log "$RELEASE: stand-in $deb ($package $version), sha256 $sha"
  phase_end

  phase_start install
  # --with-coral: no Coral here, but the pair is chosen, checked and installed all the same.
  in_root env SSL_CERT_FILE=/tmp/pi-test/ca-bundle.crt FALLWATCH_GITHUB_API="https://127.0.0.1:$API_PORT" \
    bash /tmp/fallwatch/systemd/install.sh --with-coral "${CORAL_ARGS[@]}" --models-from /tmp/pi-test/models 2>&1 |
    tee "$RUN/$RELEASE-install.log" || fail "install.sh exited with an error"
  grep -q "systemd is not running here" "$RUN/$RELEASE-install.log" || fail "install.sh did not notice that systemd is absent"
  grep -q "installed the Edge TPU pair" "$RUN/$RELEASE-install.log" || fail "install.sh --with-coral did not install the pair"
  grep -q "sha256 .* matches (published by PyPI, checked by pip)" "$RUN/$RELEASE-install.log" || fail "the runtime was not checked"
  if [ -f "$RUN/api/repos/feranick/libedgetpu/releases/tags/$TAG" ]; then
    grep -q "GitHub's published sha256 of $deb" "$RUN/$RELEASE-install.log" || fail "the library's digest was not fetched"
  fi
  cat "$ROOT/opt/fallwatch/edgetpu-pair.txt"
  phase_end

  phase_start edgetpu
  # The pair's runtime imports; load_delegate on the installed library, with no accelerator, raises the runtime's
  # ValueError (no crash, no hang); doctor below turns it into its one line.
  in_root timeout 300 /opt/fallwatch/venv/bin/python - <<'PY' || fail "the Edge TPU runtime or delegate misbehaved"
import importlib, importlib.metadata, sys
for name, dist in (("tflite_runtime", "tflite-runtime"), ("ai_edge_litert", "ai-edge-litert")):
    try:
        interpreter = importlib.import_module(name + ".interpreter")
        break
    except ImportError:
        continue
else:
    sys.exit("no TFLite runtime imports in the venv")
print(f"runtime {name} {importlib.metadata.version(dist)} ({interpreter.__file__})")
try:
    interpreter.load_delegate("libedgetpu.so.1")
except ValueError as exc:
    said = " / ".join(str(exc).split("\n"))
    print(f"load_delegate with no accelerator: ValueError: {said}")
    sys.exit(0 if said.startswith("Failed to load delegate from libedgetpu.so.1") else "not the runtime's refusal")
sys.exit("load_delegate gave a delegate with no accelerator plugged in")
PY
  phase_end

  phase_start numpy-coupling
  in_root /opt/fallwatch/venv/bin/python -c '
import subprocess, bottleneck, numpy
system = subprocess.run(["/usr/bin/python3", "-I", "-c", "import numpy; print(numpy.__version__)"],
                        capture_output=True, text=True, check=True).stdout.strip()
print(f"venv: numpy {numpy.__version__} ({numpy.__file__}), bottleneck {bottleneck.__version__} "
      f"({bottleneck.__file__}); system numpy {system}")
assert numpy.__version__.split(".")[0] == system.split(".")[0], "the venv numpy major differs from the system one"
assert float(bottleneck.nanmean(numpy.array([1.0, numpy.nan, 3.0]))) == 2.0
'  || fail "the Debian-built extension does not work in the venv"
  phase_end

  phase_start doctor
  local rc=0
  in_root /opt/fallwatch/venv/bin/fallwatch doctor --config /tmp/pi-test/fallwatch.yaml --json >"$RUN/$RELEASE-doctor.json" || rc=$?
  cat "$RUN/$RELEASE-doctor.json"
  python3 - "$RUN/$RELEASE-doctor.json" <<'PY' || rc=1
import json, sys
text = open(sys.argv[1]).read()
report = json.loads(text)
checks = report.get("checks", report) if isinstance(report, dict) else report
fails = [c for c in checks if isinstance(c, dict) and c.get("status") == "fail"]
for c in fails:
    print(f"doctor fail: {c}", file=sys.stderr)
by_name = {c["name"]: c for c in checks}
expected = {  # the pair named and matched; no Edge TPU: a warning, and the probe falls back to the CPU
    "edgetpu library": ("ok", "the matched pair"),
    "coral usb": ("warn", "no Edge TPU found"),
    "edgetpu probe": ("warn", "failed: ", "the daemon runs on the CPU"),
}
for name, (status, *words) in expected.items():
    c = by_name.get(name, {})
    if c.get("status") != status or not all(w in c.get("detail", "") for w in words) or "\n" in c["detail"]:
        print(f"doctor {name}: expected {status} with '{words}', got {c}", file=sys.stderr)
        fails.append(c)
print("doctor: " + "; ".join(f"{n}: {by_name[n]['status']} {by_name[n]['detail']}" for n in expected if n in by_name))
sys.exit(1 if fails else 0)
PY
  [ "$rc" -eq 0 ] || fail "fallwatch doctor reported a failure (exit $rc)"
  phase_end

  phase_start detect
  in_root runuser -u fallwatch -- /opt/fallwatch/venv/bin/fallwatch detect --json \
    --config /tmp/pi-test/fallwatch.yaml /tmp/pi-test/fall.mp4 | tee "$RUN/$RELEASE-detect.jsonl" ||
    fail "fallwatch detect exited with an error"
  grep -q '"event": "fall"' "$RUN/$RELEASE-detect.jsonl" || fail "no fall event from fallwatch detect"
  phase_end
}

# The releases run at once: each is mostly one emulated process at a time (mmdebstrap's and apt's maintainer
# scripts, pip, the inference), so on 2 cores both take about as long as the slower one alone. Each line of a
# release's output is prefixed with its name.
pids=()
for release in "${RELEASES[@]}"; do
  (
    T_RELEASE=$(date +%s)
    set +e
    (set -e; test_release "$release") 2>&1 | sed -u "s/^/[$release] /"
    echo "${PIPESTATUS[0]} $(($(date +%s) - T_RELEASE))" >"$RUN/result-$release"
  ) &
  pids+=($!)
done
wait "${pids[@]}"  # (not a bare wait: the broker and the API stand-in run in the background until the end)
STATUS=()
failed=0
for release in "${RELEASES[@]}"; do
  read -r rc took <"$RUN/result-$release" 2>/dev/null || { rc=1; took="?"; }
  if [ "$rc" -eq 0 ]; then result=pass; else result=FAIL; failed=1; fi
  STATUS+=("$release: $result in $took s")
done
log "summary (root filesystems cached in $CACHE):"
[ -f "$RUN/times" ] && awk '{ printf "[pi-test]   %-9s %-15s %5d s\n", $1, $2, $3 }' "$RUN/times"
for line in "${STATUS[@]}"; do log "  $line"; done
exit "$failed"
