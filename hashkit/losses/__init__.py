"""Losses, one per file: SDSH's triplet losses on the sphere (spring, margin, likelihood) and
the field's baselines (DPSH, DSH, HashNet, DTSH, GreedyHash, CSQ, OrthoHash).

Every loss is a small ``nn.Module`` called as ``loss(h, labels)`` with the network's ``B x
bits`` outputs and int64 ``B`` or multi-hot ``B x C`` labels. Which network head and loss a
training method uses is in hashkit.methods; the formulas are in docs/baselines.md.
"""

from __future__ import annotations

from hashkit.config import LOSSES
from hashkit.errors import HashkitError
from hashkit.losses.csq import CSQLoss
from hashkit.losses.dpsh import DPSHLoss
from hashkit.losses.dsh import DSHLoss
from hashkit.losses.dtsh import DTSHLoss
from hashkit.losses.greedyhash import GreedyHashLoss, SignStraightThrough
from hashkit.losses.hashnet import HashNetLoss
from hashkit.losses.likelihood import LikelihoodLoss
from hashkit.losses.margin import MarginLoss
from hashkit.losses.orthohash import OrthoHashLoss
from hashkit.losses.spring import SpringLoss
from hashkit.losses.triplet import TripletLoss

__all__ = [
    "CSQLoss",
    "DPSHLoss",
    "DSHLoss",
    "DTSHLoss",
    "GreedyHashLoss",
    "HashNetLoss",
    "LikelihoodLoss",
    "MarginLoss",
    "OrthoHashLoss",
    "SignStraightThrough",
    "SpringLoss",
    "TripletLoss",
    "make_loss",
]


def make_loss(name: str, alpha: float | None = None) -> TripletLoss:
    """SDSH's loss called ``name`` (spring, margin, likelihood) with its default or given
    alpha."""
    if name == "spring":
        return SpringLoss()
    if name == "margin":
        return MarginLoss(1.0 if alpha is None else alpha)
    if name == "likelihood":
        return LikelihoodLoss(0.5 if alpha is None else alpha)
    raise HashkitError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
