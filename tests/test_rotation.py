import numpy as np
import pytest

from hashkit import metrics
from hashkit.codes import hamming_distances, sign_codes
from hashkit.metrics import mean_average_precision
from hashkit.rotation import (
    _turned_projections,
    itq_rotation,
    plane_rotation,
    plane_rotation_factors,
    random_search_rotation,
)


def clustered_embeddings(n_per_class=40, classes=4, bits=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, bits))
    h = np.repeat(centres, n_per_class, axis=0) + 0.8 * rng.standard_normal(
        (classes * n_per_class, bits)
    )
    h /= np.linalg.norm(h, axis=1, keepdims=True)
    return h.astype(np.float32), np.repeat(np.arange(classes), n_per_class)


def test_plane_rotation_is_a_proper_rotation_in_one_plane():
    rng = np.random.default_rng(0)
    g = plane_rotation(6, 0.3, rng)
    assert np.allclose(g @ g.T, np.eye(6), atol=1e-12)
    assert np.linalg.det(g) == pytest.approx(1.0)
    eigenvalues = np.linalg.eigvals(g)
    assert np.isclose(eigenvalues, 1.0).sum() == 4


def test_itq_rotation_is_orthogonal_and_lowers_quantisation_error():
    h, _ = clustered_embeddings()
    r = itq_rotation(h, iterations=50)
    assert np.allclose(r @ r.T, np.eye(8), atol=1e-5)

    def error(rot):
        v = h @ rot.T
        return np.linalg.norm(np.sign(v) - v)

    random_errors = [
        error(np.linalg.qr(np.random.default_rng(s).standard_normal((8, 8)))[0]) for s in range(5)
    ]
    assert error(r) < min(random_errors)


def test_random_search_never_lowers_training_map_and_returns_a_rotation():
    h, y = clustered_embeddings(seed=3)
    hq, hb, yq, yb = h[::4], np.delete(h, np.s_[::4], 0), y[::4], np.delete(y, np.s_[::4])
    result = random_search_rotation(hq, hb, yq, yb, steps=60, seed=1)
    assert np.all(np.diff(result.history) >= 0)
    assert result.final_map >= result.initial_map
    r = result.rotation
    assert np.allclose(r @ r.T, np.eye(8), atol=1e-5)
    measured = mean_average_precision(sign_codes(hq, r), sign_codes(hb, r), yq, yb, 8)
    assert measured == pytest.approx(result.final_map, abs=1e-6)
    if result.accepted:
        assert result.final_map > result.initial_map


def sorting_map_scorer(labels_q, labels_b, bits, top_k=None, **_):
    """The obvious exact scorer: sort every query's database by (distance, index), sum P@i."""
    labels_q, labels_b = np.asarray(labels_q), np.asarray(labels_b)

    def relevant(a, b):
        return bool(np.any((a > 0) & (b > 0))) if np.ndim(a) else a == b

    def score(xq, xb):
        dist = hamming_distances(xq, xb)
        k = len(xb) if top_k is None else top_k
        aps = []
        for q in range(len(xq)):
            order = sorted(range(len(xb)), key=lambda j: (dist[q, j], j))[:k]
            hits, total = 0, 0.0
            for i, j in enumerate(order, start=1):
                if relevant(labels_q[q], labels_b[j]):
                    hits += 1
                    total += hits / i
            aps.append(total / hits if hits else 0.0)
        return float(np.mean(aps))

    return score


def reference_search(hq, hb, yq, yb, steps, seed):
    """The search as first written: each candidate's codes straight from H (R G)^T, scored by
    the sorting scorer. Returns the best-mAP history and the final R (before it is
    re-orthogonalised)."""
    rng = np.random.default_rng(seed)
    hq, hb = np.asarray(hq, np.float64), np.asarray(hb, np.float64)
    score = sorting_map_scorer(yq, yb, hq.shape[1])
    r = np.eye(hq.shape[1])
    history = [score(sign_codes(hq @ r.T), sign_codes(hb @ r.T))]
    for t in range(steps):
        step = 1.0 - t / steps
        angle = step if rng.random() < 0.5 else -step
        candidate = r @ plane_rotation(hq.shape[1], angle, rng)
        value = score(sign_codes(hq @ candidate.T), sign_codes(hb @ candidate.T))
        if value > history[-1]:
            r = candidate
        history.append(max(value, history[-1]))
    return history, r


@pytest.mark.parametrize("seed", [1, 2])
def test_random_search_accepts_the_same_steps_as_the_direct_sorting_search(seed):
    h, y = clustered_embeddings(n_per_class=12, classes=3, bits=12, seed=seed)
    hq, hb, yq, yb = h[::3], np.delete(h, np.s_[::3], 0), y[::3], np.delete(y, np.s_[::3])
    fast = random_search_rotation(hq, hb, yq, yb, steps=40, seed=seed)
    history, r = reference_search(hq, hb, yq, yb, steps=40, seed=seed)
    accepted = np.flatnonzero(np.diff(history))
    assert len(accepted) > 0
    assert fast.accepted == len(accepted)
    assert np.array_equal(np.flatnonzero(np.diff(fast.history)), accepted)
    assert fast.history == pytest.approx(history, rel=1e-12)
    u, _, vt = np.linalg.svd(r)
    assert np.array_equal(fast.rotation, (u @ vt).astype(np.float32))


def test_candidate_codes_from_a_rank_two_update_equal_the_direct_product():
    rng = np.random.default_rng(5)
    h = rng.standard_normal((500, 16))
    r = np.linalg.qr(rng.standard_normal((16, 16)))[0]
    for angle in (1.0, -0.3, 1e-3):
        u, turn = plane_rotation_factors(16, angle, rng)
        g = np.eye(16) + u @ turn @ u.T
        updated = np.empty((500, 16))
        _turned_projections(h, h @ r.T, u, turn.T @ (r @ u).T, updated)
        assert np.allclose(updated, h @ (r @ g).T, rtol=0, atol=1e-13)
        assert np.array_equal(sign_codes(updated), sign_codes(h @ (r @ g).T))


def test_random_search_scores_multi_hot_labels_by_the_protocols_map_at_k(monkeypatch):
    seen = []

    def spy(labels_q, labels_b, bits, top_k=None, **kwargs):
        seen.append(top_k)
        return real(labels_q, labels_b, bits, top_k, **kwargs)

    real = metrics.mean_average_precision_sign_scorer
    monkeypatch.setattr(metrics, "mean_average_precision_sign_scorer", spy)
    h, y = clustered_embeddings(n_per_class=10, classes=3, bits=8)
    multi_hot = np.eye(3, dtype=np.uint8)[y]
    random_search_rotation(h[:9], h[9:], y[:9], y[9:], steps=2)
    random_search_rotation(h[:9], h[9:], multi_hot[:9], multi_hot[9:], steps=2)
    random_search_rotation(h[:9], h[9:], multi_hot[:9], multi_hot[9:], steps=2, top_k=7)
    assert seen == [None, metrics.protocol_top_k(multi_hot), 7]
