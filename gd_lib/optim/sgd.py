"""Stochastic gradient descent with heavy-ball or Nesterov momentum.

References:
    Robbins & Monro (1951), "A Stochastic Approximation Method".
    Polyak (1964), "Some methods of speeding up the convergence of iteration methods" (heavy ball).
    Sutskever, Martens, Dahl & Hinton (2013), "On the importance of initialization and
    momentum in deep learning", ICML (Nesterov momentum in this form).

Same class name, hyperparameters, defaults, state keys and arithmetic as ``torch.optim.SGD``
(torch 2.13), so trajectories agree to rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import check_in_range, check_nonnegative, check_tensor_lr, check_unsupported_flags
from ._base import Optimizer
from ._foreach import apply_update, foreach_grads
from ._groups import evaluate_closure, groups_with_grads

__all__ = ["SGD", "sgd_update", "sgd_update_foreach"]


def sgd_update(
    param: Tensor,
    grad: Tensor,
    momentum_buffer: Tensor | None,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> Tensor | None:
    r"""One SGD step on one tensor, in place on ``param`` and ``momentum_buffer``.

    With learning rate :math:`\gamma` (``lr``), momentum :math:`\mu`, dampening :math:`\tau`
    and weight decay :math:`\lambda`, at step :math:`t`:

    .. math::
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1}
              \quad(\text{minus sign when ``maximize``}) \\
        b_t &\leftarrow \begin{cases} g_t & t = 1 \\
              \mu\, b_{t-1} + (1-\tau)\, g_t & t > 1 \end{cases} \\
        d_t &\leftarrow \begin{cases} g_t + \mu\, b_t & \text{nesterov} \\
              b_t & \text{otherwise} \end{cases} \\
        \theta_t &\leftarrow \theta_{t-1} - \gamma\, d_t

    :math:`b` is ``momentum_buffer`` (``None`` before the first step; it starts at
    :math:`g_1`, undampened). With ``momentum == 0`` there is no buffer and :math:`d_t = g_t`.

    Map to Sutskever et al. (2013), who write :math:`v_{t} = \mu v_{t-1} - \gamma g_t`,
    :math:`\theta_t = \theta_{t-1} + v_t`: here :math:`b = -v/\gamma`, which is the same
    trajectory for a constant :math:`\gamma` but not when :math:`\gamma` changes (torch's
    convention). Their Nesterov step evaluates the gradient at the look-ahead point; the
    form :math:`g_t + \mu b_t` is the usual reparametrisation that uses the gradient at
    :math:`\theta_{t-1}`.

    Returns the momentum buffer (created at the first step), or ``None`` without momentum.
    Sparse gradients are supported (the buffer is then sparse too), as in torch.optim.
    """
    # g <- -∇f when maximizing (a new tensor: p.grad is never written)
    d_p = -grad if maximize else grad
    # g <- g + λθ  (L2 penalty folded into the gradient)
    if weight_decay != 0:
        d_p = d_p.add(param, alpha=weight_decay)
    if momentum != 0:
        # b <- g at the first step, else b <- μ b + (1 - τ) g
        if momentum_buffer is None:
            momentum_buffer = d_p.detach().clone()
        else:
            momentum_buffer.mul_(momentum).add_(d_p, alpha=1 - dampening)
        # d <- g + μ b (Nesterov) or d <- b (heavy ball)
        d_p = d_p.add(momentum_buffer, alpha=momentum) if nesterov else momentum_buffer
    # θ <- θ - γ d
    param.add_(d_p, alpha=-lr)
    return momentum_buffer


def sgd_update_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> list[Tensor | None]:
    """:func:`sgd_update` on lists of dense tensors of one device and dtype, with foreach ops.

    Same arithmetic in the same order, so it equals the per-tensor path bit for bit on
    the CPU. Returns the list of momentum buffers.
    """
    # g <- ±∇f + λθ, in new tensors (p.grad is never written)
    d_p = foreach_grads(params, grads, maximize=maximize, weight_decay=weight_decay)
    if momentum != 0:
        if all(b is not None for b in momentum_buffers):
            # b <- μ b + (1 - τ) g
            bufs = list(momentum_buffers)
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, d_p, alpha=1 - dampening)
        else:  # first step for some tensors: b <- g there
            bufs = []
            for b, g in zip(momentum_buffers, d_p):
                if b is None:
                    b = g.detach().clone()
                else:
                    b.mul_(momentum).add_(g, alpha=1 - dampening)
                bufs.append(b)
        # d <- g + μ b (Nesterov) or d <- b
        d_p = torch._foreach_add(d_p, bufs, alpha=momentum) if nesterov else bufs
        momentum_buffers = bufs
    # θ <- θ - γ d
    torch._foreach_add_(params, d_p, alpha=-lr)
    return momentum_buffers


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with momentum; see :func:`sgd_update`.

    Args:
        params: parameters or parameter groups.
        lr: learning rate γ (default 1e-3, as torch.optim.SGD).
        momentum: momentum factor μ ≥ 0 (default 0).
        dampening: dampening τ ∈ [0, 1] of the gradient in the buffer (default 0).
        weight_decay: L2 penalty λ ≥ 0 added to the gradient (default 0).
        nesterov: Nesterov momentum; needs momentum > 0 and dampening = 0.
        maximize: ascend instead of descend.
        foreach: True for the multi-tensor path, False for the per-tensor one,
            None (default) for the multi-tensor path when all parameters share one
            device and dtype and no gradient is sparse.

    State per parameter: ``momentum_buffer`` (only with momentum), as torch.optim.SGD.

    Examples:
        >>> import torch
        >>> from gd_lib.optim import SGD
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = SGD([w], lr=0.1)
        >>> (w ** 2).sum().backward()  # gradient 2w = (2, -4)
        >>> opt.step()
        >>> w.detach()  # w - 0.1 * 2w
        tensor([ 0.8000, -1.6000])
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ):
        check_unsupported_flags("SGD", differentiable=differentiable, fused=fused)
        check_tensor_lr(lr)
        check_nonnegative("lr", lr)
        check_nonnegative("momentum", momentum)
        check_in_range("dampening", dampening, 0.0, 1.0, high_inclusive=True)
        check_nonnegative("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"Invalid nesterov=True with momentum={momentum!r}, "
                f"dampening={dampening!r}; Nesterov needs momentum > 0 and dampening = 0"
            )
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            differentiable=False,
            fused=None,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One step for every parameter with a gradient; returns the closure's loss."""
        loss = evaluate_closure(closure)
        # sparse gradients are supported (on the per-tensor path)
        for group, params, states in groups_with_grads(self, "SGD", sparse_ok=True):
            hyper = dict(
                lr=float(group["lr"]),
                momentum=group["momentum"],
                dampening=group["dampening"],
                weight_decay=group["weight_decay"],
                nesterov=group["nesterov"],
                maximize=group["maximize"],
            )
            # the momentum buffers: None before a parameter's first step
            lists = (params, [p.grad for p in params], [state.get("momentum_buffer") for state in states])
            buffers = apply_update(
                sgd_update, sgd_update_foreach, lists, hyper, params=params, foreach=group["foreach"]
            )
            if group["momentum"] != 0:
                for state, b in zip(states, buffers):
                    state["momentum_buffer"] = b
        return loss
