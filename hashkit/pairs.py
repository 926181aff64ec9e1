"""Pair mining over a mini-batch: every pair (i, j), i != j, separate from the loss formulas.

Similar means the same class for int labels (B,) and sharing at least one label for multi-hot
labels (B x C), as for triplets (hashkit.triplets).
"""

from __future__ import annotations

import torch

from hashkit.triplets import similarity_matrix


def pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bool ``B x B`` masks ``(similar, pairs)``: ``pairs`` is True off the diagonal (every
    ordered pair i != j), ``similar`` where such a pair shares a class or a label."""
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pairs = ~eye
    return similarity_matrix(labels) & pairs, pairs
