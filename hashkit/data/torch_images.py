"""Feeding a Dataset to torch: the image transform and a torch Dataset over chosen indices.

Everything after decoding runs on uint8 / float tensors in batches: ``ImageTransform.batch``
converts, augments and normalises a whole uint8 batch in a few vectorised operations, without
a PIL image per item, which is what keeps training fast on a couple of CPU cores
(hashkit.data.batches builds those batches for training and encoding). Image files are decoded
with PIL and fitted to the model's mode and size (``ImageTransform.fit``), then take the same
tensor path. ``TorchImages`` offers the same per item, for a plain DataLoader.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as nnf
from PIL import Image

from hashkit.data.base import Dataset
from hashkit.data.images import to_8bit
from hashkit.errors import DataError

AUGMENTATIONS = ("none", "crop", "crop-flip", "affine")

# ITU-R 601 luma weights, as PIL's convert("L") uses.
_LUMA = (0.299, 0.587, 0.114)


class ImageTransform:
    """Image (PIL, or uint8 ``H x W`` / ``H x W x 3`` array) to a float32 ``C x S x S`` tensor.

    Arguments:
        input_size: the side ``S`` of the square model input; other sizes are resized (shorter
            side to ``S``) and centre-cropped.
        channels: 1 (grey) or 3 (RGB); images are converted to it.
        mean, std: per-channel normalisation of the [0, 1] pixel values (one value is
            broadcast to every channel).
        augment: "none"; "crop": a random ``S x S`` crop of the image zero-padded by
            ``crop_padding``; "crop-flip": the same plus a horizontal flip half of the time
            (natural images); "affine": a small random rotation (up to 10 degrees), scaling
            (0.9-1.1) and shift (up to 8 %), for small grey images such as Fashion-MNIST.
        crop_padding: padding for the random crop, default 4 for RGB and 2 for grey.
    """

    def __init__(
        self,
        input_size: int,
        channels: int,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        augment: str = "none",
        crop_padding: int | None = None,
    ) -> None:
        if channels not in (1, 3):
            raise DataError(f"channels must be 1 or 3, got {channels}")
        if augment not in AUGMENTATIONS:
            raise DataError(f"unknown augmentation {augment!r}; use one of {AUGMENTATIONS}")
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(mean) == 1:
            mean = mean * channels
        if len(std) == 1:
            std = std * channels
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise DataError(f"mean {mean} and std {std} must give {channels} channel(s), std > 0")
        self.input_size = int(input_size)
        self.channels = channels
        self.mean, self.std = mean, std
        self.augment = augment
        self.crop_padding = (4 if channels == 3 else 2) if crop_padding is None else crop_padding
        self._mean = torch.tensor(mean).view(1, channels, 1, 1)
        self._std = torch.tensor(std).view(1, channels, 1, 1)

    def __repr__(self) -> str:
        return (
            f"ImageTransform(input_size={self.input_size}, channels={self.channels}, "
            f"mean={self.mean}, std={self.std}, augment={self.augment!r})"
        )

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        if isinstance(image, Image.Image):
            image = self.fit(image)
        return self.batch(np.asarray(image)[None])[0]

    def fit(self, image: Image.Image) -> np.ndarray:
        """A decoded image as one item of a batch: uint8 ``S x S`` (grey) or ``S x S x 3``,
        converted to the model's channels, resized (shorter side) and centre-cropped. This is
        the per-image part of the transform (DataLoader workers run it); ``batch`` does the
        rest for a whole batch at once."""
        # 16-bit images are scaled to 8 bits first: a plain convert() would clip them.
        image = to_8bit(image).convert("L" if self.channels == 1 else "RGB")
        return np.array(self._fit(image))

    def batch(
        self, images: np.ndarray | torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """uint8 ``N x H x W`` or ``N x H x W x 3`` (an array, or a tensor on any device) to
        float32 ``N x C x S x S`` on the same device, each item augmented independently with
        random draws from ``generator`` (a CPU generator; None: torch's global one).

        Crops and flips move uint8 pixels, a quarter of the bytes of floats; the result is
        the same as converting first."""
        if isinstance(images, torch.Tensor):
            x = images
        else:
            x = torch.from_numpy(np.ascontiguousarray(images))
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        x = self._fit(_convert_channels(x, self.channels))
        if self.augment in ("crop", "crop-flip"):
            x = _random_crop(x, self.crop_padding, generator)
        if self.augment == "crop-flip":
            flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        x = x.float().div_(255.0)
        if self.augment == "affine":
            x = _random_affine(x, generator)
        return x.sub_(self._mean.to(x.device)).div_(self._std.to(x.device))

    def _fit(self, image):
        """Resize (shorter side) and centre-crop a PIL image or ``N x C x H x W`` tensor to S."""
        s = self.input_size
        size = image.size[::-1] if isinstance(image, Image.Image) else tuple(image.shape[-2:])
        if size == (s, s):
            return image
        # Imported here: torchvision's import costs seconds (it loads its models and ops),
        # and images already at the network's size (a search of one such image) need none.
        from torchvision.transforms.v2 import functional as tvf

        image = tvf.resize(image, [s], antialias=True)
        return tvf.center_crop(image, [s, s])


def _convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 ``N x C0 x H x W`` to ``N x channels x H x W`` (grey repeated, or RGB to luma)."""
    if x.shape[1] == channels:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1)
    luma = torch.tensor(_LUMA, device=x.device).view(1, 3, 1, 1)
    return (x.float() * luma).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)


