"""Thumbnails of stored images, read by item id only.

The path comes from the code store, never from the request. The file is opened without
following a symlink in its last component and must be a regular file; its bytes are decoded
and re-encoded as PNG, so the endpoint can only ever send image pixels, never a file's raw
contents.
"""

from __future__ import annotations

import io
import os
import stat

from PIL import Image

from hashkit.data.images import PIL_FORMATS
from hashkit.serve.errors import NotFound, PayloadTooLarge, RequestError
from hashkit.serve.queries import decode_upload

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def read_stored_file(path: str, max_bytes: int, what: str) -> bytes:
    """The bytes of a stored image file: a regular file, not a symlink, at most ``max_bytes``."""
    if not path:
        raise NotFound(f"{what} has no image file (a dataset item)")
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        raise NotFound(f"{what}'s image file is missing or is a symlink") from None
    # Checked on the descriptor before wrapping it: fdopen refuses a directory, and the
    # descriptor must be closed on every path.
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotFound(f"{what}'s image is not a regular file")
        if info.st_size > max_bytes:
            raise PayloadTooLarge(f"{what}'s image file is larger than {max_bytes} bytes")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(max_bytes + 1)[:max_bytes]
    finally:
        os.close(fd)


def thumbnail_png(
    path: str, size: int, *, max_pixels: int, max_bytes: int, what: str = "the item"
) -> bytes:
    """PNG bytes of the image at ``path`` shrunk to fit ``size x size`` (never enlarged); any
    format hashkit indexes (TIFF and PPM too, which uploads are not)."""
    data = read_stored_file(path, max_bytes, what)
    try:
        image = decode_upload(data, what, max_pixels, formats=PIL_FORMATS)
    except PayloadTooLarge:
        raise
    except RequestError as exc:
        raise NotFound(f"no image to show: {exc}") from None
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
