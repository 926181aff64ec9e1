"""MNIST and Fashion-MNIST in their IDX files, gzip-compressed or raw.

An IDX file starts with a big-endian magic number ``0x0000TTDD`` (``TT`` the element type,
``DD`` the number of dimensions), then ``DD`` big-endian uint32 sizes, then the data: 2051
(ubyte, 3 dims) for images, 2049 (ubyte, 1 dim) for labels.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from hashkit.data.base import Dataset
from hashkit.errors import DataError

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MNIST_CLASSES = [str(d) for d in range(10)]

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed when its name ends in .gz) into an array of its shape."""
    path = os.fspath(path)
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: IDX header truncated")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != count * dtype.itemsize:
        raise DataError(
            f"{path}: IDX data holds {len(raw) - header} bytes, header says shape {shape}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def find_idx_file(folder: str, stem: str) -> str | None:
    """The file for ``stem`` (e.g. "train-images-idx3-ubyte") in ``folder``: ``stem.gz``, ``stem``
    or the ``train-images.idx3-ubyte`` spelling of the original MNIST site, or None."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem + ".gz", stem, dotted + ".gz", dotted):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def has_idx_files(folder: str) -> bool:
    """True when ``folder`` holds all four MNIST-style IDX files."""
    return all(find_idx_file(folder, stem) for stem in IDX_FILES.values())


def load_idx_dataset(folder: str, name: str, class_names: list[str]) -> Dataset:
    """The 60,000 training images followed by the 10,000 test images of an MNIST-style folder
    (any sizes, as long as images and labels agree): uint8 ``N x 28 x 28``, int64 labels."""
    paths = {}
    for key, stem in IDX_FILES.items():
        found = find_idx_file(folder, stem)
        if found is None:
            raise DataError(f"{name}: {stem}(.gz) not found in {folder}")
        paths[key] = found
    parts_images, parts_labels = [], []
    for split in ("train", "test"):
        images = read_idx(paths[f"{split}_images"])
        labels = read_idx(paths[f"{split}_labels"])
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataError(f"{paths[f'{split}_images']}: expected uint8 N x H x W images")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(
                f"{paths[f'{split}_labels']}: {labels.shape} labels for {len(images)} images"
            )
        parts_images.append(images)
        parts_labels.append(labels.astype(np.int64))
    if parts_images[0].shape[1:] != parts_images[1].shape[1:]:
        raise DataError(f"{name}: training and test images differ in size in {folder}")
    labels = np.concatenate(parts_labels)
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DataError(f"{name}: labels outside 0..{len(class_names) - 1} in {folder}")
    return Dataset(
        images=np.concatenate(parts_images),
        labels=labels,
        class_names=list(class_names),
        name=name,
    )
