"""Vectors in parameter space: flatten a list of tensors into one vector, and back.

Every curvature matrix here acts on the flat vector

.. math::
    \\theta = [\\operatorname{vec}(p_1); \\operatorname{vec}(p_2); \\dots; \\operatorname{vec}(p_k)]
        \\in \\mathbb{R}^P, \\qquad P = \\textstyle\\sum_i \\operatorname{numel}(p_i),

in the order of the parameter list (for a model: the order of ``model.parameters()``),
each tensor flattened in row-major (``reshape(-1)``) order. That is the order of
``torch.nn.utils.parameters_to_vector`` and of curvlinops' linear operators.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["trainable_parameters", "flatten", "unflatten", "num_parameters"]


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``model`` that require a gradient, in ``model.parameters()`` order."""
    return [p for p in model.parameters() if p.requires_grad]


def num_parameters(params: Iterable[Tensor]) -> int:
    """P, the length of the flat vector of ``params``."""
    return sum(p.numel() for p in params)


def flatten(tensors: Sequence[Tensor | None], like: Sequence[Tensor] | None = None) -> Tensor:
    """Concatenate ``tensors`` into one flat vector; ``None`` entries count as zeros shaped as ``like``.

    (``torch.autograd.grad(..., allow_unused=True)`` returns ``None`` for a parameter the
    output does not depend on; its block of the vector is zero.)
    """
    pieces = []
    for i, t in enumerate(tensors):
        if t is None:
            if like is None:
                raise ValueError("flatten: a None entry needs `like` to know its shape")
            t = torch.zeros_like(like[i])
        pieces.append(t.reshape(-1))
    return torch.cat(pieces)


def unflatten(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Split a flat vector into tensors shaped as ``like`` (the inverse of :func:`flatten`)."""
    if vector.dim() != 1 or vector.numel() != num_parameters(like):
        raise ValueError(
            f"unflatten: expected a flat vector of length {num_parameters(like)}, got shape {tuple(vector.shape)}"
        )
    out, start = [], 0
    for p in like:
        out.append(vector[start : start + p.numel()].view_as(p))
        start += p.numel()
    return out
