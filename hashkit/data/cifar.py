"""CIFAR-10 in its "python version": the ``cifar-10-batches-py`` folder of pickled batches
(``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``), or the
``cifar-10-python.tar.gz`` archive read directly.

Each batch is a dict with ``b"data"`` (uint8 ``N x 3072``, the red, green then blue planes of a
32 x 32 image, row-major) and ``b"labels"`` (N ints). The pickles are read with an unpickler
that only builds numpy arrays, so a crafted file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np

from hashkit.data.base import Dataset
from hashkit.errors import DataError

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
BATCHES_DIR = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]

# What a CIFAR pickle may reference: numpy's array reconstructors, written by numpy 1 and 2
# under protocols 2 to 5, and the str-to-bytes encoder Python 3 uses for bytes in protocol 2.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(data: bytes, where: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # a corrupt pickle can raise nearly anything
        raise DataError(f"cannot read CIFAR batch {where}: {e}") from e
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR batch {where} is not a dict")
    return obj


def find_cifar10(folder: str) -> str | None:
    """The batches folder or archive for CIFAR-10 in or at ``folder``, or None."""
    if os.path.isfile(folder) and folder.endswith((".tar.gz", ".tgz")):
        return folder
    if os.path.isfile(os.path.join(folder, "data_batch_1")):
        return folder
    for candidate in (os.path.join(folder, BATCHES_DIR), os.path.join(folder, ARCHIVE)):
        if os.path.exists(candidate):
            return candidate
    return None


def _read_members(source: str) -> dict[str, bytes]:
    """The bytes of every batch and of batches.meta (when present), by base name."""
    wanted = set(BATCHES) | {"batches.meta"}
    found: dict[str, bytes] = {}
    if os.path.isdir(source):
        for name in wanted:
            path = os.path.join(source, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    found[name] = f.read()
        return found
    try:
        with tarfile.open(source, "r:*") as tar:
            for member in tar:
                base = os.path.basename(member.name)
                if member.isfile() and base in wanted:
                    found[base] = tar.extractfile(member).read()
    except (OSError, tarfile.TarError, EOFError) as e:
        raise DataError(f"cannot read CIFAR-10 archive {source}: {e}") from e
    return found


def load_cifar10(source: str) -> Dataset:
    """CIFAR-10 from a batches folder or the archive: the five data batches in order, then the
    test batch; images uint8 ``N x 32 x 32 x 3`` (HWC), labels int64 ``N``."""
    members = _read_members(source)
    missing = [b for b in BATCHES if b not in members]
    if missing:
        raise DataError(f"cifar10: {', '.join(missing)} missing in {source}")
    images, labels = [], []
    for name in BATCHES:
        batch = _unpickle(members[name], f"{source}:{name}")
        if b"data" not in batch or b"labels" not in batch:
            raise DataError(f"CIFAR batch {source}:{name} lacks b'data' or b'labels'")
        data = np.asarray(batch[b"data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(
                f"CIFAR batch {source}:{name}: data is {data.dtype} {data.shape}, "
                "expected uint8 N x 3072"
            )
        try:
            batch_labels = np.asarray(batch[b"labels"], dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as e:
            raise DataError(f"CIFAR batch {source}:{name}: labels are not integers ({e})") from e
        if batch_labels.shape != (len(data),):
            raise DataError(f"CIFAR batch {source}:{name}: {batch_labels.shape} labels")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(batch_labels)
    class_names = list(CIFAR10_CLASSES)
    if "batches.meta" in members:
        meta = _unpickle(members["batches.meta"], f"{source}:batches.meta")
        names = meta.get(b"label_names")
        if names:
            if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
                raise DataError(f"{source}:batches.meta: label_names is not a list of names")
            class_names = [n.decode(errors="replace") if isinstance(n, bytes) else n for n in names]
    all_labels = np.concatenate(labels)
    if all_labels.size and (all_labels.min() < 0 or all_labels.max() >= len(class_names)):
        raise DataError(f"cifar10: labels outside 0..{len(class_names) - 1} in {source}")
    return Dataset(
        images=np.ascontiguousarray(np.concatenate(images)),
        labels=all_labels,
        class_names=class_names,
        name="cifar10",
    )
