r"""Exact dense curvature matrices for small models (P up to a few thousand).

These are the references the matrix-free products and the iterative methods are tested
against, and what :class:`gd_lib.optim.Newton` solves with. Cost: one backward pass per row
(P for the Hessian, :math:`NC` for the output Jacobian), so keep models small.

==================  ================================================================================
Hessian             :math:`H_{ij} = \partial^2 L / \partial\theta_i\partial\theta_j`, row :math:`i` is
                    :math:`\nabla_\theta g_i`, :math:`g = \nabla_\theta L`
GGN                 :math:`G = J^\top (\nabla_z^2 L)\,J` with the dense output Jacobian :math:`J`
true Fisher         :math:`F = \frac1M \sum_n \sum_{c} \pi_{nc}\, g_{nc} g_{nc}^\top`,
                    :math:`g_{nc} = \nabla_\theta \ell(z_n, c) = J_n^\top(\pi_n - e_c)` (cross-entropy: a sum
                    over the classes with the model's probabilities); squared error:
                    :math:`\frac1M\sum_n J_n^\top (2I) J_n` (the Gaussian expectation in closed form)
empirical Fisher    :math:`\frac1M \sum_n g_n g_n^\top`, :math:`g_n = \nabla_\theta \ell(z_n, y_n)`
==================  ================================================================================

Rows are computed one backward pass at a time (the readable path) or all at once with
``torch.autograd.grad(..., is_grads_batched=True)``, which vectorizes the backward pass with
vmap (``batched=True``, the fast path; tests check that both agree).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .likelihood import likelihood_of
from .operators import FISHER_KINDS, model_loss_and_outputs
from .params import flatten, num_parameters, trainable_parameters

__all__ = ["hessian_of_loss", "jacobian_of_outputs", "hessian_matrix", "jacobian_matrix", "ggn_matrix", "fisher_matrix"]


def _rows_of_jacobian(f: Tensor, params: Sequence[Tensor], batched: bool) -> Tensor:
    """The Jacobian of the flat tensor ``f`` (with graph) with respect to ``params``: (numel f, P)."""
    f = f.reshape(-1)
    if batched:
        eye = torch.eye(f.numel(), dtype=f.dtype, device=f.device)
        rows = torch.autograd.grad(
            f, params, grad_outputs=eye, retain_graph=True, allow_unused=True, is_grads_batched=True
        )
        return torch.cat(
            [
                torch.zeros(f.numel(), p.numel(), dtype=f.dtype, device=f.device)
                if r is None
                else r.reshape(f.numel(), -1)
                for r, p in zip(rows, params)
            ],
            dim=1,
        )
    out = torch.empty(f.numel(), num_parameters(params), dtype=f.dtype, device=f.device)
    for i in range(f.numel()):
        # row i: ∇_θ f_i
        row = torch.autograd.grad(f[i], params, retain_graph=True, allow_unused=True)
        out[i] = flatten(row, like=params)
    return out


def hessian_of_loss(loss: Tensor, params: Sequence[Tensor], batched: bool = False) -> Tensor:
    r"""Dense :math:`H = \nabla_\theta^2 L` from a loss that still has its graph: (P, P).

    ``params`` may also be non-leaf tensors of the graph (e.g. the outputs :math:`z`, giving
    :math:`\nabla_z^2 L`).
    """
    params = list(params)
    # g = ∇L with its graph; row i of H is ∇g_i
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    g = flatten(grads, like=params)
    if not g.requires_grad:  # L is linear in θ: H = 0
        return torch.zeros(g.numel(), g.numel(), dtype=g.dtype, device=g.device)
    return _rows_of_jacobian(g, params, batched)


def jacobian_of_outputs(outputs: Tensor, params: Sequence[Tensor], batched: bool = False) -> Tensor:
    r"""Dense output Jacobian :math:`J = \partial\,\mathrm{vec}(z) / \partial\theta`: (numel z, P)."""
    return _rows_of_jacobian(outputs, list(params), batched)


def hessian_matrix(
    model: nn.Module, loss_fn, X: Tensor, y: Tensor, params: Sequence[Tensor] | None = None, batched: bool = False
) -> Tensor:
    r"""The exact Hessian :math:`\nabla_\theta^2\,\text{loss\_fn}(f_\theta(X), y)`: (P, P)."""
    loss, _, params = model_loss_and_outputs(model, loss_fn, X, y, params)
    return hessian_of_loss(loss, params, batched).detach()


def jacobian_matrix(
    model: nn.Module, X: Tensor, params: Sequence[Tensor] | None = None, batched: bool = False
) -> Tensor:
    r"""The output Jacobian :math:`\partial\,\mathrm{vec}(f_\theta(X)) / \partial\theta`: (numel z, P)."""
    params = list(trainable_parameters(model) if params is None else params)
    with torch.enable_grad():
        outputs = model(X)
    return jacobian_of_outputs(outputs, params, batched).detach()


def ggn_matrix(
    model: nn.Module, loss_fn, X: Tensor, y: Tensor, params: Sequence[Tensor] | None = None, batched: bool = False
) -> Tensor:
    r"""The exact GGN :math:`J^\top (\nabla_z^2 L) J` (Schraudolph 2002): (P, P)."""
    loss, outputs, params = model_loss_and_outputs(model, loss_fn, X, y, params)
    # J: (NC, P); ∇²_z L: (NC, NC)
    J = jacobian_of_outputs(outputs, params, batched)
    H_z = hessian_of_loss(loss, [outputs], batched)
    return (J.T @ H_z @ J).detach()


def fisher_matrix(
    model: nn.Module,
    loss_fn,
    X: Tensor,
    y: Tensor,
    kind: str = "true",
    params: Sequence[Tensor] | None = None,
    batched: bool = False,
) -> Tensor:
    r"""The exact Fisher (``kind="true"``) or empirical Fisher (``kind="empirical"``): (P, P).

    For cross-entropy the true Fisher is the sum over classes
    :math:`\frac1M\sum_n\sum_c \pi_{nc}\, g_{nc} g_{nc}^\top` written out, one per-example
    per-class gradient :math:`g_{nc} = J_n^\top(\pi_n - e_c)` at a time — not the closed form
    :math:`J^\top\Lambda J` the matrix-free product uses, so that tests compare two computations.
    """
    if kind not in FISHER_KINDS:
        raise ValueError(f"Invalid kind: {kind!r}; expected one of {FISHER_KINDS}")
    likelihood = likelihood_of(loss_fn)
    _, outputs, params = model_loss_and_outputs(model, loss_fn, X, y, params)
    likelihood.check_outputs(outputs)
    N = outputs.shape[0]
    M = likelihood.normalizer(outputs)
    z = outputs.detach()
    # J_n: (N, C, P), the Jacobian of example n's outputs
    J = jacobian_of_outputs(outputs, params, batched).reshape(N, -1, num_parameters(params))
    P = J.shape[-1]
    F = torch.zeros(P, P, dtype=z.dtype, device=z.device)
    if kind == "empirical":
        # g_n = J_n^T s_n,  s_n = ∇_z ℓ(z_n, y_n);  F = (1/M) Σ_n g_n g_n^T
        s = likelihood.output_gradient(z, y).reshape(N, -1)
        g = torch.einsum("ncp,nc->np", J, s)
        return g.T @ g / M
    if likelihood.kind == "mse":
        # E[s s^T] = 2I for y ~ N(z, I/2):  F = (1/M) Σ_n J_n^T (2I) J_n
        return 2.0 * torch.einsum("ncp,ncq->pq", J, J) / M
    probs = torch.softmax(z, dim=1)
    eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
    for n in range(N):
        for c in range(z.shape[1]):
            # g_nc = ∇_θ(-log π_c(z_n)) = J_n^T (π_n - e_c), weighted by π_nc
            g = J[n].T @ (probs[n] - eye[c])
            F += probs[n, c] * torch.outer(g, g)
    return F / M
