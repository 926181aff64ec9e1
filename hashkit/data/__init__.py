"""Datasets for hashing: built-in (Fashion-MNIST, MNIST, CIFAR-10, NUS-WIDE list files), image
folders and list files; protocol splits; and, importing torch only when asked for, the torch
Dataset and transform that feed them to a model."""

from hashkit.data.base import Dataset
from hashkit.data.images import open_image
from hashkit.data.load import BUILTIN_DATASETS, candidate_dirs, load_dataset
from hashkit.data.protocol import PROTOCOLS, Split, load_split, make_split

_TORCH_NAMES = (
    "AUGMENTATIONS",
    "ImageTransform",
    "TorchImages",
    "channel_stats",
    "default_transform",
)

__all__ = [
    "BUILTIN_DATASETS",
    "PROTOCOLS",
    "Dataset",
    "Split",
    "candidate_dirs",
    "load_dataset",
    "load_split",
    "make_split",
    "open_image",
    *_TORCH_NAMES,
]


def __getattr__(name: str):
    # The torch parts load on first use, so listing, splitting and evaluating stay light.
    if name in _TORCH_NAMES:
        from hashkit.data import torch_images

        return getattr(torch_images, name)
    raise AttributeError(f"module 'hashkit.data' has no attribute {name!r}")
