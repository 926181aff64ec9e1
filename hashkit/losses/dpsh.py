"""DPSH: Li, Wang, Kang, "Feature Learning based Deep Supervised Hashing with Pairwise
Labels", IJCAI 2016."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hashkit.losses.quantisation import squared_quantisation_error
from hashkit.pairs import pair_masks


class DPSHLoss(nn.Module):
    """DPSH's negative log-likelihood of the pairwise labels plus its quantisation term.

    For the network's raw outputs u (the "linear" head) and ``theta_ij = u_i.u_j / 2``, the
    likelihood of a pair's label is ``p(s_ij = 1) = sigmoid(theta_ij)``, so

        L = mean over pairs i != j of [log(1 + e^theta_ij) - s_ij theta_ij]
            + eta * mean over items and bits of (b_i - u_i)^2,      b_i = sgn(u_i)

    (the first term is ``softplus(theta) - s theta``, computed stably). Codes are sgn(u).

    Args:
        eta: weight of the quantisation term. The paper sums its first term over the n^2
            training pairs and the second over the n images, with eta = 10; averaged per pair
            and per bit as here that weight becomes 10 * bits / n (0.064 at 32 bits for the
            5,000 training images of the reduced protocol). hashkit uses 0.1, the value public
            re-implementations use with this normalisation.
    """

    def __init__(self, eta: float = 0.1) -> None:
        super().__init__()
        self.eta = eta

    def forward(self, u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of ``B x bits`` outputs ``u`` with labels int64 ``B`` or multi-hot ``B x C``."""
        similar, pairs = pair_masks(labels)
        theta = 0.5 * (u @ u.T)
        nll = F.softplus(theta) - similar.to(u.dtype) * theta
        likelihood = nll[pairs].mean() if pairs.any() else u.sum() * 0.0
        return likelihood + self.eta * squared_quantisation_error(u)
