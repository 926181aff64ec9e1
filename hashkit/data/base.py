"""The in-memory dataset every loader returns: images as a uint8 array or as file paths, labels,
class names; items are addressed by their index in the dataset's canonical order."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from hashkit.data.images import open_image
from hashkit.errors import DataError


@dataclass
class Dataset:
    """A dataset in canonical order.

    - ``images``: uint8 ``N x H x W`` (grey) or ``N x H x W x 3`` (RGB), or None when the
      images are files.
    - ``paths``: ``N`` file paths, or an empty list for array datasets.
    - ``labels``: int64 ``N`` (single label), uint8 ``N x C`` (multi-hot), or None (unlabelled).
    - ``class_names``: one name per class or concept (empty when unlabelled).
    - ``name``: a short name for messages and file metadata.
    """

    images: np.ndarray | None
    paths: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)
    name: str = ""

    def __post_init__(self) -> None:
        if self.images is not None:
            if self.paths:
                raise DataError(f"dataset {self.name!r}: has both an image array and paths")
            if self.images.dtype != np.uint8 or not (
                self.images.ndim == 3 or (self.images.ndim == 4 and self.images.shape[3] == 3)
            ):
                raise DataError(
                    f"dataset {self.name!r}: images must be uint8 N x H x W or N x H x W x 3, "
                    f"got {self.images.dtype} {self.images.shape}"
                )
        n = len(self)
        if self.labels is not None:
            if self.labels.ndim not in (1, 2) or len(self.labels) != n:
                raise DataError(
                    f"dataset {self.name!r}: labels of shape {self.labels.shape} do not match "
                    f"{n} images"
                )

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.paths)

    @property
    def multi_label(self) -> bool:
        """True for multi-hot labels (``N x C``)."""
        return self.labels is not None and self.labels.ndim == 2

    def load_image(self, i: int) -> Image.Image:
        """Item ``i`` as a PIL image in mode "L" or "RGB"; a file that cannot be decoded raises
        DataError naming it."""
        if self.images is not None:
            return Image.fromarray(self.images[i])
        return open_image(self.paths[i])

    def subset(self, indices) -> Dataset:
        """The items at ``indices`` (int array-like), in that order, as a new Dataset."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise DataError(f"dataset {self.name!r}: subset indices out of range 0..{n - 1}")
        return Dataset(
            images=self.images[idx] if self.images is not None else None,
            paths=[self.paths[i] for i in idx] if self.images is None else [],
            labels=self.labels[idx] if self.labels is not None else None,
            class_names=list(self.class_names),
            name=self.name,
        )
