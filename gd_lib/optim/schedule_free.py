r"""Schedule-Free SGD and AdamW: momentum replaced by interpolation and averaging.

References:
    Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky (2024), "The Road Less
    Scheduled", arXiv:2405.15682 (Algorithm 1: Schedule-Free AdamW; eq. (1)-(3)).
    facebookresearch/schedule_free, the ``schedulefree`` package (version 1.4):
    ``SGDScheduleFree`` and ``AdamWScheduleFree``, whose names, defaults, state and
    ``.train()`` / ``.eval()`` switch are followed here.

Three sequences, with base learning rate γ_t and interpolation β (``momentum`` for SGD,
``betas[0]`` for AdamW):

.. math::
    y_t &= (1-\beta)\, z_t + \beta\, x_t       &\text{(where gradients are taken)} \\
    z_{t+1} &= z_t - \gamma_t\, g(y_t)           &\text{(the base method: SGD or Adam)} \\
    x_{t+1} &= (1 - c_{t+1})\, x_t + c_{t+1}\, z_{t+1}  &\text{(the average: evaluate here)}

with :math:`c_{t+1} = w_{t+1} / \sum_{i \le t+1} w_i` and weights
:math:`w_t = t^r\,\gamma_{\max,t}^{p}` (``r``, ``weight_lr_power`` = p; γ_max is the
largest scheduled rate so far). With r = 0 and no warmup the average is uniform,
:math:`c_{t+1} = 1/(t+1)`.

Memory: like the package, only y (in ``param``) and z (``state["z"]``) are stored; x is
recovered from them when needed, :math:`x = (y - (1-\beta) z)/\beta`. Substituting x
into the recursion gives the update actually run (no x needed):

.. math::
    y_{t+1} = (1-c_{t+1})\, y_t + c_{t+1}\, z_t + \gamma_t\,\big(\beta(1-c_{t+1}) - 1\big)\, g(y_t).

``.eval()`` swaps the parameters to x (``y.lerp_(z, 1 - 1/β)``) and ``.train()`` back to y
(``x.lerp_(z, 1 - β)``). The optimizer starts in eval mode, as the package does: call
``.train()`` before the first step, ``.eval()`` before evaluating or checkpointing.

Special cases (the package's README): β = 0 evaluates gradients at z, so the training
iterates are the base method itself and x is its Polyak-Ruppert average; β = 1 is primal
averaging. Because x is recovered by dividing by β, the classes need 0 < β < 1 (as the
package's SGD does); the update functions below accept β = 0.

Differences from the package, none of which changes the trajectory: ``p.grad`` is never
written (the package adds the weight decay into ``p.grad`` and divides it by Adam's
denominator in place), and ``lr`` must be a number.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import check_in_range, check_nonnegative, params_with_grad
from ._base import Optimizer
from ._foreach import as_real, buckets
from ._groups import evaluate_closure

__all__ = [
    "SGDScheduleFree",
    "AdamWScheduleFree",
    "schedule_free_coefficients",
    "sgd_schedule_free_update",
    "sgd_schedule_free_update_foreach",
    "adamw_schedule_free_update",
    "adamw_schedule_free_update_foreach",
]

_HAS_FOREACH = hasattr(torch, "_foreach_mul_")


def schedule_free_coefficients(
    k: int, lr: float, *, warmup_steps: int, r: float, weight_lr_power: float, lr_max: float, weight_sum: float
) -> tuple[float, float, float, float]:
    r"""The scheduled rate and the averaging coefficient of step ``k`` (0 at the first step).

    .. math::
        \gamma_k &= \gamma\,\min\!\big(1, (k+1)/\text{warmup\_steps}\big) \\
        \gamma_{\max} &\leftarrow \max(\gamma_{\max}, \gamma_k) \\
        w_{k+1} &= (k+1)^r\,\gamma_{\max}^{p}, \qquad
            W \leftarrow W + w_{k+1}, \qquad c_{k+1} = w_{k+1} / W

    (:math:`c_{k+1} = 0` if :math:`W = 0`, as in the package). Returns
    ``(scheduled_lr, lr_max, weight_sum, ckp1)``; ``lr_max`` starts at -1 and
    ``weight_sum`` at 0.
    """
    # γ_k <- γ · linear warmup
    sched = (k + 1) / warmup_steps if k < warmup_steps else 1.0
    scheduled_lr = lr * sched
    # γ_max <- max(γ_max, γ_k)
    lr_max = max(scheduled_lr, lr_max)
    # w_{k+1} = (k+1)^r γ_max^p ;  W <- W + w_{k+1}
    weight = ((k + 1) ** r) * (lr_max**weight_lr_power)
    weight_sum = weight_sum + weight
    # c_{k+1} = w_{k+1} / W
    try:
        ckp1 = weight / weight_sum
    except ZeroDivisionError:
        ckp1 = 0.0
    return scheduled_lr, lr_max, weight_sum, ckp1


def sgd_schedule_free_update(
    y: Tensor, grad: Tensor, z: Tensor, *, lr: float, momentum: float, weight_decay: float, ckp1: float
) -> None:
    r"""One Schedule-Free SGD step on one tensor, in place on ``y`` (the parameter) and ``z``.

    With :math:`\gamma` = ``lr`` (already scheduled), :math:`\beta` = ``momentum``,
    :math:`\lambda` = ``weight_decay`` and :math:`c` = ``ckp1``:

    .. math::
        g &\leftarrow \nabla f(y) + \lambda y \\
        y &\leftarrow (1-c)\, y + c\, z + \gamma\,\big(\beta(1-c) - 1\big)\, g \\
        z &\leftarrow z - \gamma\, g

    (see the module docstring for why this is the three-sequence recursion). With
    :math:`\beta = 0` and :math:`y = z` at the start, y stays equal to z: plain SGD.
    """
    # g <- ∇f(y) + λy   (a new tensor: p.grad is never written)
    g = grad.add(y, alpha=weight_decay) if weight_decay != 0 else grad
    # y <- (1 - c) y + c z   (moves x's share of y towards the new average)
    y.lerp_(z, ckp1)
    # y <- y + γ(β(1 - c) - 1) g
    y.add_(g, alpha=lr * (momentum * (1 - ckp1) - 1))
    # z <- z - γ g   (the SGD step)
    z.sub_(g, alpha=lr)


def sgd_schedule_free_update_foreach(
    ys: list[Tensor],
    grads: list[Tensor],
    zs: list[Tensor],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    ckp1: float,
) -> None:
    """:func:`sgd_schedule_free_update` on lists of tensors of one device and dtype (foreach ops)."""
    # g <- ∇f(y) + λy
    g = torch._foreach_add(grads, ys, alpha=weight_decay) if weight_decay != 0 else list(grads)
    # y <- (1 - c) y + c z
    torch._foreach_lerp_(ys, zs, ckp1)
    # y <- y + γ(β(1 - c) - 1) g
    torch._foreach_add_(ys, g, alpha=lr * (momentum * (1 - ckp1) - 1))
    # z <- z - γ g
    torch._foreach_sub_(zs, g, alpha=lr)


def adamw_schedule_free_update(
    y: Tensor,
    grad: Tensor,
    z: Tensor,
    exp_avg_sq: Tensor,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    ckp1: float,
    bias_correction2: float,
) -> None:
    r"""One Schedule-Free AdamW step on one tensor, in place on ``y``, ``z`` and ``exp_avg_sq``.

    With :math:`\gamma` = ``lr`` (already scheduled), :math:`\beta_1` the interpolation,
    :math:`v` = ``exp_avg_sq``, :math:`\lambda` = ``weight_decay``, :math:`c` = ``ckp1`` and
    step :math:`t` (``bias_correction2`` = :math:`1-\beta_2^t`):

    .. math::
        v &\leftarrow \beta_2 v + (1-\beta_2)\, g^2 \\
        \hat g &\leftarrow g / \big(\sqrt{v/(1-\beta_2^t)} + \epsilon\big) + \lambda y \\
        y &\leftarrow (1-c)\, y + c\, z + \gamma\,\big(\beta_1(1-c) - 1\big)\, \hat g \\
        z &\leftarrow z - \gamma\, \hat g

    Algorithm 1 of Defazio et al. (2024) with the decay taken at y (the package's form
    since version 1.3). There is no first moment: β1 is the interpolation. With
    :math:`\beta_1 = 0` and :math:`y = z` at the start, y stays equal to z, whose update is
    AdamW with β1 = 0.
    """
    # v <- β2 v + (1 - β2) g²
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    # denominator sqrt(v / (1 - β2^t)) + ε
    denom = exp_avg_sq.div(bias_correction2).sqrt_().add_(eps)
    # ĝ <- g / denom   (a new tensor: p.grad is never written)
    g = grad / denom
    # ĝ <- ĝ + λy   (decay at y)
    if weight_decay != 0:
        g.add_(y, alpha=weight_decay)
    # y <- (1 - c) y + c z
    y.lerp_(z, ckp1)
    # y <- y + γ(β1(1 - c) - 1) ĝ
    y.add_(g, alpha=lr * (beta1 * (1 - ckp1) - 1))
    # z <- z - γ ĝ   (the Adam step without momentum)
    z.sub_(g, alpha=lr)


def adamw_schedule_free_update_foreach(
    ys: list[Tensor],
    grads: list[Tensor],
    zs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    ckp1: float,
    bias_correction2: float,
) -> None:
    """:func:`adamw_schedule_free_update` on lists of tensors of one device and dtype (foreach ops)."""
    # v <- β2 v + (1 - β2) g²
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
    # denominator sqrt(v / (1 - β2^t)) + ε
    denoms = torch._foreach_div(exp_avg_sqs, bias_correction2)
    torch._foreach_sqrt_(denoms)
    torch._foreach_add_(denoms, eps)
    # ĝ <- g / denom
    g = torch._foreach_div(grads, denoms)
    del denoms
    # ĝ <- ĝ + λy
    if weight_decay != 0:
        torch._foreach_add_(g, ys, alpha=weight_decay)
    # y <- (1 - c) y + c z
    torch._foreach_lerp_(ys, zs, ckp1)
    # y <- y + γ(β1(1 - c) - 1) ĝ
    torch._foreach_add_(ys, g, alpha=lr * (beta1 * (1 - ckp1) - 1))
    # z <- z - γ ĝ
    torch._foreach_sub_(zs, g, alpha=lr)


def _check_common(lr, weight_decay, warmup_steps, r, weight_lr_power) -> None:
    check_nonnegative("lr", lr)
    check_nonnegative("weight_decay", weight_decay)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"Invalid warmup_steps: {warmup_steps!r}; expected an integer >= 0")
    check_nonnegative("r", r)
    check_nonnegative("weight_lr_power", weight_lr_power)


class _ScheduleFreeBase(Optimizer):
    """The ``.train()`` / ``.eval()`` switch and the per-group averaging bookkeeping."""

    def _interpolation(self, group: dict) -> float:  # β of the group
        raise NotImplementedError

    @torch.no_grad()
    def eval(self) -> None:
        """Parameters <- x, the average (call before evaluating or checkpointing)."""
        for group in self.param_groups:
            if group["train_mode"]:
                beta = self._interpolation(group)
                for p in group["params"]:
                    state = self.state[p]
                    if "z" in state:
                        # x = (y - (1 - β) z) / β
                        p.lerp_(state["z"].to(p.device), 1 - 1 / beta)
                group["train_mode"] = False

    @torch.no_grad()
    def train(self) -> None:
        """Parameters <- y, where gradients are taken (call before training steps)."""
        for group in self.param_groups:
            if not group["train_mode"]:
                beta = self._interpolation(group)
                for p in group["params"]:
                    state = self.state[p]
                    if "z" in state:
                        # y = (1 - β) z + β x
                        p.lerp_(state["z"].to(p.device), 1 - beta)
                group["train_mode"] = True

    def add_param_group(self, param_group: dict) -> None:
        """A group added mid-run starts in the mode of the others (its parameters have no z yet)."""
        super().add_param_group(param_group)
        if len(self.param_groups) > 1:
            self.param_groups[-1]["train_mode"] = self.param_groups[0]["train_mode"]

    def _begin_step(self, closure):
        if not self.param_groups[0]["train_mode"]:
            raise RuntimeError(
                f"{type(self).__name__} was not in train mode when step() was called: call "
                "optimizer.train() before training steps and optimizer.eval() before evaluation"
            )
        return evaluate_closure(closure)

    @staticmethod
    def _advance_average(group: dict) -> tuple[float, float]:
        """Update the group's averaging bookkeeping; returns (scheduled lr, c_{k+1})."""
        lr, group["lr_max"], group["weight_sum"], ckp1 = schedule_free_coefficients(
            group["k"],
            float(group["lr"]),
            warmup_steps=group["warmup_steps"],
            r=group["r"],
            weight_lr_power=group["weight_lr_power"],
            lr_max=group["lr_max"],
            weight_sum=group["weight_sum"],
        )
        group["scheduled_lr"] = lr  # for logging, as the package
        return lr, ckp1


