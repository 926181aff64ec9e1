"""Export of code stores to Milvus (Milvus Lite, a file under tmp_path) and search there: the
same hits and distances as a FAISS flat index on the same codes, ties aside."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys

import faiss
import numpy as np
import pytest
import torch
from conftest import write_class_images

from hashkit.bundle import Bundle, save_bundle
from hashkit.codes import pack_codes
from hashkit.errors import DataError, HashkitError, MismatchError
from hashkit.export.milvus import (
    MilvusConnection,
    MilvusError,
    collection_count,
    export_to_milvus,
    open_collection,
)
from hashkit.milvus_search import MilvusSearcher
from hashkit.models import HashNet, NetworkConfig
from hashkit.store import CodeStore, read_store, write_store


def random_store(path, n, bits, seed=0, fingerprint="model-a", labels="int64"):
    """A store of n random codes with shuffled, non-contiguous ids, paths and labels."""
    rng = np.random.default_rng(seed)
    codes = pack_codes(rng.integers(0, 2, (n, bits)))
    ids = rng.permutation(n).astype(np.int64) * 3 + 5
    if labels == "int64":
        y = rng.integers(0, 10, n)
    else:
        y = (rng.random((n, 4)) < 0.4).astype(np.uint8)
    store = CodeStore(
        codes=codes,
        ids=ids,
        bits=bits,
        paths=[f"/data/img{i}.png" for i in range(n)],
        labels=y,
        fingerprint=fingerprint,
    )
    write_store(path, store)
    return store


def faiss_flat(store):
    index = faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(8 * store.codes.shape[1]))
    index.add_with_ids(store.codes, store.ids)
    return index


def assert_same_neighbours(D, I, D_ref, I_ref):
    """Equal distances per query; every id strictly closer than the k-th distance in both
    (which of the codes tied at the k-th distance make the cut is arbitrary)."""
    np.testing.assert_array_equal(D, D_ref)
    for d, i, i_ref in zip(D, I, I_ref):
        inside = d < d[-1]
        assert set(i[inside]) == set(i_ref[inside])
        assert len(set(i)) == len(i)


def test_search_matches_faiss_flat_at_12_32_and_64_bits(tmp_path):
    uri = tmp_path / "milvus.db"
    stores = {}
    for bits in (12, 32, 64):
        stores[bits] = random_store(tmp_path / f"{bits}.h5", 3000, bits, seed=bits)
        report = export_to_milvus(tmp_path / f"{bits}.h5", uri, f"codes{bits}", batch_size=1000)
        assert (report.inserted, report.skipped, report.count) == (3000, 0, 3000)
    for bits, store in stores.items():
        xq = pack_codes(np.random.default_rng(99).integers(0, 2, (40, bits)))
        xq[:5] = store.codes[:5]  # queries that are stored codes: distance 0 at least once
        D_ref, I_ref = faiss_flat(store).search(xq, 25)
        searcher = MilvusSearcher(uri, f"codes{bits}")
        try:
            D, I = searcher.search(xq, 25)
            hits = searcher.search_codes(xq[:5], 3)
        finally:
            searcher.close()
        assert_same_neighbours(D, I, D_ref, I_ref)
        for row, row_hits in enumerate(hits):
            exact = [h for h in row_hits if h.id == store.ids[row]]
            assert exact and exact[0].distance == 0 and exact[0].path == store.paths[row]


def test_collection_holds_the_stores_codes_paths_and_labels(tmp_path):
    store = random_store(tmp_path / "s.h5", 50, 20, labels="multi-hot")
    export_to_milvus(tmp_path / "s.h5", tmp_path / "m.db", "c")
    with MilvusConnection(tmp_path / "m.db") as connection:
        opened = open_collection(connection, "c")
        rows = opened.collection.query("id >= 0", output_fields=["*"], limit=100)
    assert opened.info.bits == 20 and opened.info.labels == "multi-hot"
    by_id = {row["id"]: row for row in rows}
    assert sorted(by_id) == sorted(store.ids.tolist())
    for i in range(len(store)):
        row = by_id[int(store.ids[i])]
        code = row["code"][0] if isinstance(row["code"], list) else row["code"]
        assert bytes(code) == store.codes[i].tobytes()
        assert row["path"] == store.paths[i]
        assert row["label"] == np.flatnonzero(store.labels[i]).tolist()


def interrupt_after_first_batch(iterable, **kwargs):
    """A progress factory that stops the export (as Ctrl-C would) once one batch is written."""
    batches = iter(iterable)
    yield next(batches)
    raise KeyboardInterrupt


def test_interrupted_export_resumes_to_exactly_the_stores_rows(tmp_path):
    store = random_store(tmp_path / "s.h5", 2500, 32)
    uri = tmp_path / "m.db"
    with pytest.raises(KeyboardInterrupt):
        export_to_milvus(
            tmp_path / "s.h5", uri, "c", batch_size=1000, progress=interrupt_after_first_batch
        )
    with MilvusConnection(uri) as connection:
        assert collection_count(open_collection(connection, "c").collection) == 1000
    report = export_to_milvus(tmp_path / "s.h5", uri, "c", batch_size=1000)
    assert (report.inserted, report.skipped, report.count, report.created) == (
        1500,
        1000,
        2500,
        False,
    )
    again = export_to_milvus(tmp_path / "s.h5", uri, "c", batch_size=700)
    assert (again.inserted, again.skipped, again.count) == (0, 2500, 2500)
    searcher = MilvusSearcher(uri, "c")
    try:
        D, I = searcher.search(store.codes[:30], 10)
    finally:
        searcher.close()
    assert_same_neighbours(D, I, *faiss_flat(store).search(store.codes[:30], 10))


def test_export_refuses_a_collection_of_other_bits_model_or_store(tmp_path, run_cli):
    uri = tmp_path / "m.db"
    random_store(tmp_path / "a.h5", 100, 32)
    export_to_milvus(tmp_path / "a.h5", uri, "c")
    random_store(tmp_path / "bits.h5", 100, 64)
    random_store(tmp_path / "model.h5", 100, 32, fingerprint="model-b")
    random_store(tmp_path / "other.h5", 100, 32)  # same bits and model, another store
    for name, message in [
        ("bits.h5", "has 32 bits but"),
        ("model.h5", "different models"),
        ("other.h5", "another code store"),
    ]:
        with pytest.raises(MismatchError, match=message):
            export_to_milvus(tmp_path / name, uri, "c")
    result = run_cli("export", "milvus", tmp_path / "bits.h5", "--uri", uri, "--collection", "c")
    assert result.exit_code == 1
    assert (
        result.stderr.startswith("hashkit: error: collection c at") and "64 bits" in result.stderr
    )
    with pytest.raises(MismatchError, match="bin_flat index, not bin_ivf_flat"):
        export_to_milvus(tmp_path / "a.h5", uri, "c", index_type="bin_ivf_flat")
    with pytest.raises(MilvusError, match="supports only the bin_flat index"):
        export_to_milvus(tmp_path / "a.h5", uri, "new", index_type="bin_ivf_flat")
    with pytest.raises(MilvusError, match="ending in .db"):
        export_to_milvus(tmp_path / "a.h5", tmp_path / "m.sqlite", "c")
    with pytest.raises(DataError, match="does not exist"):
        MilvusSearcher(uri, "missing")
    with MilvusConnection(uri) as connection:
        assert not connection.has_collection("new")
        assert collection_count(open_collection(connection, "c").collection) == 100


def test_a_collection_not_made_by_hashkit_is_refused(tmp_path):
    from pymilvus import CollectionSchema, DataType, FieldSchema

    uri = tmp_path / "m.db"
    with MilvusConnection(uri) as connection:
        fields = [
            FieldSchema("id", DataType.INT64, is_primary=True),
            FieldSchema("code", DataType.BINARY_VECTOR, dim=32),
        ]
        connection.collection("theirs", CollectionSchema(fields, description="someone else's"))
    random_store(tmp_path / "a.h5", 10, 32)
    with pytest.raises(DataError, match="not made by `hashkit export milvus`"):
        export_to_milvus(tmp_path / "a.h5", uri, "theirs")


@pytest.fixture
def model(tmp_path):
    torch.manual_seed(0)
    config = NetworkConfig(bits=12, input_size=16, channels=3, mean=[0.5] * 3, std=[0.5] * 3)
    bundle = Bundle(config, HashNet(config).state_dict(), np.eye(12, dtype=np.float32))
    path = tmp_path / "model.pt"
    save_bundle(bundle, path)
    return path


def csv_hits(text):
    """{query_id: [(distance, id, path), ...]} of `hashkit search --format csv` output."""
    out = {}
    for row in csv.DictReader(io.StringIO(text)):
        out.setdefault(row["query_id"], []).append(
            (int(row["distance"]), int(row["id"]), row["path"])
        )
    return out


def closer_than(hits, distance):
    """The (id, path) of the hits strictly closer than ``distance``."""
    return {(i, p) for d, i, p in hits if d < distance}


def test_cli_export_then_search_prints_what_faiss_search_prints(tmp_path, model, run_cli):
    write_class_images(tmp_path / "images", classes=2, per_class=8)
    store, uri = tmp_path / "codes.h5", tmp_path / "m.db"
    assert run_cli("encode", "--model", model, tmp_path / "images", store, "-q").exit_code == 0
    assert run_cli("build-index", store, tmp_path / "flat.faiss").exit_code == 0
    result = run_cli("export", "milvus", store, "--uri", uri, "--collection", "imgs", "-q")
    assert result.exit_code == 0, result.output
    assert "created collection imgs" in result.stdout and "holds 16 code(s)" in result.stdout
    result = run_cli("export", "milvus", store, "--uri", uri, "--collection", "imgs", "-q")
    assert "inserted 0, 16 already there; it holds 16" in result.stdout

    ours = run_cli(
        "search", "--milvus", uri, "--collection", "imgs", "--codes", store, "-k", "5",
        "--format", "csv",
    )  # fmt: skip
    assert ours.exit_code == 0, ours.output
    faiss_out = run_cli(
        "search", tmp_path / "flat.faiss", "--codes", store, "-k", "5", "--format", "csv"
    )
    ours, ref = csv_hits(ours.stdout), csv_hits(faiss_out.stdout)
    assert sorted(ours) == sorted(ref) and len(ours) == 16
    for qid in ref:
        assert [d for d, _, _ in ours[qid]] == [d for d, _, _ in ref[qid]]
        kth = ref[qid][-1][0]
        assert closer_than(ours[qid], kth) == closer_than(ref[qid], kth)

    stored = read_store(store)
    query = stored.paths[7]
    result = run_cli("search", "--milvus", uri, "--collection", "imgs", query, "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    [record] = json.loads(result.stdout)  # one object per query, as for FAISS search
    assert record["query_path"] == query
    assert record["results"][0] == {"rank": 1, "id": 7, "distance": 0, "path": query}


def test_search_command_line_errors(tmp_path, run_cli):
    random_store(tmp_path / "a.h5", 10, 32)
    uri = tmp_path / "m.db"
    result = run_cli("search", "--milvus", uri, "--codes", tmp_path / "a.h5")
    assert result.exit_code == 2 and "--milvus needs --collection" in result.stderr
    result = run_cli("search", "--codes", tmp_path / "a.h5")
    assert result.exit_code == 2 and "Missing argument 'INDEX'" in result.stderr
    result = run_cli(
        "search", "--milvus", uri, "--collection", "c", "--codes", tmp_path / "a.h5", "--nflip", "1"
    )
    assert result.exit_code == 2 and "FAISS options" in result.stderr
    result = run_cli("search", "--milvus", uri, "--collection", "c", "--codes", tmp_path / "a.h5")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "Milvus Lite database not found" in result.stderr and not uri.exists()
    export_to_milvus(tmp_path / "a.h5", uri, "other")
    result = run_cli("search", "--milvus", uri, "--collection", "c", "--codes", tmp_path / "a.h5")
    assert result.exit_code == 1 and "collection c at" in result.stderr
    assert "does not exist" in result.stderr


def uuidless_store(path, codes, ids=None):
    """A store as another program writes it: codes, paths and bits, no uuid (ids 0..N-1
    unless given)."""
    import h5py

    with h5py.File(path, "w") as f:
        f["codes"] = codes
        f["paths"] = [f"{path.stem}/{i}.png".encode() for i in range(len(codes))]
        if ids is not None:
            f["ids"] = np.asarray(ids, dtype=np.int64)
        f.attrs["bits"] = 12
        f.attrs["bit_order"] = "little"


def test_export_refuses_another_store_without_uuid_under_the_same_ids(tmp_path):
    rng = np.random.default_rng(0)
    uri = tmp_path / "m.db"
    uuidless_store(tmp_path / "a.h5", pack_codes(rng.integers(0, 2, (2, 12))))
    export_to_milvus(tmp_path / "a.h5", uri, "c")
    # ids 10 and 11 come first: a refusal found at ids 0 and 1 must not have inserted them
    uuidless_store(tmp_path / "b.h5", pack_codes(rng.integers(0, 2, (4, 12))), [10, 11, 0, 1])
    with pytest.raises(MismatchError, match="other rows than .*b.h5 under the same ids"):
        export_to_milvus(tmp_path / "b.h5", uri, "c", batch_size=2)
    codes = pack_codes(rng.integers(0, 2, (2, 12)))  # a uuid on one side only tells nothing
    write_store(tmp_path / "uuid.h5", CodeStore(codes, np.arange(2), 12, ["a/0.png", "x.png"]))
    with pytest.raises(MismatchError, match="other rows"):
        export_to_milvus(tmp_path / "uuid.h5", uri, "c")
    # the first row of a.h5 alone (same code and path): every row it has is there, but the
    # collection holds more
    (tmp_path / "a").mkdir()
    uuidless_store(tmp_path / "a" / "a.h5", read_store(tmp_path / "a.h5").codes[:1])
    with pytest.raises(MismatchError, match="1 row.* under ids that .*a.h5 does not have"):
        export_to_milvus(tmp_path / "a" / "a.h5", uri, "c")
    with MilvusConnection(uri) as connection:
        rows = open_collection(connection, "c").collection.query("id >= 0", output_fields=["path"])
    assert sorted(row["path"] for row in rows) == ["a/0.png", "a/1.png"]


KILL_AFTER_FIRST_BATCH = """
import os, signal, sys
from hashkit.export.milvus import export_to_milvus

