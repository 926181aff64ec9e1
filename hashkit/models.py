"""Hashing networks: a backbone followed by a linear layer to ``bits`` outputs and a head.

With SDSH's head, "sphere", the output h = f(x) / ||f(x)|| lies on the unit hypersphere (SDSH's
relaxation); the baselines' heads (see HEADS) give the raw outputs, their tanh, or their batch
normalisation. Whatever the head, codes are b = sgn(R h).

Backbones: ``small-cnn`` (3 conv blocks + 2 linear layers, for 28x28 or 32x32 inputs, trained
from scratch) and torchvision's ``resnet18``, ``resnet50``, ``alexnet`` and
``vgg16`` for larger images, optionally initialised from a local ImageNet weight file.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hashkit.config import BACKBONES
from hashkit.errors import ModelError
from hashkit.torch_load import load_weights_only

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# What the network puts after its last linear layer f(x): "sphere" f / ||f|| (SDSH), "linear"
# f itself (DPSH, DSH, DTSH, GreedyHash; HashNet applies its own tanh(beta f) in its loss),
# "tanh" tanh(f) (CSQ), "batchnorm" BatchNorm1d(f) (OrthoHash). sgn of the output is sgn(f) for
# all but "batchnorm", whose running statistics are part of the network's weights.
HEADS = ("sphere", "linear", "tanh", "batchnorm")


@dataclass
class NetworkConfig:
    """Everything needed to rebuild a network and feed it: stored in the model bundle."""

    bits: int
    backbone: str = "small-cnn"
    input_size: int = 28
    channels: int = 1
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    head: str = "sphere"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> NetworkConfig:
        """The config a bundle stores (unknown keys ignored); ModelError if a value has the
        wrong type or range."""
        if not isinstance(d, dict) or "bits" not in d:
            raise ModelError("the network config is not a dict with 'bits'")
        config = cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        config.check()
        return config

    def check(self) -> None:
        """ModelError unless every field has a usable type and value."""

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not is_int(self.bits) or self.bits < 1:
            raise ModelError(f"bits must be a positive integer, got {self.bits!r}")
        if self.backbone not in BACKBONES:
            raise ModelError(
                f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}"
            )
        if not is_int(self.input_size) or self.input_size < 1:
            raise ModelError(f"input_size must be a positive integer, got {self.input_size!r}")
        if self.channels not in (1, 3) or not is_int(self.channels):
            raise ModelError(f"channels must be 1 or 3, got {self.channels!r}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if (
                not isinstance(values, (list, tuple))
                or len(values) not in (1, self.channels)
                or not all(is_int(v) or isinstance(v, float) for v in values)
                or not all(math.isfinite(v) for v in values)
            ):
                raise ModelError(
                    f"{name} must be 1 or {self.channels} finite numbers, got {values!r}"
                )
        if min(self.std) <= 0:
            raise ModelError(f"std must be positive, got {self.std!r}")
        if self.head not in HEADS:
            raise ModelError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")


class SmallCNN(nn.Module):
    """Three conv blocks (conv-BN-ReLU-maxpool) and two linear layers, for small images."""

    def __init__(
        self, bits: int, channels: int = 1, input_size: int = 28, width: int = 32, hidden: int = 256
    ) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            # ReLU after the max-pool: the two commute exactly (values and gradients), and
            # the ReLU then touches a quarter of the values. The weights keep their names
            # (conv 0, batch norm 1), so bundles saved with the other order load unchanged.
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.MaxPool2d(2),
                nn.ReLU(inplace=True),
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


class CodeHead(nn.Module):
    """The last step of a hashing network, one of HEADS, on its ``B x bits`` outputs f."""

    def __init__(self, kind: str, bits: int) -> None:
        super().__init__()
        if kind not in HEADS:
            raise ModelError(f"unknown head {kind!r}; choose one of {', '.join(HEADS)}")
        self.kind = kind
        if kind == "batchnorm":
            self.batchnorm = nn.BatchNorm1d(bits)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.kind == "sphere":
            return F.normalize(f, dim=1)
        if self.kind == "tanh":
            return torch.tanh(f)
        if self.kind == "batchnorm":
            return self.batchnorm(f)
        return f


class HashNet(nn.Module):
    """A backbone whose ``bits`` outputs go through the head ``config.head`` (see HEADS)."""

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

        self.head = CodeHead(config.head, config.bits)

        # Channels-last convolutions run 1.4x (training) to 2.7x (inference) faster on CPU.
        self.net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float32 ``B x C x S x S`` images to ``B x bits`` embeddings (unit vectors for the
        "sphere" head)."""
        x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.net(x))


def inference_network(net: HashNet) -> HashNet:
    """A copy of ``net`` for inference whose backbone has each batch norm folded into the
    convolution before it (torch.fx): the same ``B x bits`` embeddings up to float rounding
    (about 1e-7), for about 1.6x the images/s of the small CNN on a CPU
    (benchmarks/speed/encoding.md). ``net`` must be in eval mode (the folding uses the running
    statistics) and is left as it was; the copy is for inference only. A network this function
    returned is returned as it is."""
    from torch.fx import GraphModule
    from torch.fx.experimental.optimization import fuse

    if isinstance(net.net, GraphModule):
        return net
    folded = copy.deepcopy(net)
    folded.net = fuse(folded.net)
    return folded


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
    state = load_weights_only(path, "pretrained weight file")
    if not isinstance(state, dict):
        raise ModelError(f"{path} is not a state_dict (a dict of weight tensors)")
    own = net.net.state_dict()
    usable = {
        k: v
        for k, v in state.items()
        if k in own and isinstance(v, torch.Tensor) and own[k].shape == v.shape
    }
    if not usable:
        raise ModelError(f"{path} holds no weights that fit a {name} backbone")
    net.net.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))
