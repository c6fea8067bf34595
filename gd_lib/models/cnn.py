"""A small convolutional net for the 8×8 digits of :func:`gd_lib.data.load_digits`.

Layout (``c`` = ``channels``)::

    1×8×8 --conv3×3--> c×8×8 --ReLU--conv3×3--> 2c×8×8 --ReLU--maxpool2--> 2c×4×4
          --flatten--> 32c --linear--> hidden --ReLU--> --linear--> num_classes

Padding 1 keeps 8×8 through both convolutions. Inputs of shape ``(N, 64)``
are reshaped to ``(N, 1, 8, 8)``.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import check_init, init_layer_


class SmallCNN(nn.Module):
    """Two 3×3 convolutions, a 2×2 max-pool and a two-layer head.

    Args:
        in_channels: input channels (1 for digits).
        num_classes: output logits.
        channels: ``c``, the width of the first convolution (the second has ``2c``).
        hidden: width of the hidden linear layer.
        image_size: side of the square input (8 for digits; must be even).
        init, sigma: an init scheme of :mod:`gd_lib.models.init` for every layer.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: int = 16,
        hidden: int = 64,
        image_size: int = 8,
        *,
        init: str = "default",
        sigma: float | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        for name, value in [
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("channels", channels),
            ("hidden", hidden),
            ("image_size", image_size),
        ]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Invalid {name}: {value!r}; expected an integer >= 1")
        if image_size % 2:
            raise ValueError(f"Invalid image_size: {image_size}; expected an even integer")
        check_init(init, sigma)
        self.in_channels, self.image_size = in_channels, image_size
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = 2 * channels * (image_size // 2) ** 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                init_layer_(module, init, sigma, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.view(x.shape[0], self.in_channels, self.image_size, self.image_size)
        return self.head(self.features(x))
