"""The model, held once by the service: decoded images to packed codes in one network batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from hashkit.bundle import Bundle
from hashkit.codes import sign_codes
from hashkit.encode import input_transform, resolve_device


class QueryEncoder:
    """Encodes query images exactly as ``hashkit encode`` encodes image files: the bundle's
    input transform, its network in eval mode, then ``b = sgn(R h)``."""

    def __init__(self, bundle: Bundle, device: str = "auto") -> None:
        self.bundle = bundle
        self.device = resolve_device(device)
        self.net = bundle.build_network(self.device)
        self.transform = input_transform(bundle.network)

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """The network's input for one decoded image: float32 ``C x S x S`` (the bundle's input
        transform), a few kilobytes where a large image takes tens of megabytes, so a batch
        need not hold its decoded images."""
        return self.transform(image)

    @torch.no_grad()
    def encode(self, images: Sequence[Image.Image | torch.Tensor]) -> np.ndarray:
        """Packed codes uint8 ``n x ceil(bits/8)`` of ``n`` PIL images or inputs made by
        :meth:`prepare`, in one forward pass."""
        x = torch.stack(
            [x if isinstance(x, torch.Tensor) else self.transform(x) for x in images]
        ).to(self.device)
        h = self.net(x).float().cpu().numpy()
        return sign_codes(h, self.bundle.rotation)
