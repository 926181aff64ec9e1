"""DTSH's triplet likelihood moved onto SDSH's sphere (one of the SDSH paper's baselines)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hashkit.losses.triplet import TripletLoss


class LikelihoodLoss(TripletLoss):
    """DTSH's triplet label likelihood (Wang, Shi, Kitani, ACCV 2016) on the sphere.

    With ``theta = bits/2 (h_q.h_p - h_q.h_n) - bits * alpha`` the loss is
    ``-theta + log(1 + e^theta) = softplus(-theta)``, computed stably. Since
    ``h_q.h_p - h_q.h_n = -x / 2``, theta = -bits * x / 4 - bits * alpha.

    Args:
        alpha: the margin of DTSH, as a fraction of the code length (the authors used 0.5).

    DTSH itself, on unconstrained outputs with its quantisation term, is ``DTSHLoss``.
    """

    def __init__(self, alpha: float = 0.5) -> None:
        super().__init__()
        self.alpha = alpha

    def formula(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        theta = -bits * x / 4.0 - bits * self.alpha
        return F.softplus(-theta)
