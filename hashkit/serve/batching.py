"""Micro-batching: queries that arrive together are encoded in one network batch and searched
in one FAISS call.

Requests put :class:`Job` objects on a queue; one worker thread takes the first job and every
job queued behind it, waits up to ``wait_s`` for more (0 by default: while one batch runs the
next one queues), stopping at ``max_batch`` queries, then runs them as one batch:
every uploaded image through the network at once, then one FAISS search per distinct set of
search parameters. The worker owns every FAISS call, so setting an index's search parameters
(nprobe, efSearch, nflip) before a call never races with another request.

Each batch reads the service's current snapshot once and uses it throughout: a reload that
swaps the snapshot takes effect at the next batch, never inside one.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from hashkit.index import set_search_params
from hashkit.serve.errors import RequestError
from hashkit.serve.queries import decode_upload
from hashkit.serve.snapshot import Snapshot

log = logging.getLogger("hashkit.serve")


@dataclass(frozen=True)
class SearchParams:
    """What to search for: the ``k`` nearest, or with ``radius`` every hit within that Hamming
    distance; None search parameters take the index's defaults (its sidecar)."""

    k: int = 10
    radius: int | None = None
    nprobe: int | None = None
    ef_search: int | None = None
    nflip: int | None = None


@dataclass
class Job:
    """One request's queries: packed ``codes`` (n x nbytes uint8), or ``images`` as
    ``(name, file bytes)`` pairs to decode and encode. ``item_ids``: for queries that are
    stored items (``/similar``), their ids. ``future`` gets a :class:`Answer` or the error that
    refused the request."""

    params: SearchParams
    codes: np.ndarray | None = None
    images: list[tuple[str, bytes]] | None = None
    item_ids: list[int] | None = None
    future: Future = field(default_factory=Future)

    @property
    def size(self) -> int:
        return len(self.images) if self.images is not None else len(self.codes)


@dataclass
class Answer:
    """Per query, its hits as dicts (rank, id, distance, path, label) and whether a range
    search was cut at the hit limit; the snapshot searched and the queries in its batch."""

    hits: list[list[dict]]
    truncated: list[bool]
    snapshot: Snapshot
    batch_queries: int


