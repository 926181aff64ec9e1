"""SDSH's own loss on the sphere (Pidhorskyi et al., ACCV 2018)."""

from __future__ import annotations

import math

import torch

from hashkit.losses.triplet import TripletLoss


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
