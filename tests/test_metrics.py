"""The fast evaluator against slow direct implementations written here with plain loops."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from hashkit import metrics
from hashkit.codes import pack_codes, sign_codes, unpack_codes
from hashkit.errors import DataError, HashkitError, MismatchError

# ---------------------------------------------------------------------------------------
# Slow direct implementations: the obvious loops.


def slow_distances(xq, xb, bits):
    uq = unpack_codes(xq, bits)
    ub = unpack_codes(xb, bits)
    return np.array([[int(np.sum(a != b)) for b in ub] for a in uq])


def slow_relevant(lq, lb):
    if np.ndim(lq) == 0:
        return lq == lb
    return bool(np.any((lq > 0) & (lb > 0)))


def slow_ranking(dist_row):
    # Ties by database order, written without any sort.
    nb = len(dist_row)
    return [j for d in range(max(dist_row) + 1) for j in range(nb) if dist_row[j] == d]


def slow_ap(ranked_rel, k, total_relevant, normaliser):
    hits, total = 0, 0.0
    for i, rel in enumerate(ranked_rel[:k], start=1):
        if rel:
            hits += 1
            total += hits / i
    denominator = hits if normaliser == "retrieved" else min(total_relevant, k)
    return total / denominator if denominator else 0.0


def slow_ranked_relevance(xq, xb, lq, lb, bits):
    dist = slow_distances(xq, xb, bits)
    out = []
    for q in range(len(xq)):
        out.append([slow_relevant(lq[q], lb[j]) for j in slow_ranking(dist[q])])
    return out


def slow_map(xq, xb, lq, lb, bits, k=None, normaliser="retrieved"):
    ranked = slow_ranked_relevance(xq, xb, lq, lb, bits)
    k = len(xb) if k is None else k
    return float(np.mean([slow_ap(r, k, sum(r), normaliser) for r in ranked]))


# ---------------------------------------------------------------------------------------
# Random data: ``ties`` few (many bits, spread codes) or many (few bits, clustered codes).


def make_data(seed, nq, nb, bits, n_classes=4, multi=False, flip=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2, (n_classes, bits))
    if multi:
        lq = (rng.random((nq, n_classes)) < 0.3).astype(np.uint8)
        lb = (rng.random((nb, n_classes)) < 0.3).astype(np.uint8)
        first_q = np.argmax(lq, axis=1)
        first_b = np.argmax(lb, axis=1)
    else:
        lq = rng.integers(0, n_classes, nq).astype(np.int64)
        lb = rng.integers(0, n_classes, nb).astype(np.int64)
        first_q, first_b = lq, lb
    xq = pack_codes(centres[first_q] ^ (rng.random((nq, bits)) < flip))
    xb = pack_codes(centres[first_b] ^ (rng.random((nb, bits)) < flip))
    return xq, xb, lq, lb


CASES = [
    # (bits, nq, nb, multi): 3 and 4 bits give many ties, 40 and 70 bits few.
    (3, 7, 40, False),
    (12, 9, 60, False),
    (40, 6, 50, False),
    (70, 5, 30, True),
    (4, 8, 45, True),
    (16, 6, 55, True),
    (1, 5, 20, False),
    (128, 4, 70, False),
]


@pytest.mark.parametrize("bits,nq,nb,multi", CASES)
def test_distance_matrix_matches_bit_loop(bits, nq, nb, multi):
    xq, xb, _, _ = make_data(1, nq, nb, bits, multi=multi)
    assert np.array_equal(
        metrics.hamming_distance_matrix(xq, xb, bits), slow_distances(xq, xb, bits)
    )


@pytest.mark.parametrize("bits,nq,nb,multi", CASES)
@pytest.mark.parametrize("normaliser", ["retrieved", "min"])
def test_map_matches_slow_loops_whole_and_at_k(bits, nq, nb, multi, normaliser):
    xq, xb, lq, lb = make_data(bits, nq, nb, bits, multi=multi)
    for k in (None, 1, 5, nb // 2, nb, 3 * nb):
        fast = metrics.mean_average_precision(xq, xb, lq, lb, bits, k, normaliser=normaliser)
        slow = slow_map(xq, xb, lq, lb, bits, k, normaliser)
        assert fast == pytest.approx(slow, rel=1e-12, abs=1e-15), k


def slow_per_query(xq, xb, lq, lb, bits):
    """Ranked relevance of every query (ties by database order) and distance histograms."""
    dist = slow_distances(xq, xb, bits)
    ranked = slow_ranked_relevance(xq, xb, lq, lb, bits)
    n = np.zeros((len(xq), bits + 1), dtype=np.int64)
    r = np.zeros((len(xq), bits + 1), dtype=np.int64)
    for q in range(len(xq)):
        for j in range(len(xb)):
            n[q, dist[q, j]] += 1
            r[q, dist[q, j]] += slow_relevant(lq[q], lb[j])
    return ranked, n, r


@pytest.mark.parametrize("bits", [12, 32, 64])
@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("flip", [0.02, 0.5], ids=["many-ties", "few-ties"])
def test_counting_kernel_matches_slow_loops_per_query(bits, multi, flip):
    # 150 items: two full blocks of 64 and a partial one; query 0 has nothing relevant, query
    # 1 shares its code with database items (distance 0 ties).
    nb = 150
    xq, xb, lq, lb = make_data(bits + int(multi), 8, nb, bits, n_classes=5, multi=multi, flip=flip)
    lq, xq = lq.copy(), xq.copy()
    lq[0] = 0 if multi else 99
    xq[1] = xb[17]
    ranked, n, r = slow_per_query(xq, xb, lq, lb, bits)
    for k in (1, 5, 64, 149, nb, 3 * nb):
        for normaliser in ("retrieved", "min"):
            fast = metrics.average_precision(xq, xb, lq, lb, bits, k, normaliser=normaliser)
            slow = [slow_ap(rr, k, sum(rr), normaliser) for rr in ranked]
            assert fast == pytest.approx(slow, rel=1e-12, abs=1e-15), (k, normaliser)
    assert metrics.average_precision(xq, xb, lq, lb, bits)[0] == 0.0
    ks = [200, 1, 64, 7, 64, 150]  # unsorted, repeated, beyond the database
    precision = metrics.precision_at_k(xq, xb, lq, lb, bits, ks)
    recall = metrics.recall_at_k(xq, xb, lq, lb, bits, ks)
    for i, k in enumerate(ks):
        hits = [sum(rr[:k]) for rr in ranked]
        assert precision[i] == pytest.approx(np.mean([h / min(k, nb) for h in hits]))
        assert recall[i] == pytest.approx(
            np.mean([h / sum(rr) if sum(rr) else 0.0 for h, rr in zip(hits, ranked)])
        )
    stats = metrics._scan(xq, xb, lq, lb, bits, ks=(), histograms=True, n_threads=2)
    assert np.array_equal(stats.n, n)
    assert np.array_equal(stats.r, r)
    assert np.array_equal(stats.relevant, r.sum(axis=1))


def test_codes_with_constant_bits_and_a_one_item_database():
    # Bits that are zero in every code drop out of the bit-sliced scan: distances unchanged.
    rng = np.random.default_rng(12)
    signs = rng.random((30, 32)) < 0.5
    signs[:, ::3] = False
    xq, xb = pack_codes(signs[:6]), pack_codes(signs[6:])
    lq, lb = rng.integers(0, 3, 6), rng.integers(0, 3, 24)
    assert metrics.mean_average_precision(xq, xb, lq, lb, 32) == pytest.approx(
        slow_map(xq, xb, lq, lb, 32), rel=1e-12
    )
    one = metrics.average_precision(xq, xb[:1], lq, lb[:1], 32)
    assert np.array_equal(one, (lq == lb[0]).astype(float))


def test_scorer_with_prepared_labels_equals_mean_average_precision():
    for multi, top_k in ((False, None), (False, 9), (True, None), (True, 20)):
        xq, xb, lq, lb = make_data(13, 11, 90, 24, multi=multi)
        score = metrics.mean_average_precision_scorer(lq, lb, 24, top_k)
        for seed in (0, 1):
            flips = np.random.default_rng(seed).random((101, 24)) < 0.1
            yq = xq ^ pack_codes(flips[:11])
            yb = xb ^ pack_codes(flips[11:])
            expected = metrics.mean_average_precision(yq, yb, lq, lb, 24, top_k)
            assert score(yq, yb) == expected
    with pytest.raises(MismatchError):
        score(xq[:3], xb)


@pytest.mark.parametrize("bits, multi, top_k", [(3, False, None), (12, False, 9), (70, True, 20)])
def test_sign_scorer_equals_the_scorer_of_the_packed_sign_codes(bits, multi, top_k):
    """The rotation search's scorer reads the signs of the projections straight into the
    kernel's bit planes; it must give the packed codes' mAP bit for bit: 3 bits (almost all
    ties), 70 bits (two words per code), multi-hot mAP@k, and projections at and next to
    zero (0, -0, a positive float64 that is 0 as a float32: all bit 0, as sign_codes has it)."""
    rng = np.random.default_rng(bits)
    _, _, lq, lb = make_data(bits, 9, 80, bits, multi=multi)
    scorer = metrics.mean_average_precision_scorer(lq, lb, bits, top_k)
    sign_scorer = metrics.mean_average_precision_sign_scorer(lq, lb, bits, top_k)
    for _ in range(3):
        v = rng.standard_normal((89, bits))
        v[rng.random(v.shape) < 0.05] = 0.0
        v[rng.random(v.shape) < 0.05] = -0.0
        v[rng.random(v.shape) < 0.05] = 1e-50
        vq, vb = v[:9], v[9:]
        expected = scorer(sign_codes(vq), sign_codes(vb))
        assert sign_scorer(vq, vb) == expected
    assert expected != scorer(sign_codes(-vq), sign_codes(vb))  # the signs matter


def test_scorers_keep_their_worker_threads_from_one_call_to_the_next(monkeypatch):
    """A scorer is called once per candidate rotation: it starts its threads once, not on
    every call, and its values stay those of a one-off scan with threads of its own."""
    monkeypatch.setattr(metrics, "_PAIRS_PER_THREAD", 1)  # threads even for this tiny case
    xq, xb, lq, lb = make_data(6, 10, 50, 16)
    v = np.random.default_rng(6).standard_normal((60, 16))
    expected = metrics.mean_average_precision(
        sign_codes(v[:10]), sign_codes(v[10:]), lq, lb, 16, n_threads=2
    )
    pools = []

    class CountedPool(ThreadPoolExecutor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pools.append(self)

    monkeypatch.setattr(metrics, "ThreadPoolExecutor", CountedPool)
    for scorer, args in (
        (metrics.mean_average_precision_sign_scorer, (v[:10], v[10:])),
        (metrics.mean_average_precision_scorer, (sign_codes(v[:10]), sign_codes(v[10:]))),
    ):
        pools.clear()
        score = scorer(lq, lb, 16, n_threads=2)
        assert [score(*args) for _ in range(4)] == [expected] * 4
        assert len(pools) == 1


def test_sign_scorer_refuses_nan_and_mismatched_shapes():
    _, _, lq, lb = make_data(3, 4, 10, 8)
    score = metrics.mean_average_precision_sign_scorer(lq, lb, 8)
    v = np.ones((14, 8))
    v[12, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        score(v[:4], v[4:])
    with pytest.raises(MismatchError):
        score(v[:4, :7], v[4:, :7])
    with pytest.raises(MismatchError):
        score(v[:3], np.ones((10, 8)))


def test_padding_bits_set_are_refused_not_read_out_of_range():
    xq, xb, lq, lb = make_data(14, 3, 20, 12)
    dirty = xb.copy()
    dirty[:, -1] |= 0xFF  # all four padding bits of the 12-bit codes, in either bit order
    with pytest.raises(HashkitError):
        metrics.mean_average_precision(xq, dirty, lq, lb, 12)


def test_map_is_the_same_for_every_block_size_and_thread_count(monkeypatch):
    xq, xb, lq, lb = make_data(3, 23, 70, 6)
    expected = slow_map(xq, xb, lq, lb, 6, 10)
    monkeypatch.setattr(metrics, "_PAIRS_PER_THREAD", 1)  # threads even for this tiny case
    for blocks_per_thread in (1, 3, 100):
        monkeypatch.setattr(metrics, "_BLOCKS_PER_THREAD", blocks_per_thread)
        for threads in (1, 3):
            got = metrics.mean_average_precision(xq, xb, lq, lb, 6, 10, n_threads=threads)
            assert got == pytest.approx(expected, rel=1e-12)


def test_query_with_no_relevant_item_scores_zero_and_counts_in_the_mean():
    xq, xb, lq, lb = make_data(4, 5, 30, 8)
    lq = lq.copy()
    lq[0] = 99  # a class no database item has
    ap = metrics.average_precision(xq, xb, lq, lb, 8)
    assert ap[0] == 0.0
    assert metrics.mean_average_precision(xq, xb, lq, lb, 8) == pytest.approx(ap.mean())
    assert metrics.mean_average_precision(xq, xb, lq, lb, 8, tie_aware=True) <= ap[1:].mean()


def test_ties_are_broken_by_database_order():
    bits = 8
    xq = pack_codes(np.zeros((1, bits)))
    xb = pack_codes(np.zeros((4, bits)))  # all at distance 0: pure ties
    lb = np.array([0, 1, 0, 1])
    ap = metrics.average_precision(xq, xb, np.array([1]), lb, bits)
    assert ap[0] == pytest.approx((1 / 2 + 2 / 4) / 2)
    tie = metrics.average_precision(xq, xb, np.array([1]), lb, bits, tie_aware=True)
    # Expected AP of 2 relevant among 4 in random order.
    orders = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    expected = np.mean([(1 / (a + 1) + 2 / (b + 1)) / 2 for a, b in orders])
    assert tie[0] == pytest.approx(expected, rel=1e-12)


def test_precision_and_recall_at_k_match_slow_loops():
    bits, nb = 5, 50
    xq, xb, lq, lb = make_data(5, 8, nb, bits)
    ranked = slow_ranked_relevance(xq, xb, lq, lb, bits)
    ks = [1, 7, 50, 80]
    precision = metrics.precision_at_k(xq, xb, lq, lb, bits, ks)
    recall = metrics.recall_at_k(xq, xb, lq, lb, bits, ks)
    for i, k in enumerate(ks):
        hits = [sum(r[:k]) for r in ranked]
        assert precision[i] == pytest.approx(np.mean([h / min(k, nb) for h in hits]))
        assert recall[i] == pytest.approx(
            np.mean([h / sum(r) if sum(r) else 0.0 for h, r in zip(hits, ranked)])
        )


@pytest.mark.parametrize("multi", [False, True])
def test_precision_recall_curve_and_radius_2_match_slow_loops(multi):
    bits = 10
    xq, xb, lq, lb = make_data(6, 9, 40, bits, multi=multi, flip=0.15)
    dist = slow_distances(xq, xb, bits)
    precision, recall = metrics.precision_recall_curve(xq, xb, lq, lb, bits)
    skipped, _ = metrics.precision_recall_curve(xq, xb, lq, lb, bits, empty="skip")
    for radius in range(bits + 1):
        ps, rs, counted = [], [], []
        for q in range(len(xq)):
            inside = [j for j in range(len(xb)) if dist[q, j] <= radius]
            rel = [slow_relevant(lq[q], lb[j]) for j in range(len(xb))]
            hit = sum(rel[j] for j in inside)
            ps.append(hit / len(inside) if inside else 0.0)
            rs.append(hit / sum(rel) if sum(rel) else 0.0)
            if inside:
                counted.append(ps[-1])
        assert precision[radius] == pytest.approx(np.mean(ps))
        assert recall[radius] == pytest.approx(np.mean(rs))
        assert skipped[radius] == pytest.approx(np.mean(counted) if counted else 0.0)
    assert metrics.precision_within_radius(xq, xb, lq, lb, bits) == pytest.approx(precision[2])


@pytest.mark.parametrize("bits,multi", [(3, False), (6, True), (24, False)])
def test_tie_aware_map_matches_monte_carlo_over_tie_orders(bits, multi):
    xq, xb, lq, lb = make_data(7, 6, 40, bits, multi=multi)
    rng = np.random.default_rng(0)
    dist = metrics.hamming_distance_matrix(xq, xb, bits).astype(np.int64)
    rel = metrics.relevance_matrix(lq, lb)
    samples = []
    for _ in range(3000):
        shuffle = rng.random(len(xb))  # a random order within every tie group
        aps = []
        for q in range(len(xq)):
            order = np.lexsort((shuffle, dist[q]))
            r = rel[q, order]
            hits = np.cumsum(r)
            aps.append((hits[r] / (np.flatnonzero(r) + 1)).sum() / r.sum() if r.any() else 0.0)
        samples.append(np.mean(aps))
    mean, stderr = np.mean(samples), np.std(samples) / np.sqrt(len(samples))
    exact = metrics.mean_average_precision(xq, xb, lq, lb, bits, tie_aware=True)
    assert abs(exact - mean) <= 4 * stderr + 1e-12


def test_tie_aware_map_at_k_matches_monte_carlo_with_min_normaliser():
    bits, k = 4, 12
    xq, xb, lq, lb = make_data(8, 5, 35, bits)
    rng = np.random.default_rng(1)
    dist = metrics.hamming_distance_matrix(xq, xb, bits).astype(np.int64)
    rel = metrics.relevance_matrix(lq, lb)
    samples = []
    for _ in range(3000):
        shuffle = rng.random(len(xb))
        aps = []
        for q in range(len(xq)):
            r = rel[q, np.lexsort((shuffle, dist[q]))]
            aps.append(slow_ap(list(r), k, int(r.sum()), "min"))
        samples.append(np.mean(aps))
    mean, stderr = np.mean(samples), np.std(samples) / np.sqrt(len(samples))
    exact = metrics.mean_average_precision(
        xq, xb, lq, lb, bits, k, normaliser="min", tie_aware=True
    )
    assert abs(exact - mean) <= 4 * stderr + 1e-12


def test_tie_aware_equals_stable_map_without_ties():
    bits = 64
    xq, xb, lq, lb = make_data(9, 1, 6, bits, flip=0.5)
    dist = metrics.hamming_distance_matrix(xq, xb, bits)[0]
    assert len(set(dist.tolist())) == len(dist)  # this seed has no ties
    assert metrics.mean_average_precision(xq, xb, lq, lb, bits, tie_aware=True) == pytest.approx(
        metrics.mean_average_precision(xq, xb, lq, lb, bits), rel=1e-12
    )


def test_evaluate_retrieval_agrees_with_the_single_metrics():
    bits = 6
    xq, xb, lq, lb = make_data(10, 12, 60, bits)
    result = metrics.evaluate_retrieval(xq, xb, lq, lb, bits, top_k=(5, 30), precision_ks=(10, 100))
    assert result["map"] == pytest.approx(slow_map(xq, xb, lq, lb, bits), rel=1e-12)
    for k in (5, 30):
        assert result["map_at"][k] == pytest.approx(slow_map(xq, xb, lq, lb, bits, k))
        assert result["map_at_min"][k] == pytest.approx(slow_map(xq, xb, lq, lb, bits, k, "min"))
    assert result["tie_aware_map"] == pytest.approx(
        metrics.mean_average_precision(xq, xb, lq, lb, bits, tie_aware=True), rel=1e-12
    )
    precision = metrics.precision_at_k(xq, xb, lq, lb, bits, [10, 100])
    assert [result["precision_at"][10], result["precision_at"][100]] == pytest.approx(precision)
    assert result["precision_radius2"] == pytest.approx(
        metrics.precision_within_radius(xq, xb, lq, lb, bits)
    )
    assert len(result["pr_curve"]["precision"]) == bits + 1


def test_harmonic_numbers_are_accurate():
    from fractions import Fraction

    table = metrics.harmonic_numbers(300)
    exact = Fraction(0)
    for n in range(1, 301):
        exact += Fraction(1, n)
        assert table[n] == pytest.approx(float(exact), rel=1e-15)


def test_bad_inputs_raise_clear_errors():
    xq, xb, lq, lb = make_data(11, 3, 10, 8)
    with pytest.raises(MismatchError, match="labels"):
        metrics.mean_average_precision(xq, xb, lq[:2], lb, 8)
    two_labels = np.ones((3, 4), dtype=np.uint8)
    with pytest.raises(MismatchError, match="multi-hot"):
        metrics.mean_average_precision(xq, xb, two_labels, lb, 8)
    with pytest.raises(MismatchError, match="codes"):
        metrics.mean_average_precision(xq, xb, lq, lb, 16)
    with pytest.raises(HashkitError, match="no database"):
        metrics.mean_average_precision(xq, xb[:0], lq, lb[:0], 8)
    with pytest.raises(HashkitError, match="normaliser"):
        metrics.mean_average_precision(xq, xb, lq, lb, 8, 5, tie_aware=True)


# ---------------------------------------------------------------------------------------
# Entry validation: codes, labels and k are checked before any metric is computed.


def _every_metric(xq, xb, lq, lb, bits, **kw):
    """Call each public metric once (a generator, so each call raises on its own)."""
    yield lambda: metrics.average_precision(xq, xb, lq, lb, bits, **kw)
    yield lambda: metrics.mean_average_precision(xq, xb, lq, lb, bits, **kw)
    yield lambda: metrics.mean_average_precision(xq, xb, lq, lb, bits, tie_aware=True, **kw)
    yield lambda: metrics.precision_at_k(xq, xb, lq, lb, bits, [5], **kw)
    yield lambda: metrics.recall_at_k(xq, xb, lq, lb, bits, [5], **kw)
    yield lambda: metrics.precision_recall_curve(xq, xb, lq, lb, bits, **kw)
    yield lambda: metrics.precision_within_radius(xq, xb, lq, lb, bits, **kw)
    yield lambda: metrics.evaluate_retrieval(xq, xb, lq, lb, bits, **kw)


@pytest.mark.parametrize("side", ["query", "database"])
def test_a_set_padding_bit_is_refused_by_every_metric(side):
    xq, xb, lq, lb = make_data(5, 6, 40, 12)
    dirty = (xq if side == "query" else xb).copy()
    dirty[2, -1] |= 0x80  # bit 15 of a 12-bit code
    args = (dirty, xb) if side == "query" else (xq, dirty)
    for call in _every_metric(*args, lq, lb, 12):
        with pytest.raises(MismatchError, match="padding"):
            call()
    with pytest.raises(MismatchError, match="padding"):
        metrics.hamming_distance_matrix(*args, 12)


def test_float_or_signed_codes_are_refused_not_cast():
    xq, xb, lq, lb = make_data(5, 6, 40, 16)
    for bad in (xq.astype(np.float64), xq.astype(np.int16), np.where(xq > 0, np.nan, 0.0)):
        for call in _every_metric(bad, xb, lq, lb, 16):
            with pytest.raises(MismatchError, match="uint8"):
                call()


def test_n_x_1_labels_are_class_indices_not_one_concept_multi_hot():
    xq, xb, lq, lb = make_data(6, 20, 200, 16, n_classes=6)
    expected = metrics.mean_average_precision(xq, xb, lq, lb, 16)
    assert expected < 0.9
    column = metrics.mean_average_precision(xq, xb, lq[:, None], lb[:, None], 16)
    assert column == pytest.approx(expected, rel=1e-12)
    assert metrics.evaluate_retrieval(xq, xb, lq[:, None], lb[:, None], 16)["map"] == (
        pytest.approx(expected, rel=1e-12)
    )


def test_one_hot_labels_score_as_class_indices_and_take_the_single_label_k():
    xq, xb, lq, lb = make_data(7, 10, 80, 16)
    one_hot_q, one_hot_b = np.eye(4, dtype=np.uint8)[lq], np.eye(4, dtype=np.uint8)[lb]
    expected = metrics.evaluate_retrieval(xq, xb, lq, lb, 16)
    for pair in ((one_hot_q, one_hot_b), (one_hot_q, lb), (lq, one_hot_b.astype(bool))):
        got = metrics.evaluate_retrieval(xq, xb, *pair, 16)
        assert got["map"] == pytest.approx(expected["map"], rel=1e-12)
        assert got["tie_aware_map"] == pytest.approx(expected["tie_aware_map"], rel=1e-12)
    assert metrics.protocol_top_k(one_hot_b) == metrics.protocol_top_k(lb) == 1000
    assert metrics.protocol_top_k(np.ones((5, 3), dtype=np.uint8)) == 5000


@pytest.mark.parametrize(
    "bad_labels,message",
    [
        (lambda lq: np.where(np.arange(len(lq)) == 1, np.nan, lq), "whole numbers"),
        (lambda lq: lq + 0.5, "whole numbers"),
        (lambda lq: lq - 10, ">= 0"),
        (lambda lq: np.full((len(lq), 4), 0.5), "0 or 1"),
        (lambda lq: np.eye(4)[lq] * 2, "0 or 1"),
        (lambda lq: lq.astype(str), "numbers"),
        (lambda lq: lq[:, None, None], "shape"),
    ],
)
def test_nan_fractional_negative_and_half_labels_are_refused(bad_labels, message):
    xq, xb, lq, lb = make_data(8, 6, 30, 8)
    for call in _every_metric(xq, xb, bad_labels(lq), lb, 8):
        with pytest.raises(HashkitError, match=message):
            call()
    with pytest.raises(HashkitError, match=message):
        metrics.relevance_matrix(bad_labels(lq), lb)
    with pytest.raises(HashkitError, match=message):
        metrics.protocol_top_k(bad_labels(lq))


@pytest.mark.parametrize("k", [0, 2**31, 2**63, 2**70, 2.5, float("nan"), True, "10"])
def test_absurd_or_non_integer_k_is_a_clear_error(k):
    xq, xb, lq, lb = make_data(9, 4, 30, 8)
    calls = [
        lambda: metrics.mean_average_precision(xq, xb, lq, lb, 8, k),
        lambda: metrics.precision_at_k(xq, xb, lq, lb, 8, [k]),
        lambda: metrics.evaluate_retrieval(xq, xb, lq, lb, 8, top_k=[k]),
    ]
    for call in calls:
        with pytest.raises(HashkitError, match="k must be"):
            call()


def test_the_largest_k_ranks_the_whole_database():
    xq, xb, lq, lb = make_data(9, 4, 30, 8)
    whole = metrics.mean_average_precision(xq, xb, lq, lb, 8)
    assert metrics.mean_average_precision(xq, xb, lq, lb, 8, metrics.MAX_K) == whole


@pytest.mark.parametrize("bits", [0, -1, 8.0, True])
def test_bits_must_be_a_positive_integer(bits):
    xq, xb, lq, lb = make_data(9, 4, 30, 8)
    with pytest.raises(HashkitError, match="bits"):
        metrics.mean_average_precision(xq, xb, lq, lb, bits)
