"""Images to embeddings and codes: batches through the network, then b = sgn(R h).

Two input paths share one network: image arrays (MNIST, CIFAR: converted to tensors in bulk,
no per-image PIL work) and image files (decoded by a DataLoader, optionally in worker
processes). An image file that cannot be decoded is skipped and reported, or raises with
``strict=True``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from hashkit.errors import DataError, DeviceError
from hashkit.models import NetworkConfig

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` (or None) picks CUDA when present, else the CPU; DeviceError for a device
    string torch does not know or a device this machine does not have."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(
            f"not a device: {device!r} (use auto, cpu, cuda, cuda:N or mps)"
        ) from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= count:
            raise DeviceError(
                f"device {device} is not available: this machine has {count} CUDA device(s)"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device mps is not available on this machine")
    return dev


def input_transform(config: NetworkConfig, augment: str = "none"):
    """The network's input transform (an ImageTransform): images (PIL or uint8 arrays) to
    normalised float32 ``C x S x S`` in the network's channels and size; ``augment`` as in
    hashkit.data.ImageTransform, for training."""
    from hashkit.data.torch_images import ImageTransform

    return ImageTransform(config.input_size, config.channels, config.mean, config.std, augment)


def find_images(folder: str | os.PathLike) -> list[str]:
    """Image files below ``folder`` (recursive, sorted, by extension, case-insensitive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    paths = sorted(
        str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )
    if not paths:
        raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in {folder}")
    return paths


class ImageFiles(TorchDataset):
    """Image files as network inputs; an unreadable file yields ``(None, i, error)``."""

    def __init__(self, paths: Sequence[str], transform: Callable) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from hashkit.data.base import open_image

        try:
            return self.transform(open_image(self.paths[i])), i, ""
        except (DataError, OSError) as exc:
            return None, i, str(exc)


def _collate(items):
    good = [(x, i) for x, i, _ in items if x is not None]
    bad = [(i, err) for x, i, err in items if x is None]
    xs = torch.stack([x for x, _ in good]) if good else None
    return xs, np.array([i for _, i in good], dtype=np.int64), bad


@dataclass
class EncodeReport:
    """What an encoding pass did: ``skipped`` holds (path, reason) of unreadable images."""

    encoded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


@torch.no_grad()
def embed_arrays(
    net: torch.nn.Module,
    images: np.ndarray,
    *,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    progress: Callable | None = None,
) -> np.ndarray:
    """float32 ``N x bits`` embeddings of a uint8 image array ``N x H x W [x 3]``."""
    net.eval()
    device = torch.device(device)
    transform = input_transform(net.config)
    out = []
    starts = range(0, len(images), batch_size)
    if progress is not None:
        starts = progress(starts, total=len(starts), desc="embedding", unit="batch")
    for s in starts:
        x = transform.batch(images[s : s + batch_size]).to(device)
        out.append(net(x).float().cpu().numpy())
    if not out:
        return np.zeros((0, net.config.bits), dtype=np.float32)
    return np.concatenate(out)


def iter_file_embeddings(
    net: torch.nn.Module,
    paths: Sequence[str],
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    strict: bool = False,
    report: EncodeReport | None = None,
    progress: Callable | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(positions int64 n, embeddings float32 n x bits)`` for image files, in batches,
    so that memory does not grow with the number of images. Unreadable files are skipped and
    added to ``report.skipped``, or raise DataError when ``strict``."""
    net.eval()
    device = torch.device(device)
    loader = DataLoader(
        ImageFiles(paths, input_transform(net.config)),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        shuffle=False,
    )
    if progress is not None:
        loader = progress(loader, total=len(loader), desc="encoding", unit="batch")
    with torch.no_grad():
        for xs, positions, bad in loader:
            for i, err in bad:
                if strict:
                    raise DataError(err)
                if report is not None:
                    report.skipped.append((paths[i], err))
            if xs is None:
                continue
            h = net(xs.to(device)).float().cpu().numpy()
            if report is not None:
                report.encoded += len(h)
            yield positions, h


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
) -> EncodeReport:
    """Encode image files with a model bundle into a new code store (written atomically).

    Ids are ``first_id + position`` in ``paths``; an unreadable image is skipped (its id is
    not used) and listed in the report, or raises DataError with ``strict``.
    """
    from hashkit.store import StoreWriter

    report = EncodeReport()
    model_attrs = {"model_path": str(bundle.path)} if bundle.path else {}
    with StoreWriter(
        store_path,
        bundle.bits,
        fingerprint=bundle.fingerprint,
        class_names=bundle.class_names or None,
        extra_attrs=model_attrs,
    ) as writer:
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
            writer.append(codes, first_id + positions, [paths[i] for i in positions])
        if report.encoded == 0:
            raise DataError(f"none of the {len(paths)} images could be read")
    return report


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
    by batch, with a model bundle; unreadable files as in ``iter_file_embeddings``."""
    from hashkit.codes import sign_codes

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
        yield positions, sign_codes(h, bundle.rotation)


def iter_dataset_codes(
    bundle,
    dataset,
    indices: np.ndarray,
    *,
    batch_size: int = 4096,
    num_workers: int = 0,
    device: str = "auto",
    strict: bool = False,
    report: EncodeReport | None = None,
    progress: Callable | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(dataset indices int64 n, packed codes uint8 n x ceil(bits/8))`` of the items
    ``indices`` of a hashkit.data.Dataset, batch by batch (array or file datasets)."""
    from hashkit.codes import sign_codes

    indices = np.asarray(indices, dtype=np.int64)
    if dataset.images is None:
        paths = [dataset.paths[i] for i in indices]
        for positions, codes in iter_file_codes(
            bundle,
            paths,
            batch_size=min(batch_size, 256),
            num_workers=num_workers,
            device=device,
            strict=strict,
            report=report,
            progress=progress,
        ):
            yield indices[positions], codes
        return
    dev = resolve_device(device)
    net = bundle.build_network(dev)
    starts = range(0, len(indices), batch_size)
    if progress is not None:
        starts = progress(starts, total=len(starts), desc="encoding", unit="batch")
    for s in starts:
        idx = indices[s : s + batch_size]
        h = embed_arrays(net, dataset.images[idx], batch_size=512, device=dev)
        if report is not None:
            report.encoded += len(idx)
        yield idx, sign_codes(h, bundle.rotation)
