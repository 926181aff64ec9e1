"""FAISS binary indexes over packed codes, the JSON sidecar that ties an index to its code
store and model, and incremental adds.

An index file is plain FAISS (``faiss.read_index_binary`` reads it); its ids are the code
store's ``ids``. Index types, each made with ``faiss.index_binary_factory``:

- ``flat``: ``IDMap,BFlat``, IndexBinaryFlat (exact brute force) under an IndexBinaryIDMap;
- ``ivf``: ``BIVF{nlist}``, IndexBinaryIVF, ``nlist`` lists of which ``nprobe`` are visited;
- ``hnsw``: ``IDMap,BHNSW{M}``, IndexBinaryHNSW (graph), ``ef_search`` candidates per query;
- ``multihash``: ``IDMap,BHash{nhash}x{hash_bits}``, IndexBinaryMultiHash: ``nhash`` hash
  tables on ``hash_bits``-bit substrings, probing codes within ``nflip`` flips (short codes).

Beside ``out.faiss`` hashkit writes ``out.faiss.json``::

    {"format": "hashkit-index", "hashkit_version": "...", "bits": 32, "count": N,
     "type": "ivf", "params": {"nlist": 316, "nprobe": 8}, "factory": "BIVF316",
     "store": "out.h5", "store_uuid": "...", "model": "/abs/model.pt",
     "model_fingerprint": "<sha256 of the bundle>"}

``store`` is relative to the index's folder when it lies below it. ``params`` holds the search
defaults (nprobe, ef_search, nflip), applied by ``read_index`` since FAISS does not keep all of
them in the file. ``count`` is the number of codes in the index when the sidecar was written.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashkit import __version__
from hashkit.atomic import PendingFile
from hashkit.codes import check_packed, code_bytes
from hashkit.errors import DataError, HashkitError, MismatchError

INDEX_TYPES = ("flat", "ivf", "hnsw", "multihash")
SIDECAR_FORMAT = "hashkit-index"
GPU_MAX_K = 2048  # the largest k GPU k-selection supports


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
        nlist = nlist or default_nlist(n)
        if nlist > n:
            raise HashkitError(f"--nlist {nlist} is larger than the {n} codes to index")
        return f"BIVF{nlist}"
    if index_type == "hnsw":
        return f"IDMap,BHNSW{hnsw_m}"
    if index_type == "multihash":
        hash_bits = hash_bits or default_hash_bits(n, bits)
        nhash = nhash or max(1, bits // hash_bits)
        if nhash * hash_bits > 8 * code_bytes(bits) or hash_bits > 64:
            raise HashkitError(
                f"multi-hash of {nhash} x {hash_bits} bits does not fit {bits}-bit codes"
            )
        return f"IDMap,BHash{nhash}x{hash_bits}"
    raise HashkitError(f"unknown index type {index_type!r}; choose one of {INDEX_TYPES}")


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
    """A FAISS binary index holding ``codes`` (N x ceil(bits/8) uint8) under ``ids`` (int64 N).

    ``index_type`` is one of INDEX_TYPES (see the module docstring), or ``factory`` gives any
    ``faiss.index_binary_factory`` string (an index that cannot take ids is wrapped in an
    IndexBinaryIDMap). IVF trains on ``train_size`` codes (a seeded sample; default FAISS's
    256 per list) and searches ``nprobe`` lists (default nlist/16). Codes are added in batches
    of ``add_batch``.
    """
    faiss = _faiss()
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    check_packed(codes, bits)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if len(ids) != len(codes):
        raise HashkitError(f"{len(codes)} codes but {len(ids)} ids")
    if len(codes) == 0:
        raise DataError("no codes to index")
    d = 8 * code_bytes(bits)
    description = factory or index_description(
        index_type, len(codes), bits, nlist=nlist, hnsw_m=hnsw_m, nhash=nhash, hash_bits=hash_bits
    )
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
        sample = codes
        train_size = train_size or inner.cp.max_points_per_centroid * inner.nlist
        if train_size < len(codes):
            rng = np.random.default_rng(seed)
            sample = codes[np.sort(rng.choice(len(codes), size=train_size, replace=False))]
        inner.train(sample)
        inner.nprobe = nprobe or max(1, inner.nlist // 16)
    elif isinstance(inner, faiss.IndexBinaryHNSW):
        inner.hnsw.efConstruction = ef_construction
        inner.hnsw.efSearch = ef_search
    elif isinstance(inner, faiss.IndexBinaryMultiHash):
        inner.nflip = nflip
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
    return params


def set_search_params(
    index, *, nprobe: int | None = None, ef_search: int | None = None, nflip: int | None = None
) -> None:
    """Set the search-time parameters that apply to ``index`` (others are ignored)."""
    inner = _inner(index)
    kind = index_type_of(index)
    if kind == "ivf" and nprobe is not None:
        inner.nprobe = int(nprobe)
    elif kind == "hnsw" and ef_search is not None:
        inner.hnsw.efSearch = int(ef_search)
    elif kind == "multihash" and nflip is not None:
        inner.nflip = int(nflip)


def index_ids(index) -> np.ndarray | None:
    """The ids of an IDMap index in insertion order (int64 ntotal), or None for other types."""
    faiss = _faiss()
    index = faiss.downcast_IndexBinary(index)
    if isinstance(index, faiss.IndexBinaryIDMap):
        return faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
    return None


@dataclass
class IndexInfo:
    """What the sidecar says about an index."""

    bits: int
    type: str
    store: Path | None
    model: Path | None
    model_fingerprint: str = ""
    count: int = 0
    params: dict = field(default_factory=dict)
    store_uuid: str = ""
    factory: str = ""


def sidecar_path(index_path: str | os.PathLike) -> Path:
    return Path(str(index_path) + ".json")


def _sidecar(
    index, path: Path, *, bits: int, store, model, model_fingerprint: str, store_uuid: str
) -> dict:
    params = index_params(index)
    return {
        "format": SIDECAR_FORMAT,
        "hashkit_version": __version__,
        "bits": int(bits),
        "count": int(index.ntotal),
        "type": params.pop("type"),
        "params": params,
        "store": _relative_to(store, path.parent),
        "store_uuid": store_uuid,
        "model": None if model is None else str(Path(model).resolve()),
        "model_fingerprint": model_fingerprint,
    }


def prepare_index_files(
    index,
    path: str | os.PathLike,
    *,
    bits: int,
    store: str | os.PathLike | None,
    model: str | os.PathLike | None,
    model_fingerprint: str = "",
    store_uuid: str = "",
) -> list[PendingFile]:
    """Write the index and its sidecar under temporary names; commit them in the order given
    (index, then sidecar) or discard them."""
    faiss = _faiss()
    path = Path(path)
    meta = _sidecar(
        index,
        path,
        bits=bits,
        store=store,
        model=model,
        model_fingerprint=model_fingerprint,
        store_uuid=store_uuid,
    )
    files = [PendingFile(path), PendingFile(sidecar_path(path))]
    try:
        faiss.write_index_binary(index, str(files[0].tmp))
        files[1].tmp.write_text(json.dumps(meta, indent=2) + "\n")
    except BaseException:
        for f in files:
            f.discard()
        raise
    return files


def write_index(
    index,
    path: str | os.PathLike,
    *,
    bits: int,
    store: str | os.PathLike | None,
    model: str | os.PathLike | None,
    model_fingerprint: str = "",
    store_uuid: str = "",
) -> Path:
    """Write the index and its sidecar atomically (each temp + rename; index first)."""
    files = prepare_index_files(
        index,
        path,
        bits=bits,
        store=store,
        model=model,
        model_fingerprint=model_fingerprint,
        store_uuid=store_uuid,
    )
    try:
        for f in files:
            f.commit()
    finally:
        for f in files:
            f.discard()
    return Path(path)


def _relative_to(p: str | os.PathLike | None, base: Path) -> str | None:
    if p is None:
        return None
    p = Path(p).resolve()
    try:
        return str(p.relative_to(base.resolve()))
    except ValueError:
        return str(p)


def read_index(path: str | os.PathLike):
    """Load a FAISS binary index and its sidecar; returns ``(index, IndexInfo)``.

    The sidecar's search defaults (nprobe, ef_search, nflip) are applied to the index.
    """
    faiss = _faiss()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"index not found: {path}")
    try:
        index = faiss.read_index_binary(str(path))
    except RuntimeError as exc:
        raise DataError(f"not a FAISS binary index: {path} ({str(exc).splitlines()[0]})") from None
    side = sidecar_path(path)
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{side} is not valid JSON ({exc})") from None
        if meta.get("format") != SIDECAR_FORMAT:
            raise DataError(f"{side} is not a hashkit index sidecar")
    else:
        meta = {"bits": index.d, "type": index_type_of(index), "count": index.ntotal}
    store = meta.get("store")
    model = meta.get("model")
    info = IndexInfo(
        bits=int(meta["bits"]),
        type=meta.get("type", "flat"),
        store=None if store is None else (path.parent / store),
        model=None if model is None else Path(model),
        model_fingerprint=meta.get("model_fingerprint", ""),
        count=int(meta.get("count", index.ntotal)),
        params=meta.get("params", {}),
        store_uuid=meta.get("store_uuid", ""),
    )
    if 8 * code_bytes(info.bits) != index.d:
        raise MismatchError(f"{path}: sidecar says {info.bits} bits, the index has d={index.d}")
    set_search_params(
        index,
        nprobe=info.params.get("nprobe"),
        ef_search=info.params.get("ef_search"),
        nflip=info.params.get("nflip"),
    )
    return index, info


def check_compatible(
    *,
    bits_a: int,
    bits_b: int,
    what_a: str,
    what_b: str,
    fingerprint_a: str = "",
    fingerprint_b: str = "",
) -> None:
    """Raise MismatchError when two artefacts disagree on bits or (both known) fingerprint."""
    if bits_a != bits_b:
        raise MismatchError(f"{what_a} has {bits_a} bits but {what_b} has {bits_b} bits")
    if fingerprint_a and fingerprint_b and fingerprint_a != fingerprint_b:
        raise MismatchError(
            f"{what_a} and {what_b} come from different models "
            f"(fingerprints {fingerprint_a[:12]} and {fingerprint_b[:12]})"
        )


@dataclass
class Alignment:
    """How an index and its code store line up.

    ``pending``: codes at the end of the store that the index lacks (an ``add`` stopped
    between writing the store and the index; the next ``add`` indexes them).
    ``stale_sidecar``: the sidecar's count differs from the index (stopped between the index
    and its sidecar; the next ``add`` or ``build-index`` rewrites it).
    """

    pending: int = 0
    stale_sidecar: bool = False

    def warning(self) -> str:
        notes = []
        if self.pending:
            notes.append(
                f"the code store holds {self.pending} code(s) the index lacks (an interrupted "
                "`hashkit add`?); run `hashkit add` again to index them"
            )
        if self.stale_sidecar:
            notes.append("the index sidecar's count is out of date (an interrupted write?)")
        return "; ".join(notes)


def check_alignment(
    index,
    info: IndexInfo,
    store_ids: np.ndarray,
    store_attrs: dict,
    *,
    index_path: str | os.PathLike = "the index",
) -> Alignment:
    """Check that ``index`` holds the first ``ntotal`` codes of its store, under the store's
    ids (``store_ids`` int64 N); raise MismatchError when it cannot."""
    store_name = str(info.store) if info.store else "its code store"
    uuid = str(store_attrs.get("uuid", ""))
    if info.store_uuid and uuid and info.store_uuid != uuid:
        raise MismatchError(
            f"{index_path} was built from another code store than {store_name} "
            "(store uuid differs): rebuild it with `hashkit build-index`"
        )
    n = len(store_ids)
    if index.ntotal > n:
        raise MismatchError(
            f"{index_path} holds {index.ntotal} codes but {store_name} only {n}: "
            "they do not belong together"
        )
    ids = index_ids(index)
    if ids is not None and not np.array_equal(ids, store_ids[: index.ntotal]):
        raise MismatchError(f"the ids in {index_path} are not the ids of {store_name}")
    return Alignment(pending=n - int(index.ntotal), stale_sidecar=info.count != index.ntotal)


def search(index, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k nearest codes by Hamming distance: ``D`` int32 nq x k, ``I`` int64 nq x k (-1 = none)."""
    xq = np.ascontiguousarray(xq, dtype=np.uint8)
    if xq.ndim != 2 or xq.shape[1] * 8 != index.d:
        raise MismatchError(f"query codes of shape {xq.shape} for an index of d={index.d} bits")
    k = max(1, min(k, index.ntotal))
    return index.search(xq, k)


