r"""Lion: EvoLved Sign Momentum.

References:
    Chen, Liang, Huang, Real, Wang, Pham, Dong, Luong, Hsieh, Lu & Le (2023),
    "Symbolic Discovery of Optimization Algorithms", NeurIPS (Algorithm 2, "Lion").
    lucidrains/lion-pytorch: the PyTorch port whose names and defaults are used here
    (lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, decoupled).

Map from the paper's Algorithm 2: η -> ``lr``, β1, β2 -> ``betas``, λ -> ``weight_decay``,
m -> ``exp_avg``. Lion interpolates the momentum with the gradient (β1) only to take the
sign, and updates the momentum itself with a different rate (β2).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import check_betas, check_nonnegative, params_with_grad
from ._base import Optimizer
from ._foreach import as_real
from ._groups import evaluate_closure

__all__ = ["Lion", "lion_update"]


def lion_update(
    param: Tensor, grad: Tensor, exp_avg: Tensor, *, lr: float, beta1: float, beta2: float, weight_decay: float
) -> None:
    r"""One Lion step on one tensor, in place on ``param`` and ``exp_avg``.

    With :math:`\eta` = ``lr``, :math:`\lambda` = ``weight_decay`` and :math:`m` = ``exp_avg``
    (starting at 0), Algorithm 2 of Chen et al. (2023):

    .. math::
        c &\leftarrow \beta_1 m + (1 - \beta_1)\, g \\
        \theta &\leftarrow \theta - \eta\,\big(\operatorname{sign}(c) + \lambda\theta\big) \\
        m &\leftarrow \beta_2 m + (1 - \beta_2)\, g

    The decoupled decay is applied first as :math:`\theta \leftarrow (1-\eta\lambda)\theta`,
    which is the same update (both use the old :math:`\theta`).
    """
    # θ <- (1 - ηλ) θ   (decoupled weight decay)
    if weight_decay != 0:
        param.mul_(1 - lr * weight_decay)
    # c <- β1 m + (1 - β1) g
    c = exp_avg.mul(beta1).add_(grad, alpha=1 - beta1)
    # θ <- θ - η sign(c)
    param.add_(c.sign_(), alpha=-lr)
    # m <- β2 m + (1 - β2) g
    exp_avg.mul_(beta2).add_(grad, alpha=1 - beta2)


class Lion(Optimizer):
    """Lion (Chen et al. 2023, Algorithm 2); see :func:`lion_update`.

    Args:
        params: parameters or parameter groups.
        lr: η ≥ 0 (default 1e-4; 3-10x smaller than AdamW's, since every coordinate moves by η).
        betas: (β1, β2), each in [0, 1) (default (0.9, 0.99)).
        weight_decay: decoupled λ ≥ 0 (default 0.0; 3-10x larger than AdamW's).

    State per parameter: ``exp_avg`` (m).

    Examples:
        >>> import torch
        >>> from gd_lib.optim import Lion
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = Lion([w], lr=0.1)
        >>> (w ** 2).sum().backward()  # gradient 2w = (2, -4)
        >>> opt.step()
        >>> w.detach()  # w - 0.1 * sign(g)
        tensor([ 0.9000, -1.9000])
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        check_nonnegative("lr", lr)
        check_betas(betas)
        check_nonnegative("weight_decay", weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One step for every parameter with a gradient; returns the closure's loss."""
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in params_with_grad(group["params"], type(self).__name__):
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                # complex parameters: the sign of real and imaginary parts separately (real view)
                lion_update(
                    as_real(p),
                    as_real(p.grad),
                    as_real(state["exp_avg"]),
                    lr=float(group["lr"]),
                    beta1=beta1,
                    beta2=beta2,
                    weight_decay=group["weight_decay"],
                )
        return loss
