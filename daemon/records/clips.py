"""An event record's clip: kept as MJPEG (cheap to write on the pipeline's machine), turned into a clip a browser
plays (H.264 MP4 where OpenCV's FFmpeg has an encoder, else VP8 WebM) the first time someone asks to watch it.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

RECORD_CODEC = ("MJPG", ".avi", "video/x-msvideo")
# For watching: H.264 MP4 where OpenCV's FFmpeg has an encoder (e.g. the Pi's v4l2m2m), else VP8 WebM (Chromium and
# Firefox play it; pip's OpenCV has it).
PLAYABLE = (("avc1", ".mp4", "video/mp4"), ("VP80", ".webm", "video/webm"))


def pick_codec(directory: Path, codecs: tuple = PLAYABLE) -> tuple[str, str, str]:
    """The first of ``codecs`` this OpenCV can write, probed with a tiny file."""
    for fourcc, ext, mime in codecs:
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            path = str(Path(tmp) / f"probe{ext}")
            writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*fourcc), 10, (64, 48))
            ok = writer.isOpened()
            if ok:
                writer.write(np.zeros((48, 64, 3), np.uint8))
            writer.release()
            if ok and os.path.getsize(path) > 0:
                return fourcc, ext, mime
    raise OSError(f"OpenCV cannot write {' or '.join(c[0] for c in codecs)} video")


class ClipNotConverted(OSError):
    """The playable copy of a record's clip could not be made (the disk filled up, the codec failed); nothing
    of it was left behind. ``errno`` is ENOSPC when the disk is the cause."""


def _playable(folder: Path) -> Optional[tuple[Path, str]]:
    for _, ext, mime in PLAYABLE:
        if (folder / f"clip{ext}").is_file():
            return folder / f"clip{ext}", mime
    return None


def playable_clip(folder: Path, offload: Any = None) -> Optional[tuple[Path, str]]:
    """(path, MIME type) of the record's clip as a browser plays it: converted from the MJPEG clip on first use
    (by ``offload``, the debug server's low-priority worker, when given) and kept next to it. On a read-only disk
    the MJPEG clip is all there is. ClipNotConverted when the conversion failed."""
    found = _playable(folder)
    if found is not None:
        return found
    source = folder / f"clip{RECORD_CODEC[1]}"
    if not source.is_file():
        return None
    if not os.access(folder, os.W_OK):  # read-only file system (or folder): nowhere to keep a copy
        return source, RECORD_CODEC[2]
    if offload is None:
        path, mime = convert_clip(str(folder))
    else:
        path, mime = offload.run(("clip", str(folder)), convert_clip, str(folder), keep=False)
    return Path(path), mime


def convert_clip(folder_name: str) -> tuple[str, str]:
    """Writes the record's browser-playable clip from its MJPEG clip; (path, MIME type). Written under a temporary
    name and read back: only a copy with every frame is renamed into place (OpenCV's writer does not report a full
    disk; it leaves a truncated file that would be served as whole). Runs in the offload worker."""
    folder = Path(folder_name)
    found = _playable(folder)
    if found is not None:
        return str(found[0]), found[1]
    source = folder / f"clip{RECORD_CODEC[1]}"
    for stale in folder.glob(".clip-*"):  # of a conversion killed past its time (one runs at a time)
        stale.unlink(missing_ok=True)
    fourcc, ext, mime = pick_codec(folder)
    fd, name = tempfile.mkstemp(prefix=".clip-", suffix=ext, dir=folder)
    os.close(fd)
    tmp = Path(name)
    try:
        written = _transcode(source, tmp, fourcc)
        readable = _count_frames(tmp)
        if written == 0 or readable < written:
            free = shutil.disk_usage(folder).free
            full = free < source.stat().st_size
            raise ClipNotConverted(
                errno.ENOSPC if full else errno.EIO,
                f"{readable} of {written} frames could be written"
                + (f" ({free // 1024} KiB free on the disk)" if full else ""),
            )
        os.replace(tmp, folder / f"clip{ext}")
        return str(folder / f"clip{ext}"), mime
    finally:
        tmp.unlink(missing_ok=True)


def _transcode(source: Path, target: Path, fourcc: str) -> int:
    """Frames of ``source`` written to ``target`` in ``fourcc``; how many were handed to the writer."""
    cap = cv2.VideoCapture(str(source))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    writer = None
    written = 0
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                return written
            if writer is None:
                writer = cv2.VideoWriter(
                    str(target), cv2.VideoWriter.fourcc(*fourcc), fps, (img.shape[1], img.shape[0])
                )
                if not writer.isOpened():
                    raise ClipNotConverted(errno.EIO, f"cannot open a {fourcc} writer")
            writer.write(img)
            written += 1
    finally:
        cap.release()
        if writer is not None:
            writer.release()


def _count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    try:
        count = 0
        while cap.grab():
            count += 1
        return count
    finally:
        cap.release()
