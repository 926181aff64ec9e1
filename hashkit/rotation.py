"""The rotation R in b = sgn(R h): identity, ITQ, or SDSH's random search that maximises mAP.

Embeddings are rows: ``H`` is float32 ``N x bits`` and the codes are ``sgn(H R^T)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hashkit.codes import sign_codes
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
    u, _ = np.linalg.qr(rng.standard_normal((m, 2)))
    c, s = np.cos(angle), np.sin(angle)
    turn = np.array([[c - 1.0, -s], [s, c - 1.0]])
    return np.eye(m) + u @ turn @ u.T


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
    """
    from hashkit.metrics import mean_average_precision

    hq = np.asarray(h_query, dtype=np.float64)
    hb = np.asarray(h_database, dtype=np.float64)
    m = hq.shape[1]
    if hb.shape[1] != m:
        raise HashkitError(f"query and database embeddings differ in width: {m} vs {hb.shape[1]}")
    rng = np.random.default_rng(seed)
    r = np.eye(m) if init is None else np.asarray(init, dtype=np.float64)

    def score(rot: np.ndarray) -> float:
        return mean_average_precision(
            sign_codes(hq @ rot.T),
            sign_codes(hb @ rot.T),
            labels_query,
            labels_database,
            m,
            top_k=top_k,
        )

    best = initial = score(r)
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
        candidate = r @ plane_rotation(m, angle, rng)
        value = score(candidate)
        if value > best:
            r, best = candidate, value
            accepted += 1
            if show is not None:
                show(mAP=f"{best:.4f}", refresh=False)
        history.append(best)
    # Re-orthogonalise: products of many rotations drift by float rounding.
    u, _, vt = np.linalg.svd(r)
    return RandomSearchResult((u @ vt).astype(np.float32), initial, best, accepted, history)
