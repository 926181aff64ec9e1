"""A code store as a Milvus collection: binary vectors compared by Hamming distance, for search
beyond one machine (FAISS stays the engine on one machine).

A collection written here has the fields

- ``id``     INT64, primary key: the store's ``ids`` (the ids a FAISS index returns too);
- ``code``   BINARY_VECTOR of ``8 * ceil(bits/8)`` dimensions: the store's packed bytes as they
  are (padding bits zero, so Hamming distances are those of the ``bits``-bit codes), with an
  index BIN_FLAT (exact) or BIN_IVF_FLAT, metric HAMMING;
- ``path``   VARCHAR: the store's path ("" for dataset items);
- ``label``  INT64 for a single-label store, JSON (list of class indices) for a multi-hot one;
  absent when the store has no labels;

and a description that is a JSON object (``format`` "hashkit-codes/1", ``bits``,
``bit_order``, ``model_fingerprint``, ``store_uuid``, ``model_path``, ``labels``,
``hashkit_version``), so that hashkit refuses to mix codes of different bits, models or
stores, and knows the model that encodes query images.

A URI is a local file ending in ``.db`` (embedded Milvus Lite, which supports BIN_FLAT only;
one process at a time per file) or a server address (``http://host:19530``, https, tcp,
unix); a server's credentials go in ``token`` (``user:password`` or an API key).

pymilvus is imported only when a connection is made: the rest of hashkit does not need it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from hashkit import __version__
from hashkit.codes import BIT_ORDER, code_bytes
from hashkit.errors import DataError, HashkitError, MismatchError
from hashkit.index.compat import check_compatible
from hashkit.store import read_store, store_count

FORMAT = "hashkit-codes/1"
INDEX_TYPES = {"bin_flat": "BIN_FLAT", "bin_ivf_flat": "BIN_IVF_FLAT"}
SERVER_SCHEMES = ("http", "https", "tcp", "grpc", "unix")
# Milvus returns at most this many rows per query (its query result window) and hits per
# search; an export batch looks its ids up in one query, so a batch is at most this long.
MAX_ROWS = 16384
MAX_NLIST = 65536
PATH_LENGTH = 65535  # the longest VARCHAR Milvus stores
# The file names Milvus Lite (milvus_lite/server.py) accepts.
LITE_NAME = re.compile(r"[A-Za-z0-9.\-_]+")
LITE_NAME_LENGTH = 36
# Milvus's rule for collection names (its default length limit).
COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
COLLECTION_NAME_LENGTH = 255
SQLITE_HEADER = b"SQLite format 3\0"  # how a Milvus Lite file starts (empty before its first use)


class MilvusError(HashkitError):
    """Milvus support is not installed, the server cannot be reached, or it refused a request."""


def is_lite_uri(uri: str) -> bool:
    """True when ``uri`` names a local Milvus Lite file rather than a server."""
    return urlparse(str(uri)).scheme.lower() not in SERVER_SCHEMES


def _pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise MilvusError(
            "Milvus support is not installed: pip install 'hashkit[milvus]'"
        ) from None
    return pymilvus


class MilvusConnection:
    """A pymilvus connection to ``uri``; for a Lite file, the embedded server it starts is
    stopped again on ``close()`` (so close it only when nothing else in this process uses
    that file). A Lite file that does not exist is created, unless ``create`` is False
    (DataError: not found)."""

    def __init__(self, uri: str | os.PathLike, token: str = "", *, create: bool = True) -> None:
        pymilvus = _pymilvus()
        self.uri = str(uri)
        self.lite = is_lite_uri(self.uri)
        if self.lite:
            _check_lite_file(self.uri, create)
        self.alias = f"hashkit-{uuid.uuid4().hex}"
        with milvus_errors(f"cannot open Milvus at {self.uri}"):
            pymilvus.connections.connect(alias=self.alias, uri=self.uri, token=token)

    def has_collection(self, name: str) -> bool:
        with milvus_errors(f"Milvus at {self.uri}"):
            return bool(_pymilvus().utility.has_collection(name, using=self.alias))

    def collection(self, name: str, schema=None):
        """The pymilvus ``Collection`` ``name`` (created with ``schema`` when given)."""
        with milvus_errors(f"collection {name} at {self.uri}"):
            return _pymilvus().Collection(name, schema, using=self.alias)

    def close(self) -> None:
        pymilvus = _pymilvus()
        pymilvus.connections.disconnect(self.alias)
        if self.lite:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.uri)

    def __enter__(self) -> MilvusConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_lite_file(uri: str, create: bool) -> None:
    """Refuse, before Milvus Lite starts, a file it cannot open: it would fail with tracebacks
    or log lines on stderr (its name checks raise inside a half-made server object, which then
    fails again when deleted, as does one that could not write its lock file), or create a
    file that ``create`` False says should be there."""
    if not uri.endswith(".db"):
        raise MilvusError(
            f"{uri}: a Milvus Lite URI is a local file ending in .db; a server URI "
            f"starts with {', '.join(s + '://' for s in SERVER_SCHEMES[:3])} or unix://"
        )
    name = Path(uri).name
    if len(name) > LITE_NAME_LENGTH:
        raise MilvusError(
            f"{uri}: Milvus Lite takes file names of at most {LITE_NAME_LENGTH} characters; "
            f"{name} has {len(name)}"
        )
    if not LITE_NAME.fullmatch(name):
        raise MilvusError(
            f"{uri}: Milvus Lite takes file names of letters, digits, '.', '-' and '_' only"
        )
    folder = Path(uri).parent
    if not folder.is_dir():
        raise DataError(f"{uri}: folder {folder} does not exist")
    path = Path(uri)
    if path.is_dir():
        raise DataError(f"{uri} is a folder, not a Milvus Lite .db file")
    if path.exists():
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
        if head and head != SQLITE_HEADER:
            raise DataError(f"{uri} is not a Milvus Lite database (not an SQLite file)")
    elif not create:
        raise DataError(f"Milvus Lite database not found: {uri}")
    if not os.access(folder, os.W_OK):
        raise DataError(
            f"{uri}: folder {folder} is not writable (Milvus Lite writes a lock file beside "
            "its .db file, even to search)"
        )


def check_collection_name(name: str) -> None:
    """Refuse, before connecting, a collection name Milvus refuses: Milvus Lite would print
    log lines of its own on stderr before the error."""
    if not COLLECTION_NAME.fullmatch(name) or len(name) > COLLECTION_NAME_LENGTH:
        raise HashkitError(
            f"{name!r} is not a Milvus collection name: a letter or '_', then letters, digits "
            f"and '_' ({COLLECTION_NAME_LENGTH} characters at most)"
        )


@contextlib.contextmanager
def milvus_errors(what: str) -> Iterator[None]:
    """Turn pymilvus's exceptions raised inside the block into one-line MilvusErrors that
    start with ``what``."""
    pymilvus = _pymilvus()
    try:
        yield
    except pymilvus.MilvusException as exc:
        message = " ".join(str(getattr(exc, "message", exc)).split())
        raise MilvusError(f"{what}: {message}") from None


@dataclass
class CollectionInfo:
    """What a hashkit collection's description records about its codes."""

    bits: int
    bit_order: str = BIT_ORDER
    model_fingerprint: str = ""
    store_uuid: str = ""
    model_path: str = ""
    labels: str | None = None  # "int64", "multi-hot" or None
    hashkit_version: str = __version__

    def description(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)})

    @classmethod
    def from_description(cls, text: str, what: str) -> CollectionInfo:
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise DataError(
                f"{what} was not made by `hashkit export milvus` (no hashkit description)"
            )
        fields = {k: record[k] for k in cls.__dataclass_fields__ if k in record}
        return cls(**fields)


