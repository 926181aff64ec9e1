"""The training recipe as plain data (no torch), shared by the library and the command line.

TrainConfig's defaults are the default recipe of ``hashkit train``; the command line reads its
option defaults from here, so this is the one place to change them. They were chosen on a
validation split carved from the training set (benchmarks/tuning/README.md), never on queries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

LOSSES = ("spring", "margin", "likelihood")
# hashkit's own method (SDSH, with one of LOSSES) and the field's baselines (hashkit.methods).
METHODS = ("sdsh", "dpsh", "dsh", "hashnet", "dtsh", "greedyhash", "csq", "orthohash")
ROTATIONS = ("random-search", "itq", "none")
BACKBONES = ("small-cnn", "resnet18", "resnet50", "alexnet", "vgg16")
AUGMENTATIONS = ("none", "crop", "crop-flip", "affine")

DEFAULT_AUGMENT = "crop"


@dataclass
class TrainConfig:
    """The training recipe; stored in the bundle as ``train_config``.

    Network and loss: ``bits``, ``loss`` (spring, margin, likelihood), ``alpha`` (margin of the
    margin or likelihood loss; None for the loss's default), ``backbone``, ``input_size``
    (None: the images' own, or 224 for torchvision backbones), ``pretrained`` (a .pth file,
    "cache" or None).
    Method: ``method``, one of METHODS: "sdsh" trains with ``loss``; a baseline brings its own
    network head and loss and ignores ``loss`` and ``alpha`` (hashkit.methods).
    Optimisation: ``epochs``, ``batch_size`` with ``per_class`` images of each class in a
    batch, Adam ``lr`` (cosine-annealed to 0) and ``weight_decay``, ``augment`` (one of
    AUGMENTATIONS), ``seed``, ``device``, ``num_workers``.
    Quantisation: ``rotation`` (random-search, itq, none), ``rotation_init`` (identity or itq:
    where the search starts), ``rotation_steps`` (T), ``rotation_queries`` and
    ``rotation_database`` (training images the search scores), ``rotation_seed`` (None: the
    training seed), ``itq_iterations``.
    """

    bits: int = 32
    method: str = "sdsh"
    loss: str = "margin"
    alpha: float | None = None
    backbone: str = "small-cnn"
    input_size: int | None = None
    pretrained: str | None = None
    epochs: int = 100
    batch_size: int = 100
    per_class: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment: str = DEFAULT_AUGMENT
    seed: int = 0
    device: str = "auto"
    rotation: str = "random-search"
    rotation_init: str = "itq"
    rotation_steps: int = 800
    rotation_queries: int = 2000
    rotation_database: int = 16000
    rotation_seed: int | None = None
    itq_iterations: int = 50
    num_workers: int = 0

    def to_dict(self) -> dict:
        return asdict(self)
