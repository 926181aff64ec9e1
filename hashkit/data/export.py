"""Writing dataset items out as image files: one sub-folder per class, named by dataset index,
so that a folder of files can be indexed and searched like any user's images."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hashkit.data.base import Dataset


def class_folders(class_names: list[str]) -> list[str]:
    """One folder name per class: the name with anything but letters, digits, ".", "_" and "-"
    replaced, never "." or ".." or hidden (a class named ".." must not write outside the
    export), and made distinct with "-<label>" (then "-<label>-2", ...) where two names would
    share a folder. The suffixed name may itself be another class's ("a~" and "a-2"), and
    names differing in case are one folder on macOS and Windows: every name is checked
    against those taken, ignoring case."""
    folders: list[str] = []
    taken: set[str] = set()
    for label, name in enumerate(class_names):
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).lstrip(".").strip("_") or str(label)
        folder, n = base, 1
        while folder.casefold() in taken:
            folder = f"{base}-{label}" if n == 1 else f"{base}-{label}-{n}"
            n += 1
        taken.add(folder.casefold())
        folders.append(folder)
    return folders


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
    folders = class_folders(dataset.class_names)
    width = len(str(max(len(dataset) - 1, 1)))
    written = 0
    items = np.asarray(indices, dtype=np.int64)
    iterator = items if progress is None else progress(items, total=len(items), desc="export")
    for i in iterator:
        sub = folder
        if single:
            label = int(dataset.labels[i])
            sub = folder / (folders[label] if 0 <= label < len(folders) else str(label))
        path = sub / f"{int(i):0{width}d}.png"
        if path.exists():
            continue
        sub.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".png.tmp")
        try:
            dataset.load_image(int(i)).save(tmp, format="PNG")
            os.replace(tmp, path)
        except BaseException:  # Ctrl-C or an error: no half-written file is left behind
            tmp.unlink(missing_ok=True)
            raise
        written += 1
    return written
