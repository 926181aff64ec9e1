"""The training recipe as plain data (no torch), shared by the library and the command line."""

from __future__ import annotations

from dataclasses import asdict, dataclass

DEFAULT_AUGMENT = "none"


@dataclass
class TrainConfig:
    """The training recipe; stored in the bundle as ``train_config``."""

    bits: int = 32
    loss: str = "spring"
    alpha: float | None = None
    backbone: str = "small-cnn"
    input_size: int | None = None
    pretrained: str | None = None
    epochs: int = 30
    batch_size: int = 100
    per_class: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment: str = DEFAULT_AUGMENT
    seed: int = 0
    device: str = "auto"
    rotation: str = "random-search"
    rotation_init: str = "identity"
    rotation_steps: int = 800
    rotation_queries: int = 2000
    rotation_database: int = 16000
    itq_iterations: int = 50
    num_workers: int = 0

    def to_dict(self) -> dict:
        return asdict(self)
