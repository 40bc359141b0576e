"""What every frame source is: ``Source`` (open, read one frame, close, describe), the errors it raises, and the
stand-in for a camera that could not be made (one of several cameras fails alone).
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np
from fallwatch.config.loader import redact_url

log = logging.getLogger(__name__)


class SourceError(Exception):
    """The source cannot be used at all (not a transient camera failure). The message is one line."""


class EndOfStream(Exception):
    """A file or folder source has no more frames."""


class Source:
    """One kind of frame source. ``read`` returns an image (RGB or BGR as ``bgr`` says) and its time stamp,
    returns None for a failed read, or raises EndOfStream."""

    name = "source"
    is_file = False  # files and folders: media time, EOF, pacing; cameras: reopen on failure
    bgr = True  # OpenCV delivers BGR
    fps: Optional[float] = None

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> Optional[tuple[np.ndarray, float]]:
        raise NotImplementedError

    def rewind(self) -> None:
        raise EndOfStream()

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.name


class UnavailableSource(Source):
    """A source that could not be made (with several cameras, one camera's: the others go on); never opens."""

    def __init__(self, spec: str, error: str):
        self.name = redact_url(spec)
        self.error = error

    def open(self) -> None:
        raise SourceError(self.error)
