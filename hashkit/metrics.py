"""Retrieval metrics for packed binary codes: mAP (whole and @k), tie-aware mAP, P@k, R@k,
the precision-recall curve over Hamming radius and the precision within Hamming radius 2.

Every function takes query codes ``xq`` (uint8 ``nq x ceil(bits/8)``), database codes ``xb``
(uint8 ``nb x ceil(bits/8)``), packed as :func:`hashkit.codes.pack_codes` does it, and labels:
int64 ``N`` class indices (relevant = same class) or uint8 ``N x C`` multi-hot (relevant =
shares at least one label); see :mod:`hashkit.labels` for what is accepted (``N x 1`` arrays
are class indices, one-hot rows single labels). The database is ranked for each query by
Hamming distance, ties broken by database order (a stable sort): the convention of published
deep-hashing numbers.

Every public function checks its input first: packed uint8 codes of the right width with
zero padding bits (:func:`hashkit.codes.check_packed`), labels normalised by
:func:`hashkit.labels.normalize_label_pair`, integer ``k`` in ``1..MAX_K``. Bad input raises
a HashkitError; nothing is cast silently.

How it is fast and exact: a Hamming distance takes only ``bits + 1`` values, so no sort is
needed. :mod:`hashkit.ranking` (a numba kernel) counts, per query, the items at each distance
block by block on bit-sliced codes, and from those counts reads off the exact rank of every
relevant item (ties by database order); AP, P@k and R@k need nothing else. Query blocks run
in threads (the kernel releases the GIL). Tie-aware AP and the radius metrics use the same
per-query counts of items and of relevant items at each distance.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from hashkit.codes import check_bits, check_packed
from hashkit.errors import DataError, HashkitError, MismatchError
from hashkit.labels import normalize_label_pair, normalize_labels

NORMALISERS = ("retrieved", "min")

# The largest k a metric takes: any k >= the database size ranks the whole database.
MAX_K = 2**31 - 1

# Query blocks per worker thread of a scan: enough to even out uneven blocks, few enough that
# the kernel's per-call set-up (scratch arrays of a few words per database item) stays small.
_BLOCKS_PER_THREAD = 4
# Query x database pairs below which one more thread costs more than it saves (starting a
# thread is worth about a million pairs of the kernel's work).
_PAIRS_PER_THREAD = 1 << 21

_EULER_GAMMA = 0.57721566490153286060651209


def hamming_distance_matrix(xq: np.ndarray, xb: np.ndarray, bits: int) -> np.ndarray:
    """Hamming distances ``nq x nb`` between packed codes, uint8 (uint16 when bits > 255)."""
    bits = check_bits(bits)
    xq, xb = _as_codes(xq, bits, "query"), _as_codes(xb, bits, "database")
    words_q, words_b = _words(xq), _words(xb)
    return _distances(words_q, words_b, bits)


def relevance_matrix(labels_q: np.ndarray, labels_b: np.ndarray) -> np.ndarray:
    """Relevance ``nq x nb`` (bool): same label, or at least one shared label for multi-hot."""
    labels_q, labels_b = normalize_label_pair(labels_q, labels_b)
    _Labels.build(labels_q, labels_b, len(labels_q), len(labels_b))
    if labels_q.ndim == 2:
        return ((labels_q != 0).astype(np.float32) @ (labels_b != 0).astype(np.float32).T) > 0
    return labels_q[:, None] == labels_b[None, :]


def average_precision(
    xq: np.ndarray,
    xb: np.ndarray,
    labels_q: np.ndarray,
    labels_b: np.ndarray,
    bits: int,
    top_k: int | None = None,
    *,
    normaliser: str = "retrieved",
    tie_aware: bool = False,
    n_threads: int | None = None,
) -> np.ndarray:
    """Average precision of each query, float64 ``nq``; see :func:`mean_average_precision`."""
    xq, xb, labels_q, labels_b, bits = _check_inputs(xq, xb, labels_q, labels_b, bits)
    _check_normaliser(normaliser)
    nb = len(xb)
    k = nb if top_k is None else _check_k(top_k)
    if tie_aware:
        if normaliser == "retrieved" and k < nb:
            raise HashkitError(
                "tie-aware AP@k is defined with normaliser='min' (min(R, k)); "
                "with 'retrieved' the normaliser itself depends on the tie order"
            )
        counts = _scan(
            xq, xb, labels_q, labels_b, bits, ks=(), histograms=True, n_threads=n_threads
        )
        return _tie_aware_ap(counts.n, counts.r, k)
    stats = _scan(xq, xb, labels_q, labels_b, bits, ks=(k,), histograms=False, n_threads=n_threads)
    return _ap_from_sums(stats.ap_sum[:, 0], stats.hits[:, 0], stats.relevant, k, normaliser)


def mean_average_precision(
    xq: np.ndarray,
    xb: np.ndarray,
    labels_q: np.ndarray,
    labels_b: np.ndarray,
    bits: int,
    top_k: int | None = None,
    *,
    normaliser: str = "retrieved",
    tie_aware: bool = False,
    n_threads: int | None = None,
) -> float:
    """Mean over queries of the average precision of the Hamming ranking.

    ``xq`` uint8 ``nq x ceil(bits/8)`` and ``xb`` uint8 ``nb x ceil(bits/8)`` packed codes;
    ``labels_q`` / ``labels_b`` int64 ``N`` (single label) or uint8 ``N x C`` multi-hot.

    The database is ranked by Hamming distance, ties broken by database order. With the
    default ``normaliser="retrieved"`` this is the convention of published deep-hashing code
    (HashNet, DeepHash-pytorch)::

        AP@k = (1 / R_k) * sum_{i <= k} P(i) rel(i)

    with ``P(i)`` the precision of the first ``i`` items and ``R_k`` the number of relevant
    items in the top ``k``; ``top_k=None`` ranks the whole database (``R_k = R``). A query
    with no relevant item in the top ``k`` scores 0 and still counts in the mean.
    ``normaliser="min"`` divides by ``min(R, k)`` instead, ``R`` the relevant items in the
    whole database (the other common definition; equal to the first when ``top_k=None``).

    ``tie_aware=True`` returns the tie-aware mAP of He et al., "Hashing as Tie-Aware Learning
    to Rank" (CVPR 2018): the expected AP over uniformly random orders within equal
    distances, which does not depend on how ties are broken. It is exact (a closed form per
    distance) and supports ``top_k`` with ``normaliser="min"``.

    ``n_threads``: worker threads over query blocks (default: the CPUs this process may use).
    """
    return float(
        average_precision(
            xq,
            xb,
            labels_q,
            labels_b,
            bits,
            top_k,
            normaliser=normaliser,
            tie_aware=tie_aware,
            n_threads=n_threads,
        ).mean()
    )


def mean_average_precision_scorer(
    labels_q: np.ndarray,
    labels_b: np.ndarray,
    bits: int,
    top_k: int | None = None,
    *,
    n_threads: int | None = None,
) -> Callable[[np.ndarray, np.ndarray], float]:
    """``score(xq, xb)``: :func:`mean_average_precision` of packed codes against fixed labels
    (normaliser "retrieved"), with the labels checked and prepared once.

    For callers that score many code sets of the same items, as the rotation search does
    (hundreds of candidate rotations). ``xq`` uint8 ``nq x ceil(bits/8)`` and ``xb`` uint8
    ``nb x ceil(bits/8)``, rows in the order of ``labels_q`` and ``labels_b``.
    """
    labels_q, labels_b, labels, k, pools = _scorer_state(labels_q, labels_b, top_k)

    def score(xq: np.ndarray, xb: np.ndarray) -> float:
        xq, xb = _as_codes(xq, bits, "query"), _as_codes(xb, bits, "database")
        _check_not_empty(len(xq), len(xb))
        if len(xq) != len(labels_q) or len(xb) != len(labels_b):
            raise MismatchError(
                f"{len(xq)} x {len(xb)} codes for {len(labels_q)} x {len(labels_b)} labels"
            )
        cut = len(xb) if k is None else k
        stats = _scan_prepared(
            xq, xb, labels, bits, ks=(cut,), histograms=False, n_threads=n_threads, pools=pools
        )
        return _scorer_map(stats, cut)

    return score


def _scorer_state(labels_q, labels_b, top_k):
    """What a scorer prepares once: the label arrays, their prepared form, the cut-off and
    the pool of worker threads kept for the scorer's life."""
    labels_q, labels_b = np.asarray(labels_q), np.asarray(labels_b)
    labels = _Labels.build(labels_q, labels_b, len(labels_q), len(labels_b))
    k = None if top_k is None else _check_k(top_k)
    return labels_q, labels_b, labels, k, {}


