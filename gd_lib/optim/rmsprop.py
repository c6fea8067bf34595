"""RMSprop: divide the gradient by a running root mean square of recent gradients.

References:
    Tieleman & Hinton (2012), "Lecture 6.5 — RMSprop: Divide the gradient by a running
    average of its recent magnitude", COURSERA: Neural Networks for Machine Learning.
    Graves (2013), "Generating Sequences With Recurrent Neural Networks", arXiv:1308.0850,
    Section 4 (the centered variant, with momentum on the normalised step).

Same class name, hyperparameters, defaults, state keys and arithmetic as ``torch.optim.RMSprop``
(torch 2.13), so trajectories agree to rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import check_in_range, check_nonnegative, check_tensor_lr, check_unsupported_flags
from ._base import Optimizer
from ._foreach import apply_update, as_real, foreach_grads, scalar_dtype
from ._groups import advance_steps, evaluate_closure, groups_with_grads

__all__ = ["RMSprop", "rmsprop_update", "rmsprop_update_foreach"]


def rmsprop_update(
    param: Tensor,
    grad: Tensor,
    square_avg: Tensor,
    grad_avg: Tensor | None,
    momentum_buffer: Tensor | None,
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    maximize: bool,
) -> None:
    r"""One RMSprop step on one tensor, in place on ``param`` and the averages.

    With smoothing constant :math:`\alpha`, :math:`v` = ``square_avg``, :math:`\bar g` =
    ``grad_avg`` (centered variant only) and :math:`b` = ``momentum_buffer`` (when
    ``momentum`` :math:`\mu > 0`):

    .. math::
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1} \\
        v_t &\leftarrow \alpha v_{t-1} + (1-\alpha)\, g_t^2 \\
        \bar g_t &\leftarrow \alpha \bar g_{t-1} + (1-\alpha)\, g_t
              \quad\text{(centered)} \\
        s_t &\leftarrow \sqrt{v_t - \bar g_t^2} + \epsilon \text{ (centered), else }
              \sqrt{v_t} + \epsilon \\
        b_t &\leftarrow \mu b_{t-1} + g_t / s_t, \quad
              \theta_t \leftarrow \theta_{t-1} - \gamma b_t \quad (\mu > 0) \\
        \theta_t &\leftarrow \theta_{t-1} - \gamma\, g_t / s_t \quad (\mu = 0)

    Tieleman & Hinton's lecture gives :math:`v` with :math:`\alpha = 0.9` and the step
    :math:`g/\sqrt{v}`; :math:`\epsilon` outside the root and :math:`\alpha = 0.99` are
    torch's. The centered form (Graves 2013) divides by an estimate of the gradient's
    standard deviation instead of its root mean square (Graves adds his constant inside
    the root; here, as in torch, :math:`\epsilon` is added outside). There is no bias correction, and
    :math:`v` starts at 0, so early steps are large (:math:`|g|/\sqrt{1-\alpha}`).
    """
    # g <- ±∇f + λθ   (new tensors: p.grad is never written)
    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g.add(param, alpha=weight_decay)
    # v <- α v + (1 - α) g²
    square_avg.mul_(alpha).addcmul_(g, g, value=1 - alpha)
    if grad_avg is not None:
        # ḡ <- α ḡ + (1 - α) g ;  s <- sqrt(v - ḡ²)
        grad_avg.lerp_(g, 1 - alpha)
        avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
    else:
        # s <- sqrt(v)
        avg = square_avg.sqrt()
    # s <- s + ε
    avg = avg.add_(eps)
    if momentum_buffer is not None:
        # b <- μ b + g/s ;  θ <- θ - γ b
        momentum_buffer.mul_(momentum).addcdiv_(g, avg)
        param.add_(momentum_buffer, alpha=-lr)
    else:
        # θ <- θ - γ g/s
        param.addcdiv_(g, avg, value=-lr)


def rmsprop_update_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor | None],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    maximize: bool,
) -> None:
    """:func:`rmsprop_update` on lists of tensors of one device and dtype, with foreach ops.

    Same arithmetic in the same order (equal bit for bit on the CPU). ``grad_avgs`` and
    ``momentum_buffers`` hold ``None`` entries when the variant is off.
    """
    # g <- ±∇f + λθ
    g = foreach_grads(params, grads, maximize=maximize, weight_decay=weight_decay)
    # v <- α v + (1 - α) g²
    torch._foreach_mul_(square_avgs, alpha)
    torch._foreach_addcmul_(square_avgs, g, g, value=1 - alpha)
    if grad_avgs and grad_avgs[0] is not None:
        # ḡ <- α ḡ + (1 - α) g ;  s <- sqrt(v - ḡ²)
        torch._foreach_lerp_(grad_avgs, g, 1 - alpha)
        avg = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
        torch._foreach_sqrt_(avg)
    else:
        # s <- sqrt(v)
        avg = torch._foreach_sqrt(square_avgs)
    # s <- s + ε
    torch._foreach_add_(avg, eps)
    if momentum_buffers and momentum_buffers[0] is not None:
        # b <- μ b + g/s ;  θ <- θ - γ b
        torch._foreach_mul_(momentum_buffers, momentum)
        torch._foreach_addcdiv_(momentum_buffers, g, avg)
        torch._foreach_add_(params, momentum_buffers, alpha=-lr)
    else:
        # θ <- θ - γ g/s
        torch._foreach_addcdiv_(params, g, avg, value=-lr)


class RMSprop(Optimizer):
    """RMSprop (Tieleman & Hinton 2012), optionally centered and with momentum; see :func:`rmsprop_update`.

    Args:
        params: parameters or parameter groups.
        lr: learning rate γ (default 1e-2, as torch.optim.RMSprop).
        alpha: smoothing constant α ∈ [0, 1] (default 0.99).
        eps: ε ≥ 0 added to the root (default 1e-8).
        weight_decay: L2 penalty λ ≥ 0 (default 0).
        momentum: μ ≥ 0 (default 0).
        centered: divide by the running standard deviation instead of the RMS.
        foreach: True / False / None (default: multi-tensor path when all parameters share
            one device and dtype).
        maximize: ascend instead of descend.

    State per parameter, as torch.optim.RMSprop: ``step`` (counted, unused by the update),
    ``square_avg``, ``momentum_buffer`` (momentum > 0) and ``grad_avg`` (centered).

    Examples:
        >>> import torch
        >>> from gd_lib.optim import RMSprop
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = RMSprop([w], lr=0.01)
        >>> (w ** 2).sum().backward()  # gradient 2w = (2, -4)
        >>> opt.step()
        >>> w.detach()  # v = 0.01 g^2: step 0.01 * g / (0.1 |g|) = 0.1 sign(g)
        tensor([ 0.9000, -1.9000])
    """

    _scalar_tensor_keys = ("step",)  # scalar tensors, as in torch.optim

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ):
        check_unsupported_flags("RMSprop", capturable=capturable, differentiable=differentiable)
        check_tensor_lr(lr)
        check_nonnegative("lr", lr)
        check_in_range("alpha", alpha, 0.0, 1.0, high_inclusive=True)
        check_nonnegative("eps", eps)
        check_nonnegative("weight_decay", weight_decay)
        check_nonnegative("momentum", momentum)
        defaults = dict(
            lr=lr,
            momentum=momentum,
            alpha=alpha,
            eps=eps,
            centered=centered,
            weight_decay=weight_decay,
            capturable=False,
            foreach=foreach,
            maximize=maximize,
            differentiable=False,
        )
        super().__init__(params, defaults)

    @staticmethod
    def _init_state(p: Tensor, group: dict) -> dict:
        """A parameter's state at its first gradient."""
        state = {
            "step": torch.tensor(0.0, dtype=scalar_dtype()),
            "square_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
        }
        if group["momentum"] > 0:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One step for every parameter with a gradient; returns the closure's loss."""
        loss = evaluate_closure(closure)
        for group, params, states in groups_with_grads(self, "RMSprop", self._init_state):
            # t <- t + 1 (kept for parity with torch.optim; the update does not use it)
            advance_steps(states)
            hyper = dict(
                lr=float(group["lr"]),
                alpha=group["alpha"],
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                momentum=group["momentum"],
                maximize=group["maximize"],
            )
            with_momentum, centered = group["momentum"] > 0, group["centered"]
            # complex parameters: real and imaginary parts as separate coordinates
            lists = (
                [as_real(p) for p in params],
                [as_real(p.grad) for p in params],
                [as_real(s["square_avg"]) for s in states],
                [as_real(s["grad_avg"]) if centered else None for s in states],
                [as_real(s["momentum_buffer"]) if with_momentum else None for s in states],
            )
            apply_update(rmsprop_update, rmsprop_update_foreach, lists, hyper, params=params, foreach=group["foreach"])
        return loss
