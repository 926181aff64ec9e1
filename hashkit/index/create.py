"""``build-index``: an index (and, from an image folder, its code store) written as one commit.

From a code store, the store is an input: the index and its sidecar are committed together.
From an image folder, the images are encoded into a new store held in memory; the store, the
index and the sidecar then replace any previous ones in one journalled commit, under the
index's lock and the store's. A build interrupted at any point leaves the previous index,
sidecar and store as they were, or (killed during the commit) the new ones, never a mix.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashkit.atomic import check_outputs
from hashkit.errors import DataError, HashkitError
from hashkit.index.build import build_index, index_type_of
from hashkit.index.commit import commit_files, journal_path, lock_index
from hashkit.index.compat import check_compatible
from hashkit.index.sidecar import prepare_index_files, sidecar_path
from hashkit.lock import FileLock, lock_path


@dataclass
class BuildReport:
    """What ``create_index`` wrote: ``count`` codes of ``bits`` bits in an index of ``type``;
    ``encoded`` images (None when built from a store) with ``skipped`` (path, reason) images
    that could not be read and ``unlisted`` (path, reason) sub-folders or names that could
    not be listed."""

    index_path: Path
    store_path: Path
    count: int = 0
    bits: int = 0
    type: str = ""
    encoded: int | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unlisted: list[tuple[str, str]] = field(default_factory=list)


def create_index(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    codes: str | os.PathLike | None = None,
    index_type: str = "flat",
    factory: str | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str = "auto",
    strict: bool = False,
    progress: Callable | None = None,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
    resume: bool = False,
    note: Callable[[str], None] | None = None,
    **index_options,
) -> BuildReport:
    """Build the index ``out`` from a code store, or from an image folder encoded with the
    bundle ``model`` into the store ``codes`` (default: ``out`` with the suffix ``.h5``).

    ``index_options`` are :func:`hashkit.index.build_index`'s (nlist, nprobe, hnsw_m, ...).
    Outputs that are inputs, or two outputs that are one file, are refused before anything
    is written. ``wait``/``on_wait``: what to do while another writer holds the index.
    From a folder, the codes are saved as they come (:mod:`hashkit.encode_checkpoint`) and
    ``resume`` continues an encode that stopped; ``note`` gets the line that says so.
    """
    source, out = Path(source), Path(out)
    from_images = source.is_dir()
    if from_images and model is None:
        raise HashkitError("an image folder needs --model to encode it")
    if not from_images and resume:
        raise HashkitError(
            f"--resume continues encoding an image folder; {source} is already a code store"
        )
    if not from_images and codes is not None:
        raise HashkitError(
            f"--codes names the store to write from an image folder; {source} is "
            "already a code store"
        )
    store_path = (Path(codes) if codes else out.with_suffix(".h5")) if from_images else source
    outputs = {
        "the index OUT": out,
        "its sidecar": sidecar_path(out),
        "its journal": journal_path(out),
        "its lock file": lock_path(out),
    }
    inputs = {"the model (--model)": model}
    if from_images:
        what = "the code store to write (--codes)" if codes else "the code store to write"
        outputs[what] = store_path
    else:
        inputs["the code store SOURCE"] = source
    inputs.update(_index_files_named_by([out, store_path] if from_images else [out]))
    check_outputs(outputs, inputs)

    report = BuildReport(out, store_path)
    if from_images:
        from hashkit.encode import find_images

        paths = find_images(source.resolve(), None if strict else report.unlisted)
        _check_no_output_is_an_image(outputs, paths)
    with ExitStack() as stack:
        stack.callback(
            lock_index(out, wait=wait, on_wait=on_wait, purpose="hashkit build-index").release
        )
        if from_images:
            stack.enter_context(
                FileLock(store_path, wait=wait, on_wait=on_wait, purpose="hashkit build-index")
            )
            codes_in = _encode_folder(
                paths, store_path, model, report, stack,
                batch_size=batch_size, num_workers=num_workers, device=device, strict=strict,
                progress=progress, resume=resume, note=note,
            )  # fmt: skip
        else:
            codes_in = _read_store(store_path, model)
        index = build_index(
            codes_in.codes,
            codes_in.ids,
            codes_in.bits,
            index_type,
            factory=factory,
            progress=progress,
            **index_options,
        )
        files = prepare_index_files(
            index,
            out,
            bits=codes_in.bits,
            store=store_path,
            model=codes_in.model,
            model_fingerprint=codes_in.fingerprint,
            store_uuid=codes_in.store_uuid,
        )
        commit_files(out, [*codes_in.pending, *files])
        if codes_in.checkpoint is not None:
            codes_in.checkpoint.finished()
    report.count, report.bits, report.type = int(index.ntotal), codes_in.bits, index_type_of(index)
    return report


@dataclass
class _Codes:
    """The codes an index is built from: ``codes`` N x nbytes uint8 and ``ids`` int64 N, and
    what the sidecar records about their store; ``pending``: the new store, if any."""

    codes: np.ndarray
    ids: np.ndarray
    bits: int
    fingerprint: str
    store_uuid: str
    model: str | os.PathLike | None
    pending: list = field(default_factory=list)
    checkpoint: object = None  # the saved codes of the encode, removed after the commit


def _read_store(store_path: Path, model) -> _Codes:
    """The codes of an existing store, checked against ``model`` when one is given."""
    from hashkit.store import read_store

    store = read_store(store_path, paths=False)
    if model is not None:
        from hashkit.bundle import load_bundle

        bundle = load_bundle(model)
        check_compatible(
            bits_a=bundle.bits,
            bits_b=store.bits,
            what_a=f"model {model}",
            what_b=f"code store {store_path}",
            fingerprint_a=bundle.fingerprint,
            fingerprint_b=store.fingerprint,
        )
    return _Codes(
        store.codes,
        store.ids,
        store.bits,
        store.fingerprint,
        str(store.attrs.get("uuid", "")),
        model or store.attrs.get("model_path") or None,
    )


def _index_files_named_by(paths: list[Path]) -> dict[str, Path]:
    """``{"the sidecar of the index X": path}`` (or its journal) for each of ``paths`` that
    names the sidecar or the journal of an existing index X: writing it would break X."""
    named = {}
    for path in paths:
        for suffix, what in ((".json", "sidecar"), (".journal", "journal")):
            index = Path(str(path).removesuffix(suffix))
            if str(index) != str(path) and _is_index_file(index):
                named[f"the {what} of the index {index}"] = path
    return named


def _is_index_file(path: Path) -> bool:
    """Whether ``path`` is a file that starts as every FAISS binary index does ("IB...")."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"IB"
    except OSError:
        return False


