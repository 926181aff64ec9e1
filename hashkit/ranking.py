"""Where the relevant items land when the database is ranked by Hamming distance: the numba
kernel behind :mod:`hashkit.metrics` (and so behind the rotation search and ``hashkit eval``).

For each query it returns, without sorting anything, the number of relevant items ``R``, for
each cut-off ``k`` the relevant items in the top ``k`` (``R_k``) and the sum of precisions at
their ranks, and the histograms of items and of relevant items over distance. Ties in distance
are broken by database order, as a stable sort would break them.

How, for one query (``nb`` database items, ``m`` code bits, ``R`` relevant items):

1. The database codes are stored bit-sliced: plane ``p`` holds bit ``p`` of 64 items per
   ``uint64`` word. XOR with the query's bit and a carry-save adder tree over the planes give
   every item's distance, again bit-sliced (a few words per 64 items, not a byte per item).
2. From those bits, one mask per distance ``d`` and block of 64 items marks the items at
   distance ``d``; a running popcount along the blocks gives, for every block and distance,
   how many items sit at that distance before the block, already offset by the number of items
   at smaller distances. Only the distances where relevant items lie are needed (all of them
   when histograms are asked for).
3. A relevant item ``j`` at distance ``d`` in block ``b`` then has the exact rank
   ``offset[d, b] + popcount(mask[d, b] & bits up to j)``, and its position among the relevant
   items comes from a counting sort of the relevant items by distance. The precision terms
   ``pos / rank`` are summed in rank order (four interleaved partial sums), so the AP is a
   function of the ranked relevance alone, however the codes were laid out.

The work per query is about ``m * nb / 64`` word operations for the distances, one masked
popcount per distance and block, and a few operations per relevant item: no per-item sort,
no per-item distance byte.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.extending import intrinsic

_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_ZERO = np.uint64(0)
_ONE = np.uint64(1)


@intrinsic
def _popcount(typingctx, x):
    """LLVM's ctpop: one POPCNT instruction where the CPU has it."""

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return x(x), codegen


