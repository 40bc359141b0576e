#!/usr/bin/env bash
# `make picamera-test`: the `picamera2` camera source proven against a real libcamera, with no camera attached.
#
# Debian 13 trixie ships libcamera 0.4.0 built with its *virtual* pipeline handler, which serves the frames of
# JPEG files as a camera (configured by /usr/share/libcamera/pipeline/virtual/virtual.yaml; libcamera 0.4.0 reads
# no other path and no environment variable). libcamera allocates camera buffers as DMA-BUFs (a dma-heap or
# /dev/udmabuf); this machine's kernel has neither:
#   rootfs   mmdebstrap trixie (python3-libcamera, libcamera-tools, linux-image-amd64, gcc), native amd64, cached
#   prepare  the checkout (git ls-files), the models, the frames of a dev fall clip (ffmpeg) and virtual.yaml
#   install  (chroot, with network) a venv with --system-site-packages (for the system's libcamera module), PyPI's
#            picamera2 and fallwatch from this checkout, as a user would; then where picamera2 breaks: its import,
#            and past it (a stand-in pykms) Picamera2()
#   native   (default) in the root filesystem (chroot), with tests/pi/dmabuf_shim.c preloaded: a user-space
#            stand-in for the kernel's DMA-BUF system heap (memfd buffers); libcamera, its pipeline handler and
#            its Python bindings are Debian's. The test times one inference of each model, then runs `fallwatch
#            run` with camera.source: picamera2 (MQTT off) until the `fall` event is raised or a time limit passes
#   check    frames came from the virtual camera through picamera2 (or, where it cannot be imported, the libcamera
#            fallback, said in one line), paced at camera.fps, and `fall` was raised
# Prints the time of each phase and exits non-zero on any failure. Needs root (chroot, mounts).
#
# PICAM_TEST_ACCEL picks where the daemon runs: `native` (above), or a virtual machine booting Debian's own kernel
# (which has the heaps) on an ext4 image of the root filesystem (phases image and boot):
#   kvm       KVM (-cpu host), where it works. Not on the project's machines: their /dev/kvm is PVM (kvm_pvm, a
#             paravirtual KVM; nested_pvm=1), which runs only PVM-enabled guest kernels: Debian's dies in its
#             decompressor ("KVM internal error. Suberror: 1", "emulation failure" at a VEX-coded BMI2 instruction,
#             with -cpu qemu64, q35 or pc, nokaslr), its uncompressed vmlinux booted by PVH prints nothing, and
#             -cpu host/max stop at once ("failed to set MSR 0x10a").
#   tcg       qemu's emulation on a virtual clock (-icount shift=0,sleep=off: 1 ns per emulated instruction, steady
#             however loaded the host is). Too slow to see a fall: MoveNet takes 0.11 s of guest time alone and
#             0.3-0.9 s a frame in the daemon, 2-4 frames a second where the rules need about 4 or more (measured:
#             no `fall` in any of five runs of up to 48 minutes).
#   tcg-wall  qemu's emulation on the wall clock (-accel tcg,thread=multi -smp 2): slower still.
#
#   sudo tests/pi/picamera2_test.sh [--rebuild] [--keep]
#
# The root filesystem and pip's cache live in $PICAM_TEST_CACHE (/var/cache/fallwatch-picam-test).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SHARED="${FALLWATCH_SHARED:-$(cd "$REPO/.." && pwd)/shared}"
CACHE="${PICAM_TEST_CACHE:-/var/cache/fallwatch-picam-test}"
MIRROR="${PICAM_TEST_MIRROR:-http://deb.debian.org/debian}"
CLIP="${PICAM_TEST_CLIP:-$SHARED/data/gmdcsa24-dev/Subject 1/Fall/13.mp4}"  # 4.3 s, the fall begins at 0.4 s
MODELS="${PICAM_TEST_MODELS:-$SHARED/models}"
RUN_LIMIT_S="${PICAM_TEST_RUN_LIMIT_S:-300}"  # how long (guest clock) the daemon may take to raise `fall` in the VM
VM_LIMIT_S="${PICAM_TEST_VM_LIMIT_S:-3600}"  # how long (wall clock) the VM may run in all
ACCEL="${PICAM_TEST_ACCEL:-native}"
# libcamera's virtual camera shows each image for 4 frames (ImageFrameGenerator's frameRepeat in 0.4.0) and
# completes a request as soon as it is queued, whatever FrameDurationLimits says: fallwatch asks for a frame every
# 1/camera.fps s (see PiCamera2Source), so images at IMAGE_FPS play in real time with camera.fps = 4 x IMAGE_FPS.
IMAGE_FPS="${PICAM_TEST_IMAGE_FPS:-15}"  # the clip's frames at this rate (an integer); fewer frames cost the guest less
CAMERA_FPS=$((4 * IMAGE_FPS))
PACKAGES="python3,python3-venv,python3-pip,python3-dev,gcc,libc6-dev,libcap-dev,pkg-config,ca-certificates"
PACKAGES="$PACKAGES,python3-libcamera,libcamera-tools,linux-image-amd64,kmod"
REBUILD=0
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rebuild) REBUILD=1 ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "picamera2_test.sh: unknown argument $1 (options: --rebuild --keep)" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '[picam-test %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf '[picam-test] error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (chroot, mounts): sudo $0"
[ -f "$CLIP" ] || die "no clip $CLIP (set PICAM_TEST_CLIP)"
[ -d "$MODELS" ] || die "no model directory $MODELS (set PICAM_TEST_MODELS)"
case "$ACCEL" in
  native) QEMU_ACCEL=() ;;
  # -cpu max: AVX2 and FMA, which XNNPACK's kernels use (fewer instructions an inference than SSE4 alone)
  tcg) QEMU_ACCEL=(-accel tcg -icount shift=0,sleep=off -cpu max -smp 1) ;;
  tcg-wall) QEMU_ACCEL=(-accel tcg,thread=multi -cpu max -smp 2) ;;
  kvm) [ -c /dev/kvm ] || die "PICAM_TEST_ACCEL=kvm: no /dev/kvm"; QEMU_ACCEL=(-accel kvm -cpu host -smp 2) ;;
  *) die "PICAM_TEST_ACCEL=$ACCEL: native, tcg, tcg-wall or kvm" ;;
