"""Train / query / database splits (docs/method.md, section 4), seeded and saved beside results.

- "reduced": ``queries_per_class`` queries per class, database = every other item, training =
  ``train_per_class`` per class sampled from the database (CIFAR-10: 1,000 / 59,000 / 5,000).
- "full": the same queries, training = database = every other item.
- "unseen" (Sablayrolles, Douze, Usunier, Jegou, "How should we evaluate supervised hashing?",
  ICASSP 2017): the classes are split into seen and unseen ones (by default 30% unseen, at
  least one, drawn with the seed: 3 of 10; or named). Training = ``train_per_class`` items of
  each seen class; queries = ``queries_per_class`` items of each unseen class; database =
  every other item of the unseen classes. Nothing the training (or the rotation learned on
  training items) sees belongs to a class that is searched for. Single-label data only.

Multi-label data (uint8 ``N x C``) are sampled per concept, in concept order: for each concept,
the queries are drawn among the items that have it and are not yet queries; then, for "reduced",
the training items are drawn per concept among the database items that have it and are not yet
in training. Items without any concept stay in the database (and in training for "full").

The draws use ``numpy.random.default_rng(seed)``, so a seed fixes the split. All index arrays are
int64, sorted, and index the dataset in its canonical order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hashkit.atomic import atomic_path
from hashkit.errors import DataError

PROTOCOLS = ("reduced", "full", "unseen")
UNSEEN_FRACTION = 0.3


@dataclass
class Split:
    """Index arrays (int64, into the dataset's canonical order) and how they were made."""

    train: np.ndarray
    query: np.ndarray
    database: np.ndarray
    protocol: str = "custom"
    seed: int = -1
    unseen_classes: list[int] | None = None

    def check(self, n: int | None = None, where: str = "split") -> None:
        """Raise DataError unless every part is a non-empty 1-D integer array of distinct
        indices in ``0..n-1`` and the queries are neither in the database nor in training."""
        for part in ("train", "query", "database"):
            idx = getattr(self, part)
            if idx.ndim != 1 or idx.size == 0:
                raise DataError(f"{where}: {part} indices must be a non-empty list")
            if not np.issubdtype(idx.dtype, np.integer):
                raise DataError(f"{where}: {part} indices must be integers, got {idx.dtype}")
            if idx.min() < 0 or (n is not None and idx.max() >= n):
                bound = f"0..{n - 1}" if n is not None else "non-negative"
                raise DataError(f"{where}: {part} indices out of range ({bound})")
            if np.unique(idx).size != idx.size:
                raise DataError(f"{where}: {part} indices repeat")
        if np.intersect1d(self.query, self.database).size:
            raise DataError(f"{where}: query and database indices overlap")
        if np.intersect1d(self.query, self.train).size:
            raise DataError(f"{where}: query and train indices overlap")

    def save(self, path: str | os.PathLike) -> None:
        """Write the split to ``.npz`` (arrays) or ``.json`` (lists), atomically."""
        path = os.fspath(path)
        arrays = {"train": self.train, "query": self.query, "database": self.database}
        unseen = {}
        if self.unseen_classes is not None:
            unseen["unseen_classes"] = np.asarray(self.unseen_classes, dtype=np.int64)
        with atomic_path(path) as tmp:
            if path.endswith(".npz"):
                with open(tmp, "wb") as f:
                    np.savez(
                        f,
                        **{k: np.asarray(v, dtype=np.int64) for k, v in arrays.items()},
                        protocol=np.array(self.protocol),
                        seed=np.array(self.seed, dtype=np.int64),
                        **unseen,
                    )
            elif path.endswith(".json"):
                doc = {k: [int(i) for i in v] for k, v in arrays.items()}
                doc.update(protocol=self.protocol, seed=int(self.seed))
                if self.unseen_classes is not None:
                    doc["unseen_classes"] = [int(c) for c in self.unseen_classes]
                tmp.write_text(json.dumps(doc), encoding="utf-8")
            else:
                raise DataError(f"split file {path} must end in .npz or .json")


def load_split(path: str | os.PathLike, n: int | None = None) -> Split:
    """Read a split written by ``Split.save`` (or by hand: a JSON object with "train", "query"
    and "database" lists) and check it against a dataset of ``n`` items."""
    path = os.fspath(path)
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                doc = {k: z[k] for k in z.files}
        elif path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        else:
            raise DataError(f"split file {path} must end in .npz or .json")
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read split file {path}: {e}") from e
    if not isinstance(doc, dict):
        raise DataError(f"split file {path} is not an object with train/query/database")
    missing = [k for k in ("train", "query", "database") if k not in doc]
    if missing:
        raise DataError(f"split file {path} lacks {', '.join(missing)}")
    parts = {}
    for k in ("train", "query", "database"):
        arr = np.asarray(doc[k])
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"split file {path}: {k} indices must be integers")
        parts[k] = arr.astype(np.int64).reshape(-1) if arr.ndim <= 1 else arr
    unseen = doc.get("unseen_classes")
    if unseen is not None:
        unseen = np.asarray(unseen)
        if unseen.ndim != 1 or (unseen.size and not np.issubdtype(unseen.dtype, np.integer)):
            raise DataError(f"split file {path}: unseen_classes must be a list of class numbers")
        unseen = [int(c) for c in unseen]
    split = Split(
        **parts,
        protocol=str(np.asarray(doc.get("protocol", "custom"))),
        seed=int(np.asarray(doc.get("seed", -1))),
        unseen_classes=unseen,
    )
    split.check(n, where=f"split file {path}")
    return split


