"""CSQ: Yuan, Wang, Zhang, Tay, Jie, Feng, Yan, "Central Similarity Quantization for
Efficient Image and Video Retrieval", CVPR 2020."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hashkit.losses.centres import hash_centres


class CSQLoss(nn.Module):
    """CSQ: pull each output towards its class's hash centre, plus a quantisation term.

    For outputs ``h = tanh(f)`` (the "tanh" head) and the hash centre c of each item's class:

        L = mean over items and bits of BCE((h + 1)/2, (c + 1)/2)
            + lambda * mean over items and bits of log cosh(|h| - 1)

    Centres: rows of a Hadamard matrix and its negation where bits is a power of two and
    there are at most 2 * bits classes, Bernoulli(0.5) codes otherwise (``hash_centres``,
    seeded). A multi-hot item's centre is the sign of the sum of its labels' centres, ties
    broken by one fixed random code (the authors' rule). Codes are sgn(h).

    Args:
        bits, num_classes: the centres' shape.
        lambda_: weight of the quantisation term (1e-4, the value of the widely used
            DeepHash-pytorch re-implementation; the authors' released code weights a squared
            version of this term by 0.05).
        centres: "auto", "hadamard" or "bernoulli" (see hash_centres).
        seed: seed of Bernoulli centres and of the tie-breaking code.
    """

    def __init__(
        self,
        bits: int,
        num_classes: int,
        lambda_: float = 1e-4,
        centres: str = "auto",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.lambda_ = lambda_
        self.register_buffer(
            "centres", torch.as_tensor(hash_centres(num_classes, bits, centres, seed))
        )
        tie_break = hash_centres(1, bits, "bernoulli", seed + 1)[0]
        self.register_buffer("tie_break", torch.as_tensor(tie_break))

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """The ``B x bits`` centres (+-1) of labels int64 ``B`` or multi-hot ``B x C``."""
        if labels.ndim == 1:
            return self.centres[labels]
        summed = labels.to(self.centres.dtype) @ self.centres
        return torch.where(summed == 0, self.tie_break, torch.sign(summed))

    def forward(self, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of ``B x bits`` outputs ``h`` in (-1, 1) with labels int64 ``B`` or multi-hot
        ``B x C``."""
        target = (self.targets(labels).to(h.dtype) + 1.0) / 2.0
        central = F.binary_cross_entropy(((h + 1.0) / 2.0).clamp(0.0, 1.0), target)
        quantisation = torch.log(torch.cosh(h.abs() - 1.0)).mean()
        return central + self.lambda_ * quantisation
