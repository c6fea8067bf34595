"""NAdam: Adam with Nesterov momentum, and NAdamW (decoupled weight decay).

References:
    Dozat (2016), "Incorporating Nesterov Momentum into Adam", ICLR workshop (Algorithm 2).
    Sutskever, Martens, Dahl & Hinton (2013), ICML (Nesterov momentum as a look-ahead).
    Loshchilov & Hutter (2019), "Decoupled Weight Decay Regularization", ICLR
    (with ``decoupled_weight_decay=True`` this is NAdamW, AlgoPerf's "NadamP" baseline).

Same class name, hyperparameters, defaults, state keys and arithmetic as ``torch.optim.NAdam``
(torch 2.13), so trajectories agree to rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import check_betas, check_nonnegative, check_tensor_lr, check_unsupported_flags
from ._base import Optimizer
from ._foreach import apply_update, as_real, foreach_grads, scalar_dtype
from ._groups import advance_steps, evaluate_closure, groups_with_grads

__all__ = ["NAdam", "nadam_update", "nadam_update_foreach", "momentum_schedule"]


def momentum_schedule(step: float, beta1: float, momentum_decay: float) -> float:
    r"""Dozat's warming momentum :math:`\mu_t = \beta_1 (1 - \tfrac12\, 0.96^{\,t\,\psi})`.

    :math:`\psi` is ``momentum_decay`` (Dozat's 0.004); :math:`\mu_t` rises from about
    :math:`\beta_1/2` towards :math:`\beta_1`.
    """
    return beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))


def nadam_update(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    mu_product: Tensor,
    step: float,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    momentum_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    r"""One NAdam step on one tensor, in place on ``param``, the moments and ``mu_product``.

    With :math:`m` = ``exp_avg``, :math:`v` = ``exp_avg_sq``, :math:`\Pi_t = \prod_{i\le t}\mu_i`
    = ``mu_product`` (a scalar tensor) and :math:`\mu_t` from :func:`momentum_schedule`, at
    step :math:`t` (``step``, already incremented):

    .. math::
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) \;(+\,\lambda\theta_{t-1}
              \text{ for the L2 penalty; or } \theta_{t-1} \leftarrow (1-\gamma\lambda)\theta_{t-1}
              \text{ when decoupled}) \\
        \Pi_t &\leftarrow \Pi_{t-1}\,\mu_t \\
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
        v_t &\leftarrow \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 \\
        \theta_t &\leftarrow \theta_{t-1}
            - \gamma\,\frac{1-\mu_t}{1-\Pi_t}\,\frac{g_t}{\sqrt{v_t/(1-\beta_2^t)}+\epsilon}
            - \gamma\,\frac{\mu_{t+1}}{1-\Pi_t\,\mu_{t+1}}\,\frac{m_t}{\sqrt{v_t/(1-\beta_2^t)}+\epsilon}

    Map to Dozat (2016), Algorithm 2: his :math:`\hat g_t = g_t/(1-\Pi_t)` and
    :math:`\hat m_t = m_t/(1-\Pi_{t+1})`; the Nesterov look-ahead is
    :math:`\bar m_t = (1-\mu_t)\hat g_t + \mu_{t+1}\hat m_t`, and the step is
    :math:`\gamma\,\bar m_t/(\sqrt{\hat v_t}+\epsilon)`. Here the two terms of :math:`\bar m_t`
    are applied as two ``addcdiv`` calls; the moment :math:`m` uses the constant
    :math:`\beta_1` (torch's choice) while the schedule :math:`\mu_t` sets the mixing weights.
    As in torch.optim, :math:`\Pi_t` is kept in ``mu_product`` at the precision of
    :func:`~gd_lib.optim._foreach.scalar_dtype` (float32 unless the default dtype is float64).
    """
    # g <- -∇f when maximizing (new tensor: p.grad is never written)
    g = -grad if maximize else grad
    bias_correction2 = 1 - beta2**step
    if weight_decay != 0:
        if decoupled_weight_decay:
            # θ <- (1 - γλ) θ   (NAdamW)
            param.mul_(1 - lr * weight_decay)
        else:
            # g <- g + λθ
            g = g.add(param, alpha=weight_decay)
    # momentum schedule μ_t and μ_{t+1}
    mu = momentum_schedule(step, beta1, momentum_decay)
    mu_next = momentum_schedule(step + 1, beta1, momentum_decay)
    # Π_t <- Π_{t-1} μ_t
    mu_product *= mu
    # m <- β1 m + (1 - β1) g ;  v <- β2 v + (1 - β2) g²
    exp_avg.lerp_(g, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    # denominator sqrt(v / (1 - β2^t)) + ε
    denom = exp_avg_sq.div(bias_correction2).sqrt().add_(eps)
    # θ <- θ - γ(1 - μ_t)/(1 - Π_t) · g/denom - γ μ_{t+1}/(1 - Π_t μ_{t+1}) · m/denom
    pi = mu_product.item()
    param.addcdiv_(g, denom, value=(-lr * (1.0 - mu) / (1.0 - pi)))
    param.addcdiv_(exp_avg, denom, value=(-lr * mu_next) / (1.0 - pi * mu_next))


def nadam_update_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    mu_products: list[Tensor],
    steps: list[float],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    momentum_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    """:func:`nadam_update` on lists of tensors of one device and dtype, with foreach ops.

    Same arithmetic in the same order as the per-tensor path (equal bit for bit on the CPU;
    torch's own foreach NAdam takes sqrt before dividing by the bias correction, which
    rounds differently).
    """
    # g <- ±∇f (+ λθ), or θ <- (1 - γλ) θ
    g = foreach_grads(
        params,
        grads,
        maximize=maximize,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        lr=lr,
    )
    # μ_t, μ_{t+1} and Π_t <- Π_{t-1} μ_t
    mus = [momentum_schedule(t, beta1, momentum_decay) for t in steps]
    mu_nexts = [momentum_schedule(t + 1, beta1, momentum_decay) for t in steps]
    torch._foreach_mul_(mu_products, mus)
    # m <- β1 m + (1 - β1) g ;  v <- β2 v + (1 - β2) g²
    torch._foreach_lerp_(exp_avgs, g, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, g, g, value=1 - beta2)
    # denominator sqrt(v / (1 - β2^t)) + ε
    denoms = torch._foreach_div(exp_avg_sqs, [1 - beta2**t for t in steps])
    torch._foreach_sqrt_(denoms)
    torch._foreach_add_(denoms, eps)
    # θ <- θ - γ(1 - μ_t)/(1 - Π_t) · g/denom - γ μ_{t+1}/(1 - Π_t μ_{t+1}) · m/denom
    pis = [mp.item() for mp in mu_products]
    torch._foreach_addcdiv_(params, g, denoms, [(-lr * (1.0 - mu) / (1.0 - pi)) for mu, pi in zip(mus, pis)])
    torch._foreach_addcdiv_(params, exp_avgs, denoms, [(-lr * mn) / (1.0 - pi * mn) for mn, pi in zip(mu_nexts, pis)])


class NAdam(Optimizer):
    """NAdam (Dozat 2016), and NAdamW with ``decoupled_weight_decay=True``; see :func:`nadam_update`.

    Args:
        params: parameters or parameter groups.
        lr: learning rate γ (default 2e-3, as torch.optim.NAdam).
        betas: (β1, β2), each in [0, 1) (default (0.9, 0.999)).
        eps: ε ≥ 0 (default 1e-8).
        weight_decay: λ ≥ 0 (default 0).
        momentum_decay: ψ ≥ 0 of the momentum schedule (default 4e-3).
        decoupled_weight_decay: shrink θ by γλ instead of adding λθ to the gradient
            (NAdamW; AlgoPerf's NadamP).
        foreach: True / False / None (default: multi-tensor path when all parameters share
            one device and dtype).
        maximize: ascend instead of descend.

    State per parameter, as torch.optim.NAdam: ``step``, ``mu_product`` (scalar tensors),
    ``exp_avg``, ``exp_avg_sq``.

    Examples:
        >>> import torch
        >>> from gd_lib.optim import NAdam
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))  # loss 5
        >>> opt = NAdam([w], lr=0.1)
        >>> for _ in range(20):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     opt.step()
        >>> bool((w ** 2).sum() < 5 / 4)  # the loss fell to under a quarter
        True
    """

    _scalar_tensor_keys = ("step", "mu_product")  # scalar tensors, as in torch.optim

    def __init__(
        self,
        params,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ):
        check_unsupported_flags("NAdam", capturable=capturable, differentiable=differentiable)
        check_tensor_lr(lr)
        check_nonnegative("lr", lr)
        check_betas(betas)
        check_nonnegative("eps", eps)
        check_nonnegative("weight_decay", weight_decay)
        check_nonnegative("momentum_decay", momentum_decay)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            foreach=foreach,
            capturable=False,
            differentiable=False,
        )
        super().__init__(params, defaults)

    @staticmethod
    def _init_state(p: Tensor, group: dict) -> dict:
        """A parameter's state at its first gradient."""
        return {
            "step": torch.tensor(0.0, dtype=scalar_dtype()),
            "mu_product": torch.tensor(1.0, dtype=scalar_dtype()),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """As torch's, but keep ``mu_product`` in its scalar dtype.

        ``Optimizer.load_state_dict`` casts every floating state tensor except ``step`` to
        the parameter's dtype; for a float64 parameter that would move Π_t from float32 to
        float64 arithmetic and make a resumed run differ from an uninterrupted one.
        Casting back is exact (the value came from float32).
        """
        super().load_state_dict(state_dict)
        for state in self.state.values():
            if "mu_product" in state:
                state["mu_product"] = state["mu_product"].to(dtype=scalar_dtype(), device="cpu")

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One step for every parameter with a gradient; returns the closure's loss."""
        loss = evaluate_closure(closure)
        for group, params, states in groups_with_grads(self, "NAdam", self._init_state):
            # t <- t + 1
            steps = advance_steps(states)
            beta1, beta2 = group["betas"]
            hyper = dict(
                lr=float(group["lr"]),
                beta1=float(beta1),
                beta2=float(beta2),
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                momentum_decay=group["momentum_decay"],
                decoupled_weight_decay=group["decoupled_weight_decay"],
                maximize=group["maximize"],
            )
            # complex parameters: real and imaginary parts as separate coordinates
            lists = (
                [as_real(p) for p in params],
                [as_real(p.grad) for p in params],
                [as_real(s["exp_avg"]) for s in states],
                [as_real(s["exp_avg_sq"]) for s in states],
                [s["mu_product"] for s in states],
                steps,
            )
            apply_update(nadam_update, nadam_update_foreach, lists, hyper, params=params, foreach=group["foreach"])
        return loss
