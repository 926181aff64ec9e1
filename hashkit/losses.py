"""Triplet losses on the unit sphere, each averaged over all valid triplets of a mini-batch.

Every loss is a function l(x) of x = d(q, p) - d(q, n) in [-4, 4] (see hashkit.triplets).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hashkit.config import LOSSES
from hashkit.errors import HashkitError
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


class SpringLoss(TripletLoss):
    """SDSH's spring loss ``l(x) = (sqrt(8) - sqrt(4 - x + eps))^2``.

    Args:
        eps: added under the square root so the gradient stays finite at x = 4.

    Zero only at x = -4 (positive identical, negative antipodal) and 8 at x = 4; like a
    spring's energy, it keeps pushing classes apart over the whole sphere, which is what
    makes the codes balanced without a balance term.
    """

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def formula(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        return (math.sqrt(8.0) - torch.sqrt(4.0 - x + self.eps)) ** 2


class MarginLoss(TripletLoss):
    """The classic triplet hinge ``l(x) = max(0, x + alpha)``.

    Args:
        alpha: the margin, in units of squared distance on the sphere (range of x is [-4, 4]).
            1 is the common choice and hashkit's default; the SDSH authors' own margin
            baseline used 2 (on Fashion-MNIST, alpha 1 scored far better on validation data:
            benchmarks/tuning).
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def formula(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        return F.relu(x + self.alpha)


class LikelihoodLoss(TripletLoss):
    """DTSH's triplet label likelihood (Wang, Shi, Kitani, ACCV 2016) on the sphere.

    With ``theta = bits/2 (h_q.h_p - h_q.h_n) - bits * alpha`` the loss is
    ``-theta + log(1 + e^theta) = softplus(-theta)``, computed stably. Since
    ``h_q.h_p - h_q.h_n = -x / 2``, theta = -bits * x / 4 - bits * alpha.

    Args:
        alpha: the margin of DTSH, as a fraction of the code length (the authors used 0.5).
    """

    def __init__(self, alpha: float = 0.5) -> None:
        super().__init__()
        self.alpha = alpha

    def formula(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        theta = -bits * x / 4.0 - bits * self.alpha
        return F.softplus(-theta)


def make_loss(name: str, alpha: float | None = None) -> TripletLoss:
    """The loss called ``name`` (spring, margin, likelihood) with its default or given alpha."""
    if name == "spring":
        return SpringLoss()
    if name == "margin":
        return MarginLoss(1.0 if alpha is None else alpha)
    if name == "likelihood":
        return LikelihoodLoss(0.5 if alpha is None else alpha)
    raise HashkitError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