class SGDScheduleFree(_ScheduleFreeBase):
    """Schedule-Free SGD (Defazio et al. 2024); see :func:`sgd_schedule_free_update`.

    Args (names and defaults of ``schedulefree.SGDScheduleFree``):
        params: parameters or parameter groups.
        lr: γ ≥ 0 (default 1.0; 10-50x a classical SGD rate is a good start).
        momentum: β in (0, 1) (default 0.9), the interpolation between z and x.
        weight_decay: λ ≥ 0, an L2 penalty taken at y (default 0).
        warmup_steps: linear warmup length (default 0).
        r: power of the polynomial weighting of the average (default 0: uniform).
        weight_lr_power: p, weights ∝ γ_max^p (default 2).
        foreach: multi-tensor path (default True where torch has foreach ops).

    State: per parameter ``z``; per group ``k`` (steps taken), ``train_mode``,
    ``weight_sum``, ``lr_max``, ``scheduled_lr``.

    Examples:
        >>> import torch
        >>> from gd_lib.optim import SGDScheduleFree
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))  # loss 5
        >>> opt = SGDScheduleFree([w], lr=0.1)
        >>> opt.train()  # schedule-free optimizers have a train and an eval mode
        >>> for _ in range(20):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     opt.step()
        >>> opt.eval()  # w is now the averaged point x, the one to evaluate
        >>> bool((w ** 2).sum() < 5 / 4)  # the loss fell to under a quarter
        True
    """

    def __init__(
        self,
        params,
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2,
        foreach: bool | None = _HAS_FOREACH,
    ):
        _check_common(lr, weight_decay, warmup_steps, r, weight_lr_power)
        check_in_range("momentum", momentum, 0.0, 1.0, low_inclusive=False)
        defaults = dict(
            lr=lr,
            momentum=momentum,
            r=r,
            k=0,
            warmup_steps=warmup_steps,
            train_mode=False,
            weight_sum=0.0,
            lr_max=-1.0,
            scheduled_lr=0.0,
            weight_lr_power=weight_lr_power,
            weight_decay=weight_decay,
            foreach=foreach,
        )
        super().__init__(params, defaults)

    def _interpolation(self, group: dict) -> float:
        return group["momentum"]

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One step for every parameter with a gradient; returns the closure's loss."""
        loss = self._begin_step(closure)
        for group in self.param_groups:
            lr, ckp1 = self._advance_average(group)
            params = params_with_grad(group["params"], type(self).__name__)
            for p in params:
                if "z" not in self.state[p]:
                    self.state[p]["z"] = torch.clone(p, memory_format=torch.preserve_format)
            hyper = dict(lr=lr, momentum=group["momentum"], weight_decay=group["weight_decay"], ckp1=ckp1)
            # complex parameters: real and imaginary parts as separate coordinates
            lists = (
                [as_real(p) for p in params],
                [as_real(p.grad) for p in params],
                [as_real(self.state[p]["z"]) for p in params],
            )
            if group["foreach"] and params:
                for bucket in buckets(*lists):
                    sgd_schedule_free_update_foreach(*bucket, **hyper)
            else:
                for y, grad, z in zip(*lists):
                    sgd_schedule_free_update(y, grad, z, **hyper)
            group["k"] += 1
        return loss


