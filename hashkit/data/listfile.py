"""List files, the split format of published deep-hashing code for NUS-WIDE, MS-COCO and
ImageNet-100: one image per line, ``relative/path.jpg l1 l2 ... lC``, the labels 0/1 multi-hot.

Paths are relative to an image root (the list file's folder unless given) and may not contain
whitespace; blank lines are skipped. Labels stay multi-hot (uint8 ``N x C``), except when every
row has exactly one 1 (one-hot, as ImageNet-100's lists): that is single-label data, loaded as
int64 class indices (column j is class j), so the protocol's mAP@k is the single-label one.
"""

from __future__ import annotations

import os

import numpy as np

from hashkit.data.base import Dataset
from hashkit.errors import DataError
from hashkit.labels import normalize_labels


def read_list_file(path: str) -> tuple[list[str], np.ndarray]:
    """The relative paths (``N``) and multi-hot labels (uint8 ``N x C``) of a list file, as
    written (:func:`load_list_file` turns one-hot labels into class indices)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read list file {path}: {e}") from e
    rel_paths: list[str] = []
    rows: list[list[int]] = []
    n_labels = None
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if n_labels is None:
            n_labels = len(fields) - 1
        if len(fields) - 1 != n_labels or n_labels == 0:
            raise DataError(
                f"{path}:{lineno}: expected a path and {n_labels or 'some'} labels, "
                f"got {len(fields) - 1} labels"
            )
        if any(v not in ("0", "1") for v in fields[1:]):
            raise DataError(f"{path}:{lineno}: labels must be 0 or 1")
        rel_paths.append(fields[0])
        rows.append([int(v) for v in fields[1:]])
    if not rel_paths:
        raise DataError(f"list file {path} lists no images")
    return rel_paths, np.asarray(rows, dtype=np.uint8)


def load_list_file(
    path: str,
    root: str | None = None,
    *,
    name: str | None = None,
    class_names: list[str] | None = None,
) -> Dataset:
    """A Dataset of the images a list file names, in the file's order, with paths joined to
    ``root`` (default: the list file's folder). Only the first image is checked to exist, to
    catch a wrong root early; unreadable images raise DataError when loaded.
    ``class_names`` defaults to the concept indices "0" .. "C-1". One-hot labels (every row
    exactly one 1) come back as int64 class indices, others as uint8 multi-hot."""
    rel_paths, labels = read_list_file(path)
    image_root = os.path.abspath(root if root is not None else os.path.dirname(path))
    paths = [os.path.join(image_root, p) for p in rel_paths]
    if not os.path.isfile(paths[0]):
        raise DataError(
            f"list file {path}: first image {rel_paths[0]} not found under {image_root} "
            "(give the image root with --root)"
        )
    n_classes = labels.shape[1]
    if class_names is None:
        class_names = [str(j) for j in range(n_classes)]
    elif len(class_names) != n_classes:
        raise DataError(f"list file {path}: {n_classes} labels, {len(class_names)} class names")
    if name is None:
        name = os.path.splitext(os.path.basename(path))[0]
    labels = normalize_labels(labels, f"labels of {path}")
    return Dataset(
        images=None, paths=paths, labels=labels, class_names=list(class_names), name=name
    )