class Batcher:
    """The worker thread that batches and runs jobs.

    ``snapshot``: returns the snapshot to search (called once per batch); ``encode``: PIL
    images, or what ``prepare`` made of them, to packed codes (None when the service has no
    model); ``prepare``: one decoded image to the network's input, applied to each image as
    soon as it is decoded so that a batch holds one full-size image at a time (None: encode
    takes the images themselves); ``on_batch(n_queries)``: called after each batch, for
    metrics.
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        encode: Callable | None,
        *,
        prepare: Callable | None = None,
        max_batch: int = 64,
        wait_s: float = 0.0,
        max_pixels: int = 4096 * 4096,
        max_range_hits: int = 10000,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._encode = encode
        self._prepare = prepare or (lambda image: image)
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.max_pixels = max_pixels
        self.max_range_hits = max_range_hits
        self._on_batch = on_batch
        self._queue: queue.Queue[Job] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="hashkit-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit(self, job: Job) -> Future:
        if self._encode is None and job.images is not None:
            raise RequestError(
                "this service has no model, so it searches by code only: start it with --model"
            )
        self._queue.put(job)
        return job.future

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            jobs = [first]
            n = first.size
            deadline = time.monotonic() + self.wait_s
            while n < self.max_batch and (job := self._take(deadline)) is not None:
                jobs.append(job)
                n += job.size
            # A running future can no longer be cancelled (by a client that went away), so
            # every job kept here gets exactly one result.
            jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            try:
                self.run(jobs)
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one batch
                log.exception("search batch failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)

    def _take(self, deadline: float) -> Job | None:
        """The next job if one arrives before ``deadline`` (or is already queued), else None."""
        remaining = deadline - time.monotonic()
        try:
            if remaining > 0:
                return self._queue.get(timeout=remaining)
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def run(self, jobs: list[Job]) -> None:
        """Encode and search ``jobs`` as one batch against one snapshot; resolves each future.
        A failure is confined to the jobs it concerns: an image the network fails on to its
        own job, a search FAISS refuses to the jobs with those search parameters."""
        snapshot = self._snapshot()
        self._encode_images([j for j in jobs if j.images is not None])
        live = [j for j in jobs if not j.future.done()]
        groups: dict[SearchParams, list[Job]] = {}
        for job in live:
            groups.setdefault(job.params, []).append(job)
        total = sum(job.size for job in live)
        for params, group in groups.items():
            self._search_group(snapshot, params, group, total)
        if self._on_batch is not None and total:
            self._on_batch(total)

    def _search_group(
        self, snapshot: Snapshot, params: SearchParams, group: list[Job], total: int
    ) -> None:
        """One FAISS call for the jobs that share ``params``; each job gets its own hits."""
        try:
            xq = np.concatenate([job.codes for job in group])
            hits, truncated = self._search(snapshot, params, xq)
        except Exception as exc:  # noqa: BLE001 - fails these jobs only, not the batch
            for job in group:
                job.future.set_exception(exc)
            return
        start = 0
        for job in group:
            end = start + job.size
            mine = hits[start:end]
            try:
                if job.item_ids is not None:
                    for query_hits, item_id in zip(mine, job.item_ids):
                        _put_first(query_hits, snapshot, item_id, params)
                elif job.images is not None:
                    for query_hits, code, (_, data) in zip(mine, job.codes, job.images):
                        item_id = _stored_item_of(snapshot, code, data, query_hits)
                        if item_id is not None:
                            _put_first(query_hits, snapshot, item_id, params)
            except Exception as exc:  # noqa: BLE001 - fails this job only
                job.future.set_exception(exc)
            else:
                job.future.set_result(Answer(mine, truncated[start:end], snapshot, total))
            start = end

    def _encode_images(self, jobs: list[Job]) -> None:
        """Decode every job's images one at a time, each prepared for the network before the
        next is decoded (a job with a bad one fails alone), then encode all the good ones in
        one forward pass and give each job its codes. If the network fails on that pass, each
        job is encoded alone, so that only the jobs it fails on fail."""
        decoded, owners = [], []
        for job in jobs:
            try:
                decoded.append(
                    [
                        self._prepare(decode_upload(data, name, self.max_pixels))
                        for name, data in job.images
                    ]
                )
            except Exception as exc:  # noqa: BLE001 - a crafted file fails its own job only
                job.future.set_exception(exc)
                continue
            owners.append(job)
        if not owners:
            return
        try:
            codes = self._encode([image for images in decoded for image in images])
        except Exception:  # noqa: BLE001 - find the jobs whose images the network fails on
            for job, images in zip(owners, decoded):
                try:
                    job.codes = self._encode(images)
                except Exception as exc:  # noqa: BLE001
                    job.future.set_exception(exc)
            return
        start = 0
        for job in owners:
            job.codes = codes[start : start + job.size]
            start += job.size

    def _search(
        self, snapshot: Snapshot, params: SearchParams, xq: np.ndarray
    ) -> tuple[list[list[dict]], list[bool]]:
        searcher = snapshot.searcher
        defaults = searcher.info.params
        set_search_params(
            searcher.index,
            nprobe=params.nprobe or defaults.get("nprobe"),
            ef_search=params.ef_search or defaults.get("ef_search"),
            nflip=defaults.get("nflip") if params.nflip is None else params.nflip,
        )
        if params.radius is None:
            D, I = searcher.search(xq, params.k)
            lims = np.arange(0, I.size + 1, I.shape[1], dtype=np.int64)
            D, I = D.ravel(), I.ravel()
        else:
            lims, D, I = searcher.range_search(xq, params.radius)
        rows = searcher.rows_of(I)
        hits, truncated = [], []
        for a, b in zip(lims[:-1].tolist(), lims[1:].tolist()):
            cut = b - a > self.max_range_hits
            b = min(b, a + self.max_range_hits)
            hits.append(
                [
                    _hit(rank, snapshot, int(i), int(d), int(r))
                    for rank, (d, i, r) in enumerate(
                        zip(D[a:b].tolist(), I[a:b].tolist(), rows[a:b].tolist()), start=1
                    )
                    if i >= 0
                ]
            )
            truncated.append(cut)
        return hits, truncated


def _put_first(hits: list[dict], snapshot: Snapshot, item_id: int, params: SearchParams) -> None:
    """Rank the query's own item first, as ``hashkit search`` does: FAISS orders equal
    distances arbitrarily, and may even leave the item out when more than k codes equal its
    own; then it is inserted and the last hit dropped."""
    at = next((i for i, h in enumerate(hits) if h["id"] == item_id), None)
    if at is not None:
        hits.insert(0, hits.pop(at))
    else:
        row = snapshot.row_of(item_id)
        if row is None:  # gone from the index since the request looked it up
            return
        hits.insert(0, _hit(1, snapshot, item_id, 0, row))
        if params.radius is None:
            del hits[params.k :]
    _rerank(hits)


def _stored_item_of(
    snapshot: Snapshot, code: np.ndarray, data: bytes, hits: list[dict]
) -> int | None:
    """The id of the indexed item whose code is the query's ``code`` (packed uint8) and whose
    stored file holds exactly the uploaded bytes ``data``, or None: the upload's counterpart of
    the stored query file ``hashkit search`` ranks first. The hits at distance 0 are tried
    first, then the other items with that code (FAISS's top k may have missed it), the last
    stored first as in ``hashkit search``. The codes are scanned only when every hit is at
    distance 0: a hit farther away means every item with the query's code is among the hits."""
    tried = set()
    for hit in hits:
        if hit["distance"] > 0:
            return None
        if _same_bytes(hit["path"], data):
            return hit["id"]
        tried.add(hit["id"])
    rows = np.flatnonzero((snapshot.codes[: snapshot.count] == code).all(axis=1))
    for row in rows[::-1].tolist():
        item_id = int(snapshot.ids[row])
        if item_id not in tried and _same_bytes(snapshot.paths[row], data):
            return item_id
    return None


def _same_bytes(path: str, data: bytes) -> bool:
    try:
        if not path or os.path.getsize(path) != len(data):
            return False
        with open(path, "rb") as f:
            return f.read(len(data) + 1) == data
    except OSError:
        return False


def _rerank(hits: list[dict]) -> None:
    for rank, hit in enumerate(hits, start=1):
        hit["rank"] = rank


def _hit(rank: int, snapshot: Snapshot, item_id: int, distance: int, row: int) -> dict:
    return {
        "rank": rank,
        "id": item_id,
        "distance": distance,
        "path": snapshot.paths[row] if row >= 0 else "",
        "label": snapshot.label_of(row) if row >= 0 else None,
    }
