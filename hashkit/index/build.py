"""Building FAISS binary indexes with ``faiss.index_binary_factory``, their parameters, and
k-nearest search.

Index types:

- ``flat``: ``IDMap,BFlat``, IndexBinaryFlat (exact brute force) under an IndexBinaryIDMap;
- ``ivf``: ``BIVF{nlist}``, IndexBinaryIVF, ``nlist`` lists of which ``nprobe`` are visited;
- ``hnsw``: ``IDMap,BHNSW{M}``, IndexBinaryHNSW (graph), ``ef_search`` candidates per query;
- ``multihash``: ``IDMap,BHash{nhash}x{hash_bits}``, IndexBinaryMultiHash: ``nhash`` hash
  tables on ``hash_bits``-bit substrings, probing codes within ``nflip`` flips (short codes).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np

from hashkit.codes import check_packed, code_bytes
from hashkit.errors import DataError, HashkitError, MismatchError
from hashkit.store import check_ids

INDEX_TYPES = ("flat", "ivf", "hnsw", "multihash")
# FAISS implements range search for these binary index types (IndexBinaryHNSW has none).
RANGE_SEARCH_TYPES = ("flat", "ivf", "multihash")

MAX_HNSW_M = 1024  # neighbours per node; beyond this an HNSW graph only costs memory
MAX_INT32 = 2**31 - 1  # FAISS's HNSW efSearch is a C int
MAX_FLIP_PROBES = 1 << 24  # hash buckets probed per query and table; more would never finish

# The factory strings faiss.index_binary_factory understands, in full (FAISS itself reads
# only a prefix with sscanf, so "BHNSW32junk" would pass and "BHNSW1" would crash).
_FACTORY = re.compile(
    r"(?:IDMap2?,)?(?:BFlat"
    r"|BIVF(?P<nlist>\d+)(?:_HNSW(?P<quantizer_m>\d+))?"
    r"|BHNSW(?P<m>\d+)"
    r"|BHash(?P<nhash>\d+)x(?P<multi_bits>\d+)"
    r"|BHash(?P<hash_bits>\d+))"
)
FACTORY_FORMS = "BFlat, BIVF<nlist>, BIVF<nlist>_HNSW<M>, BHNSW<M>, BHash<b>, BHash<n>x<b>"


def _faiss():
    import faiss

    return faiss


def default_nlist(n: int) -> int:
    """About sqrt(N) lists, but at least 39 training codes per list (FAISS's advice), >= 1."""
    return max(1, min(int(round(math.sqrt(n))), n // 39))


def default_hash_bits(n: int, bits: int) -> int:
    """Substring length of a multi-hash index: about log2(N), so a hash bucket holds about one
    code of uniform data; between 8 and ``bits``, and at most 32."""
    return int(min(bits, 32, max(8, math.ceil(math.log2(max(n, 2))))))


def index_description(
    index_type: str,
    n: int,
    bits: int,
    *,
    nlist: int | None = None,
    hnsw_m: int = 32,
    nhash: int | None = None,
    hash_bits: int | None = None,
) -> str:
    """The ``faiss.index_binary_factory`` string of an index type for ``n`` codes."""
    if index_type == "flat":
        return "IDMap,BFlat"
    if index_type == "ivf":
        return f"BIVF{default_nlist(n) if nlist is None else nlist}"
    if index_type == "hnsw":
        return f"IDMap,BHNSW{hnsw_m}"
    if index_type == "multihash":
        hash_bits = hash_bits or default_hash_bits(n, bits)
        nhash = nhash or max(1, bits // hash_bits)
        return f"IDMap,BHash{nhash}x{hash_bits}"
    raise HashkitError(f"unknown index type {index_type!r}; choose one of {INDEX_TYPES}")


def check_factory(description: str, bits: int, n: int) -> None:
    """Raise HashkitError unless ``description`` is a binary factory string that FAISS builds
    into a working index of ``n`` codes of ``bits`` bits (checked before FAISS sees it)."""
    m = _FACTORY.fullmatch(description)
    if m is None:
        raise HashkitError(
            f"unknown index factory string {description!r}; hashkit builds {FACTORY_FORMS}, "
            "optionally after 'IDMap,' or 'IDMap2,'"
        )
    if m["nlist"] is not None:
        _check_nlist(int(m["nlist"]), n)
    for key in ("m", "quantizer_m"):
        if m[key] is not None:
            check_hnsw_m(int(m[key]))
    # Hash keys are cut from the code's real bits: the padding bits of the last byte are
    # always 0, so a key reaching into them would only hash zeros.
    if m["hash_bits"] is not None:
        _check_hash(1, int(m["hash_bits"]), bits)
    if m["nhash"] is not None:
        _check_hash(int(m["nhash"]), int(m["multi_bits"]), bits)


def _check_nlist(nlist: int, n: int) -> None:
    if nlist < 1:
        raise HashkitError(f"an IVF index needs at least 1 list, not {nlist}")
    if nlist > n:
        raise HashkitError(f"--nlist {nlist} is larger than the {n} codes to index")


def check_hnsw_m(m: int) -> None:
    if not 2 <= m <= MAX_HNSW_M:
        raise HashkitError(f"HNSW degree M must be between 2 and {MAX_HNSW_M}, not {m}")


def _check_hash(nhash: int, hash_bits: int, bits: int) -> None:
    if nhash < 1 or hash_bits < 1:
        raise HashkitError(f"a hash index needs >= 1 table of >= 1 bit, not {nhash} x {hash_bits}")
    if hash_bits > 64 or nhash * hash_bits > bits:
        raise HashkitError(
            f"hash tables of {nhash} x {hash_bits} bits do not fit codes of {bits} bits "
            "(at most 64 bits per table)"
        )


def check_nflip(nflip: int, hash_bits: int) -> None:
    """Raise HashkitError when probing every key within ``nflip`` bit flips of a
    ``hash_bits``-bit key could not finish (FAISS loops for ever when nflip > hash_bits)."""
    if nflip < 0:
        raise HashkitError(f"nflip must be >= 0, not {nflip}")
    if nflip > hash_bits:
        raise HashkitError(f"nflip {nflip} is larger than the {hash_bits} bits of a hash key")
    probes = sum(math.comb(hash_bits, i) for i in range(nflip + 1))
    if probes > MAX_FLIP_PROBES:
        raise HashkitError(
            f"nflip {nflip} on {hash_bits}-bit hash keys probes {probes} buckets per query "
            f"and table (at most {MAX_FLIP_PROBES}); use a smaller nflip"
        )


def build_index(
    codes: np.ndarray,
    ids: np.ndarray,
    bits: int,
    index_type: str = "flat",
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    hnsw_m: int = 32,
    ef_construction: int = 40,
    ef_search: int = 64,
    nhash: int | None = None,
    hash_bits: int | None = None,
    nflip: int = 1,
    factory: str | None = None,
    train_size: int | None = None,
    seed: int = 0,
    add_batch: int = 1 << 20,
    progress: Callable | None = None,
):
    """A FAISS binary index holding ``codes`` (N x ceil(bits/8) uint8, FAISS's bit order, see
    :mod:`hashkit.codes`) under ``ids`` (N distinct integers >= 0).

    ``index_type`` is one of INDEX_TYPES (see the module docstring), or ``factory`` gives any
    ``faiss.index_binary_factory`` string (an index that cannot take ids is wrapped in an
    IndexBinaryIDMap). IVF trains on ``train_size`` codes (a seeded sample; default FAISS's
    256 per list) and searches ``nprobe`` lists (default nlist/16). Codes are added in batches
    of ``add_batch``.
    """
    faiss = _faiss()
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or int(bits) < 1:
        raise DataError(f"codes of {bits} bits cannot be indexed (at least 1 bit)")
    codes = np.ascontiguousarray(check_packed(codes, bits))
    ids = np.ascontiguousarray(check_ids(ids))
    if len(ids) != len(codes):
        raise HashkitError(f"{len(codes)} codes but {len(ids)} ids")
    if len(codes) == 0:
        raise DataError("no codes to index")
    for name, value in (("nprobe", nprobe), ("ef_construction", ef_construction)):
        if value is not None and value < 1:
            raise HashkitError(f"{name} must be >= 1, not {value}")
    d = 8 * code_bytes(bits)
    description = factory or index_description(
        index_type, len(codes), bits, nlist=nlist, hnsw_m=hnsw_m, nhash=nhash, hash_bits=hash_bits
    )
    check_factory(description, bits, len(codes))
    try:
        index = faiss.index_binary_factory(d, description)
    except RuntimeError as exc:
        raise HashkitError(
            f"faiss cannot build {description!r}: {str(exc).strip().splitlines()[-1]}"
        ) from None
    if factory and not _takes_ids(index):
        index = faiss.IndexBinaryIDMap(index)
    inner = _inner(index)
    if isinstance(inner, faiss.IndexBinaryIVF):
        inner.cp.seed = seed
        # FAISS prints a WARNING line to stderr when a list gets fewer than 39 training codes;
        # the library never prints, and few codes per list is the user's choice (--nlist).
        inner.cp.min_points_per_centroid = 1
        sample = codes
        train_size = train_size or inner.cp.max_points_per_centroid * inner.nlist
        if train_size < len(codes):
            rng = np.random.default_rng(seed)
            sample = codes[np.sort(rng.choice(len(codes), size=train_size, replace=False))]
        inner.train(sample)
        set_search_params(index, nprobe=nprobe or max(1, inner.nlist // 16))
    elif isinstance(inner, faiss.IndexBinaryHNSW):
        inner.hnsw.efConstruction = ef_construction
        set_search_params(index, ef_search=ef_search)
    elif isinstance(inner, (faiss.IndexBinaryMultiHash, faiss.IndexBinaryHash)):
        set_search_params(index, nflip=nflip)
    if not index.is_trained:
        index.train(codes)
    starts = range(0, len(codes), add_batch)
    if progress is not None:
        starts = progress(starts, total=len(starts), desc="indexing", unit="batch")
    for s in starts:
        index.add_with_ids(codes[s : s + add_batch], ids[s : s + add_batch])
    return index


def _takes_ids(index) -> bool:
    faiss = _faiss()
    return isinstance(index, (faiss.IndexBinaryIDMap, faiss.IndexBinaryIVF))


def _inner(index):
    """The index inside an IndexBinaryIDMap (or the index itself), downcast."""
    faiss = _faiss()
    index = faiss.downcast_IndexBinary(index)
    if isinstance(index, faiss.IndexBinaryIDMap):
        return faiss.downcast_IndexBinary(index.index)
    return index


def index_type_of(index) -> str:
    """flat, ivf, hnsw, multihash, or the FAISS class name of anything else."""
    faiss = _faiss()
    inner = _inner(index)
    for cls, name in (
        (faiss.IndexBinaryFlat, "flat"),
        (faiss.IndexBinaryIVF, "ivf"),
        (faiss.IndexBinaryHNSW, "hnsw"),
        (faiss.IndexBinaryMultiHash, "multihash"),
    ):
        if isinstance(inner, cls):
            return name
    return type(inner).__name__


def index_params(index) -> dict:
    """The type, build and search parameters of an index, for the sidecar and ``info``."""
    inner = _inner(index)
    kind = index_type_of(index)
    params: dict = {"type": kind}
    if kind == "ivf":
        params.update(nlist=int(inner.nlist), nprobe=int(inner.nprobe))
    elif kind == "hnsw":
        params.update(
            M=int(inner.hnsw.nb_neighbors(1)),
            ef_construction=int(inner.hnsw.efConstruction),
            ef_search=int(inner.hnsw.efSearch),
        )
    elif kind == "multihash":
        params.update(nhash=int(inner.nhash), hash_bits=int(inner.b), nflip=int(inner.nflip))
    elif isinstance(inner, _faiss().IndexBinaryHash):
        params.update(hash_bits=int(inner.b), nflip=int(inner.nflip))
    return params


def set_search_params(
    index, *, nprobe: int | None = None, ef_search: int | None = None, nflip: int | None = None
) -> None:
    """Set the search-time parameters that apply to ``index`` (others are ignored), after
    checking them: HashkitError for values FAISS would fail or hang on."""
    faiss = _faiss()
    inner = _inner(index)
    if isinstance(inner, faiss.IndexBinaryIVF) and nprobe is not None:
        if nprobe < 1:
            raise HashkitError(f"nprobe must be >= 1, not {nprobe}")
        # FAISS visits at most nlist lists anyway; clamping also keeps a huge value from
        # overflowing its size_t setter.
        inner.nprobe = min(int(nprobe), int(inner.nlist))
    elif isinstance(inner, faiss.IndexBinaryHNSW) and ef_search is not None:
        if not 1 <= ef_search <= MAX_INT32:
            raise HashkitError(f"ef_search must be between 1 and {MAX_INT32}, not {ef_search}")
        inner.hnsw.efSearch = int(ef_search)
    elif isinstance(inner, (faiss.IndexBinaryMultiHash, faiss.IndexBinaryHash)):
        if nflip is not None:
            check_nflip(int(nflip), int(inner.b))
            inner.nflip = int(nflip)


def index_ids(index) -> np.ndarray | None:
    """The ids of an IDMap index in insertion order (int64 ntotal), or None for other types."""
    faiss = _faiss()
    index = faiss.downcast_IndexBinary(index)
    if isinstance(index, faiss.IndexBinaryIDMap):
        return faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
    return None


def search(index, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k nearest codes by Hamming distance: ``D`` int32 nq x k, ``I`` int64 nq x k (-1 = none)."""
    xq = np.asarray(xq)
    if xq.ndim != 2 or xq.shape[1] * 8 != index.d:
        raise MismatchError(f"query codes of shape {xq.shape} for an index of d={index.d} bits")
    xq = np.ascontiguousarray(check_packed(xq, index.d, "query codes"))
    k = max(1, min(k, index.ntotal))
    return index.search(xq, k)


def range_search(index, xq: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every code within Hamming distance ``radius`` (inclusive) of each query, as FAISS's
    range search returns it: ``lims`` int64 nq+1, ``D`` int32 and ``I`` int64 of length
    ``lims[-1]``; query i's hits are ``D[lims[i]:lims[i+1]]``, ordered by (distance, id).

    A multi-hash index finds only the codes within its ``nflip`` flips of a hash key; IVF only
    those in the ``nprobe`` lists it visits. Raises HashkitError for types without range search.
    """
    xq = np.ascontiguousarray(xq, dtype=np.uint8)
    if xq.ndim != 2 or xq.shape[1] * 8 != index.d:
        raise MismatchError(f"query codes of shape {xq.shape} for an index of d={index.d} bits")
    kind = index_type_of(index)
    if kind not in RANGE_SEARCH_TYPES:
        raise HashkitError(
            f"range search (--radius) needs a {', '.join(RANGE_SEARCH_TYPES)} index; "
            f"this index is {kind}"
        )
    if radius < 0:
        raise HashkitError(f"radius must be >= 0, got {radius}")
    # FAISS keeps distances strictly below its radius.
    lims, D, I = index.range_search(xq, int(radius) + 1)
    lims = lims.astype(np.int64)
    D = D.astype(np.int32)
    for a, b in zip(lims[:-1], lims[1:]):
        order = np.lexsort((I[a:b], D[a:b]))
        D[a:b], I[a:b] = D[a:b][order], I[a:b][order]
    return lims, D, I
