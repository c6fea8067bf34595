r"""Natural gradient descent with the exact (matrix-free) Fisher, solved by conjugate gradient.

.. math::
    g &= \nabla_\theta L(\theta), \\
    (F + \lambda I)\, d &= g \quad\text{(conjugate gradient, Fisher-vector products only)}, \\
    \theta &\leftarrow \theta - \eta\, d

(:math:`\eta` = ``lr``, :math:`\lambda` = ``damping``, per parameter group as in
:class:`gd_lib.optim.Newton`). :math:`F` is the Fisher of the model's predictive distribution
on the current batch (Amari 1998), with outputs :math:`z = f_\theta(X)`, output Jacobian
:math:`J` and the loss read as a negative log-likelihood
(:mod:`gd_lib.curvature.likelihood`, normalizer :math:`M`):

=============================================  ===========================================================
``fisher="true"``                              :math:`F = \frac1M\sum_n J_n^\top \Lambda(z_n) J_n`, the
                                               expectation over labels exact (= the GGN for these losses,
                                               Martens 2014, section 9.2)
``fisher="true"``, ``mc_samples=S``            :math:`\frac1{MS}\sum_{k,n} J_n^\top s_{kn}s_{kn}^\top J_n`,
                                               :math:`s_{kn} = \nabla_z\ell(z_n,\hat y_{kn})`, labels
                                               :math:`\hat y \sim p(\cdot\mid z)` drawn with a generator seeded
                                               by ``(seed, step)``
``fisher="empirical"``                         the same with the observed labels, :math:`S = 1`:
                                               :math:`s_n = M\,\partial L/\partial z_n` (Martens 2014,
                                               section 11: a different matrix, with weaker guarantees)
=============================================  ===========================================================

Each CG iteration costs one Fisher-vector product (three backward passes,
:mod:`gd_lib.curvature.products`); CG stops after ``cg_max_iter`` iterations or when the
residual is below ``cg_tol`` times :math:`\|g\|` (Martens 2010 truncates CG the same way).

How the optimizer sees the outputs. It is built with ``output_module``, the module whose
forward returns :math:`z` (usually the model itself; any submodule whose output is the
prediction, e.g. the last layer). ``step(closure)`` takes the usual torch closure
(``zero_grad``, loss from ``output_module``'s output, ``backward``, return the loss) and runs it
with a temporary forward hook on ``output_module`` that records :math:`z`, and with graphs kept
(:func:`gd_lib.curvature.evaluate_keeping_graph`). ``output_module`` must be called exactly once
per closure, and the loss must be ``loss(z, y)`` (plus terms that do not depend on :math:`z`,
such as weight decay). :math:`g` is read from ``p.grad``; ``step`` returns the loss, detached::

    model = MLP(...)
    opt = NaturalGradient(model.parameters(), model, lr=1.0, damping=1e-3, loss="cross_entropy")
    for X, y in batches:
        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(model(X), y)
            loss.backward()
            return loss
        opt.step(closure)

All parameters are coupled through :math:`F`: a non-finite gradient raises ``FloatingPointError``.

References:
    Amari (1998), "Natural gradient works efficiently in learning", Neural Computation 10(2).
    Martens (2010), "Deep learning via Hessian-free optimization", ICML.
    Martens (2014/2020), "New insights and perspectives on the natural gradient method", JMLR 21,
      arXiv:1412.1193.
    Schraudolph (2002), "Fast curvature matrix-vector products for second-order gradient
      descent", Neural Computation 14(7).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .._checks import check_nonnegative, check_positive, check_positive_int, params_with_grad
from ..curvature import (
    CGResult,
    capture_outputs,
    conjugate_gradient,
    evaluate_keeping_graph,
    fisher_vector_product_from_output_gradients,
    flatten,
    likelihood_of,
    true_fisher_vector_product,
    unflatten,
)
from ..curvature.likelihood import Likelihood
from ._base import Optimizer
from ._groups import require_closure

__all__ = ["NaturalGradient", "natural_gradient_direction"]

_FISHER_TYPES = ("true", "empirical")


def natural_gradient_direction(
    fisher_vector_product: Callable[[Tensor], Tensor], g: Tensor, damping: Tensor | float, *, max_iter: int, tol: float
) -> CGResult:
    r"""Solve :math:`(F + \Lambda)\, d = g` by conjugate gradient, :math:`\Lambda = \mathrm{diag}(\text{damping})`."""
    damping = torch.as_tensor(damping, dtype=g.dtype, device=g.device)
    return conjugate_gradient(lambda v: fisher_vector_product(v) + damping * v, g, max_iter=max_iter, tol=tol)


def _sampling_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """A generator determined by ``(seed, step)``: resuming from a state dict redraws the same labels."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)


