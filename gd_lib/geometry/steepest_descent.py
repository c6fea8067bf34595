"""Steepest descent under a norm, and the optimizers it explains.

The steepest-descent step with sharpness λ > 0 under a norm ‖·‖ solves

    Δ* = argmin_Δ  ⟨G, Δ⟩ + (λ/2) ‖Δ‖²   =   −(‖G‖* / λ) · D(G),

where ‖·‖* is the dual norm and D the dual map (``gd_lib.geometry.norms``):
fixing ‖Δ‖ = t, the linear term is smallest at Δ = −t D(G), worth −t ‖G‖*,
and −t ‖G‖* + λt²/2 is smallest at t = ‖G‖*/λ (Bernstein & Newhouse,
"Old Optimizer, New Norm: An Anthology", arXiv:2409.20325, Proposition 1).

For a network with layers l = 1..L and the "max" norm ‖(Δ_1..Δ_L)‖ = max_l ‖Δ_l‖_l
the same argument gives one global step size for all layers:

    Δ_l* = −η D_l(G_l),    η = (1/λ) Σ_l ‖G_l‖*_l .

With ‖·‖_l = ℓ1→ℓ∞ (max |entry|) this is layerwise **sign descent**, which is
Adam with β1 = β2 = 0 and ε = 0 (the Anthology's theorem on Adam; Theorem 4.1
in the course notes). With ‖·‖_l = spectral it is layerwise **spectral descent**
Δ_l = −η U_l V_lᵀ, which is Shampoo without accumulation,
L^{-1/4} G R^{-1/4} = U Vᵀ for L = G Gᵀ, R = Gᵀ G (the Anthology's theorem on
Shampoo; Theorem 4.2 in the course notes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .norms import Norm, get_norm, inner

__all__ = [
    "steepest_descent",
    "steepest_descent_objective",
    "layerwise_steepest_descent",
    "layerwise_sign_descent",
    "layerwise_spectral_descent",
    "shampoo_without_accumulation",
]


def _check_sharpness(sharpness: float) -> None:
    if not (float(sharpness) > 0 and torch.isfinite(torch.as_tensor(float(sharpness)))):
        raise ValueError(f"Invalid sharpness: {sharpness!r}; expected a finite number > 0")


def steepest_descent_objective(G: Tensor, delta: Tensor, norm: str | Norm, sharpness: float) -> Tensor:
    """The model that steepest descent minimizes: ⟨G, Δ⟩ + (λ/2) ‖Δ‖²."""
    return inner(G, delta) + 0.5 * sharpness * get_norm(norm)(delta) ** 2


def steepest_descent(G: Tensor, norm: str | Norm, sharpness: float = 1.0) -> Tensor:
    """Δ* = argmin_Δ ⟨G, Δ⟩ + (λ/2)‖Δ‖² = −(‖G‖*/λ) D(G), with λ = ``sharpness``.

    ``norm`` is a name from ``gd_lib.geometry.NORMS`` (``"l2"``, ``"linf"``,
    ``"l1_to_linf"``, ``"spectral"``, ``"rms_to_rms"``, ``"l1_to_rms"``) or a ``Norm``.
    The minimum value is −(‖G‖*)²/(2λ).
    """
    _check_sharpness(sharpness)
    the_norm = get_norm(norm)
    # step size ‖G‖*/λ; direction D(G)
    return -(the_norm.dual(G) / sharpness) * the_norm.dual_map(G)


def layerwise_steepest_descent(
    grads: Sequence[Tensor], norms: Sequence[str | Norm] | str | Norm, sharpness: float = 1.0
) -> list[Tensor]:
    """Steepest descent on a tuple of layers under ‖(Δ_1..Δ_L)‖ = max_l ‖Δ_l‖_l.

    Δ_l = −η D_l(G_l) with the shared step η = (1/λ) Σ_l ‖G_l‖*_l. ``norms`` is one
    norm for every layer or one per layer.
    """
    _check_sharpness(sharpness)
    grads = list(grads)
    if isinstance(norms, (str, Norm)):
        norms = [norms] * len(grads)
    the_norms = [get_norm(n) for n in norms]
    if len(the_norms) != len(grads):
        raise ValueError(f"got {len(grads)} gradients but {len(the_norms)} norms")
    # η = (1/λ) Σ_l ‖G_l‖*_l
    eta = sum(n.dual(G) for n, G in zip(the_norms, grads)) / sharpness
    # Δ_l = −η D_l(G_l)
    return [-eta * n.dual_map(G) for n, G in zip(the_norms, grads)]


def layerwise_sign_descent(grads: Sequence[Tensor], sharpness: float = 1.0) -> list[Tensor]:
    """Theorem 4.1 (course notes; Bernstein & Newhouse 2024, on Adam): steepest descent under
    the max-of-max norm max_l max_ij |Δ_l,ij| is Δ_l = −η sign(G_l), η = (1/λ) Σ_l ‖G_l‖_1,
    where ‖G_l‖_1 = Σ_ij |G_l,ij| is the dual of the ℓ1→ℓ∞ operator norm."""
    return layerwise_steepest_descent(grads, "linf", sharpness)


def layerwise_spectral_descent(grads: Sequence[Tensor], sharpness: float = 1.0) -> list[Tensor]:
    """Theorem 4.2 (course notes; Bernstein & Newhouse 2024, on Shampoo): steepest descent under
    max_l ‖Δ_l‖_{ℓ2→ℓ2} is Δ_l = −η U_l V_lᵀ with η = (1/λ) Σ_l tr Σ_l (sum of nuclear norms),
    where G_l = U_l Σ_l V_lᵀ is the reduced SVD. Each Δ_l is a multiple of
    ``shampoo_without_accumulation(G_l)``."""
    return layerwise_steepest_descent(grads, "spectral", sharpness)


def _psd_pseudo_inverse_root(A: Tensor, root: int, rtol: float) -> Tensor:
    """A^{-1/root} on the range of a symmetric PSD A (eigenvalues ≤ rtol·λ_max count as 0)."""
    eigenvalues, Q = torch.linalg.eigh(A)
    cutoff = rtol * eigenvalues.amax(dim=-1, keepdim=True)
    keep = eigenvalues > cutoff
    safe = torch.where(keep, eigenvalues, torch.ones_like(eigenvalues))
    powered = torch.where(keep, safe ** (-1.0 / root), torch.zeros_like(eigenvalues))
    return (Q * powered.unsqueeze(-2)) @ Q.mT


def shampoo_without_accumulation(G: Tensor, rtol: float | None = None) -> Tensor:
    """One Shampoo step's direction from one gradient, without accumulating statistics:

        L = G Gᵀ,   R = Gᵀ G,   Δ = L^{-1/4} G R^{-1/4}.

    With G = U Σ Vᵀ, L^{-1/4} = U Σ^{-1/2} Uᵀ and R^{-1/4} = V Σ^{-1/2} Vᵀ (pseudo-inverse
    roots: L and R are singular when G is not square), so Δ = U Vᵀ: spectral descent.
    This is the readable formula, computed with ``eigh``; it squares G's condition
    number, so use float64 (or ``gd_lib.linalg.polar_factor``) in practice.

    ``rtol``: eigenvalues of L, R below ``rtol`` times the largest are treated as 0;
    default ``1000 · max(m, n) · eps(dtype)`` (singular values of G below about
    √rtol · σ_max are dropped).
    """
    if G.ndim < 2:
        raise ValueError(f"shampoo_without_accumulation needs a matrix, got shape {tuple(G.shape)}")
    if rtol is None:
        rtol = 1000 * max(G.shape[-2:]) * torch.finfo(G.dtype).eps
    # L = G Gᵀ, R = Gᵀ G (one step of statistics, no accumulation)
    L = G @ G.mT
    R = G.mT @ G
    # L^{-1/4} G R^{-1/4}
    return _psd_pseudo_inverse_root(L, 4, rtol) @ G @ _psd_pseudo_inverse_root(R, 4, rtol)