# GPU --------------------------------------------------------------------------------------


def gpu_count() -> int:
    """Number of GPUs this faiss build can use (0 for a CPU-only build)."""
    faiss = _faiss()
    try:
        return int(faiss.get_num_gpus()) if hasattr(faiss, "GpuIndexBinaryFlat") else 0
    except (AttributeError, RuntimeError):
        return 0


class DeviceFlatIndex:
    """A brute-force index on another device (GpuIndexBinaryFlat) that returns store ids.

    ``device_index`` holds the codes at positions 0..n-1; ``ids`` (int64 n) maps a position
    to the store's id. Searches with k above GPU_MAX_K go to ``cpu_index``.
    """

    def __init__(self, device_index, ids: np.ndarray, cpu_index=None, resources=None) -> None:
        self.device_index = device_index
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.cpu_index = cpu_index
        self.resources = resources
        self.d = device_index.d
        self.ntotal = device_index.ntotal

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k > GPU_MAX_K and self.cpu_index is not None:
            return self.cpu_index.search(xq, k)
        D, I = self.device_index.search(xq, k)
        return D, np.where(I >= 0, self.ids[np.maximum(I, 0)], -1)


def flat_codes(index) -> tuple[np.ndarray, np.ndarray]:
    """The packed codes (ntotal x d/8 uint8) and ids (int64) of a flat IDMap index."""
    faiss = _faiss()
    inner = _inner(index)
    if not isinstance(inner, faiss.IndexBinaryFlat):
        raise HashkitError(f"not a flat index: {index_type_of(index)}")
    codes = faiss.vector_to_array(inner.xb).reshape(-1, inner.code_size)
    ids = index_ids(index)
    return codes, (np.arange(len(codes), dtype=np.int64) if ids is None else ids)