@njit(nogil=True, cache=True)
def bit_planes(codes: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Bit-sliced codes: uint64 ``len(positions) x ceil(N / 64)``, bit ``j % 64`` of word
    ``[p, j // 64]`` is bit ``positions[p]`` (byte ``pos // 8``, bit ``pos % 8``) of code ``j``.

    ``codes``: uint8 ``N x nbytes``. Bits past ``N`` are zero.
    """
    n = codes.shape[0]
    npl = positions.shape[0]
    nblk = (n + 63) >> 6
    planes = np.zeros((npl, nblk), np.uint64)
    for p in range(npl):
        column = codes[:, positions[p] >> 3]
        shift = positions[p] & 7
        for b in range(nblk):
            word = _ZERO
            for i in range(min(64, n - 64 * b)):
                word |= np.uint64((column[64 * b + i] >> shift) & 1) << np.uint64(i)
            planes[p, b] = word
    return planes


@njit(nogil=True, cache=True)
def sign_words(v: np.ndarray) -> tuple[np.ndarray, bool]:
    """The codes sgn(v) of float64 projections ``v`` (``N x m``) as uint64 words ``N x
    ceil(m/64)``: bit ``j % 64`` of word ``j // 64`` is set when ``v[i, j]`` is positive as a
    float32, as :func:`hashkit.codes.sign_codes` decides it (the packed codes' layout read as
    little-endian words). Also returns whether ``v`` holds a NaN (its bits are then 0)."""
    n, m = v.shape
    nw = (m + 63) >> 6
    words = np.zeros((n, nw), np.uint64)
    nan = False
    for i in range(n):
        for w in range(nw):
            word = _ZERO
            for j in range(64 * w, min(m, 64 * w + 64)):
                x = np.float32(v[i, j])
                nan |= x != x
                word |= np.uint64(x > np.float32(0)) << np.uint64(j - 64 * w)
            words[i, w] = word
    return words, nan


# ---------------------------------------------------------------------------------------
# Distances, bit-sliced. Each helper is one loop over the blocks touching few arrays, so
# LLVM vectorises it (several blocks per SIMD instruction).


@njit(nogil=True, cache=True)
def _csa_planes(high, low, a, mask_a, b, mask_b):
    """Carry-save add of planes ``a ^ mask_a`` and ``b ^ mask_b`` into ``low``: ``low`` gets
    the sum bit, ``high`` the carry."""
    for i in range(low.shape[0]):
        x = a[i] ^ mask_a
        y = b[i] ^ mask_b
        s = low[i]
        u = s ^ x
        high[i] = (s & x) | (u & y)
        low[i] = u ^ y


@njit(nogil=True, cache=True)
def _csa(high, low, a, b):
    for i in range(low.shape[0]):
        s = low[i]
        x = a[i]
        y = b[i]
        u = s ^ x
        high[i] = (s & x) | (u & y)
        low[i] = u ^ y


@njit(nogil=True, cache=True)
def _add_plane(counter, first, carry):
    """Add ``carry`` (weight ``2**first``) into the bit-sliced ``counter`` rows ``first..``;
    ``carry`` is used up."""
    for k in range(first, counter.shape[0]):
        row = counter[k]
        for i in range(row.shape[0]):
            s = row[i]
            c = carry[i]
            row[i] = s ^ c
            carry[i] = s & c


@njit(nogil=True, cache=True)
def _distances(planes, qmask, counter, scratch):
    """``counter[k, b]``: bit ``k`` of the distance of each item of block ``b`` to the query
    whose bits are ``qmask`` (0 or all ones per plane). Harley-Seal: 16 planes at a time
    through a tree of carry-save adders into ones, twos, fours and eights, the sixteens
    carried up the higher rows."""
    npl = planes.shape[0]
    counter[:] = 0
    t = scratch
    g = 0
    while g + 16 <= npl:
        _csa_planes(t[0], counter[0], planes[g], qmask[g], planes[g + 1], qmask[g + 1])
        _csa_planes(t[1], counter[0], planes[g + 2], qmask[g + 2], planes[g + 3], qmask[g + 3])
        _csa(t[2], counter[1], t[0], t[1])
        _csa_planes(t[0], counter[0], planes[g + 4], qmask[g + 4], planes[g + 5], qmask[g + 5])
        _csa_planes(t[1], counter[0], planes[g + 6], qmask[g + 6], planes[g + 7], qmask[g + 7])
        _csa(t[3], counter[1], t[0], t[1])
        _csa(t[4], counter[2], t[2], t[3])
        _csa_planes(t[0], counter[0], planes[g + 8], qmask[g + 8], planes[g + 9], qmask[g + 9])
        _csa_planes(t[1], counter[0], planes[g + 10], qmask[g + 10], planes[g + 11], qmask[g + 11])
        _csa(t[2], counter[1], t[0], t[1])
        _csa_planes(t[0], counter[0], planes[g + 12], qmask[g + 12], planes[g + 13], qmask[g + 13])
        _csa_planes(t[1], counter[0], planes[g + 14], qmask[g + 14], planes[g + 15], qmask[g + 15])
        _csa(t[3], counter[1], t[0], t[1])
        _csa(t[5], counter[2], t[2], t[3])
        _csa(t[6], counter[3], t[4], t[5])
        _add_plane(counter, 4, t[6])
        g += 16
    while g < npl:
        row = t[6]
        plane = planes[g]
        mask = qmask[g]
        for i in range(row.shape[0]):
            row[i] = plane[i] ^ mask
        _add_plane(counter, 0, row)
        g += 1


@njit(nogil=True, cache=True)
def _digit_masks(counter, nb, low, high):
    """``low[v, b]``: items of block ``b`` whose distance is ``v`` modulo 16; ``high[u, b]``:
    items whose distance divided by 16 is ``u`` (items past ``nb`` in the last block are in
    no ``high`` mask). The items at distance ``d`` are ``low[d % 16] & high[d // 16]``."""
    nrows, nblk = counter.shape
    c0 = counter[0]
    c1 = counter[1]
    c2 = counter[2]
    c3 = counter[3]
    for v in range(16):
        f0 = _ZERO if v & 1 else _ONES
        f1 = _ZERO if v & 2 else _ONES
        f2 = _ZERO if v & 4 else _ONES
        f3 = _ZERO if v & 8 else _ONES
        out = low[v]
        for b in range(nblk):
            out[b] = (c0[b] ^ f0) & (c1[b] ^ f1) & (c2[b] ^ f2) & (c3[b] ^ f3)
    tail = nb & 63
    for u in range(high.shape[0]):
        out = high[u]
        for b in range(nblk):
            out[b] = _ONES
        for k in range(4, nrows):
            flip = _ZERO if (u >> (k - 4)) & 1 else _ONES
            row = counter[k]
            for b in range(nblk):
                out[b] &= row[b] ^ flip
        if tail:
            out[nblk - 1] &= (_ONE << np.uint64(tail)) - _ONE


@njit(nogil=True, cache=True, inline="always")
def _rank_in_grid(grid, row, j):
    """The rank (from 1, by distance then database order) of database item ``j`` in grid row
    ``row`` (its distance): the items ranked before its block (the cell's count) plus the
    items of the block at that distance up to ``j`` (the cell's mask shifted so that only
    they remain)."""
    b = j >> np.uint64(6)
    below = grid[row, b, 0] << ((~j) & np.uint64(63))
    return grid[row, b, 1] + _popcount(below)


# ---------------------------------------------------------------------------------------
# The scan.


@njit(nogil=True, cache=True)
def scan_queries(
    planes,
    qmask,
    qwords,
    dbwords,
    multi,
    qclass,
    members,
    class_start,
    qlabels,
    dblabels,
    cuts,
    histograms,
    inverse,
    out_relevant,
    out_hits,
    out_ap_sum,
    out_n,
    out_r,
):
    """Rank statistics of a block of queries.

    Args:
        planes: uint64 ``npl x ceil(nb/64)``, :func:`bit_planes` of the database.
        qmask: uint64 ``nq x npl``, 0 or all ones: the queries' bits at the planes' positions.
        qwords, dbwords: uint64 ``nq x w`` and ``nb x w``, the codes as words (any layout, the
            same for both): distances of relevant items are popcounts of their XOR.
        multi: False: ``qclass`` (int64 ``nq``) indexes classes whose members, in database
            order, are ``members[class_start[c]:class_start[c + 1]]`` (int64), and then
            ``dbwords`` is in ``members`` order. True: relevant means
            ``qlabels[q] & dblabels[j]`` (uint64 words of multi-hot labels) is not zero.
        cuts: int64 ascending cut-offs ``1 <= k <= nb``.
        histograms: also count items at every distance (``out_n``); otherwise only the
            distances the relevant items need are scanned and ``out_n`` is left alone.
        inverse: float64 ``nb + 1``, ``1 / r`` for rank ``r`` (entry 0 unused).
    Writes ``out_relevant`` (int64 ``nq``, R), ``out_hits`` and ``out_ap_sum`` (``nq x
    len(cuts)``: R_k and sum over relevant ranks ``i <= k`` of ``R_i / i``), ``out_r`` and, with
    ``histograms``, ``out_n`` (int64 ``nq x (npl + 1)``).
    """
    npl, nblk = planes.shape
    nq = qmask.shape[0]
    nb = dbwords.shape[0]
    nw = qwords.shape[1]
    lw = dblabels.shape[1]
    maxd = npl
    nrows = 4
    while (1 << nrows) <= npl:
        nrows += 1
    counter = np.zeros((nrows, nblk), np.uint64)
    scratch = np.zeros((7, nblk), np.uint64)
    low = np.zeros((16, nblk), np.uint64)
    high = np.zeros(((maxd >> 4) + 1, nblk), np.uint64)
    # Per distance (from the nearest relevant one) and block: the items at that distance in
    # the block (a mask) and the rank of the item before the block's first one there.
    grid = np.zeros((1, nblk, 2), np.uint64)
    items_at = np.zeros(maxd + 1, np.int64)
    relevant_at = np.zeros(maxd + 1, np.int64)
    tally = np.zeros((4, maxd + 1), np.int64)
    next_pos = np.zeros(maxd + 1, np.uint64)
    rel_index = np.empty(nb, np.int64)
    rel_words = np.empty((nb if multi else 0, nw), np.uint64)
    rel_dist = np.empty(nb + 3, np.uint64)
    ranks = np.empty(nb, np.uint64)
    ncut = cuts.shape[0]
    kmax = np.uint64(cuts[ncut - 1] if ncut else 0)
    never = np.uint64(nb + 1)
    for q in range(nq):
        # The relevant items, in database order, and their code words.
        if multi:
            count = 0
            for j in range(nb):
                shared = _ZERO
                for w in range(lw):
                    shared |= qlabels[q, w] & dblabels[j, w]
                rel_index[count] = j
                count += shared != _ZERO
            for m in range(count):
                for w in range(nw):
                    rel_words[m, w] = dbwords[rel_index[m], w]
            index = rel_index[:count]
            words = rel_words[:count]
        else:
            c = qclass[q]
            index = members[class_start[c] : class_start[c + 1]]
            words = dbwords[class_start[c] : class_start[c + 1]]
        n_rel = index.shape[0]
        query = qwords[q]
        if nw == 1:
            word = query[0]
            column = words[:, 0]
            for m in range(n_rel):
                rel_dist[m] = _popcount(word ^ column[m])
        else:
            for m in range(n_rel):
                d = _ZERO
                for w in range(nw):
                    d += _popcount(query[w] ^ words[m, w])
                rel_dist[m] = d
        # Four tallies break the chain of increments when neighbours share a distance.
        tally[:] = 0
        for m in range(0, n_rel - 3, 4):
            tally[0, rel_dist[m]] += 1
            tally[1, rel_dist[m + 1]] += 1
            tally[2, rel_dist[m + 2]] += 1
            tally[3, rel_dist[m + 3]] += 1
        for m in range(n_rel - n_rel % 4, n_rel):
            tally[0, rel_dist[m]] += 1
        for d in range(maxd + 1):
            relevant_at[d] = tally[0, d] + tally[1, d] + tally[2, d] + tally[3, d]
        out_relevant[q] = n_rel
        out_r[q, :] = relevant_at
        for ci in range(ncut):
            out_hits[q, ci] = 0
            out_ap_sum[q, ci] = 0.0
        if n_rel == 0 and not histograms:
            continue
        # The rows of the grid: from the nearest relevant distance to the farthest (rows
        # past the one holding rank kmax are not needed); every row is counted when the
        # histogram is asked for, the rows below the first only as a total otherwise.
        first = maxd + 1
        last = -1
        if n_rel:
            first = 0
            while relevant_at[first] == 0:
                first += 1
            last = maxd
            while relevant_at[last] == 0:
                last -= 1
            if grid.shape[0] < last - first + 1:
                grid = np.zeros((last - first + 1, nblk, 2), np.uint64)
        top = maxd if histograms else last
        _distances(planes, qmask[q], counter, scratch)
        _digit_masks(counter, nb, low, high)
        before = _ZERO
        stop = last
        for d in range(top + 1):
            lrow = low[d & 15]
            hrow = high[d >> 4]
            run = before
            if first <= d <= stop:
                cell = grid[d - first]
                for b in range(nblk):
                    mask = lrow[b] & hrow[b]
                    cell[b, 0] = mask
                    cell[b, 1] = run
                    run += _popcount(mask)
                if run >= kmax:
                    stop = d
            else:
                for b in range(nblk):
                    run += _popcount(lrow[b] & hrow[b])
            items_at[d] = np.int64(run - before)
            before = run
            if not histograms and d == stop:
                break
        if histograms:
            out_n[q, :] = items_at
        if n_rel == 0:
            continue
        # Positions among the relevant items: a counting sort by distance (stable).
        total = _ZERO
        for d in range(maxd + 1):
            next_pos[d] = total
            total += np.uint64(relevant_at[d])
        if ncut == 1 and kmax >= np.uint64(nb):
            # The whole database, as the rotation search scores it: every relevant item
            # counts, so each adds (its position among them) / (its rank) as it is ranked,
            # in database order, with no ranks stored and no second pass (9% of a score).
            base = np.uint64(first)
            value = 0.0
            for m in range(n_rel):
                d = rel_dist[m]
                p = next_pos[d]
                next_pos[d] = p + _ONE
                rank = _rank_in_grid(grid, d - base, np.uint64(index[m]))
                value += np.float64(p + _ONE) * inverse[rank]
            out_hits[q, 0] = n_rel
            out_ap_sum[q, 0] = value
            continue
        top_row = np.uint64(stop)
        base = np.uint64(first)
        for m in range(n_rel):
            d = rel_dist[m]
            p = next_pos[d]
            next_pos[d] = p + _ONE
            if d > top_row:
                ranks[p] = never
                continue
            ranks[p] = _rank_in_grid(grid, d - base, np.uint64(index[m]))
        # Sums in rank order, four partial sums: each cut-off's value depends only on the
        # ranks up to it.
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        i = 0
        hits = 0
        for ci in range(ncut):
            k = np.uint64(cuts[ci])
            # The ranks ascend, so R_k is found by bisection (no scan of every rank).
            high_end = n_rel
            while hits < high_end:
                middle = (hits + high_end) >> 1
                if ranks[middle] <= k:
                    hits = middle + 1
                else:
                    high_end = middle
            while i + 4 <= hits:
                s0 += (i + 1) * inverse[ranks[i]]
                s1 += (i + 2) * inverse[ranks[i + 1]]
                s2 += (i + 3) * inverse[ranks[i + 2]]
                s3 += (i + 4) * inverse[ranks[i + 3]]
                i += 4
            value = (s0 + s1) + (s2 + s3)
            for t in range(i, hits):
                value += (t + 1) * inverse[ranks[t]]
            out_hits[q, ci] = hits
            out_ap_sum[q, ci] = value
