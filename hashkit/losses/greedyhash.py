"""GreedyHash: Su, Zhang, Huang, Tian, "Greedy Hash: Towards Fast Optimization for Accurate
Hash Coding in CNN", NeurIPS 2018."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SignStraightThrough(torch.autograd.Function):
    """b = sgn(h) forward (0 -> -1, as hashkit's codes), dL/dh = dL/db backward: GreedyHash's
    hash layer, which optimises the discrete codes greedily."""

    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:
        return torch.where(h > 0, 1.0, -1.0).to(h.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class GreedyHashLoss(nn.Module):
    """GreedyHash, supervised: a classifier on the binary codes themselves, plus its penalty.

    For the network's raw outputs h (the "linear" head) and ``b = sgn(h)`` passed forward
    with the gradient going straight through to h:

        L = cross-entropy(W b, y) + alpha * mean over items and bits of | |h| - 1 |^3

    (the penalty is the paper's ||h - sgn(h)||_3^3, averaged). W is a linear classifier
    without bias, trained with the network and not kept in the bundle. Multi-hot labels use a
    binary cross-entropy per label instead (hashkit's extension: the paper is single-label).
    Codes are sgn(h).

    Args:
        bits: code length; num_classes: the classifier's outputs.
        alpha: weight of the penalty (the authors' 0.1).
    """

    def __init__(self, bits: int, num_classes: int, alpha: float = 0.1) -> None:
        super().__init__()
        self.classifier = nn.Linear(bits, num_classes, bias=False)
        self.alpha = alpha

    def forward(self, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of ``B x bits`` outputs ``h`` with labels int64 ``B`` or multi-hot ``B x C``."""
        logits = self.classifier(SignStraightThrough.apply(h))
        if labels.ndim == 1:
            classification = F.cross_entropy(logits, labels)
        else:
            classification = F.binary_cross_entropy_with_logits(logits, labels.to(h.dtype))
        penalty = (h.abs() - 1.0).abs().pow(3).mean()
        return classification + self.alpha * penalty
