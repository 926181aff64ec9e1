"""Mini-batch sampling for triplet training: every batch must hold several items per class,
or it has no valid triplet."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class ClassBalancedBatchSampler:
    """Batches of ``batch_size`` dataset positions, ``per_class`` items from each of
    ``batch_size // per_class`` classes (single labels), without replacement within an epoch.

    Each epoch cuts every class into shuffled chunks of ``per_class`` and deals the chunks in
    random order, so every item is seen about once per epoch. Multi-hot labels fall back to
    uniform shuffling: with several labels per item, large random batches already contain
    positives for most items.

    Args:
        labels: int64 N or uint8 N x C, for the positions this sampler yields (0..N-1).
        batch_size: items per batch.
        per_class: items of one class in a batch (>= 2 for any positive pair).
        seed: the sampler draws a new order each epoch from this seed.
    """

    def __init__(
        self, labels: np.ndarray, batch_size: int, per_class: int = 10, seed: int = 0
    ) -> None:
        self.labels = np.asarray(labels)
        self.batch_size = batch_size
        self.per_class = max(2, min(per_class, batch_size))
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return max(1, len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.labels.ndim == 2:
            order = self.rng.permutation(len(self.labels))
            for b in range(len(self)):
                yield order[b * self.batch_size : (b + 1) * self.batch_size]
            return
        chunks = []
        for c in np.unique(self.labels):
            members = self.rng.permutation(np.flatnonzero(self.labels == c))
            chunks += [
                members[i : i + self.per_class] for i in range(0, len(members) - 1, self.per_class)
            ]
        order = self.rng.permutation(len(chunks))
        batch: list[np.ndarray] = []
        size = 0
        emitted = 0
        for i in order:
            batch.append(chunks[i])
            size += len(chunks[i])
            if size >= self.batch_size:
                yield np.concatenate(batch)[: self.batch_size]
                emitted += 1
                if emitted == len(self):
                    return
                batch, size = [], 0
