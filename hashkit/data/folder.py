"""Image folders: every image file under a root, found recursively, in sorted order.

A folder is labelled (torchvision's ImageFolder convention) when it holds no image directly and
at least two of its sub-folders hold images: each such sub-folder is a class, named after it,
classes in sorted order, with the images anywhere below it. Otherwise it is unlabelled, for
indexing a collection. Hidden files and folders (starting with ".") are skipped.
"""

from __future__ import annotations

import os

import numpy as np

from hashkit.data.base import Dataset
from hashkit.errors import DataError

# torchvision's IMG_EXTENSIONS plus .gif, spelled out so that listing a folder needs no torch.
IMAGE_EXTENSIONS = (
    ".bmp",
    ".gif",
    ".jpeg",
    ".jpg",
    ".pgm",
    ".png",
    ".ppm",
    ".tif",
    ".tiff",
    ".webp",
)


def is_image_file(name: str) -> bool:
    """True when ``name`` has an image extension (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def find_images(folder: str) -> list[str]:
    """Paths of the images under ``folder``, relative to it, sorted by their path components."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = os.path.relpath(dirpath, folder)
        for name in filenames:
            if not name.startswith(".") and is_image_file(name):
                found.append(name if rel_dir == "." else os.path.join(rel_dir, name))
    return sorted(found, key=lambda p: p.split(os.sep))


def load_image_folder(
    folder: str, *, labelled: bool | None = None, name: str | None = None
) -> Dataset:
    """A Dataset of the image files under ``folder`` (labels int64 ``N`` when labelled, else
    None); ``labelled`` forces the reading instead of guessing it from the layout."""
    if not os.path.isdir(folder):
        raise DataError(f"image folder {folder} does not exist")
    root = os.path.abspath(folder)
    rel_paths = find_images(root)
    if not rel_paths:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    top = [p.split(os.sep)[0] if os.sep in p else None for p in rel_paths]
    classes = sorted({t for t in top if t is not None})
    if labelled is None:
        labelled = None not in top and len(classes) >= 2
    elif labelled and None in top:
        loose = rel_paths[top.index(None)]
        raise DataError(f"labelled image folder {folder} has an image outside any class: {loose}")
    if name is None:
        name = os.path.basename(root.rstrip(os.sep)) or root
    paths = [os.path.join(root, p) for p in rel_paths]
    if not labelled:
        return Dataset(images=None, paths=paths, labels=None, class_names=[], name=name)
    class_index = {c: i for i, c in enumerate(classes)}
    labels = np.array([class_index[t] for t in top], dtype=np.int64)
    return Dataset(images=None, paths=paths, labels=labels, class_names=classes, name=name)
