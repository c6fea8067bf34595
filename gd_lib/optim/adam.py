"""Adam and AdamW: adaptive moment estimation, with L2 or decoupled weight decay.

References:
    Kingma & Ba (2015), "Adam: A Method for Stochastic Optimization", ICLR (Algorithm 1).
    Reddi, Kale & Kumar (2018), "On the Convergence of Adam and Beyond", ICLR (AMSGrad).
    Loshchilov & Hutter (2019), "Decoupled Weight Decay Regularization", ICLR (AdamW).

Same class names, hyperparameters, defaults, state keys and arithmetic as ``torch.optim.Adam``
and ``torch.optim.AdamW`` (torch 2.13), so trajectories agree to rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import check_betas, check_nonnegative, check_tensor_lr, check_unsupported_flags
from ._base import Optimizer
from ._foreach import apply_update, as_real, foreach_grads, scalar_dtype
from ._groups import advance_steps, evaluate_closure, groups_with_grads

__all__ = ["Adam", "AdamW", "adam_update", "adam_update_foreach"]


def adam_update(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Tensor | None,
    step: float,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    r"""One Adam step on one tensor, in place on ``param`` and the moment estimates.

    With learning rate :math:`\gamma`, decay rates :math:`\beta_1, \beta_2`, weight decay
    :math:`\lambda` and step count :math:`t` (``step``, already incremented, so 1 at the
    first step), :math:`m` = ``exp_avg``, :math:`v` = ``exp_avg_sq``:

    .. math::
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) \;(+\,\lambda\theta_{t-1}
              \text{ for Adam's L2 penalty}) \\
        \theta_{t-1} &\leftarrow (1 - \gamma\lambda)\,\theta_{t-1}
              \quad\text{instead, for decoupled weight decay (AdamW)} \\
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
        v_t &\leftarrow \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 \\
        \hat v_t &\leftarrow \max(\hat v_{t-1}, v_t) \text{ with AMSGrad
              (``max_exp_avg_sq``), else } v_t \\
        \theta_t &\leftarrow \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,
              \frac{m_t}{\sqrt{\hat v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    This is Algorithm 1 of Kingma & Ba (2015), with :math:`\hat m_t = m_t/(1-\beta_1^t)` and
    :math:`\epsilon` added to :math:`\sqrt{\hat v_t/(1-\beta_2^t)}` (not to :math:`\sqrt{v_t}`
    as in the paper's "more efficient" variant of Section 2, which rescales :math:`\epsilon`).
    AMSGrad (Reddi et al. 2018) keeps the running maximum of :math:`v` and bias-corrects it,
    as torch.optim does. AdamW (Loshchilov & Hutter 2019, Algorithm 2) shrinks
    :math:`\theta` by :math:`\gamma\lambda` before the step; their schedule multiplier
    :math:`\eta_t` is folded into :math:`\gamma` (torch's convention: decay scales with lr).
    """
    # g <- -∇f when maximizing (new tensor: p.grad is never written)
    g = -grad if maximize else grad
    if weight_decay != 0:
        if decoupled_weight_decay:
            # θ <- (1 - γλ) θ   (AdamW)
            param.mul_(1 - lr * weight_decay)
        else:
            # g <- g + λθ   (L2 penalty in the gradient)
            g = g.add(param, alpha=weight_decay)
    # m <- β1 m + (1 - β1) g   (a lerp of m towards g)
    exp_avg.lerp_(g, 1 - beta1)
    # v <- β2 v + (1 - β2) g²
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    # bias corrections 1 - β1^t and sqrt(1 - β2^t)
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    step_size = lr / bias_correction1
    # v̂ <- max(v̂, v)   (AMSGrad)
    if max_exp_avg_sq is not None:
        torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        second_moment = max_exp_avg_sq
    else:
        second_moment = exp_avg_sq
    # denominator sqrt(v̂)/sqrt(1 - β2^t) + ε
    denom = (second_moment.sqrt() / bias_correction2_sqrt).add_(eps)
    # θ <- θ - γ/(1 - β1^t) · m / denom
    param.addcdiv_(exp_avg, denom, value=-step_size)


def adam_update_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor | None],
    steps: list[float],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    """:func:`adam_update` on lists of tensors of one device and dtype, with foreach ops.

    Same arithmetic in the same order as the per-tensor path (equal bit for bit on the
    CPU). ``max_exp_avg_sqs`` holds ``None`` entries without AMSGrad; ``steps`` are the
    per-tensor step counts, already incremented.
    """
    # g <- ±∇f, then g <- g + λθ (L2) or θ <- (1 - γλ) θ (decoupled)
    g = foreach_grads(
        params,
        grads,
        maximize=maximize,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        lr=lr,
    )
    # m <- β1 m + (1 - β1) g
    torch._foreach_lerp_(exp_avgs, g, 1 - beta1)
    # v <- β2 v + (1 - β2) g²
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, g, g, value=1 - beta2)
    del g
    # per-tensor bias corrections (steps may differ between tensors)
    neg_step_sizes = [-(lr / (1 - beta1**t)) for t in steps]
    bias_correction2_sqrts = [(1 - beta2**t) ** 0.5 for t in steps]
    # v̂ <- max(v̂, v)   (AMSGrad)
    if max_exp_avg_sqs and max_exp_avg_sqs[0] is not None:
        torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
        second_moments = max_exp_avg_sqs
    else:
        second_moments = exp_avg_sqs
    # denominator sqrt(v̂)/sqrt(1 - β2^t) + ε
    denoms = torch._foreach_sqrt(second_moments)
    torch._foreach_div_(denoms, bias_correction2_sqrts)
    torch._foreach_add_(denoms, eps)
    # θ <- θ - γ/(1 - β1^t) · m / denom
    torch._foreach_addcdiv_(params, exp_avgs, denoms, neg_step_sizes)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), optionally AMSGrad and decoupled weight decay; see :func:`adam_update`.

    Args:
        params: parameters or parameter groups.
        lr: learning rate γ (default 1e-3).
        betas: (β1, β2), each in [0, 1) (default (0.9, 0.999)).
        eps: ε ≥ 0 added to the denominator (default 1e-8).
        weight_decay: λ ≥ 0 (default 0): an L2 penalty in the gradient, or with
            ``decoupled_weight_decay=True`` a shrink of θ by γλ per step (AdamW).
        amsgrad: keep and use the running maximum of v (Reddi et al. 2018).
        foreach: True for the multi-tensor path, False for the per-tensor one, None (default)
            for the multi-tensor path when all parameters share one device and dtype.
        maximize: ascend instead of descend.
        decoupled_weight_decay: AdamW's decay (default False; :class:`AdamW` sets it).

    State per parameter, as torch.optim.Adam: ``step`` (a scalar tensor), ``exp_avg`` (m),
    ``exp_avg_sq`` (v) and, with AMSGrad, ``max_exp_avg_sq``.

    Examples:
        >>> import torch
        >>> from gd_lib.optim import Adam
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = Adam([w], lr=0.1)
        >>> (w ** 2).sum().backward()  # gradient 2w = (2, -4)
        >>> opt.step()
        >>> w.detach()  # Adam's first step is lr * sign(g)
        tensor([ 0.9000, -1.9000])
    """

    _scalar_tensor_keys = ("step",)  # scalar tensors, as in torch.optim

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ):
        check_unsupported_flags(type(self).__name__, capturable=capturable, differentiable=differentiable, fused=fused)
        check_tensor_lr(lr)
        check_nonnegative("lr", lr)
        check_betas(betas)
        check_nonnegative("eps", eps)
        check_nonnegative("weight_decay", weight_decay)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            foreach=foreach,
            capturable=False,
            differentiable=False,
            fused=None,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)

    @staticmethod
    def _init_state(p: Tensor, group: dict) -> dict:
        """A parameter's state at its first gradient."""
        state = {
            "step": torch.tensor(0.0, dtype=scalar_dtype()),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
        }
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One step for every parameter with a gradient; returns the closure's loss."""
        loss = evaluate_closure(closure)
        for group, params, states in groups_with_grads(self, type(self).__name__, self._init_state):
            # t <- t + 1
            steps = advance_steps(states)
            beta1, beta2 = group["betas"]
            hyper = dict(
                lr=float(group["lr"]),
                beta1=float(beta1),
                beta2=float(beta2),
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                decoupled_weight_decay=group["decoupled_weight_decay"],
                maximize=group["maximize"],
            )
            # complex parameters: real and imaginary parts as separate coordinates
            lists = (
                [as_real(p) for p in params],
                [as_real(p.grad) for p in params],
                [as_real(s["exp_avg"]) for s in states],
                [as_real(s["exp_avg_sq"]) for s in states],
                [as_real(s["max_exp_avg_sq"]) if group["amsgrad"] else None for s in states],
                steps,
            )
            apply_update(adam_update, adam_update_foreach, lists, hyper, params=params, foreach=group["foreach"])
        return loss


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019); see :func:`adam_update`.

    Same arguments as :class:`Adam` with ``decoupled_weight_decay=True`` and torch's AdamW
    default ``weight_decay=1e-2``: each step shrinks θ by the factor (1 - γλ) before the
    Adam update, instead of adding λθ to the gradient. Loading an Adam state dict keeps it
    AdamW (decoupled decay), as torch.optim.AdamW does.

    Examples:
        >>> import torch
        >>> from gd_lib.optim import AdamW
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = AdamW([w], lr=0.1, weight_decay=0.01)
        >>> (w ** 2).sum().backward()  # gradient 2w = (2, -4)
        >>> opt.step()
        >>> w.detach()  # (1 - 0.1 * 0.01) w - 0.1 * sign(g)
        tensor([ 0.8990, -1.8980])
    """

    _forced_group_values = {"decoupled_weight_decay": True}

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ):
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )
