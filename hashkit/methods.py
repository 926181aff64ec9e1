"""Training methods: SDSH and the field's baselines, each a network head and a loss.

Every method trains the same way (hashkit.train: the class-balanced sampler, augmentation,
backbone, Adam with a cosine schedule) and writes the same bundle; only the head at the end of
the network (hashkit.models.HEADS) and the loss differ. Codes are always b = sgn(R h): the
baselines' papers binarise with sgn(h) (R = I, ``rotation`` "none"), and any of them can take
hashkit's learned rotation instead (``--rotation random-search``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import nn

from hashkit.config import METHODS, TrainConfig
from hashkit.errors import HashkitError
from hashkit.losses import (
    CSQLoss,
    DPSHLoss,
    DSHLoss,
    DTSHLoss,
    GreedyHashLoss,
    HashNetLoss,
    OrthoHashLoss,
    make_loss,
)


@dataclass(frozen=True)
class Method:
    """A training method: its network head, its loss and how it binarises by default.

    ``build_loss(bits, num_classes, config)`` returns the loss module; ``rotation`` is the
    default of ``hashkit train --rotation`` for the method; ``paper`` names the paper.
    """

    name: str
    paper: str
    head: str
    rotation: str
    build_loss: Callable[[int, int, TrainConfig], nn.Module]


_REGISTRY = {
    m.name: m
    for m in (
        Method(
            "sdsh",
            "Pidhorskyi et al., Deep Supervised Hashing with Spherical Embedding, ACCV 2018",
            "sphere",
            "random-search",
            lambda bits, classes, c: make_loss(c.loss, c.alpha),
        ),
        Method(
            "dpsh",
            "Li, Wang, Kang, Feature Learning based Deep Supervised Hashing with Pairwise "
            "Labels, IJCAI 2016",
            "linear",
            "none",
            lambda bits, classes, c: DPSHLoss(),
        ),
        Method(
            "dsh",
            "Liu, Wang, Shan, Chen, Deep Supervised Hashing for Fast Image Retrieval, CVPR 2016",
            "linear",
            "none",
            lambda bits, classes, c: DSHLoss(),
        ),
        Method(
            "hashnet",
            "Cao, Long, Wang, Yu, HashNet: Deep Learning to Hash by Continuation, ICCV 2017",
            "linear",
            "none",
            lambda bits, classes, c: HashNetLoss(bits),
        ),
        Method(
            "dtsh",
            "Wang, Shi, Kitani, Deep Supervised Hashing with Triplet Labels, ACCV 2016",
            "linear",
            "none",
            lambda bits, classes, c: DTSHLoss(),
        ),
        Method(
            "greedyhash",
            "Su, Zhang, Huang, Tian, Greedy Hash: Towards Fast Optimization for Accurate Hash "
            "Coding in CNN, NeurIPS 2018",
            "linear",
            "none",
            lambda bits, classes, c: GreedyHashLoss(bits, classes),
        ),
        Method(
            "csq",
            "Yuan et al., Central Similarity Quantization for Efficient Image and Video "
            "Retrieval, CVPR 2020",
            "tanh",
            "none",
            lambda bits, classes, c: CSQLoss(bits, classes, seed=c.seed),
        ),
        Method(
            "orthohash",
            "Hoe et al., One Loss for All: Deep Hashing with a Single Cosine Similarity based "
            "Learning Objective, NeurIPS 2021",
            "batchnorm",
            "none",
            lambda bits, classes, c: OrthoHashLoss(bits, classes, seed=c.seed),
        ),
    )
}


def get_method(name: str) -> Method:
    """The method called ``name``; HashkitError listing the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise HashkitError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None


def count_classes(labels: np.ndarray) -> int:
    """Classes of int64 ``N`` labels (the largest + 1) or of multi-hot ``N x C`` labels (C)."""
    labels = np.asarray(labels)
    return int(labels.shape[1]) if labels.ndim == 2 else int(labels.max()) + 1


def make_method_loss(config: TrainConfig, labels: np.ndarray) -> nn.Module:
    """The loss of ``config.method`` for ``config.bits`` and the classes of ``labels`` (the
    whole dataset's, so class ids index the class-based methods' targets)."""
    return get_method(config.method).build_loss(config.bits, count_classes(labels), config)
