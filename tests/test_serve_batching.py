"""The batcher: queued queries go through the network and FAISS together, each request gets
its own answer (the same as alone), and one bad request never fails the others."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from serve_helpers import make_model, write_block_images

from hashkit.bundle import load_bundle
from hashkit.cli.main import _registered
from hashkit.errors import HashkitError
from hashkit.serve.batching import Batcher, Job, SearchParams
from hashkit.serve.encoder import QueryEncoder
from hashkit.serve.errors import RequestError
from hashkit.serve.snapshot import refresh_snapshot

RESULT_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    paths = write_block_images(root / "images", classes=2, per_class=5)
    model = make_model(root / "model.pt", paths)
    result = CliRunner().invoke(
        _registered(), ["build-index", str(root / "images"), str(root / "i.faiss"), "-q",
                        "--model", str(model)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    snapshot = refresh_snapshot(None, root / "i.faiss")
    encoder = QueryEncoder(load_bundle(model), device="cpu")
    return snapshot, encoder, [p.read_bytes() for p in paths]


class CountingEncoder:
    def __init__(self, encoder: QueryEncoder) -> None:
        self.encoder = encoder
        self.calls: list[int] = []

    def __call__(self, images):
        self.calls.append(len(images))
        return self.encoder.encode(images)


def run_queued(snapshot, encode, jobs, **options):
    """Queue every job, then start the worker: they are all waiting when it looks."""
    batcher = Batcher(lambda: snapshot, encode, **options)
    for job in jobs:
        batcher.submit(job)
    batcher.start()
    try:
        return [job.future.result(RESULT_TIMEOUT_S) for job in jobs]
    finally:
        batcher.stop()


def test_queued_image_and_code_queries_are_encoded_in_one_pass_and_answered_like_alone(setup):
    snapshot, encoder, uploads = setup
    encode = CountingEncoder(encoder)
    jobs = [Job(SearchParams(k=4), images=[(f"{i}.png", uploads[i])]) for i in range(6)]
    jobs.append(Job(SearchParams(k=4), codes=snapshot.codes[:3]))
    jobs.append(Job(SearchParams(k=2), codes=snapshot.codes[3:4]))
    answers = run_queued(snapshot, encode, jobs, max_batch=64, wait_s=0.0)
    assert encode.calls == [6]
    assert all(a.batch_queries == 10 for a in answers)
    assert [len(a.hits) for a in answers] == [1] * 6 + [3, 1]
    assert len(answers[-1].hits[0]) == 2
    for job, answer in zip(jobs, answers):
        fresh = Job(job.params, codes=job.codes, images=job.images)
        (alone,) = run_queued(snapshot, CountingEncoder(encoder), [fresh], max_batch=1)
        assert alone.batch_queries == job.size and alone.hits == answer.hits


def test_max_batch_1_turns_batching_off(setup):
    snapshot, encoder, uploads = setup
    encode = CountingEncoder(encoder)
    jobs = [Job(SearchParams(), images=[("a.png", u)]) for u in uploads[:4]]
    answers = run_queued(snapshot, encode, jobs, max_batch=1, wait_s=0.05)
    assert encode.calls == [1, 1, 1, 1] and all(a.batch_queries == 1 for a in answers)


def test_a_bad_image_fails_its_request_only(setup):
    snapshot, encoder, uploads = setup
    good = Job(SearchParams(k=1), images=[("good.png", uploads[0])])
    bad = Job(SearchParams(k=1), images=[("good.png", uploads[1]), ("bad.png", b"junk")])
    codes = Job(SearchParams(k=1), codes=snapshot.codes[:1])
    batcher = Batcher(lambda: snapshot, CountingEncoder(encoder))
    for job in (good, bad, codes):
        batcher.submit(job)
    batcher.start()
    try:
        assert good.future.result(RESULT_TIMEOUT_S).hits[0][0]["distance"] == 0
        assert codes.future.result(RESULT_TIMEOUT_S).hits[0][0]["distance"] == 0
        with pytest.raises(RequestError, match="bad.png"):
            bad.future.result(RESULT_TIMEOUT_S)
    finally:
        batcher.stop()


def test_a_cancelled_request_is_skipped_and_the_worker_goes_on(setup):
    snapshot, encoder, _ = setup
    gone = Job(SearchParams(), codes=snapshot.codes[:1])
    kept = Job(SearchParams(), codes=snapshot.codes[1:2])
    batcher = Batcher(lambda: snapshot, CountingEncoder(encoder))
    batcher.submit(gone)
    batcher.submit(kept)
    assert gone.future.cancel()
    batcher.start()
    try:
        answer = kept.future.result(RESULT_TIMEOUT_S)
        assert answer.batch_queries == 1 and answer.hits[0][0]["id"] == int(snapshot.ids[1])
    finally:
        batcher.stop()


def test_a_range_search_is_cut_at_the_hit_limit_and_says_so(setup):
    snapshot, encoder, _ = setup
    job = Job(SearchParams(radius=snapshot.bits), codes=snapshot.codes[:1])
    (answer,) = run_queued(snapshot, None, [job], max_range_hits=3)
    assert answer.truncated == [True] and len(answer.hits[0]) == 3
    distances = [h["distance"] for h in answer.hits[0]]
    assert distances == sorted(distances) and distances[0] == 0


def test_image_queries_without_a_model_are_refused(setup):
    snapshot, _, uploads = setup
    batcher = Batcher(lambda: snapshot, None)
    with pytest.raises(RequestError, match="--model"):
        batcher.submit(Job(SearchParams(), images=[("a.png", uploads[0])]))


def test_codes_equal_those_hashkit_stored_for_the_same_files(setup):
    snapshot, encoder, uploads = setup
    from hashkit.serve.queries import decode_upload

    images = [decode_upload(u, "x.png", 1 << 20) for u in uploads]
    assert np.array_equal(encoder.encode(images), snapshot.codes)


@pytest.fixture
def twins(tmp_path):
    """Eight PNG files of the same pixels (so the same code) but different bytes, among other
    images: a search for one of them has eight hits at distance 0."""
    from PIL import Image

    paths = write_block_images(tmp_path / "images", classes=1, per_class=6)
    pixels = Image.open(paths[0]).copy()
    copies = []
    for level in (0, 1, 2, 3, 4, 5, 7, 9):  # 6, PIL's default, would copy paths[0] exactly
        path = tmp_path / "images" / "class0" / f"twin{level}.png"
        pixels.save(path, compress_level=level)
        copies.append(path)
    assert len({p.read_bytes() for p in copies + [paths[0]]}) == 9
    model = make_model(tmp_path / "model.pt", paths)
    result = CliRunner().invoke(
        _registered(),
        ["build-index", str(tmp_path / "images"), str(tmp_path / "i.faiss"), "--model", str(model)],
    )
    assert result.exit_code == 0, result.output
    snapshot = refresh_snapshot(None, tmp_path / "i.faiss")
    encoder = QueryEncoder(load_bundle(model), device="cpu")
    ids = {p: int(i) for p, i in zip(snapshot.paths, snapshot.ids)}
    return snapshot, encoder, [(ids[str(p)], p) for p in copies + [paths[0]]]


def test_an_upload_of_a_stored_file_ranks_that_file_first_among_equal_codes(twins):
    snapshot, encoder, copies = twins
    jobs = [Job(SearchParams(k=12), images=[("q.png", p.read_bytes())]) for _, p in copies]
    answers = run_queued(snapshot, encoder.encode, jobs)
    for (item_id, path), answer in zip(copies, answers):
        hits = answer.hits[0]
        assert sum(h["distance"] == 0 for h in hits) == 9
        assert hits[0]["id"] == item_id and hits[0]["path"] == str(path)
        assert [h["rank"] for h in hits] == list(range(1, 13))


@pytest.mark.parametrize("k", [1, 3])
def test_an_upload_of_a_stored_file_is_first_even_when_more_than_k_share_its_code(twins, k):
    snapshot, encoder, copies = twins
    jobs = [Job(SearchParams(k=k), images=[("q.png", p.read_bytes())]) for _, p in copies]
    answers = run_queued(snapshot, encoder.encode, jobs)
    for (item_id, path), answer in zip(copies, answers):
        hits = answer.hits[0]
        assert [h["rank"] for h in hits] == list(range(1, k + 1))
        assert hits[0]["id"] == item_id and hits[0]["path"] == str(path)
        assert all(h["distance"] == 0 for h in hits) and len({h["id"] for h in hits}) == k


def test_similar_ranks_the_item_itself_first_even_when_more_than_k_share_its_code(twins):
    snapshot, _, copies = twins
    for item_id, _ in copies:
        row = snapshot.row_of(item_id)
        job = Job(SearchParams(k=3), codes=snapshot.codes[row : row + 1], item_ids=[item_id])
        (answer,) = run_queued(snapshot, None, [job])
        hits = answer.hits[0]
        assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["id"] == item_id
        assert all(h["distance"] == 0 for h in hits) and len({h["id"] for h in hits}) == 3


def test_a_search_faiss_refuses_fails_its_own_request_only(setup, tmp_path):
    snapshot, _, _ = setup
    result = CliRunner().invoke(
        _registered(),
        ["build-index", str(snapshot.searcher.info.store), str(tmp_path / "h.faiss"), "--type",
         "hnsw"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    hnsw = refresh_snapshot(None, tmp_path / "h.faiss")
    bad = Job(SearchParams(k=1, ef_search=2**31), codes=hnsw.codes[:1])
    good = [Job(SearchParams(k=1), codes=hnsw.codes[i : i + 1]) for i in range(2)]
    batcher = Batcher(lambda: hnsw, None)
    for job in (good[0], bad, good[1]):
        batcher.submit(job)
    batcher.start()
    try:
        for i, job in enumerate(good):
            assert job.future.result(RESULT_TIMEOUT_S).hits[0][0]["id"] == int(hnsw.ids[i])
        with pytest.raises(HashkitError, match="ef_search"):
            bad.future.result(RESULT_TIMEOUT_S)
    finally:
        batcher.stop()


class FailsOnFlatImages:
    """An encoder whose network fails on any batch holding an image of one flat colour."""

    def __init__(self, encoder: QueryEncoder) -> None:
        self.encoder = encoder

    def __call__(self, images):
        if any(np.ptp(np.asarray(image)) == 0 for image in images):
            raise RuntimeError("the network failed")
        return self.encoder.encode(images)


def test_an_image_the_network_fails_on_fails_its_own_request_only(setup):
    import io

    from PIL import Image

    snapshot, encoder, uploads = setup
    flat = io.BytesIO()
    Image.new("RGB", (24, 24), (90, 90, 90)).save(flat, format="PNG")
    good = [Job(SearchParams(k=1), images=[(f"{i}.png", uploads[i])]) for i in range(2)]
    bad = Job(SearchParams(k=1), images=[("flat.png", flat.getvalue())])
    codes = Job(SearchParams(k=1), codes=snapshot.codes[:1])
    batcher = Batcher(lambda: snapshot, FailsOnFlatImages(encoder))
    for job in (good[0], bad, good[1], codes):
        batcher.submit(job)
    batcher.start()
    try:
        for i, job in enumerate(good):
            assert job.future.result(RESULT_TIMEOUT_S).hits[0][0]["id"] == int(snapshot.ids[i])
        assert codes.future.result(RESULT_TIMEOUT_S).hits[0][0]["distance"] == 0
        with pytest.raises(RuntimeError, match="network failed"):
            bad.future.result(RESULT_TIMEOUT_S)
    finally:
        batcher.stop()


def test_the_service_batch_holds_one_decoded_image_at_a_time(setup, monkeypatch):
    """Large uploads must not all be decoded at once: each image is shrunk to the network's
    input before the next one is decoded (24 images of 4096 x 4096 pixels took 1.8 GB)."""
    import weakref

    from hashkit.serve import ServeSettings, Service, batching

    snapshot, _, uploads = setup
    decoded = []  # weak references: the test itself keeps no image alive
    alive_at_each_decode = []
    real_decode = batching.decode_upload

    def decode(*args, **kwargs):
        alive_at_each_decode.append(sum(ref() is not None for ref in decoded))
        image = real_decode(*args, **kwargs)
        decoded.append(weakref.ref(image))
        return image

    monkeypatch.setattr(batching, "decode_upload", decode)
    settings = ServeSettings(snapshot.searcher.index_path, device="cpu", reload_interval_s=0)
    batcher = Service(settings).batcher
    jobs = [
        Job(SearchParams(k=1), images=[("a.png", uploads[i]), ("b.png", uploads[i + 1])])
        for i in range(0, 6, 2)
    ]
    for job in jobs:
        batcher.submit(job)
    batcher.start()
    try:
        answers = [job.future.result(RESULT_TIMEOUT_S) for job in jobs]
    finally:
        batcher.stop()
    assert alive_at_each_decode == [0] * 6
    assert [hits[0]["id"] for a in answers for hits in a.hits] == [int(i) for i in snapshot.ids[:6]]
    assert all(a.batch_queries == 6 for a in answers)
