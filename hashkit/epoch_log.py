"""The per-epoch record of a training run: a CSV beside the bundle (``model.pt`` ->
``model.epochs.csv``), and TensorBoard event files (``model.tb/``) when the ``tensorboard``
package is installed.

Columns: ``epoch``, ``loss`` (mean over the epoch's items), ``lr`` (the learning rate the
epoch trained with), ``seconds`` (since the start, resumed runs included), ``val_map`` (mAP of
sgn(h) of the validation images against the other training images, empty without
validation images). The CSV is rewritten whole and atomically after every epoch, so a run
killed mid-way leaves the epochs it finished, and a resumed run continues the same file.

``hashkit train`` writes a run's CSV as ``model.epochs.csv.partial`` (:func:`partial_path`)
and renames it to ``model.epochs.csv`` once the bundle is written (:func:`publish`): a new run
into an existing ``model.pt`` that is interrupted leaves that model's own log as it was.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from hashkit.atomic import atomic_path

COLUMNS = ("epoch", "loss", "lr", "seconds", "val_map")


def epoch_log_path_for(bundle: str | os.PathLike) -> Path:
    """``model.pt`` -> ``model.epochs.csv``."""
    return Path(bundle).with_suffix(".epochs.csv")


def partial_path(path: str | os.PathLike) -> Path:
    """``model.epochs.csv`` -> ``model.epochs.csv.partial``: the log of an unfinished run."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def publish(path: str | os.PathLike) -> None:
    """Rename a finished run's log from its :func:`partial_path` to ``path``."""
    partial = partial_path(path)
    if partial.exists():
        os.replace(partial, path)


class EpochLog:
    """Write ``records`` (dicts with COLUMNS' keys) to ``path`` after each epoch."""

    def __init__(self, path: str | os.PathLike, records: list[dict] | None = None) -> None:
        self.path = Path(path)
        self.records = list(records or [])
        self._board = _tensorboard_writer(self.path, purge_step=len(self.records) + 1)

    def add(self, record: dict) -> None:
        self.records.append(record)
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            for r in self.records:
                writer.writerow({k: "" if r.get(k) is None else r[k] for k in COLUMNS})
        if self._board is not None:
            for key in ("loss", "lr", "val_map"):
                if record.get(key) is not None:
                    self._board.add_scalar(f"train/{key}", record[key], record["epoch"])
            self._board.flush()

    def close(self) -> None:
        if self._board is not None:
            self._board.close()


def _tensorboard_writer(csv_path: Path, purge_step: int):
    """A SummaryWriter into ``model.tb/`` when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    stem = csv_path.name.removesuffix(".partial").removesuffix(".epochs.csv")
    folder = csv_path.with_name(stem + ".tb")
    return SummaryWriter(log_dir=str(folder), purge_step=purge_step)