def make_split(
    labels: np.ndarray | None,
    protocol: str = "reduced",
    seed: int = 0,
    *,
    queries_per_class: int = 100,
    train_per_class: int = 500,
    unseen_classes: Sequence[int] | None = None,
) -> Split:
    """The split of ``protocol`` (see the module docstring and docs/method.md, section 4) for
    labels int64 ``N`` or multi-hot uint8 ``N x C``. ``unseen_classes`` (class numbers) names
    the unseen classes of the "unseen" protocol (None: drawn with ``seed``); other protocols
    refuse it."""
    if labels is None:
        raise DataError(
            "an unlabelled dataset has no protocol split; label it (one sub-folder per class) "
            "or give a split file"
        )
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2) or len(labels) == 0:
        raise DataError(f"labels must be N or N x C and non-empty, got shape {labels.shape}")
    if protocol == "unseen":
        return _unseen_split(labels, seed, unseen_classes, queries_per_class, train_per_class)
    if unseen_classes is not None:
        raise DataError(f"unseen classes are named for protocol 'unseen', not {protocol!r}")
    n = len(labels)
    rng = np.random.default_rng(seed)
    # Per class (single label) or per concept (multi-hot): a boolean N mask of its members, and
    # how many items it needs. A single-label class needs its training items too (and, for
    # "full", one item left to be retrieved); concepts share items, so theirs are checked below.
    if labels.ndim == 1:
        classes = np.unique(labels)
        if len(classes) < 2:
            raise DataError(
                f"all {n} items are of one class ({classes[0]}): a split, like training, needs "
                "at least two classes (an image folder: one sub-folder of images per class)"
            )
        members = [(f"class {c}", labels == c) for c in classes]
        needed = queries_per_class + (train_per_class if protocol == "reduced" else 1)
    else:
        members = [(f"concept {j}", labels[:, j] > 0) for j in range(labels.shape[1])]
        needed = queries_per_class

    is_query = np.zeros(n, dtype=bool)
    for what, mask in members:
        candidates = np.flatnonzero(mask & ~is_query)
        if candidates.size < needed:
            raise DataError(
                f"{what} has {candidates.size} items available, protocol {protocol!r} needs "
                f"at least {needed} (queries_per_class={queries_per_class}, "
                f"train_per_class={train_per_class})"
            )
        is_query[rng.choice(candidates, queries_per_class, replace=False)] = True
    query = np.flatnonzero(is_query)
    database = np.flatnonzero(~is_query)
    if database.size == 0:
        raise DataError("every item is a query; the database would be empty")

    if protocol == "full":
        train = database.copy()
    else:
        is_train = np.zeros(n, dtype=bool)
        for what, mask in members:
            candidates = np.flatnonzero(mask & ~is_query & ~is_train)
            if candidates.size < train_per_class:
                raise DataError(
                    f"{what} has {candidates.size} database items left for training, "
                    f"protocol 'reduced' needs {train_per_class}"
                )
            is_train[rng.choice(candidates, train_per_class, replace=False)] = True
        train = np.flatnonzero(is_train)
    return Split(
        train=train.astype(np.int64),
        query=query.astype(np.int64),
        database=database.astype(np.int64),
        protocol=protocol,
        seed=seed,
    )