def _scorer_map(stats, cut: int) -> float:
    """The mAP of a scorer's scan at ``cut`` (normaliser "retrieved")."""
    ap = _ap_from_sums(stats.ap_sum[:, 0], stats.hits[:, 0], stats.relevant, cut, "retrieved")
    return float(ap.mean())


def mean_average_precision_sign_scorer(
    labels_q: np.ndarray,
    labels_b: np.ndarray,
    bits: int,
    top_k: int | None = None,
    *,
    n_threads: int | None = None,
) -> Callable[[np.ndarray, np.ndarray], float]:
    """``score(vq, vb)``: the mAP of the codes sgn(v) of float projections, equal to
    ``mean_average_precision_scorer(...)(sign_codes(vq), sign_codes(vb))`` bit for bit,
    without packing the codes and reading them back.

    For the rotation search, which has each candidate's projections, not its codes: ``vq``
    float64 ``nq x bits`` and ``vb`` float64 ``nb x bits``, rows in the order of ``labels_q``
    and ``labels_b``; a bit is 1 where the projection is positive (as a float32, as
    :func:`hashkit.codes.sign_codes` decides it). A NaN projection raises DataError.
    """
    from hashkit import ranking

    bits = check_bits(bits)
    labels_q, labels_b, labels, k, pools = _scorer_state(labels_q, labels_b, top_k)
    positions = np.arange(bits, dtype=np.int64)

    def score(vq: np.ndarray, vb: np.ndarray) -> float:
        vq = np.ascontiguousarray(vq, dtype=np.float64)
        vb = np.ascontiguousarray(vb, dtype=np.float64)
        if vq.ndim != 2 or vb.ndim != 2 or vq.shape[1] != bits or vb.shape[1] != bits:
            raise MismatchError(
                f"projections of shapes {vq.shape} and {vb.shape} for {bits}-bit codes"
            )
        _check_not_empty(len(vq), len(vb))
        if len(vq) != len(labels_q) or len(vb) != len(labels_b):
            raise MismatchError(
                f"{len(vq)} x {len(vb)} projections for {len(labels_q)} x {len(labels_b)} labels"
            )
        qwords, nan_q = ranking.sign_words(vq)
        dbwords, nan_b = ranking.sign_words(vb)
        if nan_q or nan_b:
            raise DataError("projections contain NaN: a NaN has no sign")
        planes = ranking.bit_planes(dbwords.view(np.uint8), positions)
        qmask = np.uint64(0) - (
            (qwords[:, positions >> 6] >> (positions & 63).astype(np.uint64)) & np.uint64(1)
        )
        cut = len(vb) if k is None else k
        stats = _scan_planes(
            planes,
            qmask,
            qwords,
            dbwords,
            labels,
            bits,
            ks=(cut,),
            histograms=False,
            n_threads=n_threads,
            pools=pools,
        )
        return _scorer_map(stats, cut)

    return score


