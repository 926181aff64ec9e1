"""The model bundle: one ``.pt`` file holding everything needed to turn an image into a code.

Contents (a plain dict of tensors, numbers, strings and lists, so ``torch.load(...,
weights_only=True)`` reads it and a bundle from a stranger cannot run code):

- ``format`` "hashkit-model", ``format_version`` 1, ``hashkit_version``
- ``network``: NetworkConfig as a dict (backbone, bits, input_size, channels, mean, std)
- ``state_dict``: the network's weights
- ``rotation``: float32 ``bits x bits`` tensor R (codes are sgn(R h))
- ``train_config``: the training options, ``class_names``: list of str, ``metrics``: dict
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hashkit import __version__
from hashkit.atomic import atomic_path
from hashkit.errors import ModelError
from hashkit.models import HashNet, NetworkConfig

FORMAT = "hashkit-model"
FORMAT_VERSION = 1


@dataclass
class Bundle:
    network: NetworkConfig
    state_dict: dict
    rotation: np.ndarray
    train_config: dict = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    fingerprint: str = ""
    path: Path | None = None

    @property
    def bits(self) -> int:
        return self.network.bits

    def build_network(self, device: str | torch.device = "cpu") -> HashNet:
        """The network with its weights, in eval mode, on ``device``."""
        net = HashNet(self.network)
        net.load_state_dict(self.state_dict)
        return net.to(device).eval()


def file_fingerprint(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_bundle(bundle: Bundle, path: str | os.PathLike) -> str:
    """Write the bundle atomically; returns its fingerprint (sha256 of the file)."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hashkit_version": __version__,
        "network": bundle.network.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in bundle.state_dict.items()},
        "rotation": torch.as_tensor(np.asarray(bundle.rotation, dtype=np.float32)),
        "train_config": bundle.train_config,
        "class_names": list(bundle.class_names),
        "metrics": bundle.metrics,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    bundle.fingerprint = file_fingerprint(path)
    bundle.path = Path(path).resolve()
    return bundle.fingerprint


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Read a bundle with ``weights_only=True``; ModelError if missing or not a hashkit bundle."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user input error
        raise ModelError(f"cannot read model bundle {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path} is not a hashkit model bundle")
    rotation = payload["rotation"].numpy().astype(np.float32)
    network = NetworkConfig.from_dict(payload["network"])
    if rotation.shape != (network.bits, network.bits):
        raise ModelError(f"{path}: rotation of shape {rotation.shape} for {network.bits} bits")
    return Bundle(
        network=network,
        state_dict=payload["state_dict"],
        rotation=rotation,
        train_config=payload.get("train_config", {}),
        class_names=list(payload.get("class_names", [])),
        metrics=payload.get("metrics", {}),
        fingerprint=file_fingerprint(path),
        path=path.resolve(),
    )
