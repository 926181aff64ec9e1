"""The model bundle: one ``.pt`` file holding everything needed to turn an image into a code.

Contents (a plain dict of tensors, numbers, strings and lists, so ``torch.load(...,
weights_only=True)`` reads it and a bundle from a stranger cannot run code):

- ``format`` "hashkit-model", ``format_version`` 1, ``hashkit_version``
- ``network``: NetworkConfig as a dict (backbone, bits, input_size, channels, mean, std)
- ``state_dict``: the network's weights
- ``rotation``: float32 ``bits x bits`` tensor R (codes are sgn(R h))
- ``train_config``: the training options, ``class_names``: list of str, ``metrics``: dict

Loading checks all of it before anything runs: the format and a version this hashkit knows,
the type of every entry, weights whose names and shapes fit the network the config describes,
and finite weights and rotation (NaN weights, from a diverged training, would turn every image
into one code). Whatever is wrong is one ModelError line naming the file.
"""

from __future__ import annotations

import hashlib
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hashkit import __version__
from hashkit.atomic import atomic_path
from hashkit.errors import ModelError
from hashkit.models import HashNet, NetworkConfig
from hashkit.torch_load import load_weights_only

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
    """Write the bundle atomically; returns its fingerprint (sha256 of the file). ModelError
    (and nothing written) if its weights or rotation do not fit its network or are not finite,
    since ``load_bundle`` would refuse the file."""
    state_dict = {k: v.detach().cpu() for k, v in bundle.state_dict.items()}
    rotation = np.asarray(bundle.rotation, dtype=np.float32)
    try:
        check_contents(bundle.network, state_dict, rotation)
    except ModelError as exc:
        raise ModelError(f"cannot save model bundle {path}: {exc}") from None
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hashkit_version": __version__,
        "network": bundle.network.to_dict(),
        "state_dict": state_dict,
        "rotation": torch.as_tensor(rotation),
        "train_config": bundle.train_config,
        "class_names": list(bundle.class_names),
        "metrics": bundle.metrics,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    bundle.fingerprint = file_fingerprint(path)
    bundle.path = Path(path).resolve()
    return bundle.fingerprint


def check_contents(network: NetworkConfig, state_dict: dict, rotation: np.ndarray) -> None:
    """ModelError (without a file name) unless ``state_dict`` holds exactly the weights of the
    network ``network`` describes, with their shapes, all finite, and ``rotation`` is a
    finite ``bits x bits`` matrix."""
    # The network built on the meta device: its weights' names and shapes, no memory.
    with torch.device("meta"):
        expected = HashNet(network).state_dict()
    what = f"a {network.backbone} network of {network.bits} bits"
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing, e.g. {missing[0]!r}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]!r}")
        raise ModelError(f"its weights do not fit {what} ({'; '.join(parts)})")
    for name, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"weight {name!r} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(expected[name].shape):
            raise ModelError(
                f"weight {name!r} has shape {tuple(value.shape)}, {what} needs "
                f"{tuple(expected[name].shape)}"
            )
        # A float64 sum is NaN or inf exactly when a value is (float32 values cannot overflow
        # it), and needs no N-element mask.
        if value.is_floating_point() and not math.isfinite(value.sum(dtype=torch.float64)):
            raise ModelError(
                f"weight {name!r} holds NaN or infinite values (did training diverge?)"
            )
    rotation = np.asarray(rotation)
    if rotation.shape != (network.bits, network.bits):
        raise ModelError(f"rotation of shape {rotation.shape} for {network.bits} bits")
    if not np.isfinite(rotation).all():
        raise ModelError("its rotation holds NaN or infinite values")


def _read_payload(path: Path):
    """The object in the bundle file, read with ``weights_only=True``; ModelError if it fails."""
    if path.stat().st_size and not zipfile.is_zipfile(path):
        raise ModelError(
            f"model bundle {path} is not a PyTorch zip file (truncated, or another kind of file)"
        )
    return load_weights_only(path, "model bundle")


def _bundle_from_payload(payload, path: Path) -> Bundle:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path} is not a hashkit model bundle (no format {FORMAT!r})")
    version = payload.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ModelError(f"{path}: format_version {version!r} is not an integer")
    if version != FORMAT_VERSION:
        newer = "; upgrade hashkit" if version > FORMAT_VERSION else ""
        raise ModelError(
            f"{path} is a model bundle of format version {version}; hashkit {__version__} "
            f"reads version {FORMAT_VERSION}{newer}"
        )
    kinds = {
        "network": dict,
        "state_dict": dict,
        "rotation": torch.Tensor,
        "train_config": dict,
        "class_names": list,
        "metrics": dict,
    }
    for key, kind in kinds.items():
        if key not in payload and key in ("network", "state_dict", "rotation"):
            raise ModelError(f"{path} is not a valid hashkit model bundle: {key!r} is missing")
        if key in payload and not isinstance(payload[key], kind):
            raise ModelError(
                f"{path} is not a valid hashkit model bundle: {key!r} is a "
                f"{type(payload[key]).__name__}, not a {kind.__name__}"
            )
    class_names = payload.get("class_names", [])
    if not all(isinstance(c, str) for c in class_names):
        raise ModelError(f"{path} is not a valid hashkit model bundle: class_names are not text")
    rotation = payload["rotation"]
    try:
        network = NetworkConfig.from_dict(payload["network"])
        if not rotation.is_floating_point():
            raise ModelError(f"rotation of type {rotation.dtype}, not floating point")
        rotation = rotation.numpy().astype(np.float32)
        check_contents(network, payload["state_dict"], rotation)
    except ModelError as exc:
        raise ModelError(f"{path} is not a valid hashkit model bundle: {exc}") from None
    return Bundle(
        network=network,
        state_dict=payload["state_dict"],
        rotation=rotation,
        train_config=payload.get("train_config", {}),
        class_names=list(class_names),
        metrics=payload.get("metrics", {}),
        fingerprint=file_fingerprint(path),
        path=path.resolve(),
    )


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Read and check a bundle with ``weights_only=True``; ModelError naming ``path`` if it is
    missing, unreadable, of an unknown format version, or its contents do not fit together."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"model {path} is a folder, not a bundle file")
    if not path.is_file():
        raise ModelError(f"model not found: {path}")
    return _bundle_from_payload(_read_payload(path), path)