class NaturalGradient(Optimizer):
    r"""Natural gradient: :math:`\theta \leftarrow \theta - \eta\,(F + \lambda I)^{-1} g`, by CG.

    Args:
        params: parameters or parameter groups (all groups share one Fisher).
        output_module: the ``nn.Module`` whose forward returns the model outputs :math:`z`.
        lr: step size :math:`\eta`.
        damping: :math:`\lambda > 0` added to the Fisher's diagonal.
        loss: ``"cross_entropy"``, ``"mse"``, ``nn.CrossEntropyLoss()`` or ``nn.MSELoss()``: the
            loss the closure computes from :math:`z` (its reduction fixes :math:`M`).
        fisher: ``"true"`` or ``"empirical"``.
        mc_samples: ``None`` (exact expectation) or the number of sampled labels per example
            (``fisher="true"`` only).
        seed: seeds the label sampling.
        cg_max_iter, cg_tol: conjugate gradient's budget and relative residual tolerance.

    After each step ``last_solve`` holds CG's ``(iterations, residual_norm, converged)``.

    Examples:
        >>> import torch
        >>> from gd_lib.optim import NaturalGradient
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Linear(3, 2)
        >>> x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
        >>> opt = NaturalGradient(model.parameters(), model, lr=0.5, damping=0.1)
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = torch.nn.functional.cross_entropy(model(x), y)
        ...     loss.backward()
        ...     return loss
        >>> first = closure().item()
        >>> for _ in range(10):
        ...     _ = opt.step(closure)
        >>> closure().item() < first
        True
    """

    def __init__(
        self,
        params,
        output_module: nn.Module,
        lr: float = 1.0,
        damping: float = 1e-3,
        *,
        loss="cross_entropy",
        fisher: str = "true",
        mc_samples: int | None = None,
        seed: int = 0,
        cg_max_iter: int = 50,
        cg_tol: float = 1e-8,
    ):
        if not isinstance(output_module, nn.Module):
            raise ValueError(
                f"Invalid output_module: {type(output_module).__name__}; expected the "
                "nn.Module whose forward returns the model outputs"
            )
        check_nonnegative("lr", lr)
        check_positive("damping", damping)
        if fisher not in _FISHER_TYPES:
            raise ValueError(f"Invalid fisher: {fisher!r}; expected one of {_FISHER_TYPES}")
        if mc_samples is not None:
            check_positive_int("mc_samples", mc_samples)
            if fisher != "true":
                raise ValueError(
                    "Invalid mc_samples: sampling labels applies to fisher='true' only; "
                    "expected None with fisher='empirical'"
                )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"Invalid seed: {seed!r}; expected an integer >= 0")
        check_positive_int("cg_max_iter", cg_max_iter)
        check_nonnegative("cg_tol", cg_tol)
        self.likelihood: Likelihood = likelihood_of(loss)
        self.output_module = output_module
        super().__init__(params, dict(lr=lr, damping=damping))
        self.fisher, self.mc_samples, self.seed = fisher, mc_samples, seed
        self.cg_max_iter, self.cg_tol = cg_max_iter, cg_tol
        self.last_solve: tuple[int, float, bool] | None = None

    def _fisher_vector_product(
        self, loss: Tensor, z: Tensor, params: list[Tensor], step: int
    ) -> Callable[[Tensor], Tensor]:
        M = self.likelihood.normalizer(z)
        if self.fisher == "empirical":
            # s_n = M ∂L/∂z_n, the output gradient of the observed label
            (grad_z,) = torch.autograd.grad(loss, z, retain_graph=True)
            s = M * grad_z
        elif self.mc_samples is not None:
            # s_kn = ∇_z ℓ(z_n, ŷ_kn), ŷ_kn ~ p(· | z_n)
            generator = _sampling_generator(self.seed, step, z.device)
            zd = z.detach()
            s = torch.stack(
                [
                    self.likelihood.output_gradient(zd, self.likelihood.sample(zd, generator))
                    for _ in range(self.mc_samples)
                ]
            )
        else:
            return lambda v: true_fisher_vector_product(z, params, v, self.likelihood)
        return lambda v: fisher_vector_product_from_output_gradients(z, params, v, s, M)

    @torch.no_grad()
    def step(self, closure=None):
        require_closure(closure, "NaturalGradient needs a closure that recomputes the loss from the model outputs")
        with capture_outputs(self.output_module) as captured:
            loss = evaluate_keeping_graph(closure)
        groups = [(group, params_with_grad(group["params"], "NaturalGradient")) for group in self.param_groups]
        params = [p for _, ps in groups for p in ps]
        if not params:
            return loss.detach()
        if len(captured) != 1:
            raise RuntimeError(
                f"NaturalGradient: output_module ({type(self.output_module).__name__}) ran "
                f"{len(captured)} times in the closure; expected exactly once"
            )
        z = captured[0]
        self.likelihood.check_outputs(z)
        # g = ∇L, as the closure left it in p.grad
        g = flatten([p.grad for p in params])
        if not torch.isfinite(g).all():
            raise FloatingPointError(
                "NaturalGradient: the gradient is not finite (NaN or inf); "
                "all parameters are coupled through the Fisher, so no step is taken"
            )
        for p in params:
            self.state[p].setdefault("step", torch.tensor(0.0))
        step = int(self.state[params[0]]["step"])
        # (F + λ) d = g by conjugate gradient
        damping = torch.cat(
            [
                torch.full((p.numel(),), float(group["damping"]), dtype=g.dtype, device=g.device)
                for group, ps in groups
                for p in ps
            ]
        )
        with torch.enable_grad():
            fvp = self._fisher_vector_product(loss, z, params, step)
            result = natural_gradient_direction(fvp, g, damping, max_iter=self.cg_max_iter, tol=self.cg_tol)
        d = result.x.detach()
        if not torch.isfinite(d).all():
            raise FloatingPointError("NaturalGradient: the Fisher solve is not finite (NaN or inf); no step is taken")
        self.last_solve = (result.iterations, result.residual_norm, result.converged)
        # θ <- θ - η d, with each group's η
        directions = iter(unflatten(d, params))
        for group, ps in groups:
            for p in ps:
                p.add_(next(directions), alpha=-float(group["lr"]))
                self.state[p]["step"] += 1
        return loss.detach()
