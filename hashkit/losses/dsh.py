"""DSH: Liu, Wang, Shan, Chen, "Deep Supervised Hashing for Fast Image Retrieval", CVPR 2016."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hashkit.pairs import pair_masks


class DSHLoss(nn.Module):
    """DSH's contrastive loss on relaxed codes with its regulariser towards {-1, +1}.

    For the network's raw outputs b (the "linear" head) and every unique pair i < j of the
    mini-batch (the paper generates its pairs online, from all pairs of each mini-batch),
    with ``d = ||b_i - b_j||^2`` and y = 0 for a similar pair, 1 for a dissimilar one:

        L = mean over pairs of [ (1 - y)/2 d + y/2 max(m - d, 0)
                                 + alpha (|| |b_i| - 1 ||_1 + || |b_j| - 1 ||_1) ]

    Codes are sgn(b).

    Args:
        margin: m; None for the paper's 2 * bits.
        alpha: weight of the regulariser (the paper's 0.01).
    """

    def __init__(self, margin: float | None = None, alpha: float = 0.01) -> None:
        super().__init__()
        self.margin = margin
        self.alpha = alpha

    def forward(self, b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of ``B x bits`` outputs ``b`` with labels int64 ``B`` or multi-hot ``B x C``."""
        similar, pairs = pair_masks(labels)
        unique = torch.triu(pairs, diagonal=1)
        if not unique.any():
            return b.sum() * 0.0
        m = 2.0 * b.shape[1] if self.margin is None else self.margin
        d = (b[:, None, :] - b[None, :, :]).pow(2).sum(dim=2)
        s = similar.to(b.dtype)
        contrastive = 0.5 * s * d + 0.5 * (1.0 - s) * F.relu(m - d)
        away = (b.abs() - 1.0).abs().sum(dim=1)
        per_pair = contrastive + self.alpha * (away[:, None] + away[None, :])
        return per_pair[unique].mean()
