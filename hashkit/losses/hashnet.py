"""HashNet: Cao, Long, Wang, Yu, "HashNet: Deep Learning to Hash by Continuation", ICCV 2017.

(The method, not hashkit.models.HashNet, the network class every method trains.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hashkit.pairs import pair_masks


class HashNetLoss(nn.Module):
    """HashNet's weighted pairwise likelihood on ``h = tanh(beta z)``, with beta growing.

    For the network's raw outputs z (the "linear" head), ``h = tanh(beta z)`` and, over every
    pair i != j of the mini-batch, ``theta_ij = a h_i.h_j``:

        L = (1/|S|) sum_ij w_ij [log(1 + e^theta_ij) - s_ij theta_ij]

    with the weights that balance similar and dissimilar pairs, ``w_ij = c_ij |S| / |S_1|``
    for the |S_1| similar pairs and ``|S| / |S_0|`` for the |S_0| dissimilar ones, where
    ``c_ij = 1`` for single labels and the Jaccard overlap of the label sets for multi-hot
    labels. Continuation: beta starts at 1 and, every ``step_size`` training iterations t,
    becomes ``(1 + gamma t)^power`` (the authors' schedule), so tanh(beta z) tends to sgn(z);
    the codes are sgn(z) = sgn(tanh(beta z)) for every beta.

    Args:
        bits: code length, for the default ``a``.
        a: the sigmoid's scale; None for the authors' 10 / bits.
        step_size, gamma, power: the continuation schedule (200, 0.005, 0.5).

    Each call in training mode with gradients enabled counts one iteration (``iteration``).
    """

    def __init__(
        self,
        bits: int,
        a: float | None = None,
        step_size: int = 200,
        gamma: float = 0.005,
        power: float = 0.5,
    ) -> None:
        super().__init__()
        self.a = 10.0 / bits if a is None else a
        self.step_size = step_size
        self.gamma = gamma
        self.power = power
        self.iteration = 0

    def get_extra_state(self) -> dict:
        """The iteration count, so that a checkpoint resumes the continuation schedule."""
        return {"iteration": self.iteration}

    def set_extra_state(self, state: dict) -> None:
        self.iteration = int(state["iteration"])

    @property
    def beta(self) -> float:
        """The scale of tanh(beta z) at the current iteration."""
        stage_start = self.iteration // self.step_size * self.step_size
        return (1.0 + self.gamma * stage_start) ** self.power

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of ``B x bits`` outputs ``z`` with labels int64 ``B`` or multi-hot ``B x C``."""
        h = torch.tanh(self.beta * z)
        if self.training and torch.is_grad_enabled():
            self.iteration += 1
        similar, pairs = pair_masks(labels)
        n_similar = int(similar.sum())
        n_dissimilar = int(pairs.sum()) - n_similar
        if n_similar + n_dissimilar == 0:
            return z.sum() * 0.0
        theta = self.a * (h @ h.T)
        nll = F.softplus(theta) - similar.to(z.dtype) * theta
        n_pairs = n_similar + n_dissimilar
        overlap = _label_overlap(labels).to(z.dtype)
        weights = torch.where(
            similar,
            overlap * n_pairs / max(n_similar, 1),
            torch.full_like(theta, n_pairs / max(n_dissimilar, 1)),
        )
        return (weights * nll)[pairs].sum() / n_pairs


def _label_overlap(labels: torch.Tensor) -> torch.Tensor:
    """``B x B`` c_ij: 1 for single labels; |y_i & y_j| / |y_i | y_j| for multi-hot labels."""
    if labels.ndim == 1:
        return torch.ones(len(labels), len(labels), device=labels.device)
    y = labels.float()
    both = y @ y.T
    either = y.sum(1)[:, None] + y.sum(1)[None, :] - both
    return both / either.clamp(min=1.0)