@dataclass
class OpenCollection:
    """A hashkit collection, loaded for search: ``collection`` (pymilvus), its ``info``, its
    ``index_type`` (a key of INDEX_TYPES) and ``nlist`` (IVF only, else 0)."""

    collection: object
    info: CollectionInfo
    index_type: str
    nlist: int


def open_collection(connection: MilvusConnection, name: str) -> OpenCollection:
    """Open and load an existing collection written by ``export_to_milvus``."""
    what = f"collection {name} at {connection.uri}"
    if not connection.has_collection(name):
        raise DataError(f"{what} does not exist: create it with `hashkit export milvus`")
    collection = connection.collection(name)
    info = CollectionInfo.from_description(collection.description, what)
    with milvus_errors(what):
        indexes = [i for i in collection.indexes if i.field_name == "code"]
        collection.load()
    params = dict(indexes[0].params) if indexes else {}
    nested = params.get("params")  # servers may nest the build parameters as a JSON string
    params.update(json.loads(nested) if isinstance(nested, str) else nested or {})
    index_type = str(params.get("index_type", "BIN_FLAT")).lower()
    nlist = int(params.get("nlist", 0))
    return OpenCollection(collection, info, index_type, nlist)


@dataclass
class ExportReport:
    """``inserted`` rows written now, ``skipped`` rows already there (an earlier, interrupted
    or complete export), ``count`` rows in the collection afterwards, ``created`` whether the
    collection was created by this export."""

    inserted: int
    skipped: int
    count: int
    created: bool