def to_gpu(index, device: int = 0) -> DeviceFlatIndex:
    """A GpuIndexBinaryFlat copy of a flat index, returning the same ids."""
    faiss = _faiss()
    codes, ids = flat_codes(index)
    resources = faiss.StandardGpuResources()
    config = faiss.GpuIndexBinaryFlatConfig()
    config.device = device
    gpu = faiss.GpuIndexBinaryFlat(resources, index.d, config)
    gpu.add(codes)
    return DeviceFlatIndex(gpu, ids, cpu_index=index, resources=resources)


def search_index_for(index, gpu: bool | None = None):
    """The index to search with: a GPU copy of a flat index when ``gpu`` is True, or None
    (auto) and faiss sees a GPU; else ``index`` itself. Returns ``(index, on_gpu)``.

    ``gpu=True`` without a GPU, or for a non-flat index, raises HashkitError.
    """
    if gpu is False:
        return index, False
    kind = index_type_of(index)
    n_gpu = gpu_count()
    if gpu is True:
        if n_gpu == 0:
            raise HashkitError("--gpu: this faiss build sees no GPU (use --no-gpu)")
        if kind != "flat":
            raise HashkitError(f"--gpu searches flat indexes only; this index is {kind}")
    if n_gpu == 0 or kind != "flat":
        return index, False
    return to_gpu(index), True


