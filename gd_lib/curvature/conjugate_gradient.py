r"""Conjugate gradient: solve :math:`A x = b` for a symmetric positive definite operator.

Only products :math:`A p` are needed, so the matrix never exists — the inner solver of
Hessian-free optimization (Martens 2010) and of :class:`gd_lib.optim.NaturalGradient`:

.. math::
    r_0 &= b - A x_0, \quad p_0 = r_0, \\
    \alpha_i &= \frac{r_i^\top r_i}{p_i^\top A p_i}, \quad x_{i+1} = x_i + \alpha_i p_i,
        \quad r_{i+1} = r_i - \alpha_i A p_i, \\
    p_{i+1} &= r_{i+1} + \frac{r_{i+1}^\top r_{i+1}}{r_i^\top r_i}\, p_i,

until :math:`\|r\| \le \text{tol}\,\|b\|`. In exact arithmetic it terminates in at most
P steps, and after :math:`i` steps :math:`x_i` minimizes :math:`\tfrac12 x^\top A x - b^\top x` over the
Krylov space. If :math:`p^\top A p \le 0` (the operator is not positive definite, e.g. an
undamped Hessian) it stops and returns the current iterate, as Hessian-free optimization does.

References:
    Hestenes & Stiefel (1952), "Methods of conjugate gradients for solving linear systems",
      J. Res. Nat. Bureau Standards 49(6).
    Nocedal & Wright (2006), Numerical Optimization, 2nd ed., Algorithm 5.2.
    Martens (2010), "Deep learning via Hessian-free optimization", ICML.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["CGResult", "conjugate_gradient"]


class CGResult(NamedTuple):
    x: Tensor
    iterations: int
    residual_norm: float
    converged: bool


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    x0: Tensor | None = None,
    *,
    max_iter: int | None = None,
    tol: float = 1e-10,
) -> CGResult:
    """Solve ``matvec(x) = b`` (Nocedal & Wright, Algorithm 5.2); ``max_iter`` defaults to ``len(b)``."""
    max_iter = b.numel() if max_iter is None else max_iter
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    # r_0 = b - A x_0, p_0 = r_0
    r = b - matvec(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = torch.dot(r, r)
    threshold = tol * float(b.norm())
    if float(rs.sqrt()) <= threshold:
        return CGResult(x, 0, float(rs.sqrt()), True)
    for i in range(1, max_iter + 1):
        Ap = matvec(p)
        curvature = torch.dot(p, Ap)
        if float(curvature) <= 0.0:  # not positive definite along p: stop here
            return CGResult(x, i - 1, float(rs.sqrt()), False)
        # α = r^T r / p^T A p;  x <- x + α p;  r <- r - α A p
        alpha = rs / curvature
        x = x + alpha * p
        r = r - alpha * Ap
        rs_new = torch.dot(r, r)
        if float(rs_new.sqrt()) <= threshold:
            return CGResult(x, i, float(rs_new.sqrt()), True)
        # p <- r + (r_new^T r_new / r^T r) p
        p = r + (rs_new / rs) * p
        rs = rs_new
    return CGResult(x, max_iter, float(rs.sqrt()), False)