def _random_crop(x: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    """Each item of ``N x C x H x W`` cropped back to H x W at a random offset after zero-padding
    by ``pad`` on every side."""
    if pad <= 0:
        return x
    n, c, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    # Every H x W window of the padded images as a view (N x C x 2p+1 x 2p+1 x H x W), from
    # which one gather picks each item's window.
    windows = nnf.pad(x, (pad, pad, pad, pad)).unfold(2, h, 1).unfold(3, w, 1)
    return windows[torch.arange(n, device=x.device), :, dy, dx]


def _random_affine(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Each item rotated by up to 10 degrees, scaled by 0.9-1.1 and shifted by up to 8 % of its
    size, with zero fill."""
    n = len(x)
    u = (torch.rand(n, 4, generator=generator) * 2 - 1).to(x.device)
    angle = u[:, 0] * math.radians(10)
    scale = 1 + 0.1 * u[:, 1]
    # affine_grid maps output to input coordinates in [-1, 1]: a shift of 8 % is 0.16 there.
    shift = 0.16 * u[:, 2:]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = nnf.affine_grid(theta, list(x.shape), align_corners=False)
    return nnf.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def default_transform(
    input_size: int,
    channels: int,
    train: bool,
    augment: str | bool = "none",
    *,
    mean: Sequence[float] = (0.5,),
    std: Sequence[float] = (0.5,),
) -> ImageTransform:
    """The transform for a model taking ``channels x input_size x input_size`` inputs.

    ``augment`` applies only when ``train``: one of AUGMENTATIONS, or True for the standard
    choice ("crop-flip" for RGB, "crop" for grey) and False for "none"."""
    if not train or augment is False:
        augment = "none"
    elif augment is True:
        augment = "crop-flip" if channels == 3 else "crop"
    return ImageTransform(input_size, channels, mean, std, augment)


def channel_stats(
    dataset: Dataset,
    indices: np.ndarray | None = None,
    channels: int | None = None,
    *,
    max_images: int = 10000,
    seed: int = 0,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the [0, 1] pixel values over ``indices`` (default: all),
    from at most ``max_images`` of them drawn with ``seed``; ``channels`` defaults to the
    dataset's own (grey arrays 1, else 3)."""
    idx = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    if idx.size == 0:
        raise DataError("channel_stats needs at least one image")
    if idx.size > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_images, replace=False))
    if channels is None:
        channels = 1 if dataset.images is not None and dataset.images.ndim == 3 else 3
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    count = 0
    chunks = (
        (dataset.images[idx[i : i + 1024]] for i in range(0, idx.size, 1024))
        if dataset.images is not None
        else (np.asarray(dataset.load_image(int(i)))[None] for i in idx)
    )
    for chunk in chunks:
        x = torch.from_numpy(np.array(chunk))  # a copy: PIL arrays are read-only
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        x = _convert_channels(x, channels).double().div_(255.0)
        total += x.sum((0, 2, 3)).numpy()
        total_sq += x.square().sum((0, 2, 3)).numpy()
        count += x[:, 0].numel()
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


class TorchImages(torch.utils.data.Dataset):
    """The items ``indices`` (int64, into ``dataset``) as ``(image, index)`` or, with labels,
    ``(image, label, index)``: image float32 ``C x S x S`` from ``transform``, label an int64
    scalar (single label) or float32 ``C`` (multi-hot), index the item's dataset index.

    ``transform`` is an ImageTransform (array datasets then take the batched path) or any
    callable taking a PIL image. ``with_labels`` defaults to whether the dataset has labels.
    """

    def __init__(
        self,
        dataset: Dataset,
        indices: np.ndarray | Sequence[int] | None,
        transform: ImageTransform | Callable[[Image.Image], torch.Tensor],
        *,
        with_labels: bool | None = None,
    ) -> None:
        self.dataset = dataset
        n = len(dataset)
        self.indices = (
            np.arange(n, dtype=np.int64)
            if indices is None
            else np.asarray(indices, dtype=np.int64).reshape(-1)
        )
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n):
            raise DataError(f"dataset {dataset.name!r}: indices out of range 0..{n - 1}")
        self.transform = transform
        self.with_labels = dataset.labels is not None if with_labels is None else with_labels
        if self.with_labels and dataset.labels is None:
            raise DataError(f"dataset {dataset.name!r} has no labels")
        self._batched = isinstance(transform, ImageTransform) and dataset.images is not None

    def __len__(self) -> int:
        return len(self.indices)

    def _labels(self, idx: np.ndarray) -> torch.Tensor:
        labels = self.dataset.labels[idx]
        return torch.from_numpy(labels.astype(np.float32 if labels.ndim == 2 else np.int64))

    def __getitem__(self, k: int) -> tuple:
        return self.__getitems__([k])[0]

    def __getitems__(self, ks: Sequence[int]) -> list[tuple]:
        """The items at positions ``ks``, converted together when the images are an array
        (torch's DataLoader calls this with each batch's positions)."""
        idx = self.indices[np.asarray(ks, dtype=np.int64)]
        if self._batched:
            images = list(self.transform.batch(self.dataset.images[idx]))
        else:
            images = [self.transform(self.dataset.load_image(int(i))) for i in idx]
        ids = [int(i) for i in idx]
        if not self.with_labels:
            return list(zip(images, ids, strict=True))
        return list(zip(images, self._labels(idx), ids, strict=True))