esac

PHASE=
T_ALL=$(date +%s)
TIMES=()
phase_start() { PHASE="$1"; T0=$(date +%s); log "$PHASE"; }
phase_end() {
  local took=$(($(date +%s) - T0))
  log "$PHASE took $took s"
  TIMES+=("$(printf '%-8s %5d s' "$PHASE" "$took")")
}
fail() { printf '[picam-test] %s FAILED: %s\n' "$PHASE" "$*" >&2; exit 1; }

# the daemon's debug page, on a free loopback port (natively the root filesystem shares the host's network)
DEBUG_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
ROOT=
WORK="$(mktemp -d /var/tmp/fallwatch-picam-test.XXXXXX)"
# shellcheck disable=SC2317  # (a trap)
cleanup() {
  if [ -n "$ROOT" ]; then umount -R "$ROOT/dev" "$ROOT/proc" "$ROOT/sys" "$ROOT/root/.cache/pip" 2>/dev/null || true; fi
  if [ "$KEEP" -eq 0 ]; then rm -rf --one-file-system "$WORK"; else log "kept $WORK"; fi
}
trap cleanup EXIT

# --- host tools ------------------------------------------------------------------------------------------------
phase_start host
need=()
tools=(mmdebstrap ffmpeg gcc libc6-dev)
[ "$ACCEL" = native ] || tools+=(qemu-system-x86 e2fsprogs)
for pkg in "${tools[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
phase_end

