"""Image folders: every image file under a root, found recursively, in sorted order.

A folder is labelled (torchvision's ImageFolder convention) when it holds no image directly and
its images are in sub-folders: each sub-folder is a class, named after it, classes in sorted
order, with the images anywhere below it. A single sub-folder is a single class (which can be
indexed, but not trained on: training needs at least two). A folder with images directly in it
is unlabelled, for indexing a collection. Hidden files and folders (starting with ".") are
skipped; symbolic links to folders are followed, each folder listed once.

Nothing is left out silently: a sub-folder that cannot be listed, and a file or folder whose
name is not valid UTF-8 (code stores keep paths as UTF-8 text), are reported to the caller.
"""

from __future__ import annotations

import os

import numpy as np

from hashkit.data.base import Dataset
from hashkit.data.images import IMAGE_EXTENSIONS, is_image_file
from hashkit.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "find_images", "is_image_file", "load_image_folder"]

NOT_UTF8 = "name is not valid UTF-8 (code stores keep paths as UTF-8)"


def _is_utf8(path: str) -> bool:
    """False for a name that os.fsdecode could only decode with surrogate escapes."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(path: str) -> str:
    """``path`` with the bytes that are not UTF-8 written as ``\\xNN``, for messages."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def find_images(folder: str, skipped: list[tuple[str, str]] | None = None) -> list[str]:
    """Paths of the images under ``folder``, relative to it, sorted by their path components.

    A sub-folder that cannot be listed and a file or folder whose name is not valid UTF-8 are
    left out and appended to ``skipped`` as ``(path, reason)``; without ``skipped`` the first
    one raises DataError instead.
    """

    def leave_out(path: str, reason: str) -> None:
        if skipped is None:
            raise DataError(f"cannot list {path}: {reason}")
        skipped.append((path, reason))

    if not _is_utf8(folder):
        raise DataError(f"image folder {_printable(folder)}: {NOT_UTF8}")
    try:
        os.listdir(folder)
    except OSError as e:
        raise DataError(f"cannot list image folder {folder}: {e.strerror or e}") from e

    def unlisted(err: OSError) -> None:
        leave_out(err.filename or folder, err.strerror or str(err))

    found = []
    seen = set()
    for dirpath, dirnames, filenames in os.walk(folder, onerror=unlisted, followlinks=True):
        stat = os.stat(dirpath)
        if (stat.st_dev, stat.st_ino) in seen:  # a link back up the tree, or to a listed folder
            dirnames[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        rel_dir = os.path.relpath(dirpath, folder)
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            if _is_utf8(d):
                keep.append(d)
            else:
                leave_out(_printable(os.path.join(dirpath, d)), NOT_UTF8)
        dirnames[:] = keep
        for name in filenames:
            if name.startswith(".") or not is_image_file(name):
                continue
            if not _is_utf8(name):
                leave_out(_printable(os.path.join(dirpath, name)), NOT_UTF8)
                continue
            found.append(name if rel_dir == "." else os.path.join(rel_dir, name))
    return sorted(found, key=lambda p: p.split(os.sep))


def load_image_folder(
    folder: str,
    *,
    labelled: bool | None = None,
    name: str | None = None,
    skipped: list[tuple[str, str]] | None = None,
) -> Dataset:
    """A Dataset of the image files under ``folder`` (labels int64 ``N`` when labelled, else
    None); ``labelled`` forces the reading instead of guessing it from the layout; ``skipped``
    as in ``find_images``."""
    if not os.path.isdir(folder):
        raise DataError(f"image folder {folder} does not exist")
    root = os.path.abspath(folder)
    rel_paths = find_images(root, skipped)
    if not rel_paths:
        also = f"; skipped {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}{also}")
    top = [p.split(os.sep)[0] if os.sep in p else None for p in rel_paths]
    classes = sorted({t for t in top if t is not None})
    if labelled is None:
        labelled = None not in top
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
