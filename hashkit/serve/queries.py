"""Request payloads to query inputs: packed codes given as hex or base64 text, and uploaded
image files decoded under a size and pixel limit."""

from __future__ import annotations

import base64
import binascii
import functools
import io
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from hashkit.codes import code_bytes, pack_codes
from hashkit.data.base import open_image
from hashkit.errors import DataError
from hashkit.serve.errors import PayloadTooLarge, RequestError

# What the service decodes from uploads: the common web formats, a subset of those hashkit
# indexes (hashkit.data.images.PIL_FORMATS, which thumbnails of stored files use). Naming them
# keeps PIL from trying any other plugin (EPS would run Ghostscript) on a stranger's bytes.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "GIF")


def decode_codes(texts: Sequence[str], encoding: str, bits: int) -> np.ndarray:
    """Packed codes uint8 ``n x ceil(bits/8)`` from their hex or base64 text; RequestError
    names the first code of the wrong length or with padding bits set."""
    nbytes = code_bytes(bits)
    rows = []
    for i, text in enumerate(texts):
        try:
            raw = (
                bytes.fromhex(text)
                if encoding == "hex"
                else base64.b64decode(text.encode("ascii"), validate=True)
            )
        except (ValueError, binascii.Error, UnicodeEncodeError):
            raise RequestError(f"code {i} is not valid {encoding}: {text[:40]!r}") from None
        if len(raw) != nbytes:
            raise RequestError(
                f"code {i} has {len(raw)} bytes; this index takes {bits}-bit codes of "
                f"{nbytes} bytes"
            )
        rows.append(raw)
    codes = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), nbytes)
    padding = ~_last_byte_bits(bits)
    dirty = np.flatnonzero(codes[:, -1] & padding)
    if len(dirty):
        raise RequestError(
            f"code {dirty[0]} sets padding bits beyond the index's {bits} bits (they must be 0)"
        )
    return codes


@functools.cache
def _last_byte_bits(bits: int) -> np.uint8:
    """The bits of a code's last byte that hold code bits (the rest is zero padding), in
    whichever bit order hashkit.codes packs."""
    return pack_codes(np.ones((1, bits), dtype=np.uint8))[0, -1]


def decode_upload(
    data: bytes, name: str, max_pixels: int, formats: Sequence[str] = IMAGE_FORMATS
) -> Image.Image:
    """An uploaded image file as hashkit decodes image files (mode L or RGB); RequestError when
    it is not a readable image of one of ``formats`` (PIL format names), PayloadTooLarge above
    ``max_pixels`` pixels.

    The pixel count is checked from the header, before anything is decompressed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=formats) as header:
                width, height = header.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Warning) as exc:
        raise RequestError(
            f"{name}: not a readable {'/'.join(formats)} image ({_reason(exc)})"
        ) from None
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"{name}: {width} x {height} pixels is more than the limit of {max_pixels}"
        )
    try:
        return open_image(io.BytesIO(data))
    except DataError as exc:
        raise RequestError(
            f"{name}: cannot decode the image ({_reason(exc.__cause__ or exc)})"
        ) from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):  # its message names our in-memory buffer
        return "unknown format, or not an image"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
