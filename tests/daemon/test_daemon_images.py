"""Issue 21 item 5: image size checks that looked for the header where it usually is were bypassed by files whose
header is elsewhere, and each was refused only after a full decode: a deflate TIFF (953 MB RSS), PBM content
named `.png` (969 MB), a JPEG whose frame header follows 390 KB of APP segments (960 MB), a JPEG with one junk
byte (960 MB). Now the decoder (Pillow) reports the size before decoding, whatever the name or layout. Each file
is read in a child process of its own, which reports its own peak RSS; a child reading a small photo is the
baseline. And an image folder in which nothing decodes stops the daemon with exit 1, like such a video."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml
from PIL import Image

SIDE = 12000  # 144 megapixels: 432 MB as a decoded BGR frame, above the 16.8 megapixel limit
READ = (  # VmHWM: this process's own peak (ru_maxrss would start from the parent's size at fork)
    "import json, re, sys\n"
    "from fallwatch.daemon.capture.images import ImageError, read_image_bgr\n"
    "try:\n"
    "    out = list(read_image_bgr(sys.argv[1]).shape)\n"
    "except ImageError as exc:\n"
    "    out = str(exc)\n"
    "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
    "print(json.dumps({'result': out, 'peak_mb': int(hwm) / 1024}))\n"
)


def read_in_child(path: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", READ, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def deflate_tiff(path: Path, side: int) -> None:
    """A side x side greyscale TIFF in one deflate strip (a few hundred kB on disk), written row by row."""
    packer = zlib.compressobj(9)
    row = bytes(side)
    strip = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    tags = [  # (tag, type SHORT=3 / LONG=4, value)
        (256, 4, side),  # ImageWidth
        (257, 4, side),  # ImageLength
        (258, 3, 8),  # BitsPerSample
        (259, 3, 8),  # Compression: deflate
        (262, 3, 1),  # PhotometricInterpretation: BlackIsZero
        (273, 4, 8),  # StripOffsets: the strip follows the header
        (277, 3, 1),  # SamplesPerPixel
        (278, 4, side),  # RowsPerStrip
        (279, 4, len(strip)),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        ifd += struct.pack("<HHI", tag, kind, 1) + (
            struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        )
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8 + len(strip)) + strip + ifd)


def big_jpeg(side: int) -> bytes:
    """A side x side greyscale JPEG (half black, half white)."""
    img = Image.new("L", (side, side))
    img.paste(255, (0, 0, side // 2, side))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=50)
    return buf.getvalue()


@pytest.fixture(scope="module")
def bypasses(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bypasses")
    names = ("deflate.tif", "pbm.png", "app-segments.jpg", "junk-between.jpg", "junk-inside.jpg", "junk-before.jpg")
    files = {name: folder / name for name in names}
    deflate_tiff(files["deflate.tif"], SIDE)
    with files["pbm.png"].open("wb") as fh:  # a PBM (1 bit per pixel) however it is named
        fh.write(f"P4\n{SIDE} {SIDE}\n".encode())
        fh.write(bytes(SIDE // 8 * SIDE))
    jpeg = big_jpeg(SIDE)
    app = b"".join(b"\xff\xe9" + struct.pack(">H", 65002) + bytes(65000) for _ in range(6))  # 390 kB
    files["app-segments.jpg"].write_bytes(jpeg[:2] + app + jpeg[2:])
    app0 = 4 + int.from_bytes(jpeg[4:6], "big")  # the end of the APP0 segment after the start marker
    files["junk-between.jpg"].write_bytes(jpeg[:app0] + b"\x00" + jpeg[app0:])  # the header parser stopped there
    files["junk-inside.jpg"].write_bytes(jpeg[:2] + b"\x00" + jpeg[2:])
    files["junk-before.jpg"].write_bytes(b"\x00" + jpeg)
    return files


@pytest.mark.slow
def test_sizes_come_from_the_decoder_not_from_the_name_or_a_hand_parsed_header(
    bypasses: dict[str, Path], images_dir: Path
) -> None:
    baseline = read_in_child(images_dir / "person.jpg")
    assert isinstance(baseline["result"], list)
    got = {name: read_in_child(path) for name, path in bypasses.items()}
    too_large = f"{SIDE}x{SIDE} is larger than the limit of 16.8 megapixels; skipped (scale it down first)"
    assert got["deflate.tif"]["result"] == f"{bypasses['deflate.tif']}: {too_large}"
    assert got["pbm.png"]["result"] == f"{bypasses['pbm.png']}: {too_large}"
    # a JPEG above the limit is decoded at a reduced scale, as libjpeg allows: 1/4 here (Pillow, like libjpeg,
    # steps over a junk byte between two segments)
    assert got["app-segments.jpg"]["result"] == [SIDE // 4, SIDE // 4, 3]
    assert got["junk-between.jpg"]["result"] == [SIDE // 4, SIDE // 4, 3]
    # a junk byte right after the JPEG's start or before it: Pillow does not take it for a JPEG, nothing is decoded
    for name in ("junk-inside.jpg", "junk-before.jpg"):
        assert got[name]["result"] == f"{bypasses[name]}: not a readable image (unknown format)"
    # a full decode of any of them is 432 MB (the whole frame as BGR) above the baseline
    for name, figures in got.items():
        assert figures["peak_mb"] < baseline["peak_mb"] + 100, (name, figures, baseline)


def test_a_folder_with_no_decodable_image_stops_the_daemon_with_exit_1(tmp_path: Path, model_dir: Path) -> None:
    # It exited 0, as if the folder had simply ended.
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        (folder / name).write_bytes(b"not an image at all")
    config = tmp_path / "fallwatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "camera": {"realtime": False},
                "mqtt": {"enabled": False},
                "debug": {"enabled": False},
                "events": {"enabled": False},
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "fallwatch.daemon.cli.main", "run", "--config", str(config), "--source", str(folder)],
        env=dict(os.environ, FALLWATCH_MODEL_DIR=str(model_dir)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "no image in the folder could be decoded" in line]
    assert len(errors) >= 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
