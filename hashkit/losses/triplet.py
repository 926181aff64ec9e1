"""The base of SDSH's losses: every valid triplet of a mini-batch, one formula, the mean.

Every loss is a function l(x) of x = d(q, p) - d(q, n) in [-4, 4] (see hashkit.triplets).
"""

from __future__ import annotations

import torch
from torch import nn

from hashkit.triplets import triplet_differences


class TripletLoss(nn.Module):
    """Base: mines every valid triplet, applies ``self.formula`` and averages.

    A batch without any valid triplet gives a zero loss that still depends on ``h`` (so
    backward() works) and contributes no gradient.
    """

    def formula(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = triplet_differences(h, labels)
        if x.numel() == 0:
            return h.sum() * 0.0
        return self.formula(x, h.shape[1]).mean()