def precision_at_k(
    xq: np.ndarray,
    xb: np.ndarray,
    labels_q: np.ndarray,
    labels_b: np.ndarray,
    bits: int,
    ks: Sequence[int],
    *,
    n_threads: int | None = None,
) -> np.ndarray:
    """Mean precision of the top ``k`` (ties by database order), float64 ``len(ks)``.

    The denominator is ``min(k, nb)``: a database smaller than ``k`` returns all it has.
    """
    xq, xb, labels_q, labels_b, bits = _check_inputs(xq, xb, labels_q, labels_b, bits)
    ks = [_check_k(k) for k in ks]
    stats = _scan(xq, xb, labels_q, labels_b, bits, ks=ks, histograms=False, n_threads=n_threads)
    return _precision_at(stats.hits, ks, len(xb))


def recall_at_k(
    xq: np.ndarray,
    xb: np.ndarray,
    labels_q: np.ndarray,
    labels_b: np.ndarray,
    bits: int,
    ks: Sequence[int],
    *,
    n_threads: int | None = None,
) -> np.ndarray:
    """Mean recall of the top ``k`` (ties by database order), float64 ``len(ks)``.

    A query with no relevant item in the database scores 0.
    """
    xq, xb, labels_q, labels_b, bits = _check_inputs(xq, xb, labels_q, labels_b, bits)
    ks = [_check_k(k) for k in ks]
    stats = _scan(xq, xb, labels_q, labels_b, bits, ks=ks, histograms=False, n_threads=n_threads)
    return _recall_at(stats.hits, stats.relevant)


