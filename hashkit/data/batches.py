"""Whole batches for the network: uint8 images in, one float tensor per batch out.

Images stay uint8 ``N x S x S`` (grey) or ``N x S x S x 3`` until the batch is complete, then
``ImageTransform.batch`` converts, augments and normalises the batch in a few tensor
operations, on the device the network runs on. No per-image Python runs after decoding:

- array datasets (Fashion-MNIST, CIFAR-10): a batch is the rows of the uint8 image array at
  the batch's indices, in the calling process (a DataLoader would only add copies);
- image files: DataLoader workers decode each file and fit it to the model's size and
  channels (``ImageTransform.fit``); ``collate_decoded`` stacks them into one uint8 batch,
  which is what crosses the workers' shared memory and, pinned, goes to a GPU (a quarter of
  the bytes of float32).

Augmentation draws come from one ``torch.Generator`` in the calling process, so a seed gives
the same batches whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from hashkit.data.base import Dataset
from hashkit.data.images import open_image
from hashkit.data.torch_images import ImageTransform
from hashkit.errors import DataError


class DecodedImageFiles(TorchDataset):
    """Image files as uint8 arrays fitted by ``transform.fit`` (``S x S`` or ``S x S x 3``).

    Item ``i`` is ``(array, i, "")``, or ``(None, i, reason)`` for a file that cannot be
    decoded, so that one bad file does not stop a DataLoader; ``collate_decoded`` sorts them.
    """

    def __init__(self, paths: Sequence[str], transform: ImageTransform) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[np.ndarray | None, int, str]:
        try:
            return self.transform.fit(open_image(self.paths[i])), i, ""
        except (DataError, OSError) as exc:
            return None, i, str(exc)


def collate_decoded(
    items: Sequence[tuple[np.ndarray | None, int, str]],
) -> tuple[torch.Tensor | None, np.ndarray, list[tuple[int, str]]]:
    """DecodedImageFiles items to ``(uint8 N x S x S [x 3] tensor or None when every file
    failed, positions int64 N of the decoded ones, [(position, reason)] of the others)``."""
    good = [(x, i) for x, i, _ in items if x is not None]
    bad = [(i, reason) for x, i, reason in items if x is None]
    images = torch.from_numpy(np.stack([x for x, _ in good])) if good else None
    return images, np.array([i for _, i in good], dtype=np.int64), bad


def decoded_file_loader(
    paths: Sequence[str],
    transform: ImageTransform,
    *,
    batch_size: int = 256,
    batch_sampler: Iterable[Sequence[int]] | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader of ``collate_decoded`` batches of ``paths`` (positions in ``paths``), in
    order ``batch_size`` at a time or as ``batch_sampler`` says; ``num_workers`` processes
    decode, ``pin_memory`` pins each uint8 batch for an asynchronous copy to a GPU."""
    return DataLoader(
        DecodedImageFiles(paths, transform),
        # a batch sampler excludes batch_size (its default, 1, must stay)
        batch_size=batch_size if batch_sampler is None else 1,
        batch_sampler=batch_sampler,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_decoded,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0 and batch_sampler is not None,
    )


class TrainingBatches:
    """The training batches of a labelled dataset: iterating yields, for each batch of
    positions (into ``indices``) that ``batch_sampler`` gives, ``(x, labels, dataset indices)``:
    x float32 ``B x C x S x S`` on ``device``, augmented and normalised by ``transform``;
    labels int64 ``B`` (or float32 ``B x C`` multi-hot) and indices int64 ``B``, on the CPU.

    Iterate once per epoch. ``num_workers`` decode image files (array datasets need none);
    a file that cannot be decoded raises DataError naming it.
    """

    def __init__(
        self,
        dataset: Dataset,
        indices: np.ndarray,
        transform: ImageTransform,
        batch_sampler: Iterable[Sequence[int]],
        *,
        generator: torch.Generator | None = None,
        num_workers: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        if dataset.labels is None:
            raise DataError(f"dataset {dataset.name!r} has no labels")
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self.batch_sampler = batch_sampler
        self.generator = generator
        self.device = torch.device(device)
        self._files = None
        if dataset.images is None:
            self._files = decoded_file_loader(
                [dataset.paths[i] for i in self.indices],
                transform,
                batch_sampler=batch_sampler,
                num_workers=num_workers,
                pin_memory=self.device.type == "cuda",
            )

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for idx, images in self._uint8_batches():
            if self.device.type == "cuda":
                images = images.pin_memory().to(self.device, non_blocking=True)
            x = self.transform.batch(images, self.generator)
            labels = self.dataset.labels[idx]
            labels = labels.astype(np.float32 if labels.ndim == 2 else np.int64)
            yield x, torch.from_numpy(labels), torch.from_numpy(idx)

    def _uint8_batches(self) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """``(dataset indices, uint8 images)`` of each batch, on the CPU."""
        if self._files is None:
            for positions in self.batch_sampler:
                idx = self.indices[np.asarray(positions, dtype=np.int64)]
                yield idx, torch.from_numpy(self.dataset.images[idx])
            return
        for images, positions, bad in self._files:
            if bad:
                raise DataError(bad[0][1])
            yield self.indices[positions], images