# --- a native amd64 trixie root filesystem, cached ---------------------------------------------------------------
phase_start rootfs
tar="$CACHE/trixie-amd64.tar" stamp="$CACHE/trixie-amd64.packages"
mkdir -p "$CACHE"
if [ "$REBUILD" -eq 1 ] || [ ! -f "$tar" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$PACKAGES" ]; then
  rm -f "$tar" "$stamp"
  mmdebstrap --quiet --variant=apt --format=tar --include="$PACKAGES" trixie "$tar.partial" "$MIRROR" ||
    fail "mmdebstrap could not build the root filesystem"
  mv "$tar.partial" "$tar"
  echo "$PACKAGES" >"$stamp"
else
  log "reusing $tar"
fi
phase_end

# --- the root filesystem, the checkout, the models, the camera's frames ----------------------------------------
phase_start prepare
ROOT="$WORK/root"
mkdir -p "$ROOT"
tar -xf "$tar" -C "$ROOT"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The host's CA bundle, so pip in the chroot trusts what the host trusts (a TLS-intercepting proxy's CA).
cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
lib="$(find "$ROOT/usr/lib" -name 'libcamera.so.0.*' -type f | head -n 1)"
[ -n "$lib" ] || fail "Debian's libcamera is not in the root filesystem"
log "libcamera: $(basename "$lib"); python3-libcamera $(chroot "$ROOT" dpkg-query -W -f='${Version}' python3-libcamera)"
# Debian's build must include the virtual pipeline handler (meson option pipelines): its name is in the library.
grep -qa 'PipelineHandlerVirtual' "$lib" || fail "Debian's libcamera was built without the virtual pipeline handler"
mkdir -p "$ROOT/picam-test/frames" "$ROOT/picam-test/models" "$ROOT/opt/fallwatch-src"
git -C "$REPO" ls-files -z | (cd "$REPO" && tar --null -T - -cf -) | tar -xf - -C "$ROOT/opt/fallwatch-src"
cp "$MODELS"/*.tflite "$ROOT/picam-test/models/"
# The virtual camera reads {n}.jpg from n = 0, in order; 640x480 as the clip, so nothing is scaled.
ffmpeg -nostdin -loglevel error -i "$CLIP" -vf "fps=$IMAGE_FPS" -q:v 2 -start_number 0 "$ROOT/picam-test/frames/%d.jpg" ||
  fail "ffmpeg could not extract the frames of $CLIP"
images=$(find "$ROOT/picam-test/frames" -name '*.jpg' | wc -l)
mkdir -p "$ROOT/usr/share/libcamera/pipeline/virtual"
cat >"$ROOT/usr/share/libcamera/pipeline/virtual/virtual.yaml" <<EOF
%YAML 1.1
---
"FallClip":
  supported_formats:
  - width: 640
    height: 480
    frame_rates: [$CAMERA_FPS]
  frames:
    path: "/picam-test/frames/"
  location: "CameraLocationFront"
  model: "fallwatch dev fall clip"
EOF
cat >"$ROOT/picam-test/fallwatch.yaml" <<EOF
camera:
  source: picamera2
  width: 640
  height: 480
  fps: $CAMERA_FPS
  min_fps: $CAMERA_FPS
mqtt:
  enabled: false
debug:
  bind: 127.0.0.1:$DEBUG_PORT  # the test reads /api/stats from it: how far the pipeline got, on the console
events:
  enabled: false
models:
  dir: /picam-test/models
EOF
log "$images frames of $(basename "$CLIP") at $IMAGE_FPS fps; camera at $CAMERA_FPS fps"
phase_end

# --- picamera2 (PyPI) and fallwatch (this checkout) in a venv that sees the system's libcamera module -----------
phase_start install
mount --bind /proc "$ROOT/proc"
mount --rbind /dev "$ROOT/dev"
mount --make-rslave "$ROOT/dev"
mkdir -p "$CACHE/pip" "$ROOT/root/.cache/pip"
mount --bind "$CACHE/pip" "$ROOT/root/.cache/pip"
chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 sh -euc '
    python3 -m venv --system-site-packages /opt/venv
    /opt/venv/bin/pip install --quiet picamera2 /opt/fallwatch-src
    /opt/venv/bin/pip list 2>/dev/null | grep -i -E "^(picamera2|fallwatch|numpy|opencv[-a-z]*|ai-edge-litert|tflite-runtime) "
  ' || fail "pip could not install picamera2 and fallwatch"
# Where PyPI's picamera2 breaks on Debian, shown natively here (no frame buffers are needed to get there): its
# import, then, past it with a stand-in for the missing pykms (diagnosis only), Picamera2() on the virtual camera.
mount --bind /sys "$ROOT/sys"
cat >"$ROOT/picam-test/diagnose.py" <<'PY'
import sys, types
class Anything:
    def __getattr__(self, name): return Anything()
    def __call__(self, *args, **kwargs): return Anything()
stub = types.ModuleType("kms")
stub.__getattr__ = lambda name: Anything()
sys.modules["kms"] = stub
from picamera2 import Picamera2
print("picamera2 sees", Picamera2.global_camera_info())
try:
    Picamera2()
    print("Picamera2() opened the camera")
except Exception as exc:
    cause = exc.__cause__
    print(f"Picamera2() fails: {type(exc).__name__}: {exc}", f"<- {type(cause).__name__}: {cause}" if cause else "")
PY
chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 sh -c '
  echo "--- import picamera2"
  /opt/venv/bin/python -c "import picamera2" 2>&1 | tail -n 1
  echo "--- picamera2 past its import (diagnosis only: a stand-in for the missing pykms)"
  /opt/venv/bin/python /picam-test/diagnose.py 2>&1 | grep -v "^\[" | tail -n 2
'
umount -R "$ROOT/dev" "$ROOT/proc" "$ROOT/sys" "$ROOT/root/.cache/pip"
phase_end

# --- what runs in the VM ------------------------------------------------------------------------------------------
cat >"$ROOT/picam-test/init.sh" <<'EOF'
#!/bin/sh
# PID 1 of the test VM: mount what a system has, run the test, print its end mark, power off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
mount -t proc proc /proc
mount -t sysfs sys /sys
mountpoint -q /dev || mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
# the loopback interface up (no ip(8) here): the test reads the daemon's /api/stats on 127.0.0.1
python3 -c 'import fcntl, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sh", fcntl.ioctl(s, 0x8913, struct.pack("16sh", b"lo", 0))[:18])[1]  # SIOCGIFFLAGS
fcntl.ioctl(s, 0x8914, struct.pack("16sh", b"lo", flags | 1))  # SIOCSIFFLAGS: IFF_UP'
sh /picam-test/in-vm.sh
echo "PICAM-TEST-END rc=$? at $(cut -d' ' -f1 /proc/uptime)"
sync
echo o >/proc/sysrq-trigger
sleep 10
EOF
cat >"$ROOT/picam-test/progress.py" <<'PY'
# One line of how far the pipeline got (the debug server's /api/stats): frames through, fps, stage times.
import json, sys, urllib.request
stats = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/stats", timeout=10))
for c in stats["cameras"].values():
    keys = ("frames", "fps", "persons", "dropped_frames", "latency_ms", "stage_ms", "events", "camera")
    print("progress:", {k: c.get(k) for k in keys})
PY
cat >"$ROOT/picam-test/in-vm.sh" <<EOF
#!/bin/sh
set -u
echo "kernel \$(uname -r); DMA-BUF heaps: \$(ls /dev/dma_heap 2>/dev/null | tr '\n' ' ')"
echo "guest clock at the test's start: \$(cut -d' ' -f1 /proc/uptime) s after boot"
echo "--- one inference of each model (guest clock, the daemon's runtime and thread count)"
/opt/venv/bin/python - <<'PY' 2>&1 | grep -v '^INFO: '
import time
import numpy as np
from fallwatch.pose.runtime import make_cpu_interpreter, runtime_label
for name in ("ssd_mobilenet_v1_coco_quant_detect", "movenet_single_pose_lightning_ptq"):
    t0 = time.monotonic()
    it = make_cpu_interpreter(f"/picam-test/models/{name}.tflite")
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    t1 = time.monotonic()
    it.invoke()
    t2 = time.monotonic()
    it.invoke()
    print(f"{name}: load {t1 - t0:.2f} s, first inference {t2 - t1:.3f} s, next {time.monotonic() - t2:.3f} s ({runtime_label()})")
PY
echo "--- the camera alone, read as the daemon reads it (guest clock): what each frame costs before inference"
/opt/venv/bin/python - <<'PY' 2>&1 | grep -v '^\['
import time
from fallwatch.daemon.capture.libcamera_source import LibcameraSource
source = LibcameraSource(640, 480, $CAMERA_FPS, {})
source.open()
frames, cpu0, t0 = 0, time.process_time(), time.monotonic()
while time.monotonic() - t0 < 3:
    frames += source.read() is not None
took = time.monotonic() - t0
print(f"{frames} frames in {took:.1f} s ({frames / took:.1f} a second), CPU {1000 * (time.process_time() - cpu0) / max(frames, 1):.1f} ms a frame")
source.close()
PY
echo "--- fallwatch run"
: >/tmp/run.log  # made before tail follows it (the daemon's redirection happens in its own process)
/opt/venv/bin/fallwatch run --config /picam-test/fallwatch.yaml >/tmp/run.log 2>&1 &
pid=\$!
tail -n +1 -f /tmp/run.log &  # the log on the console as it comes
tail=\$!
start=\$(date +%s)
last=\$start
while [ \$((\$(date +%s) - start)) -lt $RUN_LIMIT_S ] && kill -0 \$pid 2>/dev/null && ! grep -q 'event fall: ' /tmp/run.log; do
  sleep 2
  if [ \$((\$(date +%s) - last)) -ge 15 ]; then  # progress, every 15 s of the guest's clock
    last=\$(date +%s)
    /opt/venv/bin/python /picam-test/progress.py $DEBUG_PORT || true
  fi
done
kill -INT \$pid 2>/dev/null
wait \$pid
echo "daemon exit \$? after \$((\$(date +%s) - start)) s (guest clock)"
sleep 1; kill \$tail
grep -q 'event fall: ' /tmp/run.log
EOF
chmod +x "$ROOT/picam-test/init.sh" "$ROOT/picam-test/in-vm.sh"

# --- natively: the daemon in the root filesystem, the kernel's DMA-BUF heap stood in for -----------------------
run_native() {
  phase_start native
  console="$WORK/console.log"
  # This machine's kernel has no DMA-BUF heap: tests/pi/dmabuf_shim.c answers for /dev/dma_heap/system (memfd
  # buffers), preloaded into the test's processes; libcamera and its bindings are Debian's, unchanged.
  chroot "$ROOT" gcc -shared -fPIC -O2 -o /picam-test/dmabuf_shim.so /opt/fallwatch-src/tests/pi/dmabuf_shim.c -ldl ||
    fail "could not compile the DMA-BUF heap stand-in"
  mount --bind /proc "$ROOT/proc"
  mount --rbind /dev "$ROOT/dev"
  mount --make-rslave "$ROOT/dev"
  mount --rbind /sys "$ROOT/sys"
  mount --make-rslave "$ROOT/sys"
  local rc=0
  timeout "$VM_LIMIT_S" chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    LD_PRELOAD=/picam-test/dmabuf_shim.so sh /picam-test/in-vm.sh </dev/null >"$console" 2>&1 || rc=$?
  echo "PICAM-TEST-END rc=$rc" >>"$console"
  local proc  # whatever the test left running in the root filesystem (the daemon past its time limit)
  for proc in /proc/[0-9]*; do
    [ "$(readlink "$proc/root" 2>/dev/null)" = "$ROOT" ] && kill -KILL "${proc#/proc/}" 2>/dev/null
  done
  umount -R "$ROOT/dev" "$ROOT/proc" "$ROOT/sys" 2>/dev/null || umount -lR "$ROOT/dev" "$ROOT/proc" "$ROOT/sys"
  sed -n '/DMA-BUF heaps:/,/^PICAM-TEST-END/p' "$console"
  phase_end
}

# --- in a VM: an ext4 image of the root filesystem, Debian's kernel booted on it, the daemon run there --------
run_vm() {
  phase_start image
  kernel="$(ls "$ROOT"/boot/vmlinuz-* | head -n 1)"
  initrd="$(ls "$ROOT"/boot/initrd.img-* | head -n 1)"
  [ -f "$kernel" ] && [ -f "$initrd" ] || fail "no kernel or initrd in $ROOT/boot"
  cp "$kernel" "$initrd" "$WORK/"
  size_mb=$(($(du -sm "$ROOT" | cut -f1) + 768))
  mkfs.ext4 -q -F -L picam-root -d "$ROOT" "$WORK/root.img" "${size_mb}M" || fail "mkfs.ext4 could not make the image"
  phase_end

  # --- boot Debian's kernel on it and run the daemon -----------------------------------------------------------------
  phase_start boot
  console="$WORK/console.log"
  log "qemu: ${QEMU_ACCEL[*]}"
  timeout "$VM_LIMIT_S" qemu-system-x86_64 "${QEMU_ACCEL[@]}" -m 2048 -nographic -no-reboot \
    -kernel "$WORK/$(basename "$kernel")" -initrd "$WORK/$(basename "$initrd")" \
    -append "root=/dev/vda rw console=ttyS0 init=/picam-test/init.sh panic=-1 quiet" \
    -drive "file=$WORK/root.img,format=raw,if=virtio" -nic none </dev/null >"$console" 2>&1 || true
  tr -d '\r' <"$console" | sed -n '/DMA-BUF heaps:/,/^PICAM-TEST-END/p'
  log "guest clock at the end: $(tr -d '\r' <"$console" | grep -o 'PICAM-TEST-END rc=[0-9]* at [0-9.]*' | grep -o '[0-9.]*$') s"
  grep -q '^PICAM-TEST-END' "$console" || { tail -n 40 "$console"; fail "the VM did not finish (see above)"; }
  phase_end
}

if [ "$ACCEL" = native ]; then run_native; else run_vm; fi

phase_start check
out="$(tr -d '\r' <"$console")"
if grep -q 'source: picamera2 opened' <<<"$out"; then
  log "the frames came through picamera2"
else
  # PyPI's picamera2 cannot be imported on Debian: the source says so in one line and reads the same camera
  # through libcamera's own Python bindings.
  grep -q 'camera.source picamera2: picamera2 cannot be imported (.*); reading the camera through libcamera' \
    <<<"$out" || fail "neither picamera2 nor the libcamera fallback opened the camera"
  grep -q "source: libcamera camera FallClip " <<<"$out" || fail "the libcamera fallback did not open the virtual camera"
  log "the frames came through libcamera's Python bindings: picamera2 $(grep -o 'cannot be imported ([^)]*)' <<<"$out")"
fi
grep -q 'delivers frames as fast as they are asked for' <<<"$out" ||
  fail "the virtual camera was not paced at camera.fps (the clip would not play in real time)"
grep -q 'event fall: ' <<<"$out" || fail "no fall event from the camera's frames"
log "$(grep -o 'event fall: .*"t": [0-9.]*' <<<"$out" | head -n 1)"
log "$(grep -o 'stopped after .*' <<<"$out" | head -n 1)"
grep -q '^PICAM-TEST-END rc=0' <<<"$out" || fail "the test in the VM failed"
phase_end

log "summary:"
for line in "${TIMES[@]}"; do log "  $line"; done
log "pass in $(($(date +%s) - T_ALL)) s"
