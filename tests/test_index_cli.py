"""encode, build-index, add, search --codes and info through the command line, with a tiny
model bundle built in-process and generated PNG folders."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil

import h5py
import numpy as np
import pytest
import torch
from conftest import write_class_images

from hashkit.bundle import Bundle, save_bundle
from hashkit.models import HashNet, NetworkConfig


@pytest.fixture
def model(tmp_path):
    torch.manual_seed(0)
    config = NetworkConfig(bits=12, input_size=16, channels=3, mean=[0.5] * 3, std=[0.5] * 3)
    bundle = Bundle(config, HashNet(config).state_dict(), np.eye(12, dtype=np.float32))
    path = tmp_path / "model.pt"
    save_bundle(bundle, path)
    return path


@pytest.fixture
def images(tmp_path):
    write_class_images(tmp_path / "images", classes=2, per_class=6)
    write_class_images(tmp_path / "more", classes=2, per_class=3, seed=1)
    return tmp_path / "images", tmp_path / "more"


def test_encode_then_build_index_from_the_store_then_search_codes(tmp_path, model, images, run_cli):
    folder, _ = images
    store = tmp_path / "codes.h5"
    result = run_cli("encode", "--model", model, folder, store, "-q")
    assert result.exit_code == 0, result.output
    with h5py.File(store) as f:
        assert f["codes"].shape == (12, 2) and f.attrs["bits"] == 12
        paths = [p.decode() for p in f["paths"][...]]
    assert all(p.startswith("/") for p in paths)
    for index_type in ("flat", "ivf", "hnsw", "multihash"):
        out = tmp_path / f"{index_type}.faiss"
        result = run_cli("build-index", store, out, "--type", index_type, "--nlist", "2")
        assert result.exit_code == 0, result.output
    result = run_cli(
        "search", tmp_path / "flat.faiss", "--codes", store, "-k", "3", "--format", "csv"
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 36 and rows[0]["query_id"] == "0" and rows[0]["distance"] == "0"
    out = tmp_path / "hits.jsonl"
    result = run_cli("search", tmp_path / "ivf.faiss", "--codes", store, "--json", "--out", out)
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    assert len(records) == 12 and records[3]["query_path"] == paths[3]
    assert records[3]["results"][0]["distance"] == 0


def test_add_appends_new_images_skips_known_ones_and_keeps_ids_unique(
    tmp_path, model, images, run_cli
):
    folder, more = images
    index = tmp_path / "out.faiss"
    assert run_cli("build-index", folder, index, "--model", model, "-q").exit_code == 0
    result = run_cli("add", index, more, "-q")
    assert result.exit_code == 0, result.output
    assert "added 6 image(s) (ids 12..17)" in result.stdout
    result = run_cli("add", index, more, "-q")
    assert "already in the store" in result.stderr and "added 0" in result.stdout
    with h5py.File(tmp_path / "out.h5") as f:
        assert f["ids"][...].tolist() == list(range(18))
    query = more / "class1" / "002.png"
    result = run_cli("search", index, query, "-k", "1", "--json", "--no-gpu")
    assert json.loads(result.stdout)[0]["results"][0]["path"] == str(query)


def test_info_describes_a_bundle_a_store_and_an_index(tmp_path, model, images, run_cli):
    folder, _ = images
    index = tmp_path / "out.faiss"
    run_cli("build-index", folder, index, "--model", model, "--type", "ivf", "--nlist", "2")
    for path, kind in (
        (model, "model bundle"),
        (tmp_path / "out.h5", "code store"),
        (index, "index"),
    ):
        result = run_cli("info", path, "--json")
        assert result.exit_code == 0, result.output
        info = json.loads(result.stdout)
        assert info["kind"] == kind and info["bits"] == 12
    assert info["type"] == "ivf" and info["params"]["nlist"] == 2 and info["count"] == 12
    assert info["store_size"] > 0 and len(info["model_fingerprint"]) == 64
    assert "nprobe=" in run_cli("info", index).stdout


def test_encode_data_with_a_split_stores_labels_that_eval_can_score(
    tmp_path, model, image_folder, run_cli
):
    root, split = image_folder
    for part in ("query", "database"):
        result = run_cli(
            "encode", "--model", model, "--data", root, "--split", split, "--part", part,
            tmp_path / f"{part}.h5", "-q",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "query.h5") as f:
        assert f["ids"][...].tolist() == [0, 12, 24] and f["labels"][...].tolist() == [0, 1, 2]
        assert f.attrs["part"] == "query"
    result = run_cli("eval", tmp_path / "query.h5", tmp_path / "database.h5", "--json")
    assert result.exit_code == 0, result.output
    assert 0 <= json.loads(result.stdout)["map"] <= 1


def test_search_with_gpu_but_no_gpu_is_one_line(tmp_path, model, images, run_cli):
    from hashkit.index import gpu_count

    if gpu_count():
        pytest.skip("a GPU is present")
    folder, _ = images
    index = tmp_path / "out.faiss"
    run_cli("build-index", folder, index, "--model", model, "-q")
    result = run_cli("search", index, "--codes", tmp_path / "out.h5", "--gpu")
    assert result.exit_code == 1 and "no GPU" in result.stderr
    assert "Traceback" not in result.output


def test_mismatch_errors_are_one_line(tmp_path, model, images, run_cli):
    folder, _ = images
    index = tmp_path / "out.faiss"
    run_cli("build-index", folder, index, "--model", model, "-q")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["codes"] = np.zeros((3, 4), np.uint8)
        f.attrs["bits"] = 32
    result = run_cli("search", index, "--codes", other)
    assert result.exit_code == 1 and "32 bits" in result.stderr
    config = NetworkConfig(bits=16, input_size=16, channels=3, mean=[0.5] * 3, std=[0.5] * 3)
    bundle = Bundle(config, HashNet(config).state_dict(), np.eye(16, dtype=np.float32))
    save_bundle(bundle, tmp_path / "m16.pt")
    result = run_cli("add", index, images[1], "--model", tmp_path / "m16.pt")
    assert result.exit_code == 1 and "16 bits" in result.stderr
    result = run_cli("search", index)
    assert result.exit_code == 2 and "--codes" in result.stderr


@pytest.fixture
def built(tmp_path, model, images, run_cli):
    """codes.h5 encoded from the images folder, out.faiss built from it, and a second store
    q.h5 of query codes."""
    folder, more = images
    assert run_cli("encode", "--model", model, folder, tmp_path / "codes.h5", "-q").exit_code == 0
    assert run_cli("encode", "--model", model, more, tmp_path / "q.h5", "-q").exit_code == 0
    assert run_cli("build-index", tmp_path / "codes.h5", tmp_path / "out.faiss").exit_code == 0
    shutil.copy(tmp_path / "codes.h5", tmp_path / "data.h5")
    os.link(model, tmp_path / "hard.pt")
    return tmp_path


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize(
    "args",
    [
        ("build-index", "codes.h5", "codes.h5"),
        ("build-index", "IMAGES", "data.h5", "--model", "model.pt"),
        ("build-index", "IMAGES", "out.faiss", "--model", "model.pt", "--codes", "out.faiss"),
        ("build-index", "IMAGES", "out.faiss", "--model", "model.pt", "--codes", "out.faiss.json"),
        ("build-index", "IMAGES", "model.pt", "--model", "model.pt"),
        ("encode", "--model", "model.pt", "IMAGES", "model.pt"),
        ("encode", "--model", "model.pt", "IMAGES", "hard.pt"),
        ("search", "out.faiss", "--codes", "q.h5", "--out", "out.faiss"),
        ("search", "out.faiss", "--codes", "q.h5", "--out", "q.h5"),
        ("search", "out.faiss", "--codes", "q.h5", "--out", "codes.h5"),
        ("search", "out.faiss", "--codes", "q.h5", "--out", "out.faiss.json"),
    ],
)
def test_an_output_that_is_an_input_is_refused_and_the_input_kept(built, images, run_cli, args):
    before = snapshot(built)
    named = {"IMAGES": images[0]}
    result = run_cli(*[named.get(a) or (built / a if "." in a else a) for a in args])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("hashkit: error: ") and result.stderr.count("\n") == 1
    assert "choose another" in result.stderr
    assert snapshot(built) == before


def test_index_parameters_faiss_would_hang_or_crash_on_are_one_line(built, run_cli):
    codes, out = built / "codes.h5", built / "out.faiss"
    before = snapshot(built)
    cases = [
        (("--type", "multihash", "--nflip", "9"), "nflip 9 is larger than the 8 bits"),
        (("--factory", "BHNSW1"), "HNSW degree M must be between 2"),
        (("--factory", "BIVF0"), "at least 1 list"),
        (("--factory", "BIVF13"), "larger than the 12 codes"),
        (("--factory", "BIVF2_HNSW1"), "HNSW degree M must be between 2"),
        (("--factory", "BHash0x8"), "needs >= 1 table"),
        (("--factory", "BHash2x7"), "do not fit codes of 12 bits"),
        (("--factory", "BHNSW32junk"), "unknown index factory string 'BHNSW32junk'"),
        (("--factory", "junk"), "unknown index factory string"),
    ]
    for options, message in cases:
        result = run_cli("build-index", codes, out, *options)
        assert result.exit_code == 1, (options, result.output)
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert snapshot(built) == before
    assert run_cli("build-index", codes, out, "--type", "multihash").exit_code == 0
    result = run_cli("search", out, "--codes", codes, "--nflip", "40")
    assert result.exit_code == 1 and "nflip 40 is larger than the 8 bits" in result.stderr


def write_raw_store(path, codes, ids, bits):
    with h5py.File(path, "w") as f:
        f["codes"] = codes
        f["ids"] = ids
        f.attrs["bits"] = bits


def test_stores_faiss_cannot_index_faithfully_are_refused(tmp_path, run_cli):
    codes = np.arange(12, dtype=np.uint8).reshape(6, 2)
    cases = [
        (np.zeros((6, 0), np.uint8), np.arange(6), 0, "'codes' must be uint8 N x bytes"),
        (codes, np.array([0, 1, 2, 2, 3, 4]), 16, "must be distinct"),
        (codes, np.arange(6) - 1, 16, "must be >= 0"),
    ]
    for codes, ids, bits, message in cases:
        write_raw_store(tmp_path / "s.h5", codes, ids, bits)
        result = run_cli("build-index", tmp_path / "s.h5", tmp_path / "out.faiss")
        assert result.exit_code == 1 and message in result.stderr, result.output
        assert not (tmp_path / "out.faiss").exists()


SIDECARS = [
    (b"", "is empty"),
    (b"[1, 2]", "is not a hashkit index sidecar"),
    (b'{"format": "hashkit-index", "bits": 12, "store": "caf\xe9.h5"}', "is not UTF-8"),
    (b'{"format": "hashkit-index"}', "has no 'bits'"),
    (b'{"bits": 12}', "is not a hashkit index sidecar"),
    (b'{"format": "hashkit-index", "bits": "12"}', "'bits' must be a positive integer"),
    (b'{"format": "hashkit-index", "bits": true}', "'bits' must be a positive integer"),
    (b'{"format": "hashkit-index", "bits": 12, "count": -1}', "'count' must be"),
    (b'{"format": "hashkit-index", "bits": 12, "params": []}', "'params' must be an object"),
    (b'{"format": "hashkit-index", "bits": 12, "params": {"nprobe": "x"}}', "'nprobe' must"),
    (b'{"format": "hashkit-index", "bits": 12, "store": 5}', "'store' must be a path"),
    (b'{"format": "hashkit-index", "bits": 12, "store_uuid": 5}', "'store_uuid' must"),
    (b'{"format": "hashkit-index", "bits": 12, "index_size": "x"}', "'index_size' must"),
    (b'{"format": "hashkit-index", "bits": 12, "type": "multihash", "params": {"nflip": 40}}',
     "nflip 40 is larger"),
]  # fmt: skip


@pytest.mark.parametrize("content, message", SIDECARS)
def test_a_malformed_sidecar_is_one_line_naming_it(built, run_cli, content, message):
    out = built / "out.faiss"
    if b"nflip" in content:
        assert run_cli("build-index", built / "codes.h5", out, "--type", "multihash").exit_code == 0
        meta = json.loads((built / "out.faiss.json").read_text())
        content = json.dumps({**meta, "params": {**meta["params"], "nflip": 40}}).encode()
    (built / "out.faiss.json").write_bytes(content)
    for args in (("search", out, "--codes", built / "q.h5"), ("info", out), ("add", out, built)):
        result = run_cli(*args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith(f"hashkit: error: {out}.json")
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_a_damaged_index_is_one_line(built, run_cli):
    out = built / "out.faiss"
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    result = run_cli("search", out, "--codes", built / "q.h5")
    assert result.exit_code == 1 and "is not the index its sidecar" in result.stderr
    (built / "out.faiss.json").unlink()
    for content in (b"", b"\x00" * 100, data[: len(data) // 2]):
        out.write_bytes(content)
        for args in (("search", out, "--codes", built / "q.h5"), ("info", out)):
            result = run_cli(*args)
            assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
            assert "FAISS" in result.stderr and ".tmp" not in result.stderr


def test_info_describes_a_valid_index_and_says_what_is_wrong_with_its_store(built, run_cli):
    out, store = built / "out.faiss", built / "codes.h5"
    good = store.read_bytes()
    cases = [
        (lambda: store.write_bytes(b"not hdf5"), "not an HDF5 code store"),
        (lambda: shutil.copy(built / "q.h5", store), "built from another code store"),
        (store.unlink, "code store not found"),
    ]
    for damage, message in cases:
        store.write_bytes(good)
        damage()
        result = run_cli("info", out)
        assert result.exit_code == 0, result.output
        assert "not a FAISS index" not in result.output
        assert "type:" in result.stdout and "flat" in result.stdout
        warning = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
        assert len(warning) == 1 and message in warning[0], result.stdout
