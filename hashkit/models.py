"""Hashing networks: a backbone followed by a linear layer to ``bits`` outputs, L2-normalised.

The output h = f(x) / ||f(x)|| lies on the unit hypersphere (SDSH's relaxation); codes are
b = sgn(R h). Backbones: ``small-cnn`` (3 conv blocks + 2 linear layers, for 28x28 or 32x32
inputs, trained from scratch) and torchvision's ``resnet18``, ``resnet50``, ``alexnet`` and
``vgg16`` for larger images, optionally initialised from a local ImageNet weight file.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hashkit.config import BACKBONES
from hashkit.errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class NetworkConfig:
    """Everything needed to rebuild a network and feed it: stored in the model bundle."""

    bits: int
    backbone: str = "small-cnn"
    input_size: int = 28
    channels: int = 1
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> NetworkConfig:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class SmallCNN(nn.Module):
    """Three conv blocks (conv-BN-ReLU-maxpool) and two linear layers, for small images."""

    def __init__(
        self, bits: int, channels: int = 1, input_size: int = 28, width: int = 32, hidden: int = 256
    ) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(
            block(channels, width), block(width, 2 * width), block(2 * width, 4 * width)
        )
        side = input_size // 2 // 2 // 2
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(4 * width * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(hidden, bits),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _torchvision_backbone(name: str, bits: int) -> nn.Module:
    import torchvision.models as tvm

    net = getattr(tvm, name)(weights=None)
    if name.startswith("resnet"):
        net.fc = nn.Linear(net.fc.in_features, bits)
    else:  # alexnet, vgg16: replace the last classifier layer
        last = net.classifier[-1]
        net.classifier[-1] = nn.Linear(last.in_features, bits)
    return net


class HashNet(nn.Module):
    """A backbone whose ``bits`` outputs are projected onto the unit sphere."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        if config.backbone == "small-cnn":
            if config.input_size < 8:
                raise ModelError(f"small-cnn needs inputs of at least 8x8, got {config.input_size}")
            self.net = SmallCNN(config.bits, config.channels, config.input_size)
        elif config.backbone in BACKBONES:
            if config.channels != 3:
                raise ModelError(f"{config.backbone} needs 3-channel input")
            self.net = _torchvision_backbone(config.backbone, config.bits)
        else:
            raise ModelError(
                f"unknown backbone {config.backbone!r}; choose one of {', '.join(BACKBONES)}"
            )

        # Channels-last convolutions run 1.4x (training) to 2.7x (inference) faster on CPU.
        self.net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float32 ``B x C x S x S`` images to ``B x bits`` unit vectors."""
        x = x.contiguous(memory_format=torch.channels_last)
        return F.normalize(self.net(x), dim=1)


def load_pretrained(net: HashNet, path: str | os.PathLike | None) -> list[str]:
    """Load ImageNet weights for a torchvision backbone from a local file.

    ``path`` is a .pth state_dict file, or None to look in the torchvision cache
    ($TORCH_HOME/hub/checkpoints). The final layer is skipped (its shape differs). Returns the
    names of the parameters that were not loaded. Nothing is downloaded.
    """
    name = net.config.backbone
    if name == "small-cnn":
        raise ModelError("small-cnn has no pretrained weights; drop --pretrained")
    if path is None:
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        found = sorted(hub.glob(f"{name}-*.pth")) if hub.is_dir() else []
        if not found:
            raise ModelError(
                f"no ImageNet weights for {name} in {hub}: download {name}'s torchvision weight "
                f"file on a machine with internet and copy it there, or pass --pretrained FILE"
            )
        path = found[0]
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"pretrained weight file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input error
        raise ModelError(f"cannot read pretrained weights {path}: {exc}") from None
    own = net.net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ModelError(f"{path} holds no weights that fit a {name} backbone")
    net.net.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))
