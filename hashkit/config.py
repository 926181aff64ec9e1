"""The training recipe as plain data (no torch), shared by the library and the command line.

TrainConfig's defaults are the default recipe of ``hashkit train``; the command line reads its
option defaults from here, so this is the one place to change them. They were chosen on a
validation split carved from the training set (benchmarks/tuning/README.md), never on queries.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

from hashkit.errors import HashkitError

LOSSES = ("spring", "margin", "likelihood")
# hashkit's own method (SDSH, with one of LOSSES) and the field's baselines (hashkit.methods).
METHODS = ("sdsh", "dpsh", "dsh", "hashnet", "dtsh", "greedyhash", "csq", "orthohash")
ROTATIONS = ("random-search", "itq", "none")
BACKBONES = ("small-cnn", "resnet18", "resnet50", "alexnet", "vgg16")
AUGMENTATIONS = ("none", "crop", "crop-flip", "affine")
ROTATION_INITS = ("identity", "itq")

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
    Validation: ``val_images`` training images held out of training, whose mAP against the
    other training images is logged after every epoch (0: none).
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
    val_images: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self) -> None:
        """Raise HashkitError naming the first setting that cannot train (a NaN or negative
        rate, one bit, a batch without a triplet, an unknown choice...), so that a recipe is
        refused before any work rather than after training."""
        _integer("bits", self.bits, 2, "a rotation turns planes of two bits")
        _integer("epochs", self.epochs, 1)
        _integer("seed", self.seed, 0)
        if self.rotation_seed is not None:
            _integer("rotation_seed", self.rotation_seed, 0)
        _integer("rotation_steps", self.rotation_steps, 0)
        _integer("rotation_queries", self.rotation_queries, 1)
        _integer("rotation_database", self.rotation_database, 1)
        _integer("itq_iterations", self.itq_iterations, 1)
        _integer("num_workers", self.num_workers, 0)
        _integer("val_images", self.val_images, 0)
        if self.input_size is not None:
            _integer("input_size", self.input_size, 1)
        _finite("lr", self.lr, 0.0, strict=True)
        _finite("weight_decay", self.weight_decay, 0.0)
        if self.alpha is not None:
            _finite("alpha", self.alpha, 0.0)
        for name, value, choices in (
            ("loss", self.loss, LOSSES),
            ("rotation", self.rotation, ROTATIONS),
            ("rotation_init", self.rotation_init, ROTATION_INITS),
            ("backbone", self.backbone, BACKBONES),
            ("augment", self.augment, AUGMENTATIONS),
        ):
            if value not in choices:
                raise HashkitError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
        from hashkit.sampling import check_batch_shape

        check_batch_shape(self.batch_size, self.per_class)


def _integer(name: str, value, minimum: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        because = f" ({why})" if why else ""
        raise HashkitError(f"{name} must be an integer >= {minimum}{because}, got {value!r}")


def _finite(name: str, value, minimum: float, *, strict: bool = False) -> None:
    """A finite real >= minimum (> minimum when ``strict``)."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(value)
        and (value > minimum if strict else value >= minimum)
    )
    if not ok:
        bound = f"{'>' if strict else '>='} {minimum:g}"
        raise HashkitError(f"{name} must be a finite number {bound}, got {value!r}")
