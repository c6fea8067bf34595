r"""Matrix-free curvature-vector products, read off an autograd graph.

Each function takes tensors that still carry their graph — the ``loss`` :math:`L(\theta)`
and/or the model ``outputs`` :math:`z = f_\theta(X)` — the parameter list ``params``
(:math:`\theta`) and a flat vector ``v`` in parameter space (see :mod:`gd_lib.curvature.params`).
The graph is kept (``retain_graph=True``), so that many products can be taken from one forward
pass; :mod:`gd_lib.curvature.operators` wraps them for a model and a batch.

Symbols: :math:`J = \partial z / \partial\theta` (the output Jacobian), :math:`M` the loss's
normalizer and :math:`\Lambda` the expected outer product of output gradients
(:mod:`gd_lib.curvature.likelihood`).

================================  ===================================================================
Hessian (Pearlmutter 1994)        :math:`H v = \nabla_\theta\,(\nabla_\theta L \cdot v)`
GGN (Schraudolph 2002)            :math:`G v = J^\top (\nabla_z^2 L)\, J v`
true Fisher (Amari 1998)          :math:`F v = \frac1M \sum_n J_n^\top \Lambda(z_n) J_n v`
Fisher from output gradients      :math:`\hat F v = \frac{1}{M S} \sum_{n,k} J_n^\top s_{kn}\,(s_{kn}^\top J_n v)`
================================  ===================================================================

The last one is the *empirical* Fisher with :math:`s_{1n} = \nabla_z\ell(z_n, y_n)` (the given
labels, :math:`S = 1`), and the Monte-Carlo *true* Fisher with :math:`s_{kn} = \nabla_z\ell(z_n, \hat
y_{kn})`, :math:`\hat y_{kn} \sim p(\cdot \mid z_n)` (Martens 2014, sections 9 and 11).

:math:`J v` is computed by reverse mode only, with the double-vjp trick: :math:`u \mapsto J^\top u`
is linear in a dummy :math:`u`, so :math:`J v = \nabla_u\,(J^\top u \cdot v)` (one extra backward
pass instead of forward-mode AD, and it works on any graph autograd can differentiate twice).

References:
    Pearlmutter (1994), "Fast exact multiplication by the Hessian", Neural Computation 6(1).
    Schraudolph (2002), "Fast curvature matrix-vector products for second-order gradient
      descent", Neural Computation 14(7).
    Amari (1998), "Natural gradient works efficiently in learning", Neural Computation 10(2).
    Martens (2014/2020), "New insights and perspectives on the natural gradient method", JMLR 21.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .likelihood import Likelihood
from .params import flatten, unflatten

__all__ = [
    "jacobian_vector_product",
    "transposed_jacobian_vector_product",
    "hessian_vector_product",
    "ggn_vector_product",
    "true_fisher_vector_product",
    "fisher_vector_product_from_output_gradients",
]


def transposed_jacobian_vector_product(outputs: Tensor, params: Sequence[Tensor], u: Tensor) -> Tensor:
    r""":math:`J^\top u`: one backward pass from ``outputs`` with cotangent ``u`` (shaped like ``outputs``)."""
    grads = torch.autograd.grad(outputs, params, grad_outputs=u, retain_graph=True, allow_unused=True)
    return flatten(grads, like=params)


def jacobian_vector_product(outputs: Tensor, params: Sequence[Tensor], v: Tensor) -> Tensor:
    r""":math:`J v`, shaped like ``outputs``, by the double-vjp trick :math:`J v = \nabla_u (J^\top u \cdot v)`."""
    # a dummy cotangent u; J^T u is linear in u and keeps its graph
    u = torch.zeros_like(outputs, requires_grad=True)
    grads = torch.autograd.grad(outputs, params, grad_outputs=u, create_graph=True, allow_unused=True)
    pairs = [(g, vi) for g, vi in zip(grads, unflatten(v, params)) if g is not None]
    if not pairs:
        return torch.zeros_like(outputs)
    # J v = d/du <J^T u, v>
    (jv,) = torch.autograd.grad(
        [g for g, _ in pairs], u, grad_outputs=[vi for _, vi in pairs], retain_graph=True, allow_unused=True
    )
    return torch.zeros_like(outputs) if jv is None else jv


def hessian_vector_product(loss: Tensor, params: Sequence[Tensor], v: Tensor) -> Tensor:
    r""":math:`H v = \nabla_\theta (\nabla_\theta L \cdot v)` (Pearlmutter 1994): two backward passes."""
    # g = ∇L, with its own graph
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    pairs = [(g, p, vi) for g, p, vi in zip(grads, params, unflatten(v, params)) if g is not None]
    if not pairs:
        return torch.zeros_like(v)
    # H v = ∇(g · v)
    hv = torch.autograd.grad(
        [g for g, _, _ in pairs], params, grad_outputs=[vi for _, _, vi in pairs], retain_graph=True, allow_unused=True
    )
    return flatten(hv, like=params)


def ggn_vector_product(loss: Tensor, outputs: Tensor, params: Sequence[Tensor], v: Tensor) -> Tensor:
    r""":math:`G v = J^\top (\nabla_z^2 L)\, J v` (Schraudolph 2002), for any loss of the outputs.

    The loss Hessian :math:`\nabla_z^2 L` is applied by double backprop through ``loss`` with
    respect to ``outputs`` (a Hessian-vector product in output space), so any twice
    differentiable loss works; :math:`L` must depend on :math:`\theta` only through :math:`z`.
    """
    # J v
    jv = jacobian_vector_product(outputs, params, v)
    # (∇²_z L) J v
    (grad_z,) = torch.autograd.grad(loss, outputs, create_graph=True)
    (hjv,) = torch.autograd.grad(grad_z, outputs, grad_outputs=jv, retain_graph=True)
    # J^T (∇²_z L) J v
    return transposed_jacobian_vector_product(outputs, params, hjv)


def true_fisher_vector_product(outputs: Tensor, params: Sequence[Tensor], v: Tensor, likelihood: Likelihood) -> Tensor:
    r""":math:`F v = \frac1M \sum_n J_n^\top \Lambda(z_n) J_n v`: the Fisher of the model's predictive
    distribution, with the expectation over labels taken exactly (Amari 1998; Martens 2014, eq. 9.2).

    For cross-entropy and squared error :math:`\Lambda = \nabla_z^2\ell`, so this equals
    :func:`ggn_vector_product`; it is computed from the likelihood, not from the loss's graph.
    """
    # J v
    jv = jacobian_vector_product(outputs, params, v)
    # Λ(z) J v / M
    u = likelihood.fisher_product(outputs, jv) / likelihood.normalizer(outputs)
    # J^T Λ J v / M
    return transposed_jacobian_vector_product(outputs, params, u)


def fisher_vector_product_from_output_gradients(
    outputs: Tensor, params: Sequence[Tensor], v: Tensor, output_gradients: Tensor, normalizer: int
) -> Tensor:
    r""":math:`\hat F v = \frac{1}{M S}\sum_{k=1}^{S}\sum_n J_n^\top s_{kn}\,(s_{kn}^\top J_n v)`.

    ``output_gradients`` holds :math:`s_{kn} = \nabla_z \ell(z_n, \cdot)`, shape ``(S, *outputs.shape)``
    (or ``outputs.shape`` for :math:`S = 1`); ``normalizer`` is :math:`M`. With the given labels
    this is the empirical Fisher; with sampled labels, the Monte-Carlo true Fisher. Because
    :math:`J^\top` is linear the sum over samples is taken in output space: one backward pass
    whatever :math:`S`.
    """
    s = output_gradients if output_gradients.dim() > outputs.dim() else output_gradients.unsqueeze(0)
    s = s.detach()
    # J v
    jv = jacobian_vector_product(outputs, params, v)
    # per example and sample: s_kn^T (J v)_n
    reduce_dims = tuple(range(2, s.dim()))
    coeff = (s * jv.unsqueeze(0)).sum(dim=reduce_dims, keepdim=True)
    # (1/(M S)) Σ_k s_kn (s_kn^T J_n v), then J^T
    u = (s * coeff).sum(dim=0) / (normalizer * s.shape[0])
    return transposed_jacobian_vector_product(outputs, params, u)