def export_to_milvus(
    store_path: str | os.PathLike,
    uri: str | os.PathLike,
    collection_name: str,
    *,
    index_type: str | None = None,
    nlist: int | None = None,
    batch_size: int = 10000,
    token: str = "",
    progress: Callable | None = None,
) -> ExportReport:
    """Write a code store's codes, ids, paths and labels into a Milvus collection.

    Creates the collection (index ``index_type``, default "bin_flat"; "bin_ivf_flat" with
    ``nlist`` lists, default about sqrt(N)) or continues an existing one made from the same
    store: rows whose id is already there are skipped, so a re-run after an interruption, or
    after ``hashkit add`` grew the store, inserts only what is missing and never duplicates.
    A collection of other bits, bit order, model or store is refused; where the store or the
    collection has no uuid to tell, a store whose rows differ from those held under the same
    ids is another store (checked, before inserting, at one query per batch). ``batch_size`` rows
    (at most MAX_ROWS) are read and inserted at a time; ``progress`` is a tqdm-like factory.
    """
    if not 1 <= batch_size <= MAX_ROWS:
        raise HashkitError(f"batch size must be between 1 and {MAX_ROWS}, got {batch_size}")
    if index_type is not None and index_type not in INDEX_TYPES:
        raise HashkitError(f"unknown Milvus index type {index_type!r}: {', '.join(INDEX_TYPES)}")
    check_collection_name(collection_name)
    head = read_store(store_path, codes=False, paths=False, rows=slice(0, 0))
    n = store_count(store_path)
    labels = None if head.labels is None else ("int64" if head.labels.ndim == 1 else "multi-hot")
    info = CollectionInfo(
        bits=head.bits,
        model_fingerprint=head.fingerprint,
        store_uuid=str(head.attrs.get("uuid", "")),
        model_path=str(head.attrs.get("model_path", "")),
        labels=labels,
    )
    with MilvusConnection(uri, token) as connection:
        what = f"collection {collection_name} at {connection.uri}"
        created = not connection.has_collection(collection_name)
        if created:
            index_type = index_type or "bin_flat"
            if connection.lite and index_type != "bin_flat":
                raise MilvusError(
                    f"Milvus Lite ({connection.uri}) supports only the bin_flat index; "
                    f"use a Milvus server for {index_type}"
                )
            nlist = min(MAX_NLIST, nlist or _default_nlist(n))
            collection = _create_collection(connection, collection_name, info, index_type, nlist)
        else:
            opened = open_collection(connection, collection_name)
            _check_same_codes(opened.info, info, what, str(store_path))
            if index_type is not None and index_type != opened.index_type:
                raise MismatchError(
                    f"{what} has a {opened.index_type} index, not {index_type}: "
                    "export into a new collection to change it"
                )
            collection = opened.collection
            if not (info.store_uuid and opened.info.store_uuid == info.store_uuid):
                _check_rows_held(collection, store_path, n, batch_size, what, progress)
        inserted = skipped = 0
        starts = range(0, n, batch_size)
        if progress is not None:
            starts = progress(starts, total=len(starts), desc="exporting", unit="batch")
        with milvus_errors(what):
            for start in starts:
                batch = read_store(store_path, rows=slice(start, start + batch_size))
                new = ~np.isin(batch.ids, _present_ids(collection, batch.ids))
                if new.any():
                    collection.insert(_columns(batch, new, labels))
                inserted += int(new.sum())
                skipped += int((~new).sum())
            collection.flush()
            count = collection_count(collection)
    return ExportReport(inserted=inserted, skipped=skipped, count=count, created=created)


def _default_nlist(n: int) -> int:
    from hashkit.index import default_nlist

    return default_nlist(max(n, 1))


def _check_same_codes(existing: CollectionInfo, new: CollectionInfo, what: str, store: str) -> None:
    check_compatible(
        bits_a=existing.bits,
        bits_b=new.bits,
        what_a=what,
        what_b=store,
        fingerprint_a=existing.model_fingerprint,
        fingerprint_b=new.model_fingerprint,
    )
    if existing.bit_order != new.bit_order:
        raise MismatchError(
            f"{what} holds codes packed in bit order {existing.bit_order!r}, this hashkit "
            f"packs them {new.bit_order!r}: export into a new collection"
        )
    if existing.store_uuid and new.store_uuid and existing.store_uuid != new.store_uuid:
        raise MismatchError(
            f"{what} holds the codes of another code store than {store} (their ids would "
            "collide): export into a new collection"
        )