def precision_recall_curve(
    xq: np.ndarray,
    xb: np.ndarray,
    labels_q: np.ndarray,
    labels_b: np.ndarray,
    bits: int,
    *,
    empty: str = "zero",
    n_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean precision and recall of the items within Hamming radius ``r`` for ``r = 0..bits``.

    Returns ``(precision, recall)``, each float64 ``bits + 1``. A query that retrieves nothing
    within a radius has precision 0 there with ``empty="zero"`` (the usual convention), or is
    left out of that radius's mean with ``empty="skip"``. Recall of a query with no relevant
    item is 0.
    """
    xq, xb, labels_q, labels_b, bits = _check_inputs(xq, xb, labels_q, labels_b, bits)
    counts = _scan(xq, xb, labels_q, labels_b, bits, ks=(), histograms=True, n_threads=n_threads)
    return _pr_curve(counts.n, counts.r, empty)


def precision_within_radius(
    xq: np.ndarray,
    xb: np.ndarray,
    labels_q: np.ndarray,
    labels_b: np.ndarray,
    bits: int,
    radius: int = 2,
    *,
    empty: str = "zero",
    n_threads: int | None = None,
) -> float:
    """Mean precision of the items within Hamming radius ``radius`` (the classic P@r<=2).

    ``empty`` as in :func:`precision_recall_curve`.
    """
    precision, _ = precision_recall_curve(
        xq, xb, labels_q, labels_b, bits, empty=empty, n_threads=n_threads
    )
    return float(precision[min(max(radius, 0), bits)])


def evaluate_retrieval(
    xq: np.ndarray,
    xb: np.ndarray,
    labels_q: np.ndarray,
    labels_b: np.ndarray,
    bits: int,
    *,
    top_k: Sequence[int] = (1000,),
    precision_ks: Sequence[int] = (100, 500, 1000),
    curve_ks: Sequence[int] | None = None,
    radius: int = 2,
    n_threads: int | None = None,
) -> dict:
    """Every retrieval metric from one pass over the data.

    Returns a dict with ``map`` (whole database), ``map_at`` ({k: mAP@k} for ``top_k``,
    normaliser "retrieved"), ``map_at_min`` (the same with normaliser min(R, k)),
    ``tie_aware_map``, ``precision_at`` and ``recall_at`` ({k: value} for ``precision_ks``),
    ``precision_radius2`` (precision within ``radius``), ``pr_curve`` ({"radius", "precision",
    "recall"} lists over radius 0..bits), ``precision_curve`` ({"k", "precision", "recall"}
    over ``curve_ks``, default 20 cut-offs up to min(nb, 1000 or the largest k asked)),
    and ``n_queries``, ``n_database``, ``bits``. Conventions as in the functions above.
    """
    xq, xb, labels_q, labels_b, bits = _check_inputs(xq, xb, labels_q, labels_b, bits)
    nb = len(xb)
    top_k = [_check_k(k) for k in top_k]
    precision_ks = [_check_k(k) for k in precision_ks]
    if curve_ks is None:
        last = min(nb, max([1000, *top_k, *precision_ks]))
        curve_ks = np.unique(np.linspace(1, last, 20).round().astype(int)).tolist()
    curve_ks = [_check_k(k) for k in curve_ks]
    ks = [nb, *top_k, *precision_ks, *curve_ks]
    stats = _scan(xq, xb, labels_q, labels_b, bits, ks=ks, histograms=True, n_threads=n_threads)
    i_top = 1
    i_prec = i_top + len(top_k)
    i_curve = i_prec + len(precision_ks)

    def ap_mean(i: int, k: int, normaliser: str) -> float:
        ap = _ap_from_sums(stats.ap_sum[:, i], stats.hits[:, i], stats.relevant, k, normaliser)
        return float(ap.mean())

    precision = _precision_at(stats.hits, ks, nb)
    recall = _recall_at(stats.hits, stats.relevant)
    pr_precision, pr_recall = _pr_curve(stats.n, stats.r, "zero")
    return {
        "map": ap_mean(0, nb, "retrieved"),
        "map_at": {k: ap_mean(i_top + j, k, "retrieved") for j, k in enumerate(top_k)},
        "map_at_min": {k: ap_mean(i_top + j, k, "min") for j, k in enumerate(top_k)},
        "tie_aware_map": float(_tie_aware_ap(stats.n, stats.r, nb).mean()),
        "precision_at": {k: float(precision[i_prec + j]) for j, k in enumerate(precision_ks)},
        "recall_at": {k: float(recall[i_prec + j]) for j, k in enumerate(precision_ks)},
        "precision_radius2": float(pr_precision[min(max(radius, 0), bits)]),
        "pr_curve": {
            "radius": list(range(bits + 1)),
            "precision": pr_precision.tolist(),
            "recall": pr_recall.tolist(),
        },
        "precision_curve": {
            "k": list(curve_ks),
            "precision": precision[i_curve:].tolist(),
            "recall": recall[i_curve:].tolist(),
        },
        "n_queries": len(xq),
        "n_database": nb,
        "bits": bits,
    }


# ---------------------------------------------------------------------------------------
# The scan: one pass over query blocks, in threads.


@dataclass
class _ScanStats:
    """Per-query results of a scan: ``relevant`` int64 nq (R); for each cut-off k in ``ks``,
    ``hits`` int64 nq x len(ks) (R_k) and ``ap_sum`` float64 nq x len(ks) (sum of P(i) rel(i)
    over i <= k); with histograms, ``n`` and ``r`` int64 nq x (bits+1): items and relevant
    items at each distance."""

    relevant: np.ndarray
    hits: np.ndarray
    ap_sum: np.ndarray
    n: np.ndarray | None
    r: np.ndarray | None


def _scan(xq, xb, labels_q, labels_b, bits, *, ks, histograms, n_threads) -> _ScanStats:
    xq, xb = _as_codes(xq, bits, "query"), _as_codes(xb, bits, "database")
    nq, nb = len(xq), len(xb)
    _check_not_empty(nq, nb)
    labels = _Labels.build(labels_q, labels_b, nq, nb)
    return _scan_prepared(xq, xb, labels, bits, ks=ks, histograms=histograms, n_threads=n_threads)


def _check_not_empty(nq: int, nb: int) -> None:
    if nq == 0:
        raise DataError("no query codes")
    if nb == 0:
        raise DataError("no database codes")


def _scan_prepared(
    xq, xb, labels: _Labels, bits, *, ks, histograms, n_threads, pools=None
) -> _ScanStats:
    """:func:`_scan` on checked codes and prepared labels (the rotation search prepares the
    labels once for all its candidates)."""
    from hashkit import ranking

    positions = _set_bit_positions(xq, xb)
    if len(positions) > bits:
        raise DataError(
            f"codes have bits set beyond the first {bits} (in the padding of the last byte)"
        )
    planes = ranking.bit_planes(xb, positions)
    qbits = (xq[:, positions >> 3] >> (positions & 7).astype(np.uint8)) & 1
    qmask = np.uint64(0) - qbits.astype(np.uint64)
    return _scan_planes(
        planes,
        qmask,
        _code_words(xq),
        _code_words(xb),
        labels,
        bits,
        ks=ks,
        histograms=histograms,
        n_threads=n_threads,
        pools=pools,
    )


def _scan_planes(
    planes, qmask, qwords, dbwords, labels: _Labels, bits, *, ks, histograms, n_threads, pools=None
) -> _ScanStats:
    """The threaded kernel on codes already bit-sliced: ``planes`` (uint64 ``npl x
    ceil(nb/64)``, :func:`hashkit.ranking.bit_planes`), ``qmask`` (uint64 ``nq x npl``, the
    queries' bits at the planes' positions as 0 or all ones), ``qwords`` and ``dbwords`` (the
    codes as uint64 words, database in database order).

    ``pools``: a dict in which a caller that scans many times (a scorer) keeps its worker
    threads, by thread count, from one scan to the next; None: threads for this scan only.
    """
    from hashkit import ranking

    nq, nb = len(qwords), len(dbwords)
    if not labels.multi:
        dbwords = np.ascontiguousarray(dbwords[labels.members])
    cut, where = np.unique(np.minimum(np.asarray(ks, dtype=np.int64), nb), return_inverse=True)
    inverse = np.zeros(nb + 1)
    np.divide(1.0, np.arange(1, nb + 1), out=inverse[1:])
    width = len(planes) + 1
    relevant = np.zeros(nq, dtype=np.int64)
    hits = np.zeros((nq, len(cut)), dtype=np.int64)
    ap_sum = np.zeros((nq, len(cut)))
    n = np.zeros((nq, width), dtype=np.int64)
    r = np.zeros((nq, width), dtype=np.int64)

    def run(rows: slice) -> None:
        ranking.scan_queries(
            planes,
            qmask[rows],
            qwords[rows],
            dbwords,
            labels.multi,
            labels.query_class[rows],
            labels.members,
            labels.class_start,
            labels.query_words[rows],
            labels.database_words,
            cut,
            histograms,
            inverse,
            relevant[rows],
            hits[rows],
            ap_sum[rows],
            n[rows],
            r[rows],
        )

    threads = _n_threads(n_threads, min(nq, max(1, nq * nb // _PAIRS_PER_THREAD)))
    n_blocks = min(nq, threads * _BLOCKS_PER_THREAD) if threads > 1 else 1
    edges = np.linspace(0, nq, n_blocks + 1).round().astype(int)
    blocks = [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]
    if len(blocks) > 1 and not ranking.scan_queries.signatures:
        # The first call in a process compiles or loads the kernel: once, in this thread,
        # before the other blocks start (later calls run every block in parallel).
        run(blocks[0])
        blocks = blocks[1:]
    if len(blocks) == 1:
        run(blocks[0])
    elif pools is None:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(run, blocks))
    else:
        # Starting threads costs milliseconds on a loaded machine, for every candidate of
        # the rotation search if each scan started its own.
        if threads not in pools:
            pools[threads] = ThreadPoolExecutor(max_workers=threads)
        list(pools[threads].map(run, blocks))
    if histograms:
        full = np.zeros((nq, bits + 1), dtype=np.int64)
        full[:, :width] = n
        n = full
    full = np.zeros((nq, bits + 1), dtype=np.int64)
    full[:, :width] = r
    return _ScanStats(
        relevant=relevant,
        hits=hits[:, where.ravel()],
        ap_sum=ap_sum[:, where.ravel()],
        n=n if histograms else None,
        r=full if histograms else None,
    )


def _n_threads(n_threads: int | None, n_blocks: int) -> int:
    if n_threads is None:
        try:
            n_threads = len(os.sched_getaffinity(0))
        except AttributeError:
            n_threads = os.cpu_count() or 1
    return max(1, min(int(n_threads), n_blocks))


# ---------------------------------------------------------------------------------------
# Codes, distances and labels.


def _check_inputs(xq, xb, labels_q, labels_b, bits):
    """What every public metric checks first: ``bits`` an integer >= 1, packed codes of that
    width with clean padding, labels normalised to one kind (:mod:`hashkit.labels`)."""
    bits = check_bits(bits)
    xq, xb = _as_codes(xq, bits, "query"), _as_codes(xb, bits, "database")
    labels_q, labels_b = normalize_label_pair(labels_q, labels_b)
    return xq, xb, labels_q, labels_b, bits


def _as_codes(codes: np.ndarray, bits: int, what: str) -> np.ndarray:
    codes = np.asarray(codes)
    try:
        check_packed(codes, bits)
    except HashkitError as exc:
        raise MismatchError(f"{what} codes: {exc}") from None
    return np.ascontiguousarray(codes)


def _set_bit_positions(xq: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """int64 indices ``8 * byte + bit`` of the code bits set in any query or database code:
    the distances are the same over these alone, whatever order packs the bits."""
    used = np.bitwise_or.reduce(xq, axis=0) | np.bitwise_or.reduce(xb, axis=0)
    byte, bit = np.nonzero((used[:, None] >> np.arange(8, dtype=np.uint8)) & 1)
    return (8 * byte + bit).astype(np.int64)


def _code_words(codes: np.ndarray) -> np.ndarray:
    """Packed codes as uint64 ``N x ceil(nbytes/8)``, zero padded."""
    nbytes = codes.shape[1]
    padded = np.zeros((len(codes), -(-nbytes // 8) * 8), dtype=np.uint8)
    padded[:, :nbytes] = codes
    return padded.view(np.uint64)


def _words(codes: np.ndarray) -> np.ndarray:
    """Packed codes as ``N x w`` unsigned words (the narrowest of 8/16/32/64 bits that fits),
    zero padded: XOR and popcount then touch as few bytes as possible."""
    nbytes = codes.shape[1]
    width = next((w for w in (1, 2, 4) if nbytes <= w), 8)
    nwords = -(-nbytes // width)
    padded = np.zeros((len(codes), nwords * width), dtype=np.uint8)
    padded[:, :nbytes] = codes
    return padded.view(np.dtype(f"u{width}"))


def _distances(words_q: np.ndarray, words_b: np.ndarray, bits: int) -> np.ndarray:
    dtype = np.uint8 if bits <= 255 else np.uint16
    out = np.zeros((len(words_q), len(words_b)), dtype=dtype)
    xor = np.empty((len(words_q), len(words_b)), dtype=words_q.dtype)
    count = np.empty_like(out, dtype=np.uint8) if dtype != np.uint8 else None
    for w in range(words_q.shape[1]):
        np.bitwise_xor(words_q[:, w, None], words_b[None, :, w], out=xor)
        if count is None and w == 0:
            np.bitwise_count(xor, out=out)
        elif count is None:
            out += np.bitwise_count(xor)
        else:
            np.bitwise_count(xor, out=count)
            out += count
    return out


@dataclass
class _Labels:
    """Labels prepared for the scan kernel. Single labels: ``query_class`` (int64 nq) indexes
    classes whose database members, in database order, are
    ``members[class_start[c]:class_start[c + 1]]``. Multi-hot: ``query_words`` and
    ``database_words``, the labels as uint64 bit words (relevant = a shared bit)."""

    multi: bool
    query_class: np.ndarray
    members: np.ndarray
    class_start: np.ndarray
    query_words: np.ndarray
    database_words: np.ndarray

    @classmethod
    def build(cls, labels_q, labels_b, nq: int, nb: int) -> _Labels:
        labels_q, labels_b = np.asarray(labels_q), np.asarray(labels_b)
        for what, labels, n in (("query", labels_q, nq), ("database", labels_b, nb)):
            if labels.ndim not in (1, 2) or len(labels) != n:
                raise MismatchError(
                    f"{what} labels of shape {labels.shape} do not match {n} codes "
                    "(expected N single labels or N x C multi-hot)"
                )
        if labels_q.ndim != labels_b.ndim:
            raise MismatchError(
                f"query labels are {_label_kind(labels_q)} but database labels are "
                f"{_label_kind(labels_b)}"
            )
        no_words = np.zeros((nq, 1), dtype=np.uint64)
        if labels_q.ndim == 2:
            if labels_q.shape[1] != labels_b.shape[1]:
                raise MismatchError(
                    f"multi-hot labels disagree: {labels_q.shape[1]} classes for the queries, "
                    f"{labels_b.shape[1]} for the database"
                )
            return cls(
                multi=True,
                query_class=np.zeros(nq, dtype=np.int64),
                members=np.arange(nb, dtype=np.int64),
                class_start=np.zeros(2, dtype=np.int64),
                query_words=_code_words(_pack_label_bits(labels_q)),
                database_words=_code_words(_pack_label_bits(labels_b)),
            )
        classes, inverse = np.unique(np.concatenate([labels_q, labels_b]), return_inverse=True)
        inverse = inverse.ravel()
        database_class = inverse[nq:]
        members = np.argsort(database_class, kind="stable")
        class_start = np.searchsorted(database_class[members], np.arange(len(classes) + 1))
        return cls(
            multi=False,
            query_class=inverse[:nq].astype(np.int64),
            members=members.astype(np.int64),
            class_start=class_start.astype(np.int64),
            query_words=no_words,
            database_words=no_words[:1],
        )


def _pack_label_bits(labels: np.ndarray) -> np.ndarray:
    """Multi-hot labels N x C as uint8 N x ceil(C/8), bit ``c % 8`` of byte ``c // 8`` set for
    class ``c``. (Labels, not codes: the layout only has to agree between the two sides.)"""
    hot = labels != 0
    weights = (1 << np.arange(8)).astype(np.uint8)
    padded = np.zeros((len(hot), -(-hot.shape[1] // 8) * 8), dtype=bool)
    padded[:, : hot.shape[1]] = hot
    return (padded.reshape(len(hot), -1, 8) * weights).sum(axis=2, dtype=np.uint8)


def protocol_top_k(labels: np.ndarray) -> int:
    """The k of the mAP@k that published protocols report for data labelled like ``labels``
    (docs/method.md, section 4): 5,000 for multi-label data (NUS-WIDE), 1,000 for
    single-label data (one-hot included)."""
    return 5000 if normalize_labels(labels).ndim == 2 else 1000


def _label_kind(labels: np.ndarray) -> str:
    return "single labels (N)" if labels.ndim == 1 else f"multi-hot (N x {labels.shape[1]})"


# ---------------------------------------------------------------------------------------
# Metrics from the per-query sums and counts.


def _check_normaliser(normaliser: str) -> None:
    if normaliser not in NORMALISERS:
        raise HashkitError(f"normaliser must be one of {NORMALISERS}, got {normaliser!r}")


def _check_k(k: int) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral):
        raise HashkitError(f"k must be an integer, got {k!r}")
    k = int(k)
    if not 1 <= k <= MAX_K:
        raise HashkitError(f"k must be between 1 and {MAX_K}, got {k}")
    return k


def _ap_from_sums(ap_sum, hits, relevant, k: int, normaliser: str) -> np.ndarray:
    _check_normaliser(normaliser)
    denominator = hits if normaliser == "retrieved" else np.minimum(relevant, k)
    return np.divide(ap_sum, denominator, out=np.zeros(len(ap_sum)), where=denominator > 0)


def _precision_at(hits: np.ndarray, ks: Sequence[int], nb: int) -> np.ndarray:
    denominator = np.minimum(np.asarray(ks, dtype=np.float64), nb)
    return (hits / denominator).mean(axis=0)


def _recall_at(hits: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    recall = np.divide(
        hits,
        relevant[:, None],
        out=np.zeros(hits.shape, dtype=np.float64),
        where=relevant[:, None] > 0,
    )
    return recall.mean(axis=0)


def _pr_curve(n: np.ndarray, r: np.ndarray, empty: str):
    if empty not in ("zero", "skip"):
        raise HashkitError(f"empty must be 'zero' or 'skip', got {empty!r}")
    retrieved = np.cumsum(n, axis=1)
    hit = np.cumsum(r, axis=1)
    relevant = hit[:, -1:]
    some = retrieved > 0
    precision = np.divide(hit, retrieved, out=np.zeros(hit.shape), where=some)
    recall = np.divide(hit, relevant, out=np.zeros(hit.shape), where=relevant > 0)
    if empty == "zero":
        mean_precision = precision.mean(axis=0)
    else:
        counted = some.sum(axis=0)
        mean_precision = np.divide(
            precision.sum(axis=0), counted, out=np.zeros(len(counted)), where=counted > 0
        )
    return mean_precision, recall.mean(axis=0)


def harmonic_numbers(n: int) -> np.ndarray:
    """``H(0..n)`` in float64, each to about one unit in the last place (float64 ``n + 1``)."""
    i = np.arange(n + 1, dtype=np.float64)
    small = min(n, 64)
    table = np.zeros(n + 1)
    np.cumsum(1.0 / i[1 : small + 1], out=table[1 : small + 1])
    if n > small:
        # Asymptotic series; its truncation error at m > 64 is below 1e-20.
        m = i[small + 1 :]
        inv2 = 1.0 / (m * m)
        table[small + 1 :] = (
            np.log(m) + _EULER_GAMMA + 0.5 / m - inv2 * (1.0 / 12 - inv2 * (1.0 / 120 - inv2 / 252))
        )
    return table


def _tie_aware_ap(n: np.ndarray, r: np.ndarray, k: int) -> np.ndarray:
    """Tie-aware AP (He et al. 2018) of each query from its counts per distance.

    ``n``, ``r``: int64 ``nq x (bits+1)`` items and relevant items at each distance. Within a
    tie group of ``n_d`` items, ``r_d`` relevant, after ``a`` items and ``R_a`` relevant ones,
    position ``i`` is relevant with probability ``r_d/n_d`` and, if so, has in expectation
    ``R_a + 1 + (i - a - 1)(r_d - 1)/(n_d - 1)`` relevant items up to it. Summing
    ``P(rel at i) E[#rel <= i | rel at i] / i`` over ``i <= k`` and dividing by
    ``min(R, k)`` gives the exact expectation of AP over random orders within ties.
    """
    n = n.astype(np.float64)
    r_ = r.astype(np.float64)
    before = np.cumsum(n, axis=1) - n
    relevant_before = np.cumsum(r_, axis=1) - r_
    total = r_.sum(axis=1)
    end = np.minimum(before + n, k)
    harmonic = harmonic_numbers(int(n.sum(axis=1).max()))
    active = (r > 0) & (before < k)
    a = before[active]
    m = end[active]
    nd = n[active]
    rd = r_[active]
    beta = np.divide(rd - 1, nd - 1, out=np.zeros(len(nd)), where=nd > 1)
    delta_h = harmonic[m.astype(np.int64)] - harmonic[a.astype(np.int64)]
    group = rd / nd * ((relevant_before[active] + 1 - (a + 1) * beta) * delta_h + beta * (m - a))
    sums = np.zeros(n.shape)
    sums[active] = group
    denominator = np.minimum(total, k)
    return np.divide(sums.sum(axis=1), denominator, out=np.zeros(len(n)), where=denominator > 0)
