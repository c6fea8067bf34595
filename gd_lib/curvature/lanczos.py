r"""Extreme eigenvalues of a symmetric operator by the Lanczos method, with full reorthogonalization.

After :math:`m` products with the symmetric :math:`A` (P×P), Lanczos has an orthonormal basis
:math:`Q_m = [q_1, \dots, q_m]` of the Krylov space :math:`\mathrm{span}\{q_1, A q_1, \dots,
A^{m-1}q_1\}` and the tridiagonal :math:`T_m = Q_m^\top A Q_m`:

.. math::
    w &= A q_j, \qquad \alpha_j = q_j^\top w, \\
    w &\leftarrow w - Q_j (Q_j^\top w) \quad\text{(twice: full reorthogonalization)}, \\
    \beta_j &= \|w\|, \qquad q_{j+1} = w / \beta_j.

The eigenvalues of :math:`T_m` (Ritz values) approximate the extreme eigenvalues of :math:`A`
first, and :math:`Q_m s` (Ritz vectors, :math:`T_m s = \theta s`) their eigenvectors. In exact
arithmetic the orthogonalization against all of :math:`Q_j` only removes the
:math:`\alpha_j q_j + \beta_{j-1} q_{j-1}` of the three-term recurrence; in floating point it
stops the basis from losing orthogonality, which otherwise produces spurious copies of converged
eigenvalues ("ghosts"). Doing it twice is enough (Parlett's "twice is enough"). With
:math:`m = P` the result is exact up to rounding.

Used for the sharpness (top Hessian eigenvalue) and for spectra (Ghorbani et al. 2019; Papyan 2020).

References:
    Lanczos (1950), "An iteration method for the solution of the eigenvalue problem of linear
      differential and integral operators", J. Res. Nat. Bur. Standards 45.
    Golub & Van Loan (2013), Matrix Computations, 4th ed., section 10.1.
    Parlett (1998), The Symmetric Eigenvalue Problem, section 6.9.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .operators import operator_layout

__all__ = ["LanczosResult", "lanczos_tridiagonal", "lanczos"]

_WHICH = ("largest", "smallest", "magnitude")


class LanczosResult(NamedTuple):
    eigenvalues: Tensor  # (k,), ordered as asked (largest first for "largest")
    eigenvectors: Tensor  # (P, k), unit columns


def lanczos_tridiagonal(
    matvec: Callable[[Tensor], Tensor],
    dim: int,
    num_iterations: int,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    breakdown_tol: float = 1e-12,
):
    r"""Run :math:`m` Lanczos steps: ``(alpha (m,), beta (m-1,), Q (P, m))`` with :math:`T = Q^\top A Q`.

    Stops early, with fewer than ``num_iterations`` steps, when :math:`\beta_j` falls below
    ``breakdown_tol`` times the largest :math:`|\alpha|` seen: the Krylov space is invariant and
    its Ritz values are exact eigenvalues.
    """
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(dim, generator=generator, dtype=dtype).to(device)
    Q = torch.zeros(dim, num_iterations, dtype=dtype, device=device)
    Q[:, 0] = q / q.norm()
    alphas, betas = [], []
    scale = 0.0
    for j in range(num_iterations):
        # w = A q_j, α_j = q_j^T w
        w = matvec(Q[:, j]).to(dtype)
        alpha = torch.dot(Q[:, j], w)
        alphas.append(alpha)
        scale = max(scale, abs(float(alpha)))
        if j == num_iterations - 1:
            break
        # w <- w - Q_j (Q_j^T w), twice
        basis = Q[:, : j + 1]
        w = w - basis @ (basis.T @ w)
        w = w - basis @ (basis.T @ w)
        # β_j = ||w||, q_{j+1} = w / β_j
        beta = w.norm()
        if float(beta) <= breakdown_tol * max(scale, 1e-300):
            break
        betas.append(beta)
        Q[:, j + 1] = w / beta
    m = len(alphas)
    alpha = torch.stack(alphas)
    beta = torch.stack(betas) if betas else alpha.new_zeros(0)
    return alpha, beta[: m - 1], Q[:, :m]


def lanczos(
    matvec: Callable[[Tensor], Tensor],
    k: int = 1,
    num_iterations: int | None = None,
    *,
    dim: int | None = None,
    which: str = "largest",
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> LanczosResult:
    r"""The ``k`` extreme eigenpairs of a symmetric operator, from ``num_iterations`` Lanczos steps.

    ``matvec`` is a function ``v -> A v`` on flat vectors, or a
    :class:`gd_lib.curvature.operators.CurvatureOperator` (which knows ``dim``, dtype and device).
    ``which``: ``"largest"`` (algebraic, e.g. the sharpness), ``"smallest"`` or ``"magnitude"``.
    ``num_iterations`` defaults to ``min(P, max(2k + 20, 40))``; more iterations give more
    accurate interior eigenvalues, the extreme ones converge first.
    """
    if which not in _WHICH:
        raise ValueError(f"Invalid which: {which!r}; expected one of {_WHICH}")
    dim, operator_dtype, operator_device = operator_layout(matvec, dim)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= dim:
        raise ValueError(f"Invalid k: {k!r}; expected an integer in [1, {dim}]")
    if num_iterations is None:
        num_iterations = min(dim, max(2 * k + 20, 40))
    if isinstance(num_iterations, bool) or not isinstance(num_iterations, int) or not k <= num_iterations:
        raise ValueError(f"Invalid num_iterations: {num_iterations!r}; expected an integer >= k = {k}")
    num_iterations = min(num_iterations, dim)
    dtype = dtype or operator_dtype
    device = device or operator_device
    alpha, beta, Q = lanczos_tridiagonal(matvec, dim, num_iterations, seed=seed, dtype=dtype, device=device)
    # T = tridiag(β, α, β); its eigenpairs are the Ritz pairs
    T = torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
    theta, S = torch.linalg.eigh(T)
    if which == "largest":
        order = torch.argsort(theta, descending=True)
    elif which == "smallest":
        order = torch.argsort(theta)
    else:
        order = torch.argsort(theta.abs(), descending=True)
    order = order[: min(k, theta.numel())]
    # Ritz vectors Q s
    vectors = Q @ S[:, order]
    return LanczosResult(theta[order], vectors / vectors.norm(dim=0, keepdim=True))
