"""Reading PyTorch files that may come from a stranger: ``torch.load(..., weights_only=True)``
only, so a file cannot run code, and every failure one line naming the file.

PyTorch's own refusal advises retrying with ``weights_only=False``, which would run whatever the
file holds: that advice is never passed on.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hashkit.errors import ModelError


def torch_reason(exc: BaseException) -> str:
    """What torch says is wrong, without its advice about ``weights_only`` or ``torch.load``:
    for a weights-only refusal the unpickler's own finding (e.g. "Unsupported global: GLOBAL
    __main__.X"), else the first line that gives no such advice."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        finding = text.split("WeightsUnpickler error:", 1)[1].strip().split(". ")[0]
        return finding.splitlines()[0].strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not any(w in line for w in ("weights_only", "torch.load", "still be loaded")):
            return line
    return type(exc).__name__


def load_weights_only(path: str | os.PathLike, what: str):
    """The object in the PyTorch file ``path``, read with ``weights_only=True`` on the CPU;
    ModelError naming ``what`` (e.g. "model bundle") and ``path`` if it cannot be read."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise ModelError(f"{what} {path} is empty (0 bytes)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user input error
        if "Weights only load failed" in str(exc):
            raise ModelError(
                f"{what} {path} holds Python objects that are not weights, refused without "
                f"running them ({torch_reason(exc)})"
            ) from None
        if isinstance(exc, (KeyError, EOFError)) or str(exc).startswith("invalid load key"):
            raise ModelError(f"{what} {path} is not a PyTorch file (or is truncated)") from None
        raise ModelError(f"cannot read {what} {path}: {torch_reason(exc)}") from None
