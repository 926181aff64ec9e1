"""The search service without HTTP: settings, the snapshot it serves, the model, the batcher,
and the watcher that swaps in a new snapshot when the index files change."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from hashkit.errors import HashkitError
from hashkit.index import check_compatible
from hashkit.serve.batching import Batcher
from hashkit.serve.monitoring import ServiceMetrics
from hashkit.serve.snapshot import Snapshot, refresh_snapshot

log = logging.getLogger("hashkit.serve")


@dataclass
class ServeSettings:
    """How the service runs. Limits are per request; ``batch_wait_ms`` is how long the batcher
    waits for more queries after the first (0: a batch is what queued while the last one ran),
    ``max_batch`` the most queries in one batch (1 turns batching off); ``reload_interval_s``
    how often the index files are checked (0: never); ``body_timeout_s`` how long a request
    body may stall (no bytes arriving) before the request is refused (408).
    """

    index_path: Path
    model_path: Path | None = None
    token: str | None = None
    batch_wait_ms: float = 0.0
    max_batch: int = 64
    max_upload_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    max_queries: int = 256
    max_range_hits: int = 10000
    body_timeout_s: float = 30.0
    reload_interval_s: float = 1.0
    device: str = "auto"
    gpu: bool | None = None


class Service:
    """Loads the index, its store and its model once (HashkitError if any is broken), then
    answers searches through a :class:`Batcher` and keeps the snapshot current."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.snapshot: Snapshot = refresh_snapshot(None, settings.index_path, gpu=settings.gpu)
        self.encoder = self._load_encoder()
        self.metrics.observe_snapshot(self.snapshot)
        self.batcher = Batcher(
            lambda: self.snapshot,
            None if self.encoder is None else self.encoder.encode,
            prepare=None if self.encoder is None else self.encoder.prepare,
            max_batch=settings.max_batch,
            wait_s=settings.batch_wait_ms / 1000,
            max_pixels=settings.max_pixels,
            max_range_hits=settings.max_range_hits,
            on_batch=self.metrics.batch_queries.observe,
        )
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def _load_encoder(self):
        """The model named by ``--model`` or by the index; None when neither names one (the
        service then searches by code only)."""
        path = self.settings.model_path or self.snapshot.searcher.info.model
        if path is None:
            return None
        from hashkit.bundle import load_bundle
        from hashkit.serve.encoder import QueryEncoder

        bundle = load_bundle(path)
        self._check_model(bundle, self.snapshot)
        return QueryEncoder(bundle, self.settings.device)

    @staticmethod
    def _check_model(bundle, snapshot: Snapshot) -> None:
        check_compatible(
            bits_a=bundle.bits,
            bits_b=snapshot.bits,
            what_a=f"model {bundle.path}",
            what_b=str(snapshot.searcher.index_path),
            fingerprint_a=bundle.fingerprint,
            fingerprint_b=snapshot.searcher.fingerprint,
        )

    def reload(self) -> bool:
        """Swap in a new snapshot if the index files changed; True if it did. The new snapshot
        is loaded whole and checked against the model before the one reference is replaced,
        so a batch sees either the old snapshot or the new one. Raises HashkitError (and
        keeps the old snapshot) when the changed files cannot be loaded consistently."""
        new = refresh_snapshot(self.snapshot, self.settings.index_path, gpu=self.settings.gpu)
        if new is self.snapshot:
            return False
        if self.encoder is not None:
            self._check_model(self.encoder.bundle, new)
        self.snapshot = new
        self.metrics.reloads.inc()
        self.metrics.observe_snapshot(new)
        log.info("index reloaded: %d codes (version %d)", new.count, new.version)
        return True

    def _watch(self) -> None:
        last_error = ""
        while not self._stop.wait(self.settings.reload_interval_s):
            try:
                self.reload()
                last_error = ""
            except HashkitError as exc:
                self.metrics.reload_failures.inc()
                if str(exc) != last_error:  # once per distinct problem, not every interval
                    log.warning(
                        "index files changed but cannot be loaded; still serving version %d: %s",
                        self.snapshot.version,
                        exc,
                    )
                last_error = str(exc)

    def start(self) -> None:
        self.batcher.start()
        if self.settings.reload_interval_s > 0:
            self._stop.clear()
            self._watcher = threading.Thread(target=self._watch, name="hashkit-reload", daemon=True)
            self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5.0)
            self._watcher = None
        self.batcher.stop()

    @property
    def has_model(self) -> bool:
        return self.encoder is not None
