"""Devices the network runs on: which names are accepted, and whether the machine has them.

``check_device_name`` needs no torch, so a command line can refuse a misspelt device before
importing anything heavy; ``resolve_device`` turns a name into a ``torch.device`` that exists.
"""

from __future__ import annotations

import re

from hashkit.errors import DeviceError, HashkitError

DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
_DEVICE = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")


def check_device_name(device: str | None) -> str:
    """``device`` itself ("auto" for None) when it names a device hashkit can use; HashkitError
    otherwise. Whether the machine has that device is ``resolve_device``'s check."""
    if device is None:
        return "auto"
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise HashkitError(f"unknown device {device!r}: use {DEVICE_NAMES}")
    return device


def resolve_device(device: str | None):
    """The ``torch.device`` for ``device``: "auto" (or None) picks CUDA when present, else the
    CPU; "cuda", "cuda:N" and "mps" must exist on this machine (DeviceError otherwise)."""
    import torch

    device = check_device_name(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r}: PyTorch sees no CUDA GPU on this machine; use cpu or auto"
            )
        count = torch.cuda.device_count()
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            raise DeviceError(
                f"device {device!r} does not exist: PyTorch sees {count} CUDA GPU(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    if device == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device 'mps': this machine has no Apple GPU (MPS); use cpu or auto")
    return torch.device(device)
