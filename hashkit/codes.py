"""Binary codes: signs to packed bytes and back, Hamming distances, code statistics.

Packed codes are uint8 arrays ``N x ceil(bits/8)`` laid out as ``numpy.packbits(..., axis=1)``
does it: bit order "big" (the first bit is the most significant bit of byte 0) and the
padding bits at the end of the last byte are zero, so they never change a Hamming distance.
"""

from __future__ import annotations

import numpy as np

from hashkit.errors import HashkitError

BIT_ORDER = "big"


def code_bytes(bits: int) -> int:
    """Number of bytes of one packed code of ``bits`` bits."""
    return (bits + 7) // 8


def pack_codes(signs: np.ndarray) -> np.ndarray:
    """Pack ``N x bits`` signs (bool, 0/1 or -1/+1; positive means 1) into uint8
    ``N x ceil(bits/8)``."""
    signs = np.asarray(signs)
    if signs.ndim != 2:
        raise HashkitError(f"codes must be a 2-d array N x bits, got shape {signs.shape}")
    return np.packbits(signs > 0, axis=1, bitorder=BIT_ORDER)


def unpack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unpack ``N x ceil(bits/8)`` uint8 codes into ``N x bits`` uint8 0/1."""
    codes = np.asarray(codes, dtype=np.uint8)
    check_packed(codes, bits)
    return np.unpackbits(codes, axis=1, count=bits, bitorder=BIT_ORDER)


def check_packed(codes: np.ndarray, bits: int) -> None:
    """Raise HashkitError unless ``codes`` is a 2-d uint8 array of ``ceil(bits/8)`` columns."""
    if codes.ndim != 2 or codes.dtype != np.uint8 or codes.shape[1] != code_bytes(bits):
        raise HashkitError(
            f"packed {bits}-bit codes must be uint8 N x {code_bytes(bits)}, "
            f"got {codes.dtype} {codes.shape}"
        )


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming_distances(xq: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """Hamming distances ``nq x nb`` (int32) between packed codes ``xq`` and ``xb``."""
    xq = np.asarray(xq, dtype=np.uint8)
    xb = np.asarray(xb, dtype=np.uint8)
    if xq.shape[1] != xb.shape[1]:
        raise HashkitError(f"code widths differ: {xq.shape[1]} and {xb.shape[1]} bytes")
    if hasattr(np, "bitwise_count"):
        xor = xq[:, None, :] ^ xb[None, :, :]
        return np.bitwise_count(xor).sum(axis=2, dtype=np.int32)
    return _POPCOUNT[xq[:, None, :] ^ xb[None, :, :]].sum(axis=2, dtype=np.int32)


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
