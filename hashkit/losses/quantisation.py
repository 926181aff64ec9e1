"""The binary codes b = sgn(u) that the baselines' quantisation terms pull their outputs to.

sgn(0) is -1 here, as in hashkit.codes (a bit is 1 only for a positive value), so a loss and
the codes it is judged by never disagree about a zero.
"""

from __future__ import annotations

import torch


def signs(u: torch.Tensor) -> torch.Tensor:
    """``sgn(u)`` in {-1, +1} (0 -> -1), same shape and dtype, without gradient."""
    return torch.where(u > 0, 1.0, -1.0).to(u.dtype).detach()


def squared_quantisation_error(u: torch.Tensor) -> torch.Tensor:
    """``mean over items and bits of (sgn(u) - u)^2`` for ``B x bits`` outputs ``u``: the
    ||b_i - u_i||^2 term of DPSH and DTSH, averaged over the batch and divided by the bits."""
    return (signs(u) - u).pow(2).mean()
