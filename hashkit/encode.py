"""Images to embeddings and codes: batches through the network, then b = sgn(R h).

Two input paths share one network: image arrays (MNIST, CIFAR: converted to tensors in bulk,
no per-image PIL work) and image files (decoded by a DataLoader, optionally in worker
processes). An image file that cannot be decoded is skipped and reported, or raises with
``strict=True``. Embeddings that are not finite (a diverged network) are refused, never turned
into codes. ``progress`` is a tqdm-like factory: a bar counting images is made with
``progress(total=, desc=, unit="img")`` and advanced by each batch's size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from hashkit.data.images import IMAGE_EXTENSIONS
from hashkit.device import resolve_device
from hashkit.errors import DataError, ModelError
from hashkit.models import HashNet, NetworkConfig, inference_network

__all__ = [
    "EncodeReport",
    "check_embeddings",
    "embed_arrays",
    "encode_files_to_store",
    "find_images",
    "input_transform",
    "iter_dataset_codes",
    "iter_file_codes",
    "iter_file_embeddings",
    "resolve_device",
]


def input_transform(config: NetworkConfig, augment: str = "none"):
    """The network's input transform (an ImageTransform): images (PIL or uint8 arrays) to
    normalised float32 ``C x S x S`` in the network's channels and size; ``augment`` as in
    hashkit.data.ImageTransform, for training."""
    from hashkit.data.torch_images import ImageTransform

    return ImageTransform(config.input_size, config.channels, config.mean, config.std, augment)


def find_images(
    folder: str | os.PathLike, skipped: list[tuple[str, str]] | None = None
) -> list[str]:
    """Absolute paths of the image files below ``folder`` (recursive, sorted by path, by
    extension, case-insensitive; hidden files skipped). Sub-folders that cannot be listed and
    names that are not UTF-8 go to ``skipped`` as ``(path, reason)``, or raise DataError when
    ``skipped`` is None (see hashkit.data.folder.find_images)."""
    from hashkit.data.folder import find_images as find_relative

    root = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(root):
        raise DataError(f"image folder not found: {folder}")
    left_out: list[tuple[str, str]] = []
    paths = [os.path.join(root, p) for p in find_relative(root, left_out)]
    if skipped is not None:
        skipped.extend(left_out)
    elif left_out:
        raise DataError(f"cannot list {left_out[0][0]}: {left_out[0][1]}")
    if not paths:
        also = f"; skipped {left_out[0][0]}: {left_out[0][1]}" if left_out else ""
        raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in {folder}{also}")
    return paths


def check_embeddings(h: np.ndarray, model: str | os.PathLike | None = None) -> np.ndarray:
    """``h`` (float ``n x bits``) if every value is finite; ModelError otherwise: NaN or inf
    embeddings come from broken weights (a diverged training) and would all become one code."""
    finite = np.isfinite(h).all(axis=1)
    if not finite.all():
        name = f"model {model}" if model else "the network"
        raise ModelError(
            f"{name} gives NaN or infinite embeddings for {int((~finite).sum())} of {len(h)} "
            "images: its weights are broken (did training diverge?); retrain it"
        )
    return h


def _codes(h: np.ndarray, bundle) -> np.ndarray:
    """Packed codes ``sgn(R h)`` (uint8 ``n x ceil(bits/8)``) of finite embeddings ``h``."""
    from hashkit.codes import sign_codes

    return sign_codes(check_embeddings(h, bundle.path), bundle.rotation)


def _image_bar(progress: Callable | None, total: int, desc: str):
    """A progress bar counting images (tqdm's manual mode), or None."""
    return None if progress is None else progress(total=total, desc=desc, unit="img")


@dataclass
class EncodeReport:
    """What an encoding pass did: ``skipped`` holds (path, reason) of unreadable images."""

    encoded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


@torch.inference_mode()
def embed_arrays(
    net: HashNet,
    images: np.ndarray,
    *,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    progress: Callable | None = None,
) -> np.ndarray:
    """float32 ``N x bits`` embeddings of a uint8 image array ``N x H x W [x 3]``, fed to the
    network ``batch_size`` images at a time (each uint8 batch converted on ``device``)."""
    net.eval()
    device = torch.device(device)
    forward = inference_network(net)
    transform = input_transform(net.config)
    out = []
    bar = _image_bar(progress, len(images), "embedding")
    try:
        for s in range(0, len(images), batch_size):
            x = _to_device(torch.from_numpy(images[s : s + batch_size]), device)
            out.append(forward(transform.batch(x)).float().cpu().numpy())
            if bar is not None:
                bar.update(len(x))
    finally:
        if bar is not None:
            bar.close()
    if not out:
        return np.zeros((0, net.config.bits), dtype=np.float32)
    return np.concatenate(out)


def _to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU uint8 batch on ``device``: copied from pinned memory, without waiting, to a GPU."""
    if device.type != "cuda":
        return images.to(device)
    return images.pin_memory().to(device, non_blocking=True)


def iter_file_embeddings(
    net: HashNet,
    paths: Sequence[str],
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    strict: bool = False,
    report: EncodeReport | None = None,
    progress: Callable | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(positions int64 n, embeddings float32 n x bits)`` for image files, in batches
    of ``batch_size`` files, so that memory does not grow with the number of images.
    ``num_workers`` processes decode the files (hashkit.data.batches); the batches reach the
    network as uint8 and are converted there. Unreadable files are skipped and added to
    ``report.skipped``, or raise DataError when ``strict``; the progress bar counts them with
    the others."""
    from hashkit.data.batches import decoded_file_loader

    net.eval()
    device = torch.device(device)
    forward = inference_network(net)
    transform = input_transform(net.config)
    loader = decoded_file_loader(
        paths,
        transform,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    bar = _image_bar(progress, len(paths), "encoding")
    try:
        with torch.inference_mode():
            for images, positions, bad in loader:
                for i, err in bad:
                    if strict:
                        raise DataError(err)
                    if report is not None:
                        report.skipped.append((paths[i], err))
                if bar is not None:
                    bar.update(len(positions) + len(bad))
                if images is None:
                    continue
                x = transform.batch(_to_device(images, device))
                h = forward(x).float().cpu().numpy()
                if report is not None:
                    report.encoded += len(h)
                yield positions, h
    finally:
        if bar is not None:
            bar.close()


def encode_files_to_store(
    bundle,
    paths: Sequence[str],
    store_path: str | os.PathLike,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str = "auto",
    strict: bool = False,
    first_id: int = 0,
    progress: Callable | None = None,
    allow_empty: bool = False,
    resume: bool | None = None,
    note: Callable[[str], None] | None = None,
) -> EncodeReport:
    """Encode image files with a model bundle into a new code store (written atomically).

    Ids are ``first_id + position`` in ``paths``; an unreadable image is skipped (its id is
    not used) and listed in the report, or raises DataError with ``strict``. A store of no
    codes is refused unless ``allow_empty`` (one rank's share of a sharded encode).
    ``resume``: None to keep no checkpoint; False or True to save the codes as they come
    and, with True, continue an encode that stopped (:mod:`hashkit.encode_checkpoint`).
    """
    from hashkit.store import StoreWriter

    report = EncodeReport()
    checkpoint, source = checkpointed_file_codes(
        store_path, bundle, paths, report, resume=resume, note=note, first_id=first_id,
        batch_size=batch_size, num_workers=num_workers, device=device, strict=strict,
        progress=progress,
    )  # fmt: skip
    model_attrs = {"model_path": str(bundle.path)} if bundle.path else {}
    with StoreWriter(
        store_path,
        bundle.bits,
        fingerprint=bundle.fingerprint,
        class_names=bundle.class_names or None,
        extra_attrs=model_attrs,
    ) as writer:
        for positions, codes in source:
            writer.append(codes, first_id + positions, [paths[i] for i in positions])
        if report.encoded == 0 and not allow_empty:
            example = f", e.g. {report.skipped[0][1]}" if report.skipped else ""
            raise DataError(f"none of the {len(paths)} images could be read{example}")
    if checkpoint is not None:
        checkpoint.finished()
    return report


def checkpointed_file_codes(
    store_path: str | os.PathLike,
    bundle,
    paths: Sequence[str],
    report: EncodeReport,
    *,
    resume: bool | None,
    note: Callable[[str], None] | None = None,
    first_id: int = 0,
    kind: str = "image files",
    **encoding,
):
    """``(checkpoint, iterator)``: :func:`iter_file_codes` of ``paths`` for the store
    ``store_path``, its codes saved as they come in ``store_path``.partial/ and, with
    ``resume``, read back from an encode that stopped (:mod:`hashkit.encode_checkpoint`).
    ``resume`` None: no checkpoint (None is returned for it). The caller calls
    ``checkpoint.finished()`` once its store is committed. ``kind`` and ``first_id`` are part
    of what identifies the encode, with the model and the image list."""

    def encode_from(start: int):
        for positions, codes in iter_file_codes(bundle, paths[start:], report=report, **encoding):
            yield positions + start, codes

    from hashkit.encode_checkpoint import checkpointed, item_digest

    def items():
        return {"kind": kind, "first_id": int(first_id), "paths": item_digest(paths)}

    strict = encoding.get("strict", False)
    return checkpointed(
        store_path, bundle, strict, items, len(paths), encode_from, report, resume=resume, note=note
    )


def iter_file_codes(
    bundle,
    paths: Sequence[str],
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str = "auto",
    strict: bool = False,
    report: EncodeReport | None = None,
    progress: Callable | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(positions int64 n, packed codes uint8 n x ceil(bits/8))`` of image files, batch
    by batch, with a model bundle; unreadable files as in ``iter_file_embeddings``; ModelError
    if the network gives NaN or infinite embeddings."""
    dev = resolve_device(device)
    net = bundle.build_network(dev)
    for positions, h in iter_file_embeddings(
        net,
        paths,
        batch_size=batch_size,
        num_workers=num_workers,
        device=dev,
        strict=strict,
        report=report,
        progress=progress,
    ):
        yield positions, _codes(h, bundle)


def iter_dataset_codes(
    bundle,
    dataset,
    indices: np.ndarray,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str = "auto",
    strict: bool = False,
    report: EncodeReport | None = None,
    progress: Callable | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(dataset indices int64 n, packed codes uint8 n x ceil(bits/8))`` of the items
    ``indices`` of a hashkit.data.Dataset, ``batch_size`` images at a time (array or file
    datasets); ModelError if the network gives NaN or infinite embeddings."""
    indices = np.asarray(indices, dtype=np.int64)
    if dataset.images is None:
        paths = [dataset.paths[i] for i in indices]
        for positions, codes in iter_file_codes(
            bundle,
            paths,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            strict=strict,
            report=report,
            progress=progress,
        ):
            yield indices[positions], codes
        return
    dev = resolve_device(device)
    net = inference_network(bundle.build_network(dev))
    bar = _image_bar(progress, len(indices), "encoding")
    try:
        for s in range(0, len(indices), batch_size):
            idx = indices[s : s + batch_size]
            h = embed_arrays(net, dataset.images[idx], batch_size=batch_size, device=dev)
            if report is not None:
                report.encoded += len(idx)
            if bar is not None:
                bar.update(len(idx))
            yield idx, _codes(h, bundle)
    finally:
        if bar is not None:
            bar.close()
