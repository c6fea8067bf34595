r"""Damped Newton's method with the exact Hessian, for small models (a teaching baseline).

.. math::
    g &= \nabla_\theta L(\theta), \qquad H = \nabla_\theta^2 L(\theta), \\
    (H + \lambda I)\, d &= g, \\
    \theta &\leftarrow \theta - \eta\, d

(:math:`\eta` = ``lr``, :math:`\lambda` = ``damping``; with several parameter groups
:math:`\lambda I` becomes the diagonal matrix holding each group's ``damping`` on its
coordinates, and each group moves by its own ``lr``). Near a minimum with :math:`H \succ 0`,
:math:`\eta = 1` and :math:`\lambda = 0` converge quadratically, and on a quadratic
:math:`\tfrac12\theta^\top A\theta - b^\top\theta` one step with :math:`\lambda = 0` lands on the
minimizer, whatever the conditioning. Away from one, :math:`H` may be indefinite and
:math:`d` may then point uphill or towards a saddle: the damping :math:`\lambda` (Tikhonov /
Levenberg–Marquardt, Martens 2010, section 4.1) must exceed :math:`-\lambda_{\min}(H)` to make
:math:`d` a descent direction. By default it is fixed; with ``adaptive_damping=True`` it
follows the Levenberg–Marquardt rule of Martens (2010, section 4.1): after the step the closure
is called once more, at :math:`\theta' = \theta + \Delta` with :math:`\Delta = -\eta d`, and
the actual reduction is compared with the reduction the quadratic model predicted,

.. math::
    \rho = \frac{L(\theta') - L(\theta)}{g^\top\Delta + \tfrac12 \Delta^\top H \Delta}, \qquad
    \lambda \leftarrow \begin{cases} \tfrac32\lambda & \rho < \tfrac14 \\
                                   \tfrac23\lambda & \rho > \tfrac34 \\
                                   \lambda & \text{otherwise,} \end{cases}

so the damping grows where the quadratic model is not trusted and shrinks where it is; a step
that increased the loss (:math:`\rho < 0`) is undone, as a trust-region method rejects it
(Nocedal & Wright, Algorithm 4.1). The current :math:`\lambda` lives in the group's
``damping``, so it is saved with the state dict. The second closure call costs one more
forward and backward pass (cheap next to the Hessian) and leaves ``p.grad`` as computed at
:math:`\theta'`, even when the step is undone.

Cost: :math:`H` is built exactly, one Hessian-vector product (Pearlmutter 1994) per parameter,
and the :math:`P\times P` system is solved directly — :math:`O(P)` backward passes and
:math:`O(P^3)` flops per step, so keep P to a few thousand.

The closure is the usual torch closure (``zero_grad``, loss, ``backward``, return the loss).
:func:`gd_lib.curvature.evaluate_keeping_graph` runs it so that its ``backward()`` keeps the
graph; :math:`g` is then read from ``p.grad`` (whatever the closure left there) and :math:`H` is
differentiated from the returned loss. ``step`` returns that loss, detached.

All parameters are coupled through :math:`H`, so a non-finite gradient or Hessian cannot be
confined to one parameter: ``step`` raises ``FloatingPointError``.

References:
    Nocedal & Wright (2006), Numerical Optimization, 2nd ed., chapter 3.3 and section 10.3
      (Levenberg–Marquardt).
    Martens (2010), "Deep learning via Hessian-free optimization", ICML (damping).
    Pearlmutter (1994), "Fast exact multiplication by the Hessian", Neural Computation 6(1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_nonnegative, params_with_grad
from ..curvature import evaluate_keeping_graph, flatten, hessian_of_loss, unflatten
from ._base import Optimizer
from ._groups import evaluate_closure, require_closure

__all__ = ["Newton", "damped_newton_direction", "reduction_ratio", "levenberg_marquardt_update"]


def damped_newton_direction(H: Tensor, g: Tensor, damping: Tensor | float) -> Tensor:
    r"""Solve :math:`(H + \Lambda)\, d = g` with :math:`\Lambda = \mathrm{diag}(\text{damping})`.

    ``damping`` is a number or one value per coordinate. :math:`H` is symmetrized first,
    :math:`\tfrac12(H + H^\top)`, which removes the rounding asymmetry of double backprop.
    """
    H = 0.5 * (H + H.T)
    damping = torch.as_tensor(damping, dtype=H.dtype, device=H.device)
    A = H + torch.diag(damping.expand(H.shape[0]))
    return torch.linalg.solve(A, g)


def reduction_ratio(loss: float, new_loss: float, g: Tensor, H: Tensor, delta: Tensor) -> float:
    r""":math:`\rho = (L(\theta+\Delta) - L(\theta)) / (g^\top\Delta + \tfrac12\Delta^\top H\Delta)`.

    A non-finite new loss, or a step the model predicts no decrease for, gives :math:`\rho = -\infty`
    (distrust the model: more damping).
    """
    predicted = float(torch.dot(g, delta) + 0.5 * torch.dot(delta, H @ delta))
    actual = new_loss - loss
    if not (predicted < 0.0) or actual != actual or abs(actual) == float("inf"):
        return float("-inf")
    return actual / predicted


def levenberg_marquardt_update(
    damping: float, rho: float, *, low: float = 0.25, high: float = 0.75, factor: float = 1.5
) -> float:
    """Martens (2010), section 4.1: λ × 3/2 if ρ < 1/4, λ × 2/3 if ρ > 3/4, else unchanged."""
    if rho < low:
        return damping * factor
    if rho > high:
        return damping / factor
    return damping


class Newton(Optimizer):
    r"""Damped Newton: :math:`\theta \leftarrow \theta - \eta\,(H + \lambda I)^{-1} g`, exact Hessian.

    Args:
        params: parameters or parameter groups (all groups share one Hessian).
        lr: step size :math:`\eta` (1 is Newton's step).
        damping: :math:`\lambda \ge 0` added to the Hessian's diagonal.
        adaptive_damping: adapt ``damping`` by the Levenberg–Marquardt rule (module docstring).
        batched_hessian: build :math:`H` with one vmapped backward pass
            (``is_grads_batched``, the fast path) instead of one backward pass per row.

    ``step(closure)`` requires the closure; see the module docstring.

    Examples:
        >>> import torch
        >>> from gd_lib.optim import Newton
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = Newton([w], lr=1.0, damping=0.0)
        >>> def closure():  # a closure: Newton differentiates the loss twice
        ...     opt.zero_grad()
        ...     loss = ((w - torch.tensor([3.0, 4.0])) ** 2).sum()
        ...     loss.backward()
        ...     return loss
        >>> _ = opt.step(closure)
        >>> w.detach()  # one undamped Newton step solves a quadratic
        tensor([3., 4.])
    """

    def __init__(
        self,
        params,
        lr: float = 1.0,
        damping: float = 1e-3,
        *,
        adaptive_damping: bool = False,
        batched_hessian: bool = True,
    ):
        check_nonnegative("lr", lr)
        check_nonnegative("damping", damping)
        if adaptive_damping and not damping > 0:
            raise ValueError(f"Invalid damping: {damping!r}; adaptive_damping needs a number > 0 to scale")
        super().__init__(params, dict(lr=lr, damping=damping))
        self.adaptive_damping = bool(adaptive_damping)
        self.batched_hessian = bool(batched_hessian)

    @torch.no_grad()
    def step(self, closure=None):
        require_closure(closure, "Newton needs a closure that recomputes the loss (it differentiates it twice)")
        loss = evaluate_keeping_graph(closure)
        groups = [(group, params_with_grad(group["params"], "Newton")) for group in self.param_groups]
        params = [p for _, ps in groups for p in ps]
        if not params:
            return loss.detach()
        if any(torch.is_complex(p) for p in params):
            raise RuntimeError(
                "Newton does not support complex parameters (its Hessian is of the real "
                "coordinates); optimize torch.view_as_real(p) as a real parameter instead"
            )
        # g = ∇L, as the closure left it in p.grad
        g = flatten([p.grad for p in params])
        if not torch.isfinite(g).all():
            raise FloatingPointError(
                "Newton: the gradient is not finite (NaN or inf); "
                "all parameters are coupled through the Hessian, so no step is taken"
            )
        # H = ∇²L, from the closure's loss
        with torch.enable_grad():
            H = hessian_of_loss(loss, params, batched=self.batched_hessian).detach()
        if not torch.isfinite(H).all():
            raise FloatingPointError("Newton: the Hessian is not finite (NaN or inf); no step is taken")
        # (H + λ) d = g, λ per coordinate from each group's damping
        damping = torch.cat(
            [
                torch.full((p.numel(),), float(group["damping"]), dtype=g.dtype, device=g.device)
                for group, ps in groups
                for p in ps
            ]
        )
        d = damped_newton_direction(H, g, damping)
        # Δ = -η d, with each group's η;  θ <- θ + Δ
        lrs = torch.cat(
            [
                torch.full((p.numel(),), float(group["lr"]), dtype=g.dtype, device=g.device)
                for group, ps in groups
                for p in ps
            ]
        )
        delta = -lrs * d
        previous = [p.detach().clone() for p in params] if self.adaptive_damping else None
        for p, delta_p in zip(params, unflatten(delta, params)):
            p.add_(delta_p)
        if self.adaptive_damping:
            # ρ = actual / predicted reduction; λ <- 3/2 λ or 2/3 λ
            new_loss = evaluate_closure(closure)
            new_loss = float(new_loss.detach() if torch.is_tensor(new_loss) else new_loss)
            rho = reduction_ratio(float(loss.detach()), new_loss, g, H, delta)
            for group, ps in groups:
                if ps:
                    group["damping"] = levenberg_marquardt_update(group["damping"], rho)
            # a step that increased the loss is undone: θ <- θ (exactly, from a copy)
            if rho < 0.0:
                for p, old in zip(params, previous):
                    p.copy_(old)
        return loss.detach()
