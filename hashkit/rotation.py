"""The rotation R in b = sgn(R h): identity, ITQ, or SDSH's random search that maximises mAP.

Embeddings are rows: ``H`` is float32 ``N x bits`` and the codes are ``sgn(H R^T)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from hashkit.config import ROTATIONS  # noqa: F401  (re-exported)
from hashkit.errors import HashkitError


def random_orthogonal(m: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random ``m x m`` orthogonal matrix (QR of a Gaussian, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((m, m)))
    return q * np.sign(np.diag(r))


def itq_rotation(h: np.ndarray, iterations: int = 50, seed: int = 0) -> np.ndarray:
    """ITQ (Gong & Lazebnik): alternate B = sgn(H R^T) and R from the SVD of B^T H.

    Args:
        h: float ``N x bits`` embeddings (already low-dimensional, so no PCA step).
        iterations: alternations (50 to 500 is usual).
    Returns:
        ``bits x bits`` orthogonal R for codes sgn(R h).
    """
    v = np.asarray(h, dtype=np.float64)
    rng = np.random.default_rng(seed)
    r = random_orthogonal(v.shape[1], rng)  # r maps rows: codes = sgn(v @ r)
    for _ in range(iterations):
        b = np.where(v @ r >= 0, 1.0, -1.0)
        u, _, wt = np.linalg.svd(b.T @ v)
        r = (u @ wt).T
    return r.T.astype(np.float32)


def plane_rotation(m: int, angle: float, rng: np.random.Generator) -> np.ndarray:
    """``G = Q^T (rot(angle) (+) I_{m-2}) Q`` for a random orthonormal basis Q.

    Only the first two rows of Q matter: G = I + U (rot - I) U^T with U the random
    orthonormal ``m x 2`` basis of the plane that G turns.
    """
    u, turn = plane_rotation_factors(m, angle, rng)
    return np.eye(m) + u @ turn @ u.T


def plane_rotation_factors(
    m: int, angle: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The factors of :func:`plane_rotation` (same random draws): ``U`` (float64 ``m x 2``,
    orthonormal) and ``T = rot(angle) - I`` (``2 x 2``), with ``G = I + U T U^T``."""
    u, _ = np.linalg.qr(rng.standard_normal((m, 2)))
    c, s = np.cos(angle), np.sin(angle)
    return u, np.array([[c - 1.0, -s], [s, c - 1.0]])


@dataclass
class RandomSearchResult:
    rotation: np.ndarray
    initial_map: float
    final_map: float
    accepted: int
    history: list[float] = field(default_factory=list)


def random_search_rotation(
    h_query: np.ndarray,
    h_database: np.ndarray,
    labels_query: np.ndarray,
    labels_database: np.ndarray,
    *,
    steps: int = 800,
    init: np.ndarray | None = None,
    seed: int = 0,
    top_k: int | None = None,
    progress: Callable | None = None,
) -> RandomSearchResult:
    """SDSH's quantisation: the rotation R that maximises mAP of sgn(R h), by random search.

    At step t the candidate is R G with G a rotation by +/- (1 - t/steps) radians in a random
    plane; it is kept when mAP (queries vs database, exact, ties by database order) improves.

    Args:
        h_query, h_database: float ``nq x bits`` and ``nb x bits`` training embeddings.
        labels_query, labels_database: int64 N or uint8 N x C multi-hot.
        steps: T, 800 in the paper.
        init: the starting R (identity if None; pass the ITQ rotation to start from it).
        top_k: the search maximises mAP@top_k; None: mAP over the whole database for single
            labels, the protocol's mAP@k for multi-hot labels
            (:func:`hashkit.metrics.protocol_top_k`, 5,000).
    """
    from hashkit import metrics

    hq = np.asarray(h_query, dtype=np.float64)
    hb = np.asarray(h_database, dtype=np.float64)
    m = hq.shape[1]
    if hb.shape[1] != m:
        raise HashkitError(f"query and database embeddings differ in width: {m} vs {hb.shape[1]}")
    rng = np.random.default_rng(seed)
    r = np.eye(m) if init is None else np.asarray(init, dtype=np.float64)

    if top_k is None and np.ndim(labels_database) == 2:
        top_k = metrics.protocol_top_k(labels_database)
    # Labels are prepared once; each candidate costs its projections and one counting scan
    # of their signs (bit-sliced straight from the projections, never packed).
    score_signs = metrics.mean_average_precision_sign_scorer(
        labels_query, labels_database, m, top_k=top_k
    )

    # A candidate R G differs from R by a rank-2 term, so its projections H (R G)^T are the
    # current ones H R^T plus (H U) T^T (R U)^T: O(N m) per candidate, not a full product.
    vq, vb = hq @ r.T, hb @ r.T
    turned_q, turned_b = np.empty_like(vq), np.empty_like(vb)
    best = initial = score_signs(vq, vb)
    history = [best]
    accepted = 0
    iterator = range(steps)
    if progress is not None:
        iterator = progress(iterator, total=steps, desc="rotation search")
    show = getattr(iterator, "set_postfix", None)
    if show is not None:
        show(mAP=f"{best:.4f}", refresh=False)
    for t in iterator:
        step = 1.0 - t / steps
        angle = step if rng.random() < 0.5 else -step
        u, turn = plane_rotation_factors(m, angle, rng)
        candidate = r @ (np.eye(m) + u @ turn @ u.T)
        right = turn.T @ (r @ u).T
        _turned_projections(hq, vq, u, right, turned_q)
        _turned_projections(hb, vb, u, right, turned_b)
        value = score_signs(turned_q, turned_b)
        if value > best:
            r, best = candidate, value
            vq, vb = hq @ r.T, hb @ r.T
            accepted += 1
            if show is not None:
                show(mAP=f"{best:.4f}", refresh=False)
        history.append(best)
    # Re-orthogonalise: products of many rotations drift by float rounding.
    u, _, vt = np.linalg.svd(r)
    return RandomSearchResult((u @ vt).astype(np.float32), initial, best, accepted, history)


@njit(nogil=True, cache=True)
def _turned_projections(h, v, u, right, out):
    """``out = v + (h @ u) @ right`` (float64 ``N x m``; ``u`` ``m x 2``, ``right`` ``2 x m``)
    in one pass over the rows: no temporaries, and none of the BLAS threads that products this
    thin start for nothing."""
    for i in range(h.shape[0]):
        a0 = 0.0
        a1 = 0.0
        for k in range(h.shape[1]):
            a0 += h[i, k] * u[k, 0]
            a1 += h[i, k] * u[k, 1]
        for k in range(h.shape[1]):
            out[i, k] = v[i, k] + a0 * right[0, k] + a1 * right[1, k]
