"""DTSH: Wang, Shi, Kitani, "Deep Supervised Hashing with Triplet Labels", ACCV 2016."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hashkit.losses.quantisation import squared_quantisation_error
from hashkit.triplets import triplet_mask


class DTSHLoss(nn.Module):
    """DTSH's negative log-likelihood of the triplet labels plus its quantisation term.

    For the network's raw outputs u (the "linear" head) and every valid triplet (q, p, n) of
    the mini-batch, ``theta_qpn = u_q.u_p / 2 - u_q.u_n / 2``; the likelihood of the triplet
    is ``sigmoid(theta_qpn - margin)``, so

        L = mean over triplets of [-(theta - margin) + log(1 + e^(theta - margin))]
            + lambda * mean over items and bits of (b_i - u_i)^2,     b_i = sgn(u_i)

    (the first term is ``softplus(margin - theta)``, computed stably). Codes are sgn(u).
    ``LikelihoodLoss`` is the same likelihood moved onto SDSH's sphere.

    Args:
        margin_fraction: the margin as a fraction of the code length (0.5: margin bits / 2,
            the setting SDSH's authors used for this baseline).
        lambda_: weight of the quantisation term, averaged per item and per bit as for
            DPSH (1, the value public re-implementations use with this normalisation).
    """

    def __init__(self, margin_fraction: float = 0.5, lambda_: float = 1.0) -> None:
        super().__init__()
        self.margin_fraction = margin_fraction
        self.lambda_ = lambda_

    def forward(self, u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of ``B x bits`` outputs ``u`` with labels int64 ``B`` or multi-hot ``B x C``."""
        inner = u @ u.T
        theta = 0.5 * (inner[:, :, None] - inner[:, None, :])
        x = theta[triplet_mask(labels)] - self.margin_fraction * u.shape[1]
        likelihood = F.softplus(-x).mean() if x.numel() else u.sum() * 0.0
        return likelihood + self.lambda_ * squared_quantisation_error(u)