def _check_no_output_is_an_image(outputs: dict, images: list[str]) -> None:
    """Refuse an output that is one of the source ``images`` (absolute paths), before
    anything is written. Only the images named like an output are compared as files, so a
    folder of millions costs one pass over the names."""
    names = {Path(p).name for p in outputs.values()}
    names |= {Path(os.path.realpath(p)).name for p in outputs.values()}
    for image in images:
        if os.path.basename(image) in names:
            check_outputs(outputs, {"a source image": image})


def _encode_folder(
    paths: list[str], store_path: Path, model, report: BuildReport, stack, resume, note, **encoding
):
    """Encode the image files ``paths`` with the bundle ``model`` into a new store, written
    to its temporary file but not committed (its abort is registered on ``stack``)."""
    from hashkit.bundle import load_bundle
    from hashkit.encode import EncodeReport, checkpointed_file_codes
    from hashkit.store import StoreWriter

    bundle = load_bundle(model)
    writer = StoreWriter(
        store_path,
        bundle.bits,
        fingerprint=bundle.fingerprint,
        class_names=bundle.class_names or None,
        extra_attrs={"model_path": str(bundle.path)} if bundle.path else {},
    )
    stack.callback(writer.abort)
    encoded = EncodeReport()
    xb, ids = [], []
    checkpoint, source_codes = checkpointed_file_codes(
        store_path, bundle, paths, encoded, resume=resume, note=note, **encoding
    )
    for positions, batch in source_codes:
        writer.append(batch, positions, [paths[i] for i in positions])
        xb.append(batch)
        ids.append(np.asarray(positions, dtype=np.int64))
    if encoded.encoded == 0:
        raise DataError(f"none of the {len(paths)} images could be read")
    writer.finish()
    report.encoded, report.skipped = encoded.encoded, encoded.skipped
    return _Codes(
        np.concatenate(xb),
        np.concatenate(ids),
        writer.bits,
        bundle.fingerprint,
        writer.uuid,
        bundle.path or model,
        [writer.pending],
        checkpoint,
    )
