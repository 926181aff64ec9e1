import numpy as np
import pytest

from hashkit.codes import sign_codes
from hashkit.metrics import mean_average_precision
from hashkit.rotation import itq_rotation, plane_rotation, random_search_rotation


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
