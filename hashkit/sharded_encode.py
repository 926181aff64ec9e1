"""Encoding on many processes into one code store (``torchrun ... -m hashkit encode``).

Every rank of a process group encodes a contiguous share of the items into a segment file
of its own (:mod:`hashkit.segments`); rank 0, which holds the store's lock throughout, then
writes the store's main file naming the segments in rank order. Ranks take the items in the
order a single process would, so the store equals (codes, ids, paths, labels) what one
process writes. The process group comes from torchrun's environment (gloo on CPU, NCCL when
each rank has a GPU); without ``WORLD_SIZE`` > 1 nothing here is used.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hashkit.distributed import process_group, shard
from hashkit.errors import HashkitError


def encode_sharded(
    out: str | os.PathLike,
    n_items: int,
    write_share: Callable[[Path, np.ndarray], object],
):
    """Run ``write_share(segment path, positions)`` on every rank, then commit the segments
    as the store ``out``. ``write_share`` writes a complete single-file store (it may hold
    no rows) and returns a report with ``encoded`` and ``skipped``; the reports of all ranks
    are merged into the one returned. An error on any rank is raised on every rank and
    leaves ``out`` as it was."""
    import torch.distributed as dist

    from hashkit import segments
    from hashkit.atomic import PendingFile
    from hashkit.encode import EncodeReport
    from hashkit.lock import FileLock
    from hashkit.store import _raw_attrs, check_ids, ids_crc32, read_store, store_count

    out = Path(out)
    with process_group() as (rank, world):
        lock = FileLock(out, purpose="hashkit encode").acquire() if rank == 0 else None
        try:
            token = [secrets.token_hex(6) if rank == 0 else ""]
            dist.broadcast_object_list(token, src=0)
            paths = [
                segments.segment_dir(out) / f"seg-{token[0]}-r{r:04d}.h5" for r in range(world)
            ]
            if rank == 0:
                segments.remove_unreferenced_segments(out)
                paths[0].parent.mkdir(parents=True, exist_ok=True)
            dist.barrier()
            try:
                report = write_share(paths[rank], shard(n_items, rank, world))
                outcome = ("", report.encoded, report.skipped)
            except HashkitError as exc:
                outcome = (str(exc), 0, [])
            outcomes = [None] * world
            dist.all_gather_object(outcomes, outcome)
            errors = [o[0] for o in outcomes if o[0]]
            merged = EncodeReport(
                encoded=sum(o[1] for o in outcomes),
                skipped=[s for o in outcomes for s in o[2]],
            )
            error = None
            if rank == 0:
                try:
                    if errors:
                        raise HashkitError(errors[0])
                    if merged.encoded == 0:
                        from hashkit.errors import DataError

                        example = f", e.g. {merged.skipped[0][1]}" if merged.skipped else ""
                        raise DataError(f"none of the {n_items} items could be encoded{example}")
                    parts = [(p, store_count(p)) for p in paths]
                    kept = [(os.path.relpath(p, out.parent), n) for p, n in parts if n]
                    ids = np.concatenate(
                        [read_store(p, codes=False, paths=False).ids for p, n in parts if n]
                    )
                    check_ids(ids, f"ids of {out}")
                    attrs = _raw_attrs(next(p for p, n in parts if n))
                    pending = PendingFile(out)
                    try:
                        segments.build_main(
                            pending,
                            kept,
                            attrs,
                            bits=int(attrs["bits"]),
                            next_id=int(ids.max()) + 1,
                            ids_crc32=ids_crc32(ids),
                        )
                        pending.commit()
                    finally:
                        pending.discard()
                    for p, n in parts:
                        if not n:
                            p.unlink()
                except HashkitError as exc:
                    error = str(exc)
                    for p in paths:
                        with contextlib.suppress(OSError):
                            p.unlink()
                    segments.remove_empty_segment_dir(out)
                else:
                    segments.remove_unreferenced_segments(out)
            verdict = [error]
            dist.broadcast_object_list(verdict, src=0)
            if verdict[0]:
                raise HashkitError(verdict[0])
        finally:
            if lock is not None:
                lock.release()
    return merged
