"""Reading still images with a size limit.

A camera frame is at most 4096 x 4096 (``camera.width``/``height``); an image file may claim anything, and
decoding a 12000 x 12000 PNG takes ~1 GB. So the size is read from the file's header before decoding (PNG, JPEG,
BMP, WebP): a JPEG above the limit is decoded at 1/2, 1/4 or 1/8 scale (libjpeg scales while decoding, so the
full image never exists in memory), any other image above it is refused with one line.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, Optional

import numpy as np

MAX_IMAGE_PIXELS = 4096 * 4096
HEADER_BYTES = 256 * 1024  # a JPEG's frame header may follow large EXIF/ICC segments


class ImageError(ValueError):
    """The file cannot be used as an image; the message is one line naming the file and the problem."""


def image_size(head: bytes) -> Optional[tuple[int, int]]:
    """(width, height) from the first bytes of a PNG, JPEG, BMP or WebP file; None when not known."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    if head[:2] == b"BM" and len(head) >= 26:
        width, height = struct.unpack("<ii", head[18:26])
        return abs(width), abs(height)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        chunk = head[12:16]
        if chunk == b"VP8X" and len(head) >= 30:
            return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
        if chunk == b"VP8 " and len(head) >= 30:
            width, height = struct.unpack("<HH", head[26:30])
            return width & 0x3FFF, height & 0x3FFF
        if chunk == b"VP8L" and len(head) >= 25:
            bits = int.from_bytes(head[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        return None
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(head)
    return None


def _jpeg_size(head: bytes) -> Optional[tuple[int, int]]:
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        length = struct.unpack(">H", head[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame
            height, width = struct.unpack(">HH", head[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return None


def read_image_bgr(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """The image as BGR uint8 (OpenCV's order), downscaled or refused above ``max_pixels``; ImageError otherwise."""
    import cv2

    p = Path(path)
    try:
        data = np.fromfile(str(p), dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    size = image_size(data[:HEADER_BYTES].tobytes())
    flags: Any = cv2.IMREAD_COLOR
    if size is not None and size[0] * size[1] > max_pixels:
        w, h = size
        scale = next((s for s in (2, 4, 8) if (w // s) * (h // s) <= max_pixels), None)
        if data[:2].tobytes() != b"\xff\xd8" or scale is None:
            raise ImageError(
                f"{path}: {w}x{h} is larger than the limit of {max_pixels / 1e6:.1f} megapixels; "
                f"skipped (scale it down first)"
            )
        flags = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[scale]
    img = cv2.imdecode(data, flags) if data.size else None
    if img is None:
        raise ImageError(f"{path}: not a readable image (corrupt or unsupported format)")
    if img.shape[0] * img.shape[1] > max_pixels:  # a format whose header we do not read (TIFF)
        raise ImageError(
            f"{path}: {img.shape[1]}x{img.shape[0]} is larger than the limit of "
            f"{max_pixels / 1e6:.1f} megapixels; skipped (scale it down first)"
        )
    return img
