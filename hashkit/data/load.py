"""``load_dataset``: a built-in dataset by name, or an image folder or list file by path.

Built-in datasets are never downloaded. They are looked up, in order:

1. in an explicit ``root`` (the folder itself, then ``root/<name>``);
2. in ``$HASHKIT_DATA/<name>``, then ``$HASHKIT_DATA``;
3. in the system folders ``/usr/share/datasets/<name>`` (Debian's dataset packages),
   ``~/.cache/hashkit/<name>`` and torchvision's layout ``<name>/FashionMNIST/raw`` etc.

``<name>`` is tried under a few spellings (``fashion-mnist``, ``fashion_mnist``, ...). When
the dataset is in none of them, the error lists every folder looked in.

"nus-wide" is a list file (see listfile.py) named ``nus_wide_21.txt`` (or ``nuswide_21.txt``,
``nus-wide.txt``, ``nus_wide.txt``) in one of those folders, with the images relative to it;
``root`` may also be the list file itself.
"""

from __future__ import annotations

import os

from hashkit.data.base import Dataset
from hashkit.data.cifar import ARCHIVE, BATCHES_DIR, find_cifar10, load_cifar10
from hashkit.data.folder import load_image_folder
from hashkit.data.idx import (
    FASHION_MNIST_CLASSES,
    IDX_FILES,
    MNIST_CLASSES,
    has_idx_files,
    load_idx_dataset,
)
from hashkit.data.listfile import load_list_file
from hashkit.errors import DataError

BUILTIN_DATASETS = ("fashion-mnist", "mnist", "cifar10", "nus-wide")

# Folder names a dataset may be stored under, below a data folder.
_FOLDER_NAMES = {
    "fashion-mnist": ["fashion-mnist", "fashion_mnist", "FashionMNIST/raw"],
    "mnist": ["mnist", "MNIST/raw"],
    "cifar10": ["cifar10", "cifar-10"],
    "nus-wide": ["nus-wide", "nus_wide", "nuswide", "nus_wide_21", "nuswide_21"],
}
NUS_WIDE_LIST_FILES = ["nus_wide_21.txt", "nuswide_21.txt", "nus-wide.txt", "nus_wide.txt"]
SYSTEM_DATA_DIRS = ["/usr/share/datasets", "~/.cache/hashkit", "~/.cache/torchvision"]

_IDX_NAMES = ", ".join(stem + ".gz" for stem in IDX_FILES.values())
_HOW_TO_GET = {
    "fashion-mnist": (
        "install it with `apt-get install dataset-fashion-mnist` (Debian), or put the four IDX "
        f"files ({_IDX_NAMES}) in a folder given as --root or $HASHKIT_DATA/fashion-mnist"
    ),
    "mnist": (
        f"put the four MNIST IDX files ({_IDX_NAMES}) in a folder given as --root or "
        "$HASHKIT_DATA/mnist"
    ),
    "cifar10": (
        f"put {ARCHIVE} (https://www.cs.toronto.edu/~kriz/cifar.html) or its extracted "
        f"{BATCHES_DIR} folder in a folder given as --root or $HASHKIT_DATA/cifar10"
    ),
    "nus-wide": (
        f"put a list file {NUS_WIDE_LIST_FILES[0]} (one `relative/path.jpg l1 .. l21` line per "
        "image, e.g. DeepHash's nuswide_21 test.txt and database.txt concatenated) beside the "
        "images in a folder given as --root or $HASHKIT_DATA/nus-wide, or give the list file "
        "itself as the dataset"
    ),
}


def candidate_dirs(name: str, root: str | None = None) -> list[str]:
    """The folders a built-in dataset is looked for in, in order (see the module docstring)."""
    subdirs = _FOLDER_NAMES[name]
    dirs = [] if root is None else [root] + [os.path.join(root, s) for s in subdirs]
    env = os.environ.get("HASHKIT_DATA")
    if env:
        dirs += [os.path.join(env, s) for s in subdirs] + [env]
    for base in SYSTEM_DATA_DIRS:
        dirs += [os.path.join(os.path.expanduser(base), s) for s in subdirs]
    return dirs


def _find_nus_wide(folder: str) -> str | None:
    if os.path.isfile(folder) and folder.endswith(".txt"):
        return folder
    for list_name in NUS_WIDE_LIST_FILES:
        candidate = os.path.join(folder, list_name)
        if os.path.isfile(candidate):
            return candidate
    return None


def _find_source(name: str, folder: str) -> str | None:
    if name in ("fashion-mnist", "mnist"):
        return folder if os.path.isdir(folder) and has_idx_files(folder) else None
    if name == "cifar10":
        return find_cifar10(folder) if os.path.exists(folder) else None
    return _find_nus_wide(folder)


def load_builtin(name: str, root: str | None = None) -> Dataset:
    """A built-in dataset (one of BUILTIN_DATASETS) from the first folder that holds it."""
    name = name.lower()
    if name not in BUILTIN_DATASETS:
        raise DataError(f"unknown dataset {name!r}; built-in: {', '.join(BUILTIN_DATASETS)}")
    dirs = candidate_dirs(name, root)
    for folder in dirs:
        source = _find_source(name, folder)
        if source is None:
            continue
        if name == "fashion-mnist":
            return load_idx_dataset(source, name, FASHION_MNIST_CLASSES)
        if name == "mnist":
            return load_idx_dataset(source, name, MNIST_CLASSES)
        if name == "cifar10":
            return load_cifar10(source)
        return load_list_file(source, name=name)
    raise DataError(f"{name} not found; looked in {', '.join(dirs)}; {_HOW_TO_GET[name]}")


def load_dataset(
    name_or_path: str,
    root: str | None = None,
    *,
    skipped: list[tuple[str, str]] | None = None,
) -> Dataset:
    """A built-in dataset by name (fashion-mnist, mnist, cifar10, nus-wide; "./name" forces the
    path reading), an image folder by path, or a ``.txt`` list file by path (its images relative
    to ``root`` when given, else to the list file's folder). Canonical order: MNIST-style
    training then test images; CIFAR-10 data batches 1-5 then the test batch; list files in
    file order; image folders sorted by path. ``skipped`` receives what an image folder's
    listing left out (see hashkit.data.folder.find_images); without it that raises."""
    if name_or_path.lower() in BUILTIN_DATASETS:
        return load_builtin(name_or_path, root)
    if os.path.isdir(name_or_path):
        return load_image_folder(name_or_path, skipped=skipped)
    if os.path.isfile(name_or_path):
        if name_or_path.lower().endswith(".txt"):
            return load_list_file(name_or_path, root)
        raise DataError(f"{name_or_path} is neither an image folder nor a .txt list file")
    raise DataError(
        f"dataset {name_or_path!r} is neither a built-in name ({', '.join(BUILTIN_DATASETS)}) "
        "nor an existing folder or list file"
    )
