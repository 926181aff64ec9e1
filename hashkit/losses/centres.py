"""Binary class targets in {-1, +1}^bits: CSQ's hash centres and OrthoHash's codebook.

Both papers use rows of a Hadamard matrix (mutually orthogonal: any two are bits/2 apart) where
they exist, and Bernoulli(0.5) codes otherwise (near-orthogonal in expectation).
"""

from __future__ import annotations

import numpy as np

from hashkit.errors import HashkitError

CENTRE_KINDS = ("auto", "hadamard", "bernoulli")


def sylvester_hadamard(n: int) -> np.ndarray:
    """The ``n x n`` Hadamard matrix of Sylvester's construction (n a power of two), +-1."""
    if n < 1 or n & (n - 1):
        raise HashkitError(f"a Sylvester Hadamard matrix needs a power of two, got {n}")
    h = np.ones((1, 1))
    while len(h) < n:
        h = np.block([[h, h], [h, -h]])
    return h


def bernoulli_centres(num_classes: int, bits: int, seed: int = 0, draws: int = 100) -> np.ndarray:
    """``num_classes x bits`` codes with Bernoulli(0.5) bits: the best of ``draws`` draws by
    the smallest Hamming distance between two classes (so no two classes share a target)."""
    rng = np.random.default_rng(seed)
    best, best_gap = None, -1
    for _ in range(draws):
        c = np.where(rng.random((num_classes, bits)) < 0.5, -1.0, 1.0)
        gaps = (bits - c @ c.T) / 2
        gap = gaps[~np.eye(num_classes, dtype=bool)].min() if num_classes > 1 else bits
        if gap > best_gap:
            best, best_gap = c, gap
    return best


def hash_centres(num_classes: int, bits: int, kind: str = "auto", seed: int = 0) -> np.ndarray:
    """float32 ``num_classes x bits`` targets in {-1, +1}.

    ``hadamard``: rows of H and then of -H (CSQ's construction; needs bits a power of two and
    num_classes <= 2 bits); ``bernoulli``: see ``bernoulli_centres``; ``auto``: hadamard where
    it exists, else bernoulli (CSQ's rule).
    """
    if kind not in CENTRE_KINDS:
        raise HashkitError(f"unknown centre kind {kind!r}; choose one of {CENTRE_KINDS}")
    fits = bits & (bits - 1) == 0 and num_classes <= 2 * bits
    if kind == "hadamard" and not fits:
        raise HashkitError(
            f"no Hadamard centres for {num_classes} classes at {bits} bits "
            "(bits must be a power of two and classes at most twice the bits)"
        )
    if kind == "bernoulli" or not fits:
        centres = bernoulli_centres(num_classes, bits, seed)
    else:
        h = sylvester_hadamard(bits)
        centres = np.concatenate([h, -h])[:num_classes]
    return centres.astype(np.float32)
