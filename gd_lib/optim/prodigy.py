r"""Prodigy: Adam whose step size d is estimated on line (learning-rate-free Adam).

References:
    Mishchenko & Defazio (2024), "Prodigy: An Expeditiously Adaptive Parameter-Free
    Learner", ICML; arXiv:2306.06101 (Algorithm 4: Prodigy with Adam, the form used here).
    konstmish/prodigy, the ``prodigyopt`` package (version 1.1.2), whose names, defaults,
    group-level state (``d``, ``d_max``, ``d_numerator``, ``k``) and arithmetic are
    followed here.

The idea (D-Adaptation, Defazio & Mishchenko 2023): the ideal step size of Adam-like
methods is proportional to D = ‖x0 - x*‖, the distance to the solution. Prodigy keeps a
lower bound d ≤ D, computed from the gradients seen so far, and grows it:

.. math::
    \hat d = \frac{\sum_i \lambda_i \langle g_i,\, x_0 - x_i\rangle}{\|s\|_1},
    \qquad s = \sum_i \lambda_i\, g_i,

both sums discounted by β3 (default :math:`\sqrt{\beta_2}`), with weights
:math:`\lambda_i = d_i^2\,\gamma_i / d_0` (the package's normalisation by d0 keeps the
numbers away from underflow; it cancels in the ratio). The Adam moments are
accumulated with d folded in (:math:`m \leftarrow \beta_1 m + d(1-\beta_1) g`,
:math:`v \leftarrow \beta_2 v + d^2(1-\beta_2) g^2`), so the step
:math:`d\gamma\, m/(\sqrt v + d\epsilon)` has the scale of d.

Map from the paper's Algorithm 4: :math:`d_k` -> ``d``, :math:`r_k` (numerator) ->
``d_numerator``, :math:`s_k` -> ``state["s"]``, :math:`x_0` -> ``state["p0"]``,
:math:`\eta_k` -> ``d * lr * bias_correction``.

Differences from the package: ``p.grad`` is never written (the package adds the coupled
weight decay into ``p.grad`` in place; the trajectory is the same), ``fsdp_in_use=True``
is refused (no sharded training in this course library), and a NaN or infinite gradient
raises: d couples every parameter, so one bad gradient would corrupt all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import (
    check_betas,
    check_in_range,
    check_nonnegative,
    check_positive,
    check_positive_int,
    params_with_grad,
)
from ._base import Optimizer
from ._foreach import as_real
from ._groups import evaluate_closure

__all__ = ["Prodigy", "prodigy_accumulate", "prodigy_estimate_d", "prodigy_update"]


def prodigy_accumulate(
    param: Tensor,
    grad: Tensor,
    state: dict,
    *,
    d: float,
    d0: float,
    dlr: float,
    beta1: float,
    beta2: float,
    beta3: float,
    safeguard_warmup: bool,
    slice_p: int,
) -> tuple[float, float]:
    r"""Fold one tensor's gradient into the moments and into the estimate of d.

    With :math:`g` = ``grad`` (coupled weight decay already added), :math:`x_0` =
    ``state["p0"]``, :math:`\eta` = ``dlr`` (= :math:`d\gamma` times the optional bias
    correction), ``[::slice_p]`` the strided subset used for the estimate:

    .. math::
        \Delta r &= (d/d_0)\,\eta\,\langle g,\, x_0 - x\rangle \\
        m &\leftarrow \beta_1 m + d(1-\beta_1)\, g \qquad(\text{if } \beta_1 > 0) \\
        v &\leftarrow \beta_2 v + d^2(1-\beta_2)\, g^2 \\
        s &\leftarrow \beta_3 s + (d/d_0)\,\eta\, g
             \quad(\text{or } (d/d_0)\, d\, g \text{ with safeguard\_warmup})

    Returns :math:`(\Delta r, \|s\|_1)` as Python floats, this tensor's shares of the
    numerator and denominator of :math:`\hat d`.
    """
    sliced_grad = grad.flatten()[::slice_p]
    # Δr = (d/d0) η <g, x0 - x>
    delta_numerator = (d / d0) * dlr * torch.dot(sliced_grad, state["p0"] - param.flatten()[::slice_p]).item()
    # m <- β1 m + d(1 - β1) g
    if beta1 > 0:
        state["exp_avg"].mul_(beta1).add_(grad, alpha=d * (1 - beta1))
    # v <- β2 v + d²(1 - β2) g²
    state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=d * d * (1 - beta2))
    # s <- β3 s + (d/d0) η g   (or (d/d0) d g while safeguarding the warmup)
    s = state["s"]
    s.mul_(beta3).add_(sliced_grad, alpha=(d / d0) * (d if safeguard_warmup else dlr))
    return delta_numerator, s.abs().sum().item()


def prodigy_estimate_d(
    d: float, d_max: float, d0: float, numerator: float, denominator: float, *, d_coef: float, growth_rate: float
) -> tuple[float, float, float]:
    r"""The new estimate of the distance to the solution.

    .. math::
        \hat d &= d_{\text{coef}}\; r / \|s\|_1 \\
        d_{\max} &\leftarrow \max(d_{\max}, \hat d) \\
        d &\leftarrow \min(d_{\max},\; d \cdot \text{growth\_rate})

    (at the first move away from :math:`d_0`, d jumps to :math:`\max(d, \hat d)` before
    the growth limit). Returns ``(d, d_max, d_hat)``.
    """
    # d̂ = d_coef r / ||s||_1
    d_hat = d_coef * numerator / denominator
    if d == d0:
        d = max(d, d_hat)
    # d_max <- max(d_max, d̂)
    d_max = max(d_max, d_hat)
    # d <- min(d_max, d · growth_rate)
    d = min(d_max, d * growth_rate)
    return d, d_max, d_hat


def prodigy_update(
    param: Tensor,
    grad: Tensor,
    state: dict,
    *,
    d: float,
    dlr: float,
    eps: float,
    beta1: float,
    weight_decay: float,
    decouple: bool,
) -> None:
    r"""The Adam step with Prodigy's step size, in place on ``param``.

    .. math::
        x &\leftarrow x - \eta\lambda\, x \qquad(\text{decoupled weight decay}) \\
        x &\leftarrow x - \eta\; m / (\sqrt v + d\epsilon)
            \qquad(\text{or } x - \eta\, d\, g/(\sqrt v + d\epsilon) \text{ if } \beta_1 = 0)

    with :math:`\eta` = ``dlr``.
    """
    # denominator sqrt(v) + dε
    denom = state["exp_avg_sq"].sqrt().add_(d * eps)
    # x <- x - ηλ x   (decoupled weight decay)
    if weight_decay != 0 and decouple:
        param.add_(param, alpha=-weight_decay * dlr)
    # x <- x - η m / denom
    if beta1 > 0:
        param.addcdiv_(state["exp_avg"], denom, value=-dlr)
    else:
        param.addcdiv_(grad, denom, value=-dlr * d)


class Prodigy(Optimizer):
    """Prodigy (Mishchenko & Defazio 2024): Adam with a learned step size d.

    Args (names and defaults of ``prodigyopt.Prodigy`` 1.1.2):
        params: parameters or parameter groups.
        lr: multiplier of the learned step (default 1.0; leave it at 1). Groups may only
            differ by having lr 0 (frozen).
        betas: (β1, β2), each in [0, 1) (default (0.9, 0.999)).
        beta3: discount of the estimate's sums, in [0, 1) (default None: sqrt(β2)).
        eps: ε > 0 in the denominator, scaled by d (default 1e-8).
        weight_decay: λ ≥ 0 (default 0).
        decouple: AdamW-style decoupled decay (default True), else an L2 penalty.
        use_bias_correction: Adam's bias correction in the step size (default False).
        safeguard_warmup: drop lr from the estimate's denominator (default False).
        d0: initial estimate d0 > 0 (default 1e-6).
        d_coef: multiplier of the estimate (default 1.0; the preferred knob).
        growth_rate: d grows at most by this factor per step (default inf).
        fsdp_in_use: must be False (sharded training is not supported here).
        slice_p: estimate d from every slice_p-th entry only (default 1: all).

    The functions :func:`prodigy_accumulate`, :func:`prodigy_estimate_d` and
    :func:`prodigy_update` are the algorithm; the class loops over parameters.
    State: per group ``d``, ``d0``, ``d_max``, ``d_numerator``, ``d_denom``, ``d_hat``,
    ``k`` (steps); per parameter ``step``, ``s``, ``p0`` (x0), ``exp_avg``, ``exp_avg_sq``.

    Examples:
        >>> import torch
        >>> from gd_lib.optim import Prodigy
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))  # 2.2 from the minimum
        >>> opt = Prodigy([w], lr=1.0)  # d0 = 1e-6
        >>> for _ in range(20):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     opt.step()
        >>> opt.param_groups[0]["d"] > 0.1  # its estimate of the distance grew by five orders
        True
    """

    def __init__(
        self,
        params,
        lr: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        beta3: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0,
        decouple: bool = True,
        use_bias_correction: bool = False,
        safeguard_warmup: bool = False,
        d0: float = 1e-6,
        d_coef: float = 1.0,
        growth_rate: float = float("inf"),
        fsdp_in_use: bool = False,
        slice_p: int = 1,
    ):
        check_positive("lr", lr)
        check_betas(betas)
        if beta3 is not None:
            check_in_range("beta3", beta3, 0.0, 1.0)
        check_positive("eps", eps)
        check_nonnegative("weight_decay", weight_decay)
        check_positive("d0", d0)
        check_positive("d_coef", d_coef)
        if not (isinstance(growth_rate, (int, float)) and growth_rate >= 1):
            raise ValueError(f"Invalid growth_rate: {growth_rate!r}; expected a number >= 1 (inf allowed)")
        if fsdp_in_use:
            raise ValueError(
                "Invalid fsdp_in_use: True; gd_lib's Prodigy supports only "
                "fsdp_in_use=False (use prodigyopt for sharded training)"
            )
        check_positive_int("slice_p", slice_p)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            beta3=beta3,
            eps=eps,
            weight_decay=weight_decay,
            d=d0,
            d0=d0,
            d_max=d0,
            d_numerator=0.0,
            d_coef=d_coef,
            k=0,
            growth_rate=growth_rate,
            use_bias_correction=use_bias_correction,
            decouple=decouple,
            safeguard_warmup=safeguard_warmup,
            fsdp_in_use=fsdp_in_use,
            slice_p=slice_p,
        )
        super().__init__(params, defaults)

    def _check_finite(self) -> None:
        grads = [
            p.grad
            for group in self.param_groups
            for p in group["params"]
            if p.grad is not None and not p.grad.is_sparse
        ]
        if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            raise FloatingPointError(
                "Prodigy: a gradient contains NaN or inf; its step-size estimate d couples all "
                "parameters, so the step is refused (nothing was changed)"
            )

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One step for every parameter with a gradient; returns the closure's loss."""
        loss = evaluate_closure(closure)
        self._check_finite()

        first = self.param_groups[0]
        beta1, beta2 = first["betas"]
        beta3 = first["beta3"] if first["beta3"] is not None else math.sqrt(beta2)
        k = first["k"]
        d, d_max = first["d"], first["d_max"]
        lr = max(float(group["lr"]) for group in self.param_groups)
        # η = d γ (× sqrt(1 - β2^{k+1}) / (1 - β1^{k+1}) with bias correction)
        bias_correction = (
            ((1 - beta2 ** (k + 1)) ** 0.5) / (1 - beta1 ** (k + 1)) if first["use_bias_correction"] else 1
        )
        dlr = d * lr * bias_correction

        # r <- β3 r + Σ Δr ;  ||s||_1 summed over all tensors
        d_numerator = first["d_numerator"] * beta3
        delta_numerator = 0.0
        d_denom = 0.0
        active = []
        for group in self.param_groups:
            if float(group["lr"]) not in (lr, 0.0):
                raise RuntimeError(
                    "Prodigy: parameter groups may differ in lr only by lr=0 (frozen); the learned step d is shared"
                )
            decay, d0 = group["weight_decay"], group["d0"]
            for param in params_with_grad(group["params"], type(self).__name__):
                # complex parameters as their real view (real and imaginary parts as coordinates)
                p, grad = as_real(param), as_real(param.grad)
                # g <- g + λx   (coupled weight decay; a new tensor, p.grad is untouched)
                if decay != 0 and not group["decouple"]:
                    grad = grad.add(p, alpha=decay)
                state = self._state(param, p, group, beta1)
                active.append((group, p, grad, state))
                if float(group["lr"]) > 0.0:
                    dr, s_norm = prodigy_accumulate(
                        p,
                        grad,
                        state,
                        d=d,
                        d0=d0,
                        dlr=dlr,
                        beta1=beta1,
                        beta2=beta2,
                        beta3=beta3,
                        safeguard_warmup=group["safeguard_warmup"],
                        slice_p=group["slice_p"],
                    )
                    delta_numerator += dr
                    d_denom += s_norm

        # no progress possible (no gradient, or all gradients zero so far)
        if d_denom == 0:
            return loss

        # d̂ = r / ||s||_1 ;  d <- min(d_max, d · growth)
        d_numerator = d_numerator + delta_numerator
        d, d_max, d_hat = prodigy_estimate_d(
            d,
            d_max,
            self.param_groups[-1]["d0"],
            d_numerator,
            d_denom,
            d_coef=first["d_coef"],
            growth_rate=first["growth_rate"],
        )
        for group in self.param_groups:
            group.update(d_numerator=d_numerator, d_denom=d_denom, d=d, d_max=d_max, d_hat=d_hat)

        # x <- x - η m / (sqrt(v) + dε)   (η computed with the d of the start of the step)
        for group, p, grad, state in active:
            state["step"] += 1
            prodigy_update(
                p,
                grad,
                state,
                d=d,
                dlr=dlr,
                eps=group["eps"],
                beta1=beta1,
                weight_decay=group["weight_decay"],
                decouple=group["decouple"],
            )
        for group in self.param_groups:
            group["k"] = k + 1
        return loss

    def _state(self, param: Tensor, p: Tensor, group: dict, beta1: float) -> dict:
        """``param``'s state, created from ``p`` (its real view) at its first gradient."""
        state = self.state[param]
        if "step" not in state:
            state["step"] = 0
            state["s"] = torch.zeros_like(p.flatten()[:: group["slice_p"]])
            # x0, the starting point whose distance to the solution d estimates
            state["p0"] = p.flatten()[:: group["slice_p"]].clone()
            if beta1 > 0:
                state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        return state
