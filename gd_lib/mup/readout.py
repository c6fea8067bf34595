"""The output layer of a μP network (microsoft/mup's ``MuReadout``, ``mup/layer.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MuReadout"]


class MuReadout(nn.Linear):
    r"""Output layer of a μP network: ``y = W (output_mult · x / m) + b``.

    A drop-in replacement for the last ``nn.Linear`` (width → a fixed number
    of outputs). ``width_mult`` (``m``, the fan-in's width multiplier) is 1
    when the layer is built, so until :func:`set_base_shapes` is called the
    layer is exactly an ``nn.Linear`` (that is SP). :func:`set_base_shapes`
    sets ``m`` and (for a fan-in-scaled SP init) rescales ``W`` and ``b`` by
    ``sqrt(m)``, after which the
    effective weight ``W / m`` has variance ``1/(3·fan_in·m)``: the μP scale
    ``∝ 1/n²``.

    ``readout_zero_init=True`` zeroes ``W`` and ``b`` after drawing them, so
    that the random draws of every other layer stay the same as without it.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        output_mult: float = 1.0,
        readout_zero_init: bool = False,
        device=None,
        dtype=None,
    ):
        self.output_mult = float(output_mult)
        self.readout_zero_init = bool(readout_zero_init)
        self.width_mult = 1.0
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.readout_zero_init:
            with torch.no_grad():
                self.weight.zero_()
                if self.bias is not None:
                    self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.output_mult / self.width_mult
        # scale == 1.0 leaves x unchanged, so at the base width this is nn.Linear bit for bit
        return F.linear(x * scale if scale != 1.0 else x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            super().extra_repr() + f", output_mult={self.output_mult}, "
            f"width_mult={self.width_mult}, readout_zero_init={self.readout_zero_init}"
        )