def _check_rows_held(
    collection, store_path, n: int, batch_size: int, what: str, progress: Callable | None
) -> None:
    """Refuse a store whose codes or paths differ from the rows the collection holds under
    the same ids.

    An export skips the ids already there, so without a uuid on both sides to say the store
    is the one exported before, another store numbered the same way (a store without ids is
    numbered 0..N-1) would be skipped row by row as "already there". The whole store is
    checked before anything is inserted, so a refused export leaves the collection as it was.
    Rows under ids the store lacks are refused too (a store only grows: a collection with
    more rows came from another one).
    """
    starts = range(0, n, batch_size)
    if progress is not None:
        starts = progress(starts, total=len(starts), desc="checking", unit="batch")
    matched = 0
    with milvus_errors(what):
        for start in starts:
            batch = read_store(store_path, rows=slice(start, start + batch_size))
            rows = collection.query(
                f"id in {batch.ids.tolist()}",
                output_fields=["id", "code", "path"],
                limit=len(batch.ids),
                consistency_level="Strong",
            )
            held = {row["id"]: (_row_code(row), row["path"]) for row in rows}
            matched += len(held)
            for i, code, path in zip(batch.ids.tolist(), batch.codes, batch.paths):
                if held.get(i, (code.tobytes(), path)) != (code.tobytes(), path):
                    raise MismatchError(
                        f"{what} holds other rows than {store_path} under the same ids "
                        f"(id {i} has another code or path): it was exported from another "
                        "code store; export into a new collection"
                    )
        total = collection_count(collection)
    if total > matched:
        raise MismatchError(
            f"{what} holds {total - matched} row(s) under ids that {store_path} does not have: "
            "it was exported from another code store; export into a new collection"
        )


def _row_code(row: dict) -> bytes:
    """The packed code of a row Milvus returned (a BINARY_VECTOR comes as bytes or [bytes])."""
    code = row["code"]
    return bytes(code[0] if isinstance(code, list) else code)


def _create_collection(
    connection: MilvusConnection, name: str, info: CollectionInfo, index_type: str, nlist: int
):
    pymilvus = _pymilvus()
    DataType, FieldSchema = pymilvus.DataType, pymilvus.FieldSchema
    fields = [
        FieldSchema("id", DataType.INT64, is_primary=True),
        FieldSchema("code", DataType.BINARY_VECTOR, dim=8 * code_bytes(info.bits)),
        FieldSchema("path", DataType.VARCHAR, max_length=PATH_LENGTH),
    ]
    if info.labels == "int64":
        fields.append(FieldSchema("label", DataType.INT64))
    elif info.labels == "multi-hot":
        fields.append(FieldSchema("label", DataType.JSON))
    schema = pymilvus.CollectionSchema(fields, description=info.description())
    collection = connection.collection(name, schema)
    params = {"nlist": nlist} if index_type == "bin_ivf_flat" else {}
    with milvus_errors(f"collection {name} at {connection.uri}"):
        collection.create_index(
            "code",
            {"index_type": INDEX_TYPES[index_type], "metric_type": "HAMMING", "params": params},
        )
        collection.load()
    return collection


def _present_ids(collection, ids: np.ndarray) -> np.ndarray:
    """Which of ``ids`` (int64 n, n <= MAX_ROWS) the collection holds already."""
    if not len(ids):
        return np.zeros(0, dtype=np.int64)
    rows = collection.query(
        f"id in {ids.tolist()}",
        output_fields=["id"],
        limit=len(ids),
        consistency_level="Strong",
    )
    return np.array([row["id"] for row in rows], dtype=np.int64)


def _columns(batch, keep: np.ndarray, labels: str | None) -> list:
    """The rows of a store batch where ``keep`` (bool n) is set, as Milvus's columns."""
    columns = [
        batch.ids[keep],
        [code.tobytes() for code in batch.codes[keep]],
        [path for path, k in zip(batch.paths, keep) if k],
    ]
    if labels == "int64":
        columns.append(batch.labels[keep])
    elif labels == "multi-hot":
        columns.append([np.flatnonzero(row).tolist() for row in batch.labels[keep]])
    return columns


def collection_count(collection) -> int:
    """Rows in a pymilvus collection, counting every write acknowledged so far."""
    rows = collection.query("", output_fields=["count(*)"], consistency_level="Strong")
    return int(rows[0]["count(*)"])
