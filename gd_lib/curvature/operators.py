r"""Curvature matrices of a model on a batch, as matrix-free operators.

``hessian_operator(model, loss_fn, X, y)`` runs the forward pass once, keeps the graph, and
returns a :class:`CurvatureOperator`: ``op(v)`` (or ``op @ v``) is the product with a flat
parameter-space vector ``v`` (see :mod:`gd_lib.curvature.params`), computed by
:mod:`gd_lib.curvature.products`. Lanczos, Hutchinson and conjugate gradient take such an
operator. The operator describes the parameters *as they were when it was built*; build a new
one after an optimizer step. Put the model in ``eval()`` mode first if it has dropout or
batch norm (the curvature of a random or batch-coupled function is rarely what is meant).

The loss is :math:`L(\theta) = \text{loss\_fn}(f_\theta(X), y)`. The Hessian and the GGN work
for any twice-differentiable ``loss_fn``; the Fisher needs a likelihood, so ``loss_fn`` must be
cross-entropy or squared error (:func:`gd_lib.curvature.likelihood.likelihood_of`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .likelihood import likelihood_of
from .params import num_parameters, trainable_parameters
from .products import (
    fisher_vector_product_from_output_gradients,
    ggn_vector_product,
    hessian_vector_product,
    true_fisher_vector_product,
)

__all__ = [
    "CurvatureOperator",
    "hessian_operator",
    "ggn_operator",
    "fisher_operator",
    "model_loss_and_outputs",
    "FISHER_KINDS",
]

FISHER_KINDS = ("true", "empirical")


@dataclass(frozen=True)
class CurvatureOperator:
    """A symmetric P×P matrix known only through its product with vectors: ``op(v)``, ``op @ v``."""

    matvec: Callable[[Tensor], Tensor]
    dim: int
    dtype: torch.dtype
    device: torch.device
    name: str = "curvature"

    def __call__(self, v: Tensor) -> Tensor:
        if v.shape != (self.dim,):
            raise ValueError(
                f"{self.name} operator: expected a flat vector of length {self.dim}, got shape {tuple(v.shape)}"
            )
        return self.matvec(v.to(dtype=self.dtype, device=self.device))

    def __matmul__(self, v: Tensor) -> Tensor:
        return self(v)


def operator_layout(
    matvec: Callable[[Tensor], Tensor], dim: int | None = None
) -> tuple[int, torch.dtype, torch.device | None]:
    """``(dim, dtype, device)`` of the vectors ``matvec`` takes, for methods that draw their own.

    A :class:`CurvatureOperator` knows all three; a plain function ``v -> A v`` needs ``dim``
    and gets float64 vectors on the default device. A ``dim`` given here wins.
    """
    dim = getattr(matvec, "dim", None) if dim is None else dim
    if dim is None:
        raise ValueError("dim is required when matvec is a plain function")
    return int(dim), getattr(matvec, "dtype", torch.float64), getattr(matvec, "device", None)


def model_loss_and_outputs(model: nn.Module, loss_fn, X: Tensor, y: Tensor, params: Sequence[Tensor] | None = None):
    """Forward pass with gradients on: ``(loss, outputs, params)``, the graph kept for products."""
    params = list(trainable_parameters(model) if params is None else params)
    if not params:
        raise ValueError("the model has no parameters that require a gradient")
    with torch.enable_grad():
        outputs = model(X)
        loss = loss_fn(outputs, y)
    if loss.dim() != 0:
        raise ValueError("loss_fn must return a scalar (use reduction='mean' or 'sum')")
    return loss, outputs, params


def _operator(name, matvec, params) -> CurvatureOperator:
    return CurvatureOperator(
        matvec=matvec, dim=num_parameters(params), dtype=params[0].dtype, device=params[0].device, name=name
    )


def hessian_operator(
    model: nn.Module, loss_fn, X: Tensor, y: Tensor, params: Sequence[Tensor] | None = None
) -> CurvatureOperator:
    r"""The Hessian :math:`\nabla_\theta^2 L` (Pearlmutter 1994)."""
    loss, _, params = model_loss_and_outputs(model, loss_fn, X, y, params)
    return _operator("Hessian", lambda v: hessian_vector_product(loss, params, v), params)


def ggn_operator(
    model: nn.Module, loss_fn, X: Tensor, y: Tensor, params: Sequence[Tensor] | None = None
) -> CurvatureOperator:
    r"""The generalized Gauss–Newton matrix :math:`J^\top (\nabla_z^2 L) J` (Schraudolph 2002)."""
    loss, outputs, params = model_loss_and_outputs(model, loss_fn, X, y, params)
    return _operator("GGN", lambda v: ggn_vector_product(loss, outputs, params, v), params)


def fisher_operator(
    model: nn.Module,
    loss_fn,
    X: Tensor,
    y: Tensor,
    kind: str = "true",
    *,
    mc_samples: int | None = None,
    seed: int = 0,
    params: Sequence[Tensor] | None = None,
) -> CurvatureOperator:
    r"""The Fisher of the model's predictive distribution on the batch ``X``.

    * ``kind="true"``, ``mc_samples=None``: :math:`\frac1M\sum_n J_n^\top \Lambda(z_n) J_n`, the
      expectation over labels taken exactly (for these losses, equal to the GGN);
    * ``kind="true"``, ``mc_samples=S``: the Monte-Carlo estimate with :math:`S` labels per example
      drawn once, when the operator is built, from :math:`p(\cdot\mid z_n)` with a generator seeded
      by ``seed`` — so the operator is one fixed PSD matrix that Lanczos or CG can use;
    * ``kind="empirical"``: :math:`\frac1M\sum_n J_n^\top s_n s_n^\top J_n` with the given labels,
      :math:`s_n = \nabla_z \ell(z_n, y_n)` (Martens 2014, section 11, on why this is not the Fisher).
    """
    if kind not in FISHER_KINDS:
        raise ValueError(f"Invalid kind: {kind!r}; expected one of {FISHER_KINDS}")
    if mc_samples is not None and (isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1):
        raise ValueError(f"Invalid mc_samples: {mc_samples!r}; expected None or an integer >= 1")
    likelihood = likelihood_of(loss_fn)
    _, outputs, params = model_loss_and_outputs(model, loss_fn, X, y, params)
    likelihood.check_outputs(outputs)
    M = likelihood.normalizer(outputs)
    if kind == "empirical":
        s = likelihood.output_gradient(outputs.detach(), y)
        return _operator(
            "empirical Fisher", lambda v: fisher_vector_product_from_output_gradients(outputs, params, v, s, M), params
        )
    if mc_samples is None:
        return _operator("Fisher", lambda v: true_fisher_vector_product(outputs, params, v, likelihood), params)
    generator = torch.Generator(device=outputs.device).manual_seed(seed)
    z = outputs.detach()
    s = torch.stack([likelihood.output_gradient(z, likelihood.sample(z, generator)) for _ in range(mc_samples)])
    return _operator(
        "Monte-Carlo Fisher", lambda v: fisher_vector_product_from_output_gradients(outputs, params, v, s, M), params
    )