class AdamWScheduleFree(_ScheduleFreeBase):
    """Schedule-Free AdamW (Defazio et al. 2024, Algorithm 1); see :func:`adamw_schedule_free_update`.

    Args (names and defaults of ``schedulefree.AdamWScheduleFree``):
        params: parameters or parameter groups.
        lr: γ ≥ 0 (default 0.0025).
        betas: (β1, β2): β1 in (0, 1) the interpolation, β2 in [0, 1) (default (0.9, 0.999)).
        eps: ε ≥ 0 added to the denominator (default 1e-8).
        weight_decay: λ ≥ 0, decoupled, taken at y (default 0).
        warmup_steps: linear warmup length (default 0).
        r: power of the polynomial weighting of the average (default 0: uniform).
        weight_lr_power: p, weights ∝ γ_max^p (default 2).
        foreach: multi-tensor path (default True where torch has foreach ops).

    State: per parameter ``z`` and ``exp_avg_sq`` (v); per group ``k``, ``train_mode``,
    ``weight_sum``, ``lr_max``, ``scheduled_lr``.

    Examples:
        >>> import torch
        >>> from gd_lib.optim import AdamWScheduleFree
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))  # loss 5
        >>> opt = AdamWScheduleFree([w], lr=0.1)
        >>> opt.train()  # schedule-free optimizers have a train and an eval mode
        >>> for _ in range(20):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     opt.step()
        >>> opt.eval()  # w is now the averaged point x, the one to evaluate
        >>> bool((w ** 2).sum() < 5 / 4)  # the loss fell to under a quarter
        True
    """

    def __init__(
        self,
        params,
        lr: float = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        foreach: bool | None = _HAS_FOREACH,
    ):
        _check_common(lr, weight_decay, warmup_steps, r, weight_lr_power)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Invalid betas: {betas!r}; expected a tuple of 2 numbers")
        check_in_range("betas[0]", betas[0], 0.0, 1.0, low_inclusive=False)
        check_in_range("betas[1]", betas[1], 0.0, 1.0)
        check_nonnegative("eps", eps)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            r=r,
            k=0,
            warmup_steps=warmup_steps,
            train_mode=False,
            weight_sum=0.0,
            lr_max=-1.0,
            scheduled_lr=0.0,
            weight_lr_power=weight_lr_power,
            weight_decay=weight_decay,
            foreach=foreach,
        )
        super().__init__(params, defaults)

    def _interpolation(self, group: dict) -> float:
        return group["betas"][0]

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One step for every parameter with a gradient; returns the closure's loss."""
        loss = self._begin_step(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            # 1 - β2^t with t = k + 1
            bias_correction2 = 1 - beta2 ** (group["k"] + 1)
            lr, ckp1 = self._advance_average(group)
            params = params_with_grad(group["params"], type(self).__name__)
            for p in params:
                state = self.state[p]
                if "z" not in state:
                    state["z"] = torch.clone(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            hyper = dict(
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                ckp1=ckp1,
                bias_correction2=bias_correction2,
            )
            # complex parameters: real and imaginary parts as separate coordinates
            lists = (
                [as_real(p) for p in params],
                [as_real(p.grad) for p in params],
                [as_real(self.state[p]["z"]) for p in params],
                [as_real(self.state[p]["exp_avg_sq"]) for p in params],
            )
            if group["foreach"] and params:
                for bucket in buckets(*lists):
                    adamw_schedule_free_update_foreach(*bucket, **hyper)
            else:
                for y, grad, z, v in zip(*lists):
                    adamw_schedule_free_update(y, grad, z, v, **hyper)
            group["k"] += 1
        return loss
