"""Norms on weight tensors, their dual norms, and their dual maps.

Steepest descent under a norm ‖·‖ needs two things of it (Bernstein & Newhouse,
"Old Optimizer, New Norm: An Anthology", arXiv:2409.20325, §2):

- the **dual norm** ‖G‖* = max_{‖D‖ ≤ 1} ⟨G, D⟩, which sets the step size, and
- the **dual map** D(G) = argmax_{‖D‖ = 1} ⟨G, D⟩, which sets the direction;
  it has ‖D(G)‖ = 1 and ⟨G, D(G)⟩ = ‖G‖*.

Here ⟨G, D⟩ = Σ_ij G_ij D_ij = tr(Gᵀ D). A weight matrix W is fan_out × fan_in
(torch's ``nn.Linear.weight`` layout: y = W x).

| name          | ‖W‖                              | dual ‖G‖*                     | dual map D(G)                |
|---------------|----------------------------------|-------------------------------|------------------------------|
| ``l2``        | ‖W‖_F (tensor as a vector)       | ‖G‖_F                         | G / ‖G‖_F                    |
| ``linf``      | max |W_ij| (tensor as a vector)  | Σ |G_ij|                      | sign(G)                      |
| ``l1_to_linf``| max_x ‖Wx‖_∞/‖x‖_1 = max |W_ij|   | Σ |G_ij|                      | sign(G)                      |
| ``spectral``  | σ_max(W) (ℓ2→ℓ2)                 | Σ σ_i(G) (nuclear)            | U Vᵀ  (G = U Σ Vᵀ reduced)   |
| ``rms_to_rms``| √(fan_in/fan_out) σ_max(W)       | √(fan_out/fan_in) Σ σ_i(G)    | √(fan_out/fan_in) U Vᵀ       |
| ``l1_to_rms`` | max_j ‖W_:j‖_2 / √fan_out        | √fan_out Σ_j ‖G_:j‖_2         | √fan_out G_:j / ‖G_:j‖_2     |

``rms_to_rms`` is the operator norm from RMS-normed inputs to RMS-normed
outputs (‖x‖_RMS = ‖x‖_2/√dim), the natural norm of a hidden linear layer;
``l1_to_rms`` is the natural norm of an embedding table whose columns are
looked up by one-hot inputs (Bernstein & Newhouse, "Modular Duality in Deep
Learning", arXiv:2410.21265, §3). Matrix norms act on the last two dims and
batch over the others; ``l2`` and ``linf`` treat the whole tensor as one vector.

The dual map of G = 0 is 0 (any unit vector would do; 0 keeps the step 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gd_lib.linalg import polar_factor

__all__ = [
    "Norm",
    "L2Norm",
    "LInfNorm",
    "L1ToLInfNorm",
    "SpectralNorm",
    "RMSToRMSNorm",
    "L1ToRMSNorm",
    "NORMS",
    "get_norm",
    "norm",
    "dual_norm",
    "dual_map",
    "inner",
]


def inner(G: Tensor, D: Tensor) -> Tensor:
    """⟨G, D⟩ = Σ G_ij D_ij over the whole tensor (the pairing of gradients with updates)."""
    return (G * D).sum()


def _require_matrix(W: Tensor, name: str) -> None:
    if W.ndim < 2:
        raise ValueError(f"the {name} norm is defined on matrices (ndim >= 2), got shape {tuple(W.shape)}")


def _safe_divide(G: Tensor, size: Tensor) -> Tensor:
    """G / size, with 0 where size == 0 (the dual map of a zero gradient is zero)."""
    return torch.where(size > 0, G / torch.where(size > 0, size, torch.ones_like(size)), torch.zeros_like(G))


@dataclass(frozen=True)
class Norm:
    """A norm on weight tensors with its dual norm and dual map (see the module docstring)."""

    name: str = "norm"

    def __call__(self, W: Tensor) -> Tensor:
        raise NotImplementedError

    def dual(self, G: Tensor) -> Tensor:
        """‖G‖* = max_{‖D‖ ≤ 1} ⟨G, D⟩."""
        raise NotImplementedError

    def dual_map(self, G: Tensor) -> Tensor:
        """argmax_{‖D‖ = 1} ⟨G, D⟩ (0 for G = 0)."""
        raise NotImplementedError


@dataclass(frozen=True)
class L2Norm(Norm):
    """‖W‖_2 = ‖W‖_F; self-dual; dual map G/‖G‖ (normalized gradient descent)."""

    name: str = "l2"

    def __call__(self, W):
        return torch.linalg.vector_norm(W)

    def dual(self, G):
        return torch.linalg.vector_norm(G)

    def dual_map(self, G):
        return _safe_divide(G, torch.linalg.vector_norm(G))


@dataclass(frozen=True)
class LInfNorm(Norm):
    """‖W‖_∞ = max |W_ij|; dual ℓ1 = Σ |G_ij|; dual map sign(G) (sign descent)."""

    name: str = "linf"

    def __call__(self, W):
        return W.abs().max()

    def dual(self, G):
        return G.abs().sum()

    def dual_map(self, G):
        return torch.sign(G)


@dataclass(frozen=True)
class L1ToLInfNorm(LInfNorm):
    """Operator norm ℓ1 → ℓ∞ of a matrix: max_x ‖Wx‖_∞/‖x‖_1 = max |W_ij| (the extreme points
    of the ℓ1 ball are ±e_j, and ‖W e_j‖_∞ = max_i |W_ij|). Same formulas as ``linf``."""

    name: str = "l1_to_linf"

    def __call__(self, W):
        _require_matrix(W, self.name)
        return super().__call__(W)

    def dual(self, G):
        _require_matrix(G, self.name)
        return super().dual(G)

    def dual_map(self, G):
        _require_matrix(G, self.name)
        return super().dual_map(G)


@dataclass(frozen=True)
class SpectralNorm(Norm):
    """‖W‖ = σ_max(W); dual = nuclear norm Σ σ_i(G); dual map U Vᵀ (reduced SVD of G).

    ``orthogonalize`` computes U Vᵀ: ``polar_factor`` (exact SVD, default) or a
    Newton–Schulz approximation such as ``functools.partial(newton_schulz, steps=5)``.
    """

    name: str = "spectral"
    orthogonalize: Callable[[Tensor], Tensor] = field(default=polar_factor, compare=False)

    def __call__(self, W):
        _require_matrix(W, self.name)
        return torch.linalg.matrix_norm(W, ord=2)

    def dual(self, G):
        _require_matrix(G, self.name)
        return torch.linalg.matrix_norm(G, ord="nuc")

    def dual_map(self, G):
        _require_matrix(G, self.name)
        return self.orthogonalize(G)


@dataclass(frozen=True)
class RMSToRMSNorm(SpectralNorm):
    """‖W‖_{RMS→RMS} = max_x ‖Wx‖_RMS/‖x‖_RMS = √(fan_in/fan_out) σ_max(W), for W fan_out × fan_in.

    Dual: √(fan_out/fan_in) Σ σ_i(G); dual map: √(fan_out/fan_in) U Vᵀ.
    """

    name: str = "rms_to_rms"

    @staticmethod
    def _scale(W: Tensor) -> float:
        fan_out, fan_in = W.shape[-2], W.shape[-1]
        return math.sqrt(fan_in / fan_out)

    def __call__(self, W):
        return self._scale(W) * super().__call__(W)

    def dual(self, G):
        return super().dual(G) / self._scale(G)

    def dual_map(self, G):
        return super().dual_map(G) / self._scale(G)


@dataclass(frozen=True)
class L1ToRMSNorm(Norm):
    """‖W‖_{ℓ1→RMS} = max_j ‖W_:j‖_RMS = max_j ‖W_:j‖_2 / √fan_out (the largest column RMS).

    The extreme points of the ℓ1 ball are ±e_j, so the operator norm is the
    largest column's RMS norm. Dual: √fan_out Σ_j ‖G_:j‖_2; dual map: every
    column rescaled to RMS norm 1 (zero columns stay zero). For torch's
    ``nn.Embedding.weight`` (num_embeddings × dim, one row per token) apply it to
    the transpose.
    """

    name: str = "l1_to_rms"

    def __call__(self, W):
        _require_matrix(W, self.name)
        fan_out = W.shape[-2]
        return torch.linalg.vector_norm(W, dim=-2).amax(dim=-1) / math.sqrt(fan_out)

    def dual(self, G):
        _require_matrix(G, self.name)
        fan_out = G.shape[-2]
        return math.sqrt(fan_out) * torch.linalg.vector_norm(G, dim=-2).sum(dim=-1)

    def dual_map(self, G):
        _require_matrix(G, self.name)
        fan_out = G.shape[-2]
        column_norms = torch.linalg.vector_norm(G, dim=-2, keepdim=True)
        return math.sqrt(fan_out) * _safe_divide(G, column_norms)


NORMS: dict[str, Norm] = {
    n.name: n for n in [L2Norm(), LInfNorm(), L1ToLInfNorm(), SpectralNorm(), RMSToRMSNorm(), L1ToRMSNorm()]
}


def get_norm(norm: str | Norm) -> Norm:
    """A ``Norm`` from its name (``"l2"``, ``"linf"``, ``"l1_to_linf"``, ``"spectral"``,
    ``"rms_to_rms"``, ``"l1_to_rms"``) or a ``Norm`` itself."""
    if isinstance(norm, Norm):
        return norm
    try:
        return NORMS[norm]
    except (KeyError, TypeError):
        raise ValueError(f"Invalid norm: {norm!r}; expected one of {sorted(NORMS)} or a Norm") from None


def norm(W: Tensor, which: str | Norm) -> Tensor:
    """‖W‖ in the named norm."""
    return get_norm(which)(W)


def dual_norm(G: Tensor, which: str | Norm) -> Tensor:
    """‖G‖* of the named norm."""
    return get_norm(which).dual(G)


def dual_map(G: Tensor, which: str | Norm) -> Tensor:
    """argmax_{‖D‖=1} ⟨G, D⟩ in the named norm."""
    return get_norm(which).dual_map(G)
