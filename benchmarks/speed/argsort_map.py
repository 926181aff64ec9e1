"""The exact mAP evaluator and the rotation search as hashkit had them before the counting
kernel (up to the commit before hashkit/ranking.py), kept verbatim as the side-by-side
baseline of benchmarks/speed: blocks of queries, uint8 Hamming distances, numpy's stable
radix argsort of each distance row, sums over the relevant items in ranked order, threads
over blocks; the search computes each candidate's codes as sgn(H (R G)^T).

Only what ``mean_average_precision`` and the search need is kept (no histograms).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from hashkit.codes import check_packed
from hashkit.errors import DataError, HashkitError, MismatchError


def mean_average_precision(xq, xb, labels_q, labels_b, bits, top_k=None, n_threads=None):
    """Mean AP@top_k (whole database when None), normaliser: relevant items retrieved."""
    nb = len(xb)
    k = nb if top_k is None else int(top_k)
    stats = _scan(xq, xb, labels_q, labels_b, bits, ks=(k,), histograms=False, n_threads=n_threads)
    ap = _ap_from_sums(stats.ap_sum[:, 0], stats.hits[:, 0], stats.relevant, k)
    return float(ap.mean())


def mean_average_precision_scorer(labels_q, labels_b, bits, top_k=None, **_):
    """The same, shaped like hashkit.metrics.mean_average_precision_scorer (no preparation)."""
    return lambda xq, xb: mean_average_precision(xq, xb, labels_q, labels_b, bits, top_k)


def random_search_rotation(h_query, h_database, labels_query, labels_database, *, steps, seed):
    """The search loop as it was, with the evaluator above: returns (history, accepted, the
    final R before re-orthogonalisation)."""
    from hashkit.codes import sign_codes
    from hashkit.rotation import plane_rotation

    hq = np.asarray(h_query, dtype=np.float64)
    hb = np.asarray(h_database, dtype=np.float64)
    m = hq.shape[1]
    rng = np.random.default_rng(seed)
    r = np.eye(m)

    def score(rot):
        return mean_average_precision(
            sign_codes(hq @ rot.T), sign_codes(hb @ rot.T), labels_query, labels_database, m
        )

    best = score(r)
    history = [best]
    accepted = 0
    for t in range(steps):
        step = 1.0 - t / steps
        angle = step if rng.random() < 0.5 else -step
        candidate = r @ plane_rotation(m, angle, rng)
        value = score(candidate)
        if value > best:
            r, best = candidate, value
            accepted += 1
        history.append(best)
    return history, accepted, r


_BLOCK_PAIRS = 1 << 19


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
    if nq == 0:
        raise DataError("no query codes")
    if nb == 0:
        raise DataError("no database codes")
    labels = _Labels.build(labels_q, labels_b, nq, nb)
    words_q, words_b = _words(xq), _words(xb)
    cut = np.minimum(np.asarray(ks, dtype=np.int64), nb)
    block = max(1, min(nq, _BLOCK_PAIRS // nb))
    starts = range(0, nq, block)

    def run(start: int):
        rows = np.arange(start, min(start + block, nq))
        d = _distances(words_q[rows], words_b, bits)
        rel = labels.relevance(rows) if histograms or labels.multi else None
        out = {}
        if len(cut):
            # Stable: ties keep database order. numpy sorts 1- and 2-byte keys by radix.
            order = np.argsort(d, axis=1, kind="stable")
            ranked_rel = labels.ranked_relevance(rows, order, rel)
            del order
            out["relevant"], out["hits"], out["ap_sum"] = _ranked_sums(ranked_rel, cut)
        if histograms:
            out["n"], out["r"] = _histograms(d, rel, bits)
            out["relevant"] = out["r"].sum(axis=1)
        return out

    threads = _n_threads(n_threads, len(starts))
    if threads == 1:
        parts = [run(s) for s in starts]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            parts = list(pool.map(run, starts))

    def cat(key: str, shape: tuple) -> np.ndarray:
        if key not in parts[0]:
            return np.zeros(shape)
        return np.concatenate([p[key] for p in parts])

    return _ScanStats(
        relevant=cat("relevant", (nq,)),
        hits=cat("hits", (nq, 0)),
        ap_sum=cat("ap_sum", (nq, 0)),
        n=cat("n", (nq, 0)) if histograms else None,
        r=cat("r", (nq, 0)) if histograms else None,
    )


def _ranked_sums(ranked_rel: np.ndarray, cut: np.ndarray):
    """R, R_k and sum_{i<=k} P(i) rel(i) per row of a block, for each cut-off in ``cut``.

    ``ranked_rel`` bool ``bq x nb``: relevance in ranked order; ``cut`` int64 k's <= nb.
    Returns int64 ``bq``, int64 ``bq x len(cut)`` and float64 ``bq x len(cut)``.
    """
    bq, nb = ranked_rel.shape
    flat = np.flatnonzero(ranked_rel)  # row * nb + (rank - 1) of each relevant item
    row = flat // nb
    rank = flat - row * nb + 1
    per_row = np.bincount(row, minlength=bq)
    first = np.zeros(bq + 1, dtype=np.int64)
    np.cumsum(per_row, out=first[1:])
    relevant_rank = np.arange(1, len(flat) + 1) - first[row]
    cumulative = np.zeros(len(flat) + 1)
    np.cumsum(relevant_rank / rank, out=cumulative[1:])
    ends = np.searchsorted(flat, np.arange(bq)[:, None] * nb + cut[None, :])
    hits = ends - first[:-1, None]
    ap_sum = cumulative[ends] - cumulative[first[:-1, None]]
    return per_row.astype(np.int64), hits.astype(np.int64), ap_sum


def _histograms(d: np.ndarray, rel: np.ndarray, bits: int):
    """Items and relevant items at each distance 0..bits, int64 ``bq x (bits+1)`` each."""
    bq = len(d)
    width = bits + 1
    key = d.astype(np.intp)
    key += (np.arange(bq, dtype=np.intp) * width)[:, None]
    n = np.bincount(key.ravel(), minlength=bq * width).reshape(bq, width)
    r = np.bincount(key[rel], minlength=bq * width).reshape(bq, width)
    return n.astype(np.int64), r.astype(np.int64)


def _n_threads(n_threads: int | None, n_blocks: int) -> int:
    if n_threads is None:
        try:
            n_threads = len(os.sched_getaffinity(0))
        except AttributeError:
            n_threads = os.cpu_count() or 1
    return max(1, min(int(n_threads), n_blocks))


def _as_codes(codes: np.ndarray, bits: int, what: str) -> np.ndarray:
    codes = np.asarray(codes)
    try:
        check_packed(codes, bits)
    except HashkitError as exc:
        raise MismatchError(f"{what} codes: {exc}") from None
    return np.ascontiguousarray(codes)


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
    """Labels prepared for relevance by blocks: single labels as small integer classes,
    multi-hot as float32 (exact for counts below 2**24) for a matrix product."""

    query: np.ndarray
    database: np.ndarray
    multi: bool

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
        if labels_q.ndim == 2:
            if labels_q.shape[1] != labels_b.shape[1]:
                raise MismatchError(
                    f"multi-hot labels disagree: {labels_q.shape[1]} classes for the queries, "
                    f"{labels_b.shape[1]} for the database"
                )
            return cls(
                query=(labels_q != 0).astype(np.float32),
                database=np.ascontiguousarray((labels_b != 0).astype(np.float32).T),
                multi=True,
            )
        classes, inverse = np.unique(np.concatenate([labels_q, labels_b]), return_inverse=True)
        dtype = np.uint8 if len(classes) <= 256 else np.int32
        inverse = inverse.astype(dtype)
        return cls(query=inverse[:nq], database=inverse[nq:], multi=False)

    def relevance(self, rows: np.ndarray) -> np.ndarray:
        """bool ``len(rows) x nb``."""
        if self.multi:
            return (self.query[rows] @ self.database) > 0
        return self.database[None, :] == self.query[rows, None]

    def ranked_relevance(self, rows: np.ndarray, order: np.ndarray, rel: np.ndarray | None):
        """bool ``len(rows) x nb``: relevance of the database items in the order ``order``
        (intp ``len(rows) x nb``); ``rel`` is this block's relevance if already computed."""
        if self.multi:
            return np.take_along_axis(rel, order, axis=1)
        # Gathering one-byte classes is cheaper than gathering the relevance matrix.
        return self.database[order] == self.query[rows, None]


def _label_kind(labels: np.ndarray) -> str:
    return "single labels (N)" if labels.ndim == 1 else f"multi-hot (N x {labels.shape[1]})"


def _ap_from_sums(ap_sum, hits, relevant, k: int) -> np.ndarray:
    denominator = hits
    return np.divide(ap_sum, denominator, out=np.zeros(len(ap_sum)), where=denominator > 0)
