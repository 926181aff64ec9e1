"""Image files: which files hashkit treats as images, and decoding one into 8-bit grey or RGB.

Only the formats listed here are ever decoded (``Image.open(..., formats=...)``): PIL can also
read dozens of others, some through outside programs (EPS and PDF run Ghostscript), and a file
named ``.png`` may hold any of them. A JPEG saved as ``.png`` still opens: any listed format is
accepted under any listed extension.

Images with more than 8 bits per sample (16-bit PNG, TIFF and PGM files, PIL modes ``I;16``
and ``I``) are scaled to 8 bits (``v * 255 / 65535``, rounded), so that a 16-bit copy of an
8-bit image decodes to the same pixels; 32-bit float images (mode ``F``) are read as values in
[0, 1].
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from hashkit.errors import DataError

# torchvision's IMG_EXTENSIONS plus .gif, spelled out so that listing a folder needs no torch.
IMAGE_EXTENSIONS = (
    ".bmp",
    ".gif",
    ".jpeg",
    ".jpg",
    ".pgm",
    ".png",
    ".ppm",
    ".tif",
    ".tiff",
    ".webp",
)
# The PIL formats those extensions name (JPEG includes MPO, the multi-picture JPEG of cameras).
PIL_FORMATS = ("BMP", "GIF", "JPEG", "PNG", "PPM", "TIFF", "WEBP")

# Modes PIL decodes that are better read as grey than as colour.
_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# Modes whose samples are integers of up to 16 bits (PIL widens 16-bit PNGs to "I").
_WIDE_INT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def is_image_file(name: str) -> bool:
    """True when ``name`` has an image extension (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` in mode "L" (grey modes) or "RGB" (the others), samples of more than 8 bits
    scaled to 0..255 instead of clipped."""
    if image.mode in _WIDE_INT_MODES:
        wide = np.asarray(image, dtype=np.float64)
        return Image.fromarray(_scaled(wide, 65535.0))
    if image.mode == "F":
        return Image.fromarray(_scaled(np.asarray(image, dtype=np.float64), 1.0))
    # convert() always returns a new, fully loaded image, detached from any file.
    return image.convert("L" if image.mode in _GREY_MODES else "RGB")


def _scaled(values: np.ndarray, top: float) -> np.ndarray:
    """uint8 ``round(v * 255 / top)`` of values clipped to ``[0, top]`` (NaN as 0)."""
    values = np.nan_to_num(values, nan=0.0, posinf=top, neginf=0.0)
    return np.rint(np.clip(values, 0.0, top) * (255.0 / top)).astype(np.uint8)


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode the image file at ``path`` (one of PIL_FORMATS; the first frame of an animation)
    into mode "L" or "RGB"; DataError naming the file if it cannot be decoded."""
    try:
        with Image.open(path, formats=PIL_FORMATS) as img:
            img.load()
            return to_8bit(img)
    except UnidentifiedImageError:
        raise DataError(f"cannot read image {path}: not a {', '.join(PIL_FORMATS)} file") from None
    except Exception as e:  # noqa: BLE001 - a crafted file can make a decoder raise nearly anything
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot read image {path}: {reason}") from e
