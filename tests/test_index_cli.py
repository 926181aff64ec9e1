"""encode, build-index, add, search --codes and info through the command line, with a tiny
model bundle built in-process and generated PNG folders."""

from __future__ import annotations

import csv
import io
import json

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
