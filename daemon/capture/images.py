"""Reading still images with a size limit.

A camera frame is at most 4096 x 4096 (``camera.width``/``height``); an image file may claim anything, and
decoding a 12000 x 12000 PNG takes ~1 GB. So the size is asked of the decoder before anything is decoded:
Pillow's ``Image.open`` only reads the header, and knows it for every format it can decode, whatever the file's
name and however far into the file the header lies. The same decoder then decodes, so what was measured is what
gets decoded. A JPEG above the limit is decoded at 1/2, 1/4 or 1/8 scale (libjpeg scales while decoding, so the
full image never exists in memory); any other image above it, and any file Pillow cannot identify, is refused
with one line.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_IMAGE_PIXELS = 4096 * 4096
JPEG_SCALES = (2, 4, 8)  # what libjpeg can decode at directly


class ImageError(ValueError):
    """The file cannot be used as an image; the message is one line naming the file and the problem."""


def _too_large(path: str, w: int, h: int, max_pixels: int) -> ImageError:
    return ImageError(
        f"{path}: {w}x{h} is larger than the limit of {max_pixels / 1e6:.1f} megapixels; skipped (scale it down first)"
    )


def read_image_bgr(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """The image as BGR uint8 (OpenCV's order), downscaled or refused above ``max_pixels``; ImageError otherwise."""
    try:
        with warnings.catch_warnings():
            # our own limit is far below Pillow's bomb warning; its warning would only repeat ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(Path(path)) as im:
                w, h = im.size
                if w * h > max_pixels:
                    scale = next((s for s in JPEG_SCALES if (w // s) * (h // s) <= max_pixels), None)
                    if im.format != "JPEG" or scale is None:
                        raise _too_large(path, w, h, max_pixels)
                    im.draft("RGB", (w // scale, h // scale))  # decode at 1/scale
                im.load()
                if im.size[0] * im.size[1] > max_pixels:  # the decoder did not do what it said
                    raise _too_large(path, *im.size, max_pixels)
                ImageOps.exif_transpose(im, in_place=True)  # upright, as OpenCV's imread gives it
                rgb = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except Image.DecompressionBombError:  # Pillow's own refusal, far above ours
        raise ImageError(f"{path}: larger than the limit of {max_pixels / 1e6:.1f} megapixels; skipped") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a readable image (unknown format)") from None
    except ImageError:
        raise
    except OSError as exc:
        if exc.errno is not None:  # the file system's refusal, not the data's
            raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
        raise ImageError(f"{path}: not a readable image (corrupt: {exc})") from None
    except (ValueError, SyntaxError, EOFError, struct.error) as exc:  # damaged data; Pillow raises each of these
        raise ImageError(f"{path}: not a readable image (corrupt: {exc})") from None
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
