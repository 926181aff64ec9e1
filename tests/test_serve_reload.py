"""Live updates: the service swaps in a new index snapshot when ``hashkit add`` commits, with
no failed or mixed answer; a snapshot is loaded whole and only when the files held still."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from serve_helpers import (
    Server,
    get_json,
    make_model,
    search_codes,
    search_images,
    write_block_images,
)

from hashkit.cli.main import _registered
from hashkit.errors import HashkitError
from hashkit.serve import ServeSettings, Service
from hashkit.serve import snapshot as snapshot_module
from hashkit.serve.snapshot import files_signature, refresh_snapshot
from hashkit.store import read_store

LOOP_LIMIT_S = 120
LOOP_MAX_REQUESTS = 4000


def cli(*args):
    result = CliRunner().invoke(_registered(), [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def built(tmp_path):
    images = write_block_images(tmp_path / "images", classes=2, per_class=6)
    more = write_block_images(tmp_path / "more", classes=2, per_class=4, seed=1)
    model = make_model(tmp_path / "model.pt", images + more)
    index = tmp_path / "index.faiss"
    cli("build-index", tmp_path / "images", index, "--model", model, "-q")
    return tmp_path, index, images, more


def test_search_loop_never_fails_while_hashkit_add_commits_and_finds_new_images_after(built):
    root, index, images, more = built
    before = read_store(root / "index.h5")
    codes = [c.tobytes().hex() for c in before.codes]
    uploads = [p.read_bytes() for p in images]
    answers: list[tuple[int, dict]] = []
    stop = threading.Event()

    def search_loop():
        deadline = time.monotonic() + LOOP_LIMIT_S
        for i in range(LOOP_MAX_REQUESTS):
            if stop.is_set() or time.monotonic() > deadline:
                return
            if i % 2:
                answers.append(search_codes(server, {"codes": [codes[i % len(codes)]], "k": 30}))
            else:
                image = uploads[i % len(uploads)]
                answers.append(search_images(server, [("q.png", image)], {"k": 30}))

    with Server(index, "--reload-interval", "0.1") as server:
        loop = threading.Thread(target=search_loop)
        loop.start()
        try:
            while len(answers) < 5 and loop.is_alive():
                time.sleep(0.05)
            cli("add", index, root / "more", "-q")  # in this process: no second torch start-up
            total = len(images) + len(more)
            deadline = time.monotonic() + 30
            while get_json(server, "/healthz")[1]["index_count"] != total:
                assert time.monotonic() < deadline, "the service never switched to the new index"
                time.sleep(0.1)
            seen = len(answers)
            while len(answers) < seen + 6 and loop.is_alive():
                time.sleep(0.05)
        finally:
            stop.set()
            loop.join()
        after = read_store(root / "index.h5")
        new_rows = range(len(images), total)
        _, first, counts = np.unique(after.codes, axis=0, return_index=True, return_counts=True)
        unique_new = [r for r in new_rows if r in set(first[counts == 1].tolist())]
        assert unique_new, "some new image should have a code of its own"
        row = unique_new[0]
        status, found = search_images(server, [("new.png", more[row - len(images)].read_bytes())])
        assert status == 200
        assert found["results"][0]["hits"][0] == {
            "rank": 1,
            "id": int(after.ids[row]),
            "distance": 0,
            "path": after.paths[row],
            "label": more[row - len(images)].parent.name,
        }

    assert answers and all(status == 200 for status, _ in answers), [
        body for status, body in answers if status != 200
    ][:3]
    versions = [body["index_version"] for _, body in answers]
    assert versions == sorted(versions) and versions[0] == 1 and versions[-1] >= 2
    for _, body in answers:  # each answer from one whole snapshot: k hits, all of it indexed
        hits = body["results"][0]["hits"]
        assert len(hits) == min(30, body["index_count"])
        assert body["index_count"] in (len(images), total)
        assert all(0 <= h["id"] < body["index_count"] for h in hits)
        assert all(h["path"] == after.paths[h["id"]] for h in hits)


def test_refresh_keeps_the_snapshot_while_files_are_unchanged_and_loads_a_new_one_after_add(
    built,
):
    root, index, images, more = built
    first = refresh_snapshot(None, index)
    assert first.version == 1 and first.count == len(images)
    assert refresh_snapshot(first, index) is first
    cli("add", index, root / "more", "-q")
    second = refresh_snapshot(first, index)
    assert second is not first and second.version == 2
    assert second.count == len(images) + len(more) and len(second.paths) == second.count
    assert first.count == len(images)  # the old snapshot is untouched


def test_a_load_that_overlaps_a_commit_is_thrown_away_and_retried(built, monkeypatch):
    root, index, _, _ = built
    real_load = snapshot_module.load_snapshot
    calls = []

    def load_while_add_commits(*args, **kwargs):
        loaded = real_load(*args, **kwargs)
        if not calls:
            cli("add", index, root / "more", "-q")  # the files change under this load
        calls.append(loaded.count)
        return loaded

    monkeypatch.setattr(snapshot_module, "load_snapshot", load_while_add_commits)
    snap = refresh_snapshot(None, index, retry_s=0)
    assert len(calls) == 2 and calls[0] < calls[1]
    assert snap.count == calls[1] and snap.signature == files_signature(index)


def test_changed_files_that_cannot_be_loaded_leave_the_old_snapshot_in_service(built):
    root, index, images, _ = built
    service = Service(ServeSettings(index_path=index, reload_interval_s=0))
    old = service.snapshot
    sidecar = root / "index.faiss.json"
    good = sidecar.read_text()
    sidecar.write_text("{broken")
    with pytest.raises(HashkitError, match="index.faiss.json"):
        service.reload()
    assert service.snapshot is old
    sidecar.write_text(good)
    assert service.reload() is True  # the sidecar's new mtime makes it a new version
    assert service.snapshot.version == 2 and service.snapshot.count == len(images)


def test_a_new_index_from_another_model_is_refused_and_the_old_one_kept(built):
    root, index, images, _ = built
    service = Service(ServeSettings(index_path=index, reload_interval_s=0))
    old = service.snapshot
    other = make_model(root / "other.pt", images, seed=1)
    cli("build-index", root / "images", index, "--model", other, "-q")
    with pytest.raises(HashkitError, match="different models"):
        service.reload()
    assert service.snapshot is old