def kill_after_first_batch(iterable, desc, **kwargs):
    batches = iter(iterable)
    yield next(batches)
    if desc == "exporting":
        os.kill(os.getpid(), signal.SIGKILL)
    yield from batches

export_to_milvus(sys.argv[1], sys.argv[2], "c", batch_size=100, progress=kill_after_first_batch)
"""


def test_export_of_a_store_without_uuid_resumes_after_kill_9(tmp_path):

    codes = pack_codes(np.random.default_rng(0).integers(0, 2, (250, 12)))
    uuidless_store(tmp_path / "s.h5", codes)
    uri = tmp_path / "m.db"
    args = [sys.executable, "-c", KILL_AFTER_FIRST_BATCH, tmp_path / "s.h5", uri]
    assert subprocess.run(args, timeout=60).returncode == -9
    report = export_to_milvus(tmp_path / "s.h5", uri, "c", batch_size=100)
    assert (report.inserted + report.skipped, report.count) == (250, 250)
    assert report.skipped in (0, 100)  # the killed export's batch, unless Milvus lost it
    again = export_to_milvus(tmp_path / "s.h5", uri, "c", batch_size=64)
    assert (again.inserted, again.skipped, again.count) == (0, 250, 250)
    with MilvusConnection(uri) as connection:
        rows = open_collection(connection, "c").collection.query("id >= 0", output_fields=["*"])
    assert sorted(row["id"] for row in rows) == list(range(250))
    for row in rows:
        code = row["code"][0] if isinstance(row["code"], list) else row["code"]
        assert bytes(code) == codes[row["id"]].tobytes() and row["path"] == f"s/{row['id']}.png"


def hashkit_process(*args, prefix=()):
    """``hashkit ARGS`` in a child process (what a user sees on stderr, unraisable exceptions
    at exit included), started by the command ``prefix`` if any: ``(exit code, stderr lines
    that are not blank)``."""

    command = [*prefix, sys.executable, "-m", "hashkit.cli.main", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    return done.returncode, [line for line in done.stderr.splitlines() if line.strip()]


def test_a_lite_file_name_milvus_lite_refuses_is_one_error_line(tmp_path, run_cli):
    random_store(tmp_path / "a.h5", 10, 32)
    long_name = tmp_path / "fashion_mnist_database_codes_32bit_v2.db"  # 40 characters
    code, lines = hashkit_process(
        "export", "milvus", tmp_path / "a.h5", "--uri", long_name, "--collection", "c"
    )
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith("hashkit: error: ") and "at most 36 characters" in lines[0]
    code, lines = hashkit_process(
        "search", "--milvus", long_name, "--collection", "c", "--codes", tmp_path / "a.h5"
    )
    assert code == 1 and len(lines) == 1 and "at most 36 characters" in lines[0], lines
    result = run_cli(
        "export",
        "milvus",
        tmp_path / "a.h5",
        "--uri",
        tmp_path / "my codes.db",
        "--collection",
        "c",
    )
    assert result.exit_code == 1 and "letters, digits, '.', '-' and '_' only" in result.stderr
    assert not any(tmp_path.glob("*.db")) and not any(tmp_path.glob(".*.lock"))


# Runs the command after it in a mount namespace of its own where the folder $0 is read-only
# (as a read-only file system, which even root cannot write; nothing outside sees the mount).
READ_ONLY = ["sh", "-c", 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"']


def test_lite_in_a_read_only_folder_is_one_error_line(tmp_path):
    random_store(tmp_path / "a.h5", 10, 32)
    folder = tmp_path / "read-only"
    folder.mkdir()
    prefix = ["unshare", "--map-root-user", "--mount", *READ_ONLY, folder]
    if shutil.which("unshare") is None or subprocess.run([*prefix, "true"]).returncode:
        pytest.skip("no mount namespace to make a folder read-only in")
    code, lines = hashkit_process(
        "export", "milvus", tmp_path / "a.h5", "--uri", folder / "m.db", "--collection", "c",
        prefix=prefix,
    )  # fmt: skip
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith("hashkit: error: ") and "is not writable" in lines[0]


def test_a_collection_name_milvus_refuses_is_one_error_line_before_connecting(tmp_path, capfd):
    random_store(tmp_path / "a.h5", 10, 32)
    uri = tmp_path / "m.db"
    for name in ["my-coll", "1st", "é", "a$b", "x" * 256, ""]:
        with pytest.raises(HashkitError, match="is not a Milvus collection name"):
            export_to_milvus(tmp_path / "a.h5", uri, name)
        with pytest.raises(HashkitError, match="is not a Milvus collection name"):
            MilvusSearcher(uri, name)
    assert capfd.readouterr().err == "" and not uri.exists()
    export_to_milvus(tmp_path / "a.h5", uri, "_C_" + "x" * 252)  # letters, digits, '_': 255


def test_a_lite_file_that_is_no_milvus_database_or_is_missing_is_refused(tmp_path, capfd):
    random_store(tmp_path / "a.h5", 10, 32)
    notes = tmp_path / "notes.db"
    notes.write_text("my notes\n")
    with pytest.raises(DataError, match="notes.db is not a Milvus Lite database"):
        export_to_milvus(tmp_path / "a.h5", notes, "c")
    with pytest.raises(DataError, match="notes.db is not a Milvus Lite database"):
        MilvusSearcher(notes, "c")
    with pytest.raises(DataError, match="Milvus Lite database not found: .*nosuch.db"):
        MilvusSearcher(tmp_path / "nosuch.db", "c")
    (tmp_path / "folder.db").mkdir()
    with pytest.raises(DataError, match="folder.db is a folder"):
        export_to_milvus(tmp_path / "a.h5", tmp_path / "folder.db", "c")
    assert capfd.readouterr().err == "" and notes.read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "folder.db", "notes.db"]
