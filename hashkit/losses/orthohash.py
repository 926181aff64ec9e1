"""OrthoHash: Hoe, Ng, Zhang, Chan, Song, Xiang, "One Loss for All: Deep Hashing with a
Single Cosine Similarity based Learning Objective", NeurIPS 2021."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hashkit.losses.centres import hash_centres


class OrthoHashLoss(nn.Module):
    """OrthoHash: a cosine-margin cross-entropy against fixed binary class codes.

    For outputs v (the "batchnorm" head: the paper's batch normalisation of the hash layer,
    which balances the bits) and the codebook c_1..c_C in {-1, +1}^bits:

        logit_k = s (cos(v, c_k) - m [k = y]),     L = cross-entropy(logits, y)

    Maximising cos(v, c_y) both separates the classes and pulls v towards a binary code, so
    there is no separate quantisation term (the authors' default weight for one is 0).
    Multi-hot labels: the margin on every positive class and the target y / |y| (the paper's
    label smoothing). Codes are sgn(v).

    Args:
        bits, num_classes: the codebook's shape.
        scale: s (the authors' 8).
        margin: m (the authors' default 0.2).
        codebook: "bernoulli" (the authors' default), "hadamard" or "auto" (see hash_centres).
        seed: seed of a Bernoulli codebook.
    """

    def __init__(
        self,
        bits: int,
        num_classes: int,
        scale: float = 8.0,
        margin: float = 0.2,
        codebook: str = "bernoulli",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.margin = margin
        self.register_buffer(
            "codebook", torch.as_tensor(hash_centres(num_classes, bits, codebook, seed))
        )

    def logits(self, v: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``B x C`` margin logits ``s (cos(v, c_k) - m [k is a label of the item])``."""
        cos = F.normalize(v, dim=1) @ F.normalize(self.codebook.to(v.dtype), dim=1).T
        positive = _multi_hot(labels, len(self.codebook)).to(v.dtype)
        return self.scale * (cos - self.margin * positive)

    def forward(self, v: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of ``B x bits`` outputs ``v`` with labels int64 ``B`` or multi-hot ``B x C``."""
        logits = self.logits(v, labels)
        if labels.ndim == 1:
            return F.cross_entropy(logits, labels)
        target = labels.to(v.dtype)
        target = target / target.sum(dim=1, keepdim=True).clamp(min=1.0)
        return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _multi_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels, num_classes) if labels.ndim == 1 else labels