# Describing ------------------------------------------------------------------------------


def describe_index(path: str | os.PathLike) -> dict:
    """What ``hashkit info`` shows about an index: type, parameters, bits, count, its store
    and model, file sizes, and whether index and store line up."""
    from hashkit.store import read_store

    path = Path(path)
    index, info = read_index(path)
    out = {
        "kind": "index",
        "path": str(path),
        "bits": info.bits,
        "count": int(index.ntotal),
        "type": index_type_of(index),
        "params": {k: v for k, v in index_params(index).items() if k != "type"},
        "model": None if info.model is None else str(info.model),
        "model_fingerprint": info.model_fingerprint,
        "store": None if info.store is None else str(info.store),
        "file_size": path.stat().st_size,
        "sidecar": str(sidecar_path(path)) if sidecar_path(path).is_file() else None,
    }
    if info.store is not None and Path(info.store).is_file():
        store = read_store(info.store, codes=False, paths=False)
        out["store_count"] = len(store.ids)
        out["store_size"] = Path(info.store).stat().st_size
        alignment = check_alignment(index, info, store.ids, store.attrs, index_path=path)
        out["warning"] = alignment.warning() or None
    return out


# Incremental adds -------------------------------------------------------------------------


def _normal_path(p: str) -> str:
    return os.path.normpath(os.path.abspath(p)) if p else ""


@dataclass
class AddReport:
    """What ``add`` did: codes ``added`` under ids ``first_id``..``first_id + added - 1``;
    ``recovered`` store codes an interrupted add had left out of the index; paths skipped
    because the store already held them, or because they could not be read."""

    added: int = 0
    first_id: int = 0
    recovered: int = 0
    count: int = 0
    skipped_existing: list[str] = field(default_factory=list)
    skipped_unreadable: list[tuple[str, str]] = field(default_factory=list)


