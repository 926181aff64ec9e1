"""Binary codes: signs to packed bytes and back, validation, Hamming distances, statistics.

Packed codes are uint8 arrays ``N x ceil(bits/8)`` in FAISS's bit order, the one
``faiss.real_to_binary`` produces and ``numpy.packbits(..., axis=1, bitorder="little")``
makes: bit ``j`` of a code is bit ``j % 8`` (value ``1 << (j % 8)``) of byte ``j // 8``.
The padding bits of the last byte (bits ``bits .. 8 * ceil(bits/8) - 1``, its high bits)
are zero, so they change no Hamming distance and a FAISS index that hashes the first bits
of a code (IndexBinaryHash, IndexBinaryMultiHash) hashes real bits.

Earlier hashkit packed the first bit into the *high* bit of byte 0 (``bitorder="big"``);
files say which order they hold, and :func:`convert_bit_order` turns old codes into this one.
Every array of codes that enters hashkit goes through :func:`check_packed`.
"""

from __future__ import annotations

import numbers

import numpy as np

from hashkit.errors import HashkitError, MismatchError

BIT_ORDER = "little"
BIT_ORDERS = ("little", "big")

# Each byte with its 8 bits in reverse order: converts packed codes between the two orders.
_REVERSED_BYTES = np.array([int(f"{b:08b}"[::-1], 2) for b in range(256)], dtype=np.uint8)


def code_bytes(bits: int) -> int:
    """Number of bytes of one packed code of ``bits`` bits."""
    return (bits + 7) // 8


def check_bits(bits, what: str = "bits") -> int:
    """``bits`` as a Python int; raise HashkitError unless it is an integer >= 1."""
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, numbers.Integral):
        raise HashkitError(f"{what} must be an integer, got {bits!r}")
    if bits < 1:
        raise HashkitError(f"{what} must be at least 1, got {bits}")
    return int(bits)


def pack_codes(signs: np.ndarray) -> np.ndarray:
    """Pack ``N x bits`` signs (bool, 0/1 or -1/+1; positive means 1) into uint8
    ``N x ceil(bits/8)``, bit ``j`` into bit ``j % 8`` of byte ``j // 8``."""
    signs = np.asarray(signs)
    if signs.ndim != 2:
        raise HashkitError(f"codes must be a 2-d array N x bits, got shape {signs.shape}")
    if signs.dtype.kind not in "biuf":
        raise HashkitError(f"signs must be numbers or booleans, got {signs.dtype}")
    if signs.dtype.kind == "f" and np.isnan(signs).any():
        raise HashkitError("signs contain NaN: a NaN has no sign")
    return np.packbits(signs > 0, axis=1, bitorder=BIT_ORDER)


def unpack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unpack ``N x ceil(bits/8)`` uint8 codes into ``N x bits`` uint8 0/1."""
    codes = check_packed(codes, bits)
    return np.unpackbits(codes, axis=1, count=bits, bitorder=BIT_ORDER)


def _check_array(codes, what: str) -> np.ndarray:
    """``codes`` as a 2-d uint8 ndarray (never cast: other dtypes are refused)."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        hint = (
            ": packed codes are bytes; turn signs or embeddings into codes with "
            "hashkit.codes.pack_codes or sign_codes"
            if codes.dtype.kind in "fbc"
            else ""
        )
        raise HashkitError(f"{what} must be uint8 packed codes, got dtype {codes.dtype}{hint}")
    if codes.ndim != 2:
        raise HashkitError(f"{what} must be a 2-d array N x bytes, got shape {codes.shape}")
    return codes


def padding_mask(bits: int) -> int:
    """The padding bits of the last byte of a ``bits``-bit code, as a byte mask (0 if none)."""
    used = bits % 8
    return 0 if used == 0 else (0xFF << used) & 0xFF


