"""Mini-batch sampling for triplet training: every batch must hold several items per class,
or it has no valid triplet."""

from __future__ import annotations

import heapq
from collections.abc import Iterator

import numpy as np

from hashkit.errors import DataError, HashkitError


def sampling_groups(labels: np.ndarray) -> np.ndarray:
    """int64 N: the class each item is sampled under, negative for items never sampled.

    Single labels (int64 N) are their own group; a negative label (unlabelled) is left out.
    A multi-hot item (uint8 N x C) joins the group of its least frequent label (ties: the
    lowest class index), so that rare labels still fill their chunks; an item with no label
    is left out, since nothing is similar to it.
    """
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels.astype(np.int64)
    hot = labels > 0
    frequency = hot.sum(axis=0)
    # frequency where the item has the label, else a value above any real frequency
    rank = np.where(hot, frequency[None, :], len(labels) + 1)
    groups = rank.argmin(axis=1).astype(np.int64)
    groups[~hot.any(axis=1)] = -1
    return groups


def _max_batches(chunks: np.ndarray, classes_per_batch: int) -> int:
    """The most batches of ``classes_per_batch`` distinct classes that ``chunks`` (int N_classes:
    chunks of each class) can fill: the largest B with sum(min(chunks, B)) >= B k."""
    lo, hi = 0, int(chunks.sum()) // classes_per_batch
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if np.minimum(chunks, mid).sum() >= mid * classes_per_batch:
            lo = mid
        else:
            hi = mid - 1
    return lo


class ClassBalancedBatchSampler:
    """Batches of exactly ``batch_size`` dataset positions: ``per_class`` items from each of
    ``batch_size // per_class`` distinct classes.

    Each epoch shuffles every class and cuts it into chunks of ``per_class``; the last chunk of
    a class is filled up with other items of that class (repeats only for a class smaller than
    ``per_class``), so every item is seen at least once per epoch. Chunks are dealt into
    batches of distinct classes, the class with the most chunks left first (ties at random),
    which fills as many batches as the chunks allow; the batch order is then shuffled. When one
    class holds more chunks than there are batches, its surplus (other items each epoch) waits.
    Classes with a single item are left out: they have no positive pair.

    Multi-hot labels: each item is sampled under its least frequent label (``sampling_groups``),
    so each batch holds ``per_class`` items that share each of its classes; items with no label
    are left out.

    The order of an epoch depends only on ``(seed, epoch)``: ``epoch_batches(e)`` is the same
    list on every call and every process, and ``state_dict()`` (the next epoch) is all a resumed
    run needs. Iterating yields the batches of the next epoch and advances it.

    Args:
        labels: int64 N or uint8 N x C, for the positions this sampler yields (0..N-1).
        batch_size: items per batch, a multiple of ``per_class``.
        per_class: items of one class in a batch (>= 2 for any positive pair).
        seed: the seed of every epoch's order (>= 0).
    """

    def __init__(
        self, labels: np.ndarray, batch_size: int, per_class: int = 10, seed: int = 0
    ) -> None:
        check_batch_shape(batch_size, per_class)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise HashkitError(f"the sampler's seed must be an integer >= 0, got {seed!r}")
        self.batch_size = int(batch_size)
        self.per_class = int(per_class)
        self.classes_per_batch = self.batch_size // self.per_class
        self.seed = int(seed)
        self.epoch = 0
        groups = sampling_groups(labels)
        kept = np.flatnonzero(groups >= 0)
        order = kept[np.argsort(groups[kept], kind="stable")]
        _, counts = np.unique(groups[order], return_counts=True)
        members = np.split(order, np.cumsum(counts)[:-1]) if len(order) else []
        self._members = [m for m in members if len(m) >= 2]
        if len(self._members) < self.classes_per_batch:
            raise DataError(
                f"a batch of {self.batch_size} with {self.per_class} images per class needs "
                f"{self.classes_per_batch} classes of at least 2 images, but the training set "
                f"has {len(self._members)}; lower the batch size or raise the images per class"
            )
        self._chunks = np.array([-(-len(m) // self.per_class) for m in self._members])
        self._batches = _max_batches(self._chunks, self.classes_per_batch)

    def __len__(self) -> int:
        return self._batches

    def __iter__(self) -> Iterator[np.ndarray]:
        batches = self.epoch_batches(self.epoch)
        self.epoch += 1
        return iter(batches)

    def state_dict(self) -> dict:
        """What a resumed run needs: ``{"seed", "epoch"}`` (the next epoch to yield)."""
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        if int(state["seed"]) != self.seed:
            raise HashkitError(
                f"sampler state was saved with seed {state['seed']}, this sampler has {self.seed}"
            )
        self.epoch = int(state["epoch"])

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The ``len(self)`` batches (int64 ``batch_size`` positions each) of epoch ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch])
        chunks = [self._class_chunks(members, rng) for members in self._members]
        # max-heap on chunks left; ties broken by a fresh random key at every push, so that
        # classes of equal size meet different partners from batch to batch
        ties = iter(rng.random(int(self._chunks.sum()) + len(chunks)))
        heap = [(-len(c), next(ties), i) for i, c in enumerate(chunks)]
        heapq.heapify(heap)
        batches = []
        for _ in range(self._batches):
            chosen = [heapq.heappop(heap) for _ in range(self.classes_per_batch)]
            batches.append(np.concatenate([chunks[i][-left - 1] for left, _, i in chosen]))
            for left, _, i in chosen:
                if left < -1:
                    heapq.heappush(heap, (left + 1, next(ties), i))
        return [batches[i] for i in rng.permutation(len(batches))]

    def _class_chunks(self, members: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """``members`` shuffled and cut into chunks of exactly ``per_class``, the last one
        filled up from the class's other items (with repeats only if the class is smaller)."""
        order = rng.permutation(members)
        short = -len(order) % self.per_class
        if short:
            remainder = len(order) % self.per_class
            pool = order[:-remainder] if len(order) > self.per_class else order
            order = np.concatenate([order, rng.choice(pool, short, replace=len(pool) < short)])
        return list(order.reshape(-1, self.per_class))


def check_batch_shape(batch_size: int, per_class: int) -> None:
    """Refuse a batch that cannot hold a triplet: ``per_class`` >= 2 images of a class (a
    positive pair), ``batch_size`` a multiple of it, with at least two classes (a negative)."""
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 2:
        raise HashkitError(
            "images per class in a batch must be an integer >= 2 (a positive pair), "
            f"got {per_class!r}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise HashkitError(f"the batch size must be an integer, got {batch_size!r}")
    if batch_size % per_class or batch_size < 2 * per_class:
        raise HashkitError(
            f"the batch size ({batch_size}) must be a multiple of the images per class "
            f"({per_class}) holding at least two classes, e.g. "
            f"{per_class * max(2, batch_size // per_class)}"
        )