class IndexAppender:
    """Append codes to an index and its code store together, atomically.

    Used as a context manager: codes go to a temporary copy of the store and to the index in
    memory; on success the store, the index and the sidecar are renamed into place in that
    order. If the block raises, nothing on disk changes. If the process dies between the
    renames, the store is ahead of the index, ``check_alignment`` reports it, and the next
    appender indexes the missing tail first (``report.recovered``).
    """

    def __init__(self, index_path: str | os.PathLike) -> None:
        from hashkit.store import StoreWriter, read_store

        self.index_path = Path(index_path)
        self.index, self.info = read_index(self.index_path)
        if self.info.store is None:
            raise DataError(f"{index_path} has no sidecar naming its code store")
        store = read_store(self.info.store, codes=False)
        check_compatible(
            bits_a=self.info.bits,
            bits_b=store.bits,
            what_a=str(index_path),
            what_b=str(self.info.store),
            fingerprint_a=self.info.model_fingerprint,
            fingerprint_b=store.fingerprint,
        )
        alignment = check_alignment(
            self.index, self.info, store.ids, store.attrs, index_path=self.index_path
        )
        self.bits = store.bits
        self.fingerprint = store.fingerprint or self.info.model_fingerprint
        self.store_uuid = str(store.attrs.get("uuid", ""))
        self.report = AddReport()
        if alignment.pending:
            tail = read_store(
                self.info.store, paths=False, rows=slice(int(self.index.ntotal), None)
            )
            self.index.add_with_ids(tail.codes, tail.ids)
            self.report.recovered = len(tail.ids)
        self._known = {_normal_path(p) for p in store.paths if p}
        self._writer = StoreWriter.append_to(self.info.store)
        self.report.first_id = self._writer.next_id

    def split_new(self, paths: Sequence[str]) -> list[str]:
        """The paths not yet in the store (each once); the others go to the report."""
        new = []
        for p in paths:
            key = _normal_path(p)
            if key in self._known:
                self.report.skipped_existing.append(p)
            else:
                self._known.add(key)
                new.append(p)
        return new

    def append(self, codes: np.ndarray, paths: Sequence[str]) -> np.ndarray:
        """Append packed codes (n x nbytes uint8) of ``paths``; returns their new ids."""
        ids = np.arange(self._writer.next_id, self._writer.next_id + len(codes), dtype=np.int64)
        self._writer.append(codes, ids, list(paths))
        self.index.add_with_ids(np.ascontiguousarray(codes, dtype=np.uint8), ids)
        self.report.added += len(codes)
        return ids

    def commit(self) -> AddReport:
        """Write the temporary files and rename them into place: store, index, sidecar."""
        self._writer.finish()
        files = prepare_index_files(
            self.index,
            self.index_path,
            bits=self.bits,
            store=self.info.store,
            model=self.info.model,
            model_fingerprint=self.fingerprint,
            store_uuid=self.store_uuid,
        )
        try:
            self._writer.commit()
            for f in files:
                f.commit()
        finally:
            for f in files:
                f.discard()
        self.report.count = int(self.index.ntotal)
        return self.report

    def abort(self) -> None:
        self._writer.abort()

    def __enter__(self) -> IndexAppender:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def add_images(
    index_path: str | os.PathLike,
    paths: Sequence[str],
    bundle,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str = "auto",
    strict: bool = False,
    progress: Callable | None = None,
) -> AddReport:
    """Encode the image files among ``paths`` that the index's store lacks, with ``bundle``
    (which must be the index's model), and append them to the store and the index.

    Old images are not re-encoded; new ids continue after the store's largest id.
    """
    from hashkit.encode import EncodeReport, iter_file_codes

    with IndexAppender(index_path) as appender:
        check_compatible(
            bits_a=bundle.bits,
            bits_b=appender.bits,
            what_a=f"model {bundle.path}",
            what_b=str(index_path),
            fingerprint_a=bundle.fingerprint,
            fingerprint_b=appender.fingerprint,
        )
        new = appender.split_new(paths)
        encode_report = EncodeReport()
        for positions, codes in iter_file_codes(
            bundle,
            new,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            strict=strict,
            report=encode_report,
            progress=progress,
        ):
            appender.append(codes, [new[i] for i in positions])
        appender.report.skipped_unreadable = encode_report.skipped
    return appender.report


def append_code_batches(
    index_path: str | os.PathLike, batches: Iterable[tuple[np.ndarray, Sequence[str]]]
) -> AddReport:
    """Append ``(codes n x nbytes uint8, paths n)`` batches to an index and its store;
    paths the store already holds are skipped."""
    with IndexAppender(index_path) as appender:
        for codes, paths in batches:
            first: dict[str, int] = {}
            for i, p in enumerate(paths):
                first.setdefault(p, i)
            rows = [first[p] for p in appender.split_new(paths)]
            if rows:
                appender.append(np.asarray(codes)[rows], [paths[i] for i in rows])
    return appender.report