def check_packed(codes: np.ndarray, bits: int, what: str = "codes") -> np.ndarray:
    """Validate packed codes; returns them as an ndarray (no copy, no cast).

    Raises HashkitError unless ``codes`` is a 2-d uint8 array of ``ceil(bits/8)`` columns
    (MismatchError for another width) whose padding bits are all zero. A set padding bit
    would add to Hamming distances (and overflow the ``bits + 1`` distance values the
    metrics count); it usually means codes packed in another bit order. ``what`` names the
    codes in messages.
    """
    bits = check_bits(bits)
    codes = _check_array(codes, what)
    if codes.shape[1] != code_bytes(bits):
        raise MismatchError(
            f"{what}: {bits}-bit codes take {code_bytes(bits)} byte(s) each, "
            f"got {codes.shape[1]} (shape {codes.shape})"
        )
    mask = padding_mask(bits)
    if mask and len(codes):
        dirty = np.flatnonzero(codes[:, -1] & mask)
        if len(dirty):
            raise HashkitError(
                f"{what}: {len(dirty)} code(s) have padding bits set (first at row {dirty[0]}); "
                f"bits {bits}..{8 * code_bytes(bits) - 1} of a {bits}-bit code must be 0. "
                "Codes packed with numpy.packbits's default order? hashkit uses "
                'bitorder="little", as FAISS does'
            )
    return codes


def convert_bit_order(codes: np.ndarray, from_order: str, to_order: str = BIT_ORDER) -> np.ndarray:
    """Packed codes re-laid from bit order ``from_order`` to ``to_order`` ("little" or
    "big"): the bits of each byte reversed when the orders differ (a new array), else
    ``codes`` itself. Hamming distances between codes of one order are unchanged."""
    for order in (from_order, to_order):
        if order not in BIT_ORDERS:
            raise HashkitError(f"unknown bit order {order!r}; expected one of {BIT_ORDERS}")
    codes = _check_array(codes, "codes")
    return codes if from_order == to_order else _REVERSED_BYTES[codes]


def hamming_distances(xq: np.ndarray, xb: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Hamming distances ``nq x nb`` (int32) between packed codes ``xq`` and ``xb``.

    With ``bits`` the codes are checked as ``bits``-bit codes (padding included); without,
    as codes of ``8 x`` their byte width.
    """
    xq = _check_array(xq, "query codes")
    xb = _check_array(xb, "database codes")
    if xq.shape[1] != xb.shape[1]:
        raise HashkitError(f"code widths differ: {xq.shape[1]} and {xb.shape[1]} bytes")
    if bits is not None:
        check_packed(xq, bits, "query codes")
        check_packed(xb, bits, "database codes")
    xor = xq[:, None, :] ^ xb[None, :, :]
    return np.bitwise_count(xor).sum(axis=2, dtype=np.int32)


def sign_codes(h: np.ndarray, rotation: np.ndarray | None = None) -> np.ndarray:
    """Packed codes ``b = sgn(R h)`` of float embeddings ``h`` (N x bits); R is bits x bits."""
    h = np.asarray(h, dtype=np.float32)
    if rotation is not None:
        h = h @ np.asarray(rotation, dtype=np.float32).T
    return pack_codes(h > 0)


def code_statistics(codes: np.ndarray, bits: int) -> dict:
    """Balance and redundancy of packed codes.

    Returns ``balance`` (mean over bits of |fraction of ones - 0.5|, 0 is perfectly balanced),
    ``bit_correlation`` (mean absolute Pearson correlation between distinct bits) and
    ``distinct_codes`` (number of different codes).
    """
    unpacked = unpack_codes(codes, bits).astype(np.float64)
    ones = unpacked.mean(axis=0)
    balance = float(np.abs(ones - 0.5).mean())
    if bits > 1 and len(unpacked) > 1:
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.corrcoef(unpacked, rowvar=False)
        off = corr[~np.eye(bits, dtype=bool)]
        off = np.nan_to_num(off, nan=1.0)
        bit_correlation = float(np.abs(off).mean())
    else:
        bit_correlation = 0.0
    distinct = int(len(np.unique(np.ascontiguousarray(codes).view(f"V{codes.shape[1]}"))))
    return {"balance": balance, "bit_correlation": bit_correlation, "distinct_codes": distinct}
