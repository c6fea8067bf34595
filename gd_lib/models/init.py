"""Named initialization schemes for linear (and convolutional) layers.

Each scheme sets a layer's weight ``W`` (shape ``fan_out × fan_in [× k × k]``)
from one scale argument ``σ`` (``sigma``) and sets the bias to zero:

=============  ==========================================================  =========
``init``       weight                                                      σ default
=============  ==========================================================  =========
``"zeros"``    ``W = 0``                                                   (unused)
``"constant"`` ``W_ij = σ / fan_in``                                       1
``"normal"``   ``W_ij ~ N(0, σ²)``                                         0.01
``"xavier"``   ``W_ij ~ N(0, σ² · 2 / (fan_in + fan_out))``  (Glorot)      1
``"kaiming"``  ``W_ij ~ N(0, σ² · 2 / fan_in)``              (He, ReLU)    1
``"orthogonal"`` ``W = σ · Q`` with ``Q`` a random (semi-)orthogonal matrix  1
=============  ==========================================================  =========

``"zeros"`` and ``"constant"`` make every hidden unit of a layer compute the
same function, and gradient descent keeps them identical (the symmetry the
lecture on initialization shows). ``"kaiming"`` keeps the second moment of a
ReLU net's pre-activations constant with depth (He et al., 2015, eq. 10:
``½ fan_in Var[W] = 1``); ``"xavier"`` keeps the variance of a linear net's
activations and gradients balanced (Glorot & Bengio, 2010, eq. 12); for
``"orthogonal"`` see Saxe et al. (2014).

``"default"`` leaves torch's own initialization in place.

References:
    X. Glorot, Y. Bengio. Understanding the difficulty of training deep
    feedforward neural networks. AISTATS 2010.
    K. He, X. Zhang, S. Ren, J. Sun. Delving deep into rectifiers. ICCV 2015.
    A. Saxe, J. McClelland, S. Ganguli. Exact solutions to the nonlinear
    dynamics of learning in deep linear neural networks. ICLR 2014.
"""

from __future__ import annotations

import math

import torch
from torch import nn

INIT_SCHEMES = ("default", "zeros", "constant", "normal", "xavier", "kaiming", "orthogonal")

_DEFAULT_SIGMA = {
    "zeros": 0.0,
    "constant": 1.0,
    "normal": 0.01,
    "xavier": 1.0,
    "kaiming": 1.0,
    "orthogonal": 1.0,
    "default": 1.0,
}


def check_init(init: str, sigma: float | None) -> float:
    """Validate ``init`` and ``sigma``; return the σ to use (the scheme's default if None)."""
    if init not in INIT_SCHEMES:
        raise ValueError(f"Invalid init: {init!r}; expected one of {INIT_SCHEMES}")
    if sigma is None:
        return _DEFAULT_SIGMA[init]
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"Invalid sigma: {sigma!r}; expected a finite number >= 0")
    return float(sigma)


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of shape ``out × in × (kernel...)``."""
    receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


@torch.no_grad()
def init_weight_(
    weight: torch.Tensor, init: str, sigma: float | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Fill ``weight`` in place by the named scheme (see the module docstring)."""
    sigma = check_init(init, sigma)
    fan_in, fan_out = fans(weight)
    if init == "default":
        return weight
    if init == "zeros":
        return weight.zero_()
    if init == "constant":
        return weight.fill_(sigma / fan_in)
    if init == "orthogonal":
        # Q from the QR factorization of a Gaussian matrix, signs fixed so that Q is Haar distributed.
        rows, cols = weight.shape[0], weight[0].numel()
        gauss = torch.randn(max(rows, cols), min(rows, cols), generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(gauss)
        q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
        if rows < cols:
            q = q.T
        return weight.copy_((sigma * q).reshape(weight.shape).to(weight.dtype))
    std = {
        "normal": sigma,
        "xavier": sigma * math.sqrt(2.0 / (fan_in + fan_out)),
        "kaiming": sigma * math.sqrt(2.0 / fan_in),
    }[init]
    return weight.normal_(0.0, std, generator=generator)


@torch.no_grad()
def init_layer_(
    layer: nn.Module, init: str, sigma: float | None = None, generator: torch.Generator | None = None
) -> nn.Module:
    """Initialize a ``nn.Linear`` / ``nn.Conv2d``: weight by the scheme, bias to zero."""
    if init == "default":
        check_init(init, sigma)
        return layer
    init_weight_(layer.weight, init, sigma, generator)
    if getattr(layer, "bias", None) is not None:
        layer.bias.zero_()
    return layer
