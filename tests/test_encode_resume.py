"""Long encodes survive a crash (hashkit.encode_checkpoint): `hashkit encode` and `hashkit
build-index IMAGES` save their codes as they come, and after a real SIGKILL the same command
with --resume ends with the store (and index) of an uninterrupted run, without encoding the
saved images again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from conftest import write_class_images

import hashkit.encode
from hashkit.bundle import Bundle, save_bundle
from hashkit.encode_checkpoint import checkpoint_dir
from hashkit.models import HashNet, NetworkConfig
from hashkit.store import read_store

# Runs the hashkit command line, killing itself with SIGKILL (no clean-up of any kind) when
# the encoder is asked for batch KILL_AT, i.e. after KILL_AT batches were saved.
KILLED_RUN = """
import os, signal, sys
import hashkit.encode as encode
real = encode.iter_file_codes
def dying(*args, **kwargs):
    for n, batch in enumerate(real(*args, **kwargs)):
        if n == int(os.environ["KILL_AT"]):
            os.kill(os.getpid(), signal.SIGKILL)
        yield batch
encode.iter_file_codes = dying
from hashkit.cli.main import main
sys.argv = ["hashkit", *sys.argv[1:]]
main()
"""


def bundle_file(path: Path, bits: int = 16, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = NetworkConfig(bits=bits, input_size=16, channels=3, mean=[0.5] * 3, std=[0.5] * 3)
    save_bundle(Bundle(config, HashNet(config).state_dict(), np.eye(bits)), path)
    return path


@pytest.fixture
def folder(tmp_path):
    write_class_images(tmp_path / "images", classes=3, per_class=12)
    return tmp_path / "images", bundle_file(tmp_path / "model.pt")


def killed(*args, kill_at: int, cwd: Path):
    env = {**os.environ, "KILL_AT": str(kill_at), "HASHKIT_CHECKPOINT_SECONDS": "0"}
    run = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == -9, run.stderr  # killed, not finished
    assert "--resume" in run.stderr  # the killed run said where its codes are and what to do


def encoded_paths(monkeypatch) -> list:
    """Record the image lists the encoder is given in this process."""
    seen = []
    real = hashkit.encode.iter_file_codes

    def counting(bundle, paths, **kwargs):
        seen.append(list(paths))
        return real(bundle, paths, **kwargs)

    monkeypatch.setattr(hashkit.encode, "iter_file_codes", counting)
    return seen


def same_store(a: Path, b: Path) -> None:
    x, y = read_store(a), read_store(b)
    assert np.array_equal(x.codes, y.codes) and np.array_equal(x.ids, y.ids)
    assert list(x.paths) == list(y.paths)
    assert (x.labels is None) == (y.labels is None)
    assert x.labels is None or np.array_equal(x.labels, y.labels)


def same_index(a: Path, b: Path, queries: np.ndarray) -> None:
    """Two indexes give the same distances and ids for ``queries``."""
    x, y = faiss.read_index_binary(str(a)), faiss.read_index_binary(str(b))
    assert [r.tolist() for r in x.search(queries, 10)] == [
        r.tolist() for r in y.search(queries, 10)
    ]


def same_as_uninterrupted(run_cli, out: Path, *args) -> None:
    """``out`` equals the store of ``hashkit encode ARGS reference.h5`` run in one go."""
    reference = out.parent / "reference.h5"
    assert run_cli("encode", *args, reference, "-q").exit_code == 0
    same_store(out, reference)


def test_a_killed_encode_resumes_to_the_store_of_an_uninterrupted_one(
    tmp_path, folder, run_cli, monkeypatch
):
    images, model = folder
    out = tmp_path / "codes.h5"
    killed("encode", "--model", model, images, out, "--batch-size", 5, kill_at=3, cwd=tmp_path)
    partial = checkpoint_dir(out)
    assert not out.exists()
    assert sorted(p.name for p in partial.iterdir()) == [
        "part-000000.npz", "part-000001.npz", "part-000002.npz", "progress.json",
    ]  # fmt: skip

    seen = encoded_paths(monkeypatch)
    result = run_cli("encode", "--model", model, images, out, "--batch-size", 5, "--resume")
    assert result.exit_code == 0, result.output
    assert "resuming: 15 of 36 items were encoded before" in result.stderr
    assert [len(p) for p in seen] == [21]  # only the images the killed run had not saved
    assert not partial.exists()
    same_as_uninterrupted(run_cli, out, "--model", model, images)


def test_a_leftover_encode_is_never_thrown_away_by_a_run_without_resume(tmp_path, folder, run_cli):
    images, model = folder
    out = tmp_path / "codes.h5"
    killed("encode", "--model", model, images, out, "--batch-size", 5, kill_at=2, cwd=tmp_path)
    partial = checkpoint_dir(out)
    before = {p.name: p.read_bytes() for p in partial.iterdir()}
    result = run_cli("encode", "--model", model, images, out, "--batch-size", 5)
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "\n" not in line and "--resume" in line and "codes.h5.partial" in line
    assert {p.name: p.read_bytes() for p in partial.iterdir()} == before and not out.exists()


def test_resume_refuses_another_model_other_images_or_nothing_to_resume(tmp_path, folder, run_cli):
    images, model = folder
    out = tmp_path / "codes.h5"
    assert run_cli("encode", "--model", model, images, out, "--resume").exit_code == 1  # nothing
    killed("encode", "--model", model, images, out, "--batch-size", 5, kill_at=2, cwd=tmp_path)
    other_model = bundle_file(tmp_path / "other.pt", seed=1)
    result = run_cli("encode", "--model", other_model, images, out, "--resume")
    assert result.exit_code == 1 and "model" in result.stderr
    (images / "class2" / "new.png").write_bytes((images / "class2" / "000.png").read_bytes())
    result = run_cli("encode", "--model", model, images, out, "--resume")
    assert result.exit_code == 1 and "paths" in result.stderr and "items" in result.stderr
    assert len(list(checkpoint_dir(out).glob("part-*.npz"))) == 2  # kept through all of it


def test_an_encode_within_the_interval_saves_nothing(tmp_path, folder, run_cli):
    images, model = folder
    out = tmp_path / "codes.h5"
    assert run_cli("encode", "--model", model, images, out, "--batch-size", 5).exit_code == 0
    assert not checkpoint_dir(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.h5", "images", "model.pt"]


def test_unreadable_images_of_the_saved_part_are_still_reported_after_resume(
    tmp_path, folder, run_cli
):
    images, model = folder
    (images / "class0" / "001.png").write_bytes(b"not a png")
    out = tmp_path / "codes.h5"
    killed("encode", "--model", model, images, out, "--batch-size", 5, kill_at=2, cwd=tmp_path)
    result = run_cli("encode", "--model", model, images, out, "--batch-size", 5, "--resume")
    assert result.exit_code == 0, result.output
    assert "001.png" in result.stderr and "35" in result.output
    same_as_uninterrupted(run_cli, out, "--model", model, images)


def test_a_killed_dataset_encode_resumes(tmp_path, folder, run_cli):
    images, model = folder
    split = tmp_path / "split.json"
    database = [i for i in range(36) if i % 12]
    split.write_text(json.dumps({"train": database, "query": [0, 12, 24], "database": database}))
    out = tmp_path / "codes.h5"
    data = ("--data", images, "--split", split, "--part", "database")
    args = ("encode", "--model", model, *data, out, "--batch-size", 4)
    killed(*args, kill_at=4, cwd=tmp_path)
    assert len(list(checkpoint_dir(out).glob("part-*.npz"))) == 4
    result = run_cli(*args, "--resume")
    assert result.exit_code == 0, result.output
    same_as_uninterrupted(run_cli, out, "--model", model, *data)
    assert len(read_store(out).ids) == 33


def test_a_killed_build_index_resumes_to_the_index_of_an_uninterrupted_one(
    tmp_path, folder, run_cli, monkeypatch
):
    images, model = folder
    out = tmp_path / "out.faiss"
    killed("build-index", images, out, "--model", model, "--batch-size", 5, kill_at=3,
           cwd=tmp_path)  # fmt: skip
    assert not out.exists() and checkpoint_dir(tmp_path / "out.h5").is_dir()
    refused = run_cli("build-index", images, out, "--model", model)
    assert refused.exit_code == 1 and "--resume" in refused.stderr
    seen = encoded_paths(monkeypatch)
    result = run_cli("build-index", images, out, "--model", model, "--batch-size", 5, "--resume")
    assert result.exit_code == 0, result.output
    assert [len(p) for p in seen] == [21]
    assert not checkpoint_dir(tmp_path / "out.h5").exists()
    reference = tmp_path / "reference.faiss"
    assert run_cli("build-index", images, reference, "--model", model, "-q").exit_code == 0
    same_store(tmp_path / "out.h5", tmp_path / "reference.h5")
    same_index(out, reference, read_store(tmp_path / "reference.h5").codes[:5])


def test_resume_is_for_a_folder_and_one_process(tmp_path, folder, run_cli):
    images, model = folder
    store = tmp_path / "codes.h5"
    assert run_cli("encode", "--model", model, images, store, "-q").exit_code == 0
    result = run_cli("build-index", store, tmp_path / "x.faiss", "--resume")
    assert result.exit_code == 1 and "--resume" in result.stderr
    env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    for key, value in env.items():
        os.environ[key] = value
    try:
        result = run_cli("encode", "--model", model, images, tmp_path / "y.h5", "--resume")
    finally:
        for key in env:
            del os.environ[key]
    assert result.exit_code == 2 and "torchrun" in result.output


def test_a_killed_add_resumes_to_the_index_of_an_uninterrupted_one(
    tmp_path, folder, run_cli, monkeypatch
):
    images, model = folder
    more = tmp_path / "more"
    write_class_images(more, classes=2, per_class=12, seed=1)
    for out in (tmp_path / "a.faiss", tmp_path / "b.faiss"):
        assert run_cli("build-index", images, out, "--model", model, "-q").exit_code == 0
    killed("add", tmp_path / "a.faiss", more, "--batch-size", 5, kill_at=2, cwd=tmp_path)
    partial = checkpoint_dir(tmp_path / "a.h5")
    assert len(list(partial.glob("part-*.npz"))) == 2
    refused = run_cli("add", tmp_path / "a.faiss", more)
    assert refused.exit_code == 1 and "--resume" in refused.stderr
    seen = encoded_paths(monkeypatch)
    result = run_cli("add", tmp_path / "a.faiss", more, "--batch-size", 5, "--resume")
    assert result.exit_code == 0, result.output
    assert [len(p) for p in seen] == [14] and not partial.exists()
    assert run_cli("add", tmp_path / "b.faiss", more, "-q").exit_code == 0
    same_store(tmp_path / "a.h5", tmp_path / "b.h5")
    same_index(tmp_path / "a.faiss", tmp_path / "b.faiss", read_store(tmp_path / "b.h5").codes[::7])