def default_unseen_count(n_classes: int) -> int:
    """How many of ``n_classes`` classes the "unseen" protocol holds out by default:
    30%, at least one (3 of 10)."""
    return max(1, round(UNSEEN_FRACTION * n_classes))


def class_numbers(names_or_numbers: Sequence[str], class_names: Sequence[str]) -> list[int]:
    """Class numbers (label values) of classes given by name or by number, e.g. from
    ``--unseen-classes 7,8,9`` or ``--unseen-classes Sneaker,Bag``; DataError for a name or
    number the data does not have."""
    out = []
    for token in names_or_numbers:
        if token in class_names:
            out.append(list(class_names).index(token))
            continue
        try:
            number = int(token)
        except ValueError:
            number = None
        if number is None or not 0 <= number < len(class_names):
            known = ", ".join(f"{i}={n}" for i, n in enumerate(class_names))
            raise DataError(
                f"unseen class {token!r} is neither a class name nor a class number of the "
                f"data (classes: {known})"
            )
        out.append(number)
    return out


def _unseen_split(
    labels: np.ndarray,
    seed: int,
    unseen_classes: Sequence[int] | None,
    queries_per_class: int,
    train_per_class: int,
) -> Split:
    """The "unseen" protocol's split (module docstring)."""
    if labels.ndim != 1:
        raise DataError(
            "the unseen-class protocol needs single-label data: with multi-hot labels an image "
            "can belong to a seen and an unseen class at once"
        )
    classes = np.unique(labels)
    if len(classes) < 3:
        raise DataError(
            f"the unseen-class protocol needs at least 3 classes (2 seen, 1 unseen), the data "
            f"has {len(classes)}"
        )
    rng = np.random.default_rng(seed)
    if unseen_classes is None:
        count = default_unseen_count(len(classes))
        unseen = np.sort(rng.choice(classes, count, replace=False))
    else:
        unseen = np.asarray(list(unseen_classes), dtype=np.int64)
        missing = np.setdiff1d(unseen, classes)
        if missing.size:
            raise DataError(
                f"unseen class {int(missing[0])} has no items in the data (its classes: "
                f"{', '.join(str(int(c)) for c in classes)})"
            )
        if np.unique(unseen).size != unseen.size:
            raise DataError("unseen classes repeat")
        if unseen.size == 0 or len(classes) - unseen.size < 2:
            raise DataError(
                f"{unseen.size} unseen of {len(classes)} classes: the protocol needs at least "
                "one unseen class and two seen ones to train on"
            )
        unseen = np.sort(unseen)
    seen = np.setdiff1d(classes, unseen)
    is_query = np.zeros(len(labels), dtype=bool)
    for c in unseen:
        members = np.flatnonzero(labels == c)
        if members.size <= queries_per_class:
            raise DataError(
                f"unseen class {int(c)} has {members.size} items, protocol 'unseen' needs more "
                f"than {queries_per_class} (queries_per_class={queries_per_class}, and at "
                "least one left to retrieve)"
            )
        is_query[rng.choice(members, queries_per_class, replace=False)] = True
    is_train = np.zeros(len(labels), dtype=bool)
    for c in seen:
        members = np.flatnonzero(labels == c)
        if members.size < train_per_class:
            raise DataError(
                f"seen class {int(c)} has {members.size} items, protocol 'unseen' needs "
                f"{train_per_class} to train on (train_per_class={train_per_class})"
            )
        is_train[rng.choice(members, train_per_class, replace=False)] = True
    in_unseen = np.isin(labels, unseen)
    return Split(
        train=np.flatnonzero(is_train).astype(np.int64),
        query=np.flatnonzero(is_query).astype(np.int64),
        database=np.flatnonzero(in_unseen & ~is_query).astype(np.int64),
        protocol="unseen",
        seed=seed,
        unseen_classes=[int(c) for c in unseen],
    )
