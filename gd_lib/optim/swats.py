r"""SWATS: start with Adam, switch to SGD once Adam's implied SGD learning rate settles.

Reference:
    Keskar & Socher (2017), "Improving Generalization Performance by Switching from
    Adam to SGD", arXiv:1712.07628 (Algorithm 1).

Algorithm 1 is written for one parameter vector w. Here every parameter tensor runs it
on its own, so each tensor switches when its own estimate settles (a design choice:
running it on the concatenation of all tensors is the other reading, and would couple
the tensors through γ_k):

.. math::
    \text{Adam phase:}\quad
    m_k &= \beta_1 m_{k-1} + (1-\beta_1) g_k, \qquad a_k = \beta_2 a_{k-1} + (1-\beta_2) g_k^2 \\
    p_k &= -\alpha\,\frac{\sqrt{1-\beta_2^k}}{1-\beta_1^k}\,\frac{m_k}{\sqrt{a_k} + \epsilon},
        \qquad w_k = w_{k-1} + p_k \\
    \text{if } p_k^\top g_k \ne 0:\quad
    \gamma_k &= \frac{p_k^\top p_k}{-p_k^\top g_k}, \qquad
        \lambda_k = \beta_2 \lambda_{k-1} + (1-\beta_2)\,\gamma_k \\
    \text{if } k > 1 \text{ and } &\big|\lambda_k/(1-\beta_2^k) - \gamma_k\big| < \epsilon:
        \quad \text{switch, } v = 0,\ \Lambda = \lambda_k/(1-\beta_2^k) \\
    \text{SGD phase:}\quad
    v_k &= \beta_1 v_{k-1} + g_k, \qquad w_k = w_{k-1} - (1-\beta_1)\,\Lambda\, v_k

γ_k is the step length along -g_k whose projection onto p_k is p_k itself (the SGD step
"equivalent" to Adam's); λ_k/(1-β2^k) is its bias-corrected running average. Map to the
code: α -> ``lr``, a -> ``exp_avg_sq``, m -> ``exp_avg``, λ -> ``state["lambda"]``,
Λ -> ``state["sgd_lr"]``, v -> ``momentum_buffer``; the switch step k is recorded in
``state["switch_step"]`` (0 while in the Adam phase).

One guard is added to Algorithm 1: the switch also needs Λ > 0 (a negative estimate,
possible when Adam's step is not a descent direction for g_k, would make SGD ascend).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import check_betas, check_nonnegative, params_with_grad
from ._base import Optimizer
from ._foreach import as_real
from ._groups import evaluate_closure

__all__ = ["SWATS", "swats_adam_step", "swats_lr_estimate", "swats_sgd_step"]


def swats_adam_step(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: int,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> Tensor:
    r"""Adam's step :math:`p_k` of Algorithm 1 (applied in place to ``param``, and returned).

    .. math::
        m_k &= \beta_1 m_{k-1} + (1-\beta_1) g_k, \qquad a_k = \beta_2 a_{k-1} + (1-\beta_2) g_k^2 \\
        p_k &= -\alpha\, \frac{\sqrt{1-\beta_2^k}}{1-\beta_1^k}\, \frac{m_k}{\sqrt{a_k}+\epsilon},
        \qquad w_k = w_{k-1} + p_k

    (Kingma & Ba's "efficient" form: ε is added to :math:`\sqrt{a_k}`, not to the
    bias-corrected root as torch.optim.Adam does.)
    """
    # m <- β1 m + (1 - β1) g ;  a <- β2 a + (1 - β2) g²
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    # p = -α sqrt(1 - β2^k)/(1 - β1^k) · m / (sqrt(a) + ε)
    step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
    p_k = exp_avg.div(exp_avg_sq.sqrt().add_(eps)).mul_(-step_size)
    # w <- w + p
    param.add_(p_k)
    return p_k


def swats_lr_estimate(
    p_k: Tensor, grad: Tensor, lam: float, step: int, *, beta2: float, eps: float
) -> tuple[float, float | None, bool]:
    r"""The projection estimate of the SGD rate and the switch test.

    .. math::
        \gamma_k = \frac{p_k^\top p_k}{-p_k^\top g_k}, \qquad
        \lambda_k = \beta_2 \lambda_{k-1} + (1-\beta_2)\gamma_k, \qquad
        \text{switch iff } k > 1,\ \big|\lambda_k/(1-\beta_2^k) - \gamma_k\big| < \epsilon,
        \ \lambda_k/(1-\beta_2^k) > 0

    Returns ``(lambda_k, gamma_k, switch)``; when :math:`p_k^\top g_k = 0` the estimate is
    undefined and ``(lambda_{k-1}, None, False)`` is returned. Dot products are taken in
    float64 (Python floats).
    """
    pg = torch.dot(p_k.flatten(), grad.flatten()).item()
    if pg == 0:
        return lam, None, False
    # γ_k = pᵀp / (-pᵀg)
    gamma = torch.dot(p_k.flatten(), p_k.flatten()).item() / -pg
    # λ_k = β2 λ_{k-1} + (1 - β2) γ_k
    lam = beta2 * lam + (1 - beta2) * gamma
    # bias-corrected estimate Λ = λ_k / (1 - β2^k)
    corrected = lam / (1 - beta2**step)
    switch = step > 1 and abs(corrected - gamma) < eps and corrected > 0
    return lam, gamma, switch


def swats_sgd_step(param: Tensor, grad: Tensor, momentum_buffer: Tensor, *, sgd_lr: float, beta1: float) -> None:
    r"""The SGD phase: :math:`v_k = \beta_1 v_{k-1} + g_k`, :math:`w_k = w_{k-1} - (1-\beta_1)\Lambda v_k`."""
    # v <- β1 v + g
    momentum_buffer.mul_(beta1).add_(grad)
    # w <- w - (1 - β1) Λ v
    param.add_(momentum_buffer, alpha=-(1 - beta1) * sgd_lr)


class SWATS(Optimizer):
    """SWATS (Keskar & Socher 2017, Algorithm 1): Adam, then SGD with momentum β1.

    Args:
        params: parameters or parameter groups.
        lr: Adam's α ≥ 0 (default 1e-3). After the switch each tensor uses its own Λ.
        betas: (β1, β2), each in [0, 1) (default (0.9, 0.999)); β1 is also SGD's momentum.
        eps: ε ≥ 0, in Adam's denominator and the switch tolerance (default 1e-9, the
            paper's value).
        weight_decay: λ ≥ 0, an L2 penalty added to the gradient in both phases (default 0).

    State per parameter: ``step`` (k), ``exp_avg``, ``exp_avg_sq``, ``lambda`` (λ_k),
    ``gamma`` (the last γ_k, 0.0 before any), ``switch_step`` (k at which it switched, 0 if it
    has not), ``sgd_lr`` (Λ, 0.0 before the switch) and, after it, ``momentum_buffer``.
    :meth:`switched` lists which tensors have switched.

    Examples:
        >>> import torch
        >>> from gd_lib.optim import SWATS
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = SWATS([w], lr=0.1)
        >>> (w ** 2).sum().backward()  # gradient 2w = (2, -4)
        >>> opt.step()
        >>> w.detach()  # SWATS starts as Adam: lr * sign(g)
        tensor([ 0.9000, -1.9000])
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-9,
        weight_decay: float = 0.0,
    ):
        check_nonnegative("lr", lr)
        check_betas(betas)
        check_nonnegative("eps", eps)
        check_nonnegative("weight_decay", weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def switched(self) -> list[bool]:
        """For every parameter (in group order), whether it is in the SGD phase."""
        return [self.state[p].get("switch_step", 0) > 0 for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One step for every parameter with a gradient; returns the closure's loss."""
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in params_with_grad(group["params"], type(self).__name__):
                state = self.state[param]
                # complex parameters as their real view (real and imaginary parts as coordinates)
                p, grad = as_real(param), as_real(param.grad)
                if "step" not in state:
                    state.update(
                        step=0,
                        exp_avg=torch.zeros_like(p),
                        exp_avg_sq=torch.zeros_like(p),
                        switch_step=0,
                        sgd_lr=0.0,
                        gamma=0.0,
                    )
                    state["lambda"] = 0.0
                # k <- k + 1 ;  g <- ∇f + λw
                state["step"] += 1
                if group["weight_decay"] != 0:
                    grad = grad.add(p, alpha=group["weight_decay"])
                if state["switch_step"] > 0:
                    swats_sgd_step(p, grad, state["momentum_buffer"], sgd_lr=state["sgd_lr"], beta1=beta1)
                    continue
                p_k = swats_adam_step(
                    p,
                    grad,
                    state["exp_avg"],
                    state["exp_avg_sq"],
                    state["step"],
                    lr=float(group["lr"]),
                    beta1=beta1,
                    beta2=beta2,
                    eps=group["eps"],
                )
                lam, gamma, switch = swats_lr_estimate(
                    p_k, grad, state["lambda"], state["step"], beta2=beta2, eps=group["eps"]
                )
                state["lambda"] = lam
                if gamma is not None:
                    state["gamma"] = gamma
                if switch:
                    # phase <- SGD ;  v <- 0 ;  Λ <- λ_k / (1 - β2^k)
                    state["switch_step"] = state["step"]
                    state["sgd_lr"] = lam / (1 - beta2 ** state["step"])
                    state["momentum_buffer"] = torch.zeros_like(p)
        return loss
