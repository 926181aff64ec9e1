"""Long encodes that survive a crash: ``hashkit encode --resume`` and ``hashkit build-index
IMAGES OUT --resume``.

While a store ``OUT.h5`` is being encoded, the codes made so far are saved about once a
minute (``HASHKIT_CHECKPOINT_SECONDS``) as part files in ``OUT.h5.partial/``: each part holds
the keys (positions in the image list, or dataset indices) and codes of the items encoded
since the last part, and the images it skipped as unreadable. ``progress.json`` names the
parts and identifies the encode: the model's fingerprint, the code length and a hash of the
item list. Every file is written under a temporary name and renamed, so a crash at any point
leaves the parts as they were after the last rename.

An encode that ends well removes the folder after its store is committed. One that stops
(crash, kill, Ctrl-C, an error) leaves it, and the same command with ``--resume`` reads the
parts back instead of encoding their items again, then encodes the rest: the store is the
one an uninterrupted run writes. Without ``--resume`` a leftover folder is an error, so that
hours of work are never thrown away by accident; with ``--resume`` a folder of another
encode (another model, other images) is an error too. An encode shorter than the interval
writes no part at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from hashkit.atomic import atomic_path
from hashkit.errors import DataError

FORMAT = "hashkit-encode-progress"
SECONDS = 60.0


def checkpoint_dir(out: str | os.PathLike) -> Path:
    """The folder of an unfinished encode of the store ``out``: ``out`` + ``.partial``."""
    return Path(str(out) + ".partial")


def item_digest(items) -> str:
    """A hash of the items an encode covers (paths or dataset indices), in order."""
    digest = hashlib.sha256()
    if isinstance(items, np.ndarray):
        digest.update(np.ascontiguousarray(items, dtype="<i8").tobytes())
    else:
        for item in items:
            digest.update(str(item).encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()


def checkpointed(
    store_path: str | os.PathLike,
    bundle,
    strict: bool,
    items: Callable[[], dict],
    n_items: int,
    encode_from: Callable[[int], Iterator[tuple[np.ndarray, np.ndarray]]],
    report,
    *,
    resume: bool | None,
    note: Callable[[str], None] | None = None,
):
    """``(checkpoint, iterator)`` of an encode of ``n_items`` items into ``store_path`` with
    ``bundle``: ``encode_from(0)`` as it is when ``resume`` is None (no checkpoint, None
    returned for it), else :meth:`EncodeCheckpoint.codes`, the encode identified by the model,
    the code length, ``strict`` and ``items()`` (what the items are, e.g. a hash of their list:
    computed only when there is a checkpoint).
    The caller calls ``checkpoint.finished()`` once its store is committed."""
    if resume is None:
        return None, encode_from(0)
    identity = {"model": bundle.fingerprint, "bits": bundle.bits, "strict": bool(strict)}
    identity.update(items())
    checkpoint = EncodeCheckpoint(store_path, identity, n_items, resume=resume)
    return checkpoint, checkpoint.codes(encode_from, report, note)


def _interval() -> float:
    value = os.environ.get("HASHKIT_CHECKPOINT_SECONDS")
    if value is None:
        return SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise DataError(f"HASHKIT_CHECKPOINT_SECONDS must be a number >= 0, got {value!r}")
    return seconds


class EncodeCheckpoint:
    """The parts of one encode of ``out``; see the module docstring.

    ``EncodeCheckpoint(out, identity, n_items, resume=...)`` checks what is on disk (raises
    DataError for a leftover folder without ``resume``, a folder of another encode, or
    ``resume`` without a folder); ``codes(encode_from, report)`` yields every item's
    ``(keys, codes)`` in order, saved parts first; ``finished()`` removes the folder once the
    caller has committed its store.
    """

    def __init__(self, out: str | os.PathLike, identity: dict, n_items: int, *, resume: bool):
        self.out = Path(out)
        self.folder = checkpoint_dir(out)
        self.identity = {**identity, "items": int(n_items)}
        self.n_items = int(n_items)
        self.parts: list[dict] = []
        manifest = self.folder / "progress.json"
        if not resume:
            if self.folder.exists():
                raise DataError(
                    f"{self.folder} holds an unfinished encode of {self.out}; continue it "
                    "with --resume, or delete that folder to start again"
                )
            return
        try:
            saved = json.loads(manifest.read_text())
        except FileNotFoundError:
            raise DataError(
                f"--resume: no unfinished encode of {self.out} to continue ({manifest} does "
                "not exist); run without --resume"
            ) from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{manifest} cannot be read ({exc}); delete {self.folder}") from None
        if saved.get("format") != FORMAT or saved.get("identity") != self.identity:
            differ = sorted(
                k
                for k in set(self.identity) | set(saved.get("identity", {}))
                if saved.get("identity", {}).get(k) != self.identity.get(k)
            )
            raise DataError(
                f"--resume: {self.folder} holds an encode of other items or with another model "
                f"(differs in: {', '.join(differ) or 'format'}); delete it to start again"
            )
        self.parts = saved["parts"]
        for part in self.parts:
            if not (self.folder / part["file"]).is_file():
                raise DataError(
                    f"--resume: {self.folder / part['file']} is missing; delete {self.folder} "
                    "to start again"
                )

    @property
    def done(self) -> int:
        """Items covered by the saved parts (encoded or skipped): where encoding resumes."""
        return self.parts[-1]["stop"] if self.parts else 0

    def codes(
        self,
        encode_from: Callable[[int], Iterator[tuple[np.ndarray, np.ndarray]]],
        report,
        note: Callable[[str], None] | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(keys, codes)`` of all items: the saved parts', then those of
        ``encode_from(done)``, which must encode the items from position ``done`` on, in
        order, counting them in ``report`` (``encoded``, ``skipped``) as
        :func:`hashkit.encode.iter_file_codes` does. Items encoded here are saved as a new part
        whenever the interval has passed since the last one."""
        for part in self.parts:
            with np.load(self.folder / part["file"], allow_pickle=False) as saved:
                keys, codes = saved["keys"], saved["codes"]
                report.skipped.extend(zip(saved["skipped_paths"].tolist(),
                                          saved["skipped_reasons"].tolist()))  # fmt: skip
            report.encoded += len(keys)
            if len(keys):
                yield keys, codes
        if self.parts and note is not None:
            note(f"resuming: {self.done} of {self.n_items} items were encoded before")
        interval = _interval()
        start = self.done
        batches: list[tuple[np.ndarray, np.ndarray]] = []
        rows = 0
        skipped_before = len(report.skipped)
        last = time.monotonic()
        for keys, codes in encode_from(start):
            batches.append((keys, codes))
            rows += len(keys)
            yield keys, codes
            if time.monotonic() - last >= interval:
                new_skips = report.skipped[skipped_before:]
                stop = start + rows + len(new_skips)
                first = not self.parts
                self._save(start, stop, batches, new_skips)
                if first and note is not None:
                    note(
                        f"saving the codes as they come in {self.folder}; if this stops, "
                        "the same command with --resume continues from them"
                    )
                start, rows, batches = stop, 0, []
                skipped_before = len(report.skipped)
                last = time.monotonic()

    def _save(self, start: int, stop: int, batches, skipped) -> None:
        self.folder.mkdir(exist_ok=True)
        name = f"part-{len(self.parts):06d}.npz"
        keys = np.concatenate([k for k, _ in batches]) if batches else np.zeros(0, np.int64)
        codes = np.concatenate([c for _, c in batches]) if batches else np.zeros((0, 0), np.uint8)
        with atomic_path(self.folder / name) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                keys=np.asarray(keys, dtype=np.int64),
                codes=codes,
                skipped_paths=np.array([str(p) for p, _ in skipped], dtype=str),
                skipped_reasons=np.array([str(r) for _, r in skipped], dtype=str),
            )
        self.parts.append({"file": name, "start": start, "stop": stop, "rows": len(keys)})
        with atomic_path(self.folder / "progress.json") as tmp:
            tmp.write_text(
                json.dumps({"format": FORMAT, "identity": self.identity, "parts": self.parts})
            )

    def finished(self) -> None:
        """Remove the folder: the caller's store is committed."""
        shutil.rmtree(self.folder, ignore_errors=True)
