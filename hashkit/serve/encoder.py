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

    @torch.no_grad()
    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Packed codes uint8 ``n x ceil(bits/8)`` of ``n`` PIL images, one forward pass."""
        x = torch.stack([self.transform(image) for image in images]).to(self.device)
        h = self.net(x).float().cpu().numpy()
        return sign_codes(h, self.bundle.rotation)
