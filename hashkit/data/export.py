"""Writing dataset items out as image files: one sub-folder per class, named by dataset index,
so that a folder of files can be indexed and searched like any user's images."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hashkit.data.base import Dataset


def _folder_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "unnamed"


def export_images(
    dataset: Dataset,
    indices: np.ndarray,
    folder: str | os.PathLike,
    *,
    progress: Callable | None = None,
) -> int:
    """Write items ``indices`` as PNG files ``folder/<class>/<index>.png`` (``folder/<index>.png``
    for unlabelled or multi-label data). Files already there are kept, so an interrupted export
    resumes. Returns the number of files written."""
    folder = Path(folder)
    single = dataset.labels is not None and dataset.labels.ndim == 1
    width = len(str(max(len(dataset) - 1, 1)))
    written = 0
    items = np.asarray(indices, dtype=np.int64)
    iterator = items if progress is None else progress(items, total=len(items), desc="export")
    for i in iterator:
        sub = folder
        if single:
            label = int(dataset.labels[i])
            names = dataset.class_names
            sub = folder / _folder_name(names[label] if label < len(names) else str(label))
        path = sub / f"{int(i):0{width}d}.png"
        if path.exists():
            continue
        sub.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".png.tmp")
        dataset.load_image(int(i)).save(tmp, format="PNG")
        os.replace(tmp, path)
        written += 1
    return written
