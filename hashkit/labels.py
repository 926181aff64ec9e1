"""Labels: what hashkit accepts, and how it normalises them where they enter.

Two kinds of labels, and nothing else:

- **class indices** (single label): ``N`` integers ``>= 0``, stored as int64; two items are
  relevant to each other when their classes are equal. An ``N x 1`` array is the same thing
  (one class per row), never a one-concept multi-hot. Floats are accepted only when every
  value is a whole number (``3.0``); booleans are classes 0 and 1.
- **multi-hot** (multi-label): ``N x C`` with ``C >= 2``, every value exactly 0 or 1 (uint8 or
  bool; other numeric dtypes holding only 0 and 1 are accepted), stored as uint8; item ``i``
  has concept ``j`` when ``labels[i, j] == 1``, and two items are relevant when they share at
  least one concept. A row of zeros has no concept (relevant to nothing).

A multi-hot array in which every row has exactly one 1 is **one-hot**: single-label data in
the multi-hot layout (ImageNet-100's list files). :func:`normalize_labels` turns it into
class indices (column ``j`` is class ``j``): relevance is the same, but the data is then
single-label everywhere, e.g. the protocol's mAP@k uses k = 1,000, not the multi-label 5,000.

Refused, with a :class:`~hashkit.errors.DataError` naming the labels: NaN or infinite values,
fractions (2.5 as a class, 0.5 in a multi-hot row), negative classes, multi-hot values other
than 0 and 1, strings and other non-numbers, arrays of 0 or more than 2 dimensions.
"""

from __future__ import annotations

import numpy as np

from hashkit.errors import DataError, MismatchError

_INT64_MAX = np.iinfo(np.int64).max


def check_labels(labels, what: str = "labels") -> np.ndarray:
    """Validated labels: int64 ``N`` class indices or uint8 ``N x C`` multi-hot.

    An ``N x 1`` array becomes ``N`` class indices; one-hot rows are kept multi-hot (see
    :func:`normalize_labels`). Raises DataError naming ``what`` for anything else.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biuf":
        raise DataError(f"{what} must be numbers, got dtype {labels.dtype}")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim == 1:
        return _class_indices(labels, what)
    if labels.ndim == 2 and labels.shape[1] >= 2:
        return _multi_hot(labels, what)
    raise DataError(f"{what} must be N class indices or N x C multi-hot, got shape {labels.shape}")


def _class_indices(labels: np.ndarray, what: str) -> np.ndarray:
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{what}: class indices must be whole numbers, found {labels[row]} at row {row}"
            )
    if len(labels) and labels.dtype.kind != "b":
        low, high = labels.min(), labels.max()
        if low < 0:
            row = int(np.argmin(labels))
            raise DataError(f"{what}: class indices must be >= 0, found {low} at row {row}")
        if high > _INT64_MAX:
            raise DataError(f"{what}: class index {high} does not fit in int64")
    return labels.astype(np.int64)


def _multi_hot(labels: np.ndarray, what: str) -> np.ndarray:
    bad = (labels != 0) & (labels != 1)
    if bad.any():
        row, col = (int(i[0]) for i in np.nonzero(bad))
        raise DataError(
            f"{what}: multi-hot labels (N x C) must be 0 or 1, found {labels[row, col]} at "
            f"row {row}, column {col} (class indices go in a 1-d array of N)"
        )
    return labels.astype(np.uint8)


def is_one_hot(labels: np.ndarray) -> bool:
    """True for checked multi-hot labels (uint8 ``N x C``, N >= 1) with exactly one 1 per
    row."""
    return labels.ndim == 2 and len(labels) > 0 and bool((labels.sum(axis=1) == 1).all())


def normalize_labels(labels, what: str = "labels") -> np.ndarray:
    """:func:`check_labels`, then one-hot rows as class indices (int64 ``N``)."""
    labels = check_labels(labels, what)
    return labels.argmax(axis=1).astype(np.int64) if is_one_hot(labels) else labels


def normalize_label_pair(
    labels_q, labels_b, what_q: str = "query labels", what_b: str = "database labels"
) -> tuple[np.ndarray, np.ndarray]:
    """Query and database labels checked and brought to one kind.

    Both int64 ``N`` class indices, or both uint8 ``N x C`` multi-hot with the same C. A
    one-hot side becomes class indices when the other side is single-label too (class
    indices, or one-hot itself); beside true multi-hot labels it stays multi-hot (relevance
    is the same either way). Raises MismatchError when the two cannot be compared.
    """
    lq, lb = check_labels(labels_q, what_q), check_labels(labels_b, what_b)
    if lq.ndim == 2 and lb.ndim == 2 and lq.shape[1] != lb.shape[1]:
        raise MismatchError(
            f"multi-hot labels disagree: {what_q} have {lq.shape[1]} classes, "
            f"{what_b} {lb.shape[1]}"
        )
    single_q = lq.ndim == 1 or is_one_hot(lq)
    single_b = lb.ndim == 1 or is_one_hot(lb)
    if single_q and single_b:
        return _as_indices(lq), _as_indices(lb)
    if lq.ndim != lb.ndim:
        raise MismatchError(
            f"{what_q} are {describe_labels(lq)} but {what_b} are {describe_labels(lb)}"
        )
    return lq, lb


def _as_indices(labels: np.ndarray) -> np.ndarray:
    return labels if labels.ndim == 1 else labels.argmax(axis=1).astype(np.int64)


def describe_labels(labels: np.ndarray) -> str:
    """ "class indices (N)" or "multi-hot (N x C)" for checked labels."""
    return "class indices (N)" if labels.ndim == 1 else f"multi-hot (N x {labels.shape[1]})"
