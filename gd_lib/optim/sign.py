r"""Sign descent: SignSGD and Signum (the sign of the momentum).

References:
    Bernstein, Wang, Azizzadenesheli & Anandkumar (2018), "signSGD: Compressed
    Optimisation for Non-Convex Problems", ICML (Algorithm 1: signSGD; Algorithm 3:
    Signum, "signSGD with momentum").

The paper's symbols map to the code's as: learning rate δ -> ``lr``, momentum
constant β -> ``momentum``, momentum vector m -> ``momentum_buffer``. Weight
decay λ is an L2 penalty added to the gradient before the sign (as in the
MXNet ``Signum`` optimizer written by the paper's authors, and as torch.optim.SGD
does); the paper has none.

Sign descent is steepest descent in the ℓ∞ norm: every coordinate moves by
exactly ``lr`` (or 0 where the gradient is exactly 0, since ``sign(0) = 0``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import check_in_range, check_nonnegative, params_with_grad
from ._base import Optimizer
from ._foreach import as_real
from ._groups import evaluate_closure

__all__ = ["SignSGD", "Signum", "sign_sgd_update", "signum_update"]


def sign_sgd_update(param: Tensor, grad: Tensor, *, lr: float, weight_decay: float) -> None:
    r"""One signSGD step on one tensor, in place on ``param``.

    .. math::
        g &\leftarrow \nabla f(x) + \lambda x \\
        x &\leftarrow x - \delta\,\operatorname{sign}(g)

    with :math:`\delta` = ``lr`` and :math:`\lambda` = ``weight_decay`` (Algorithm 1 of
    Bernstein et al. 2018 when :math:`\lambda = 0`).
    """
    # g <- ∇f + λx   (a new tensor: p.grad is never written)
    g = grad.add(param, alpha=weight_decay) if weight_decay != 0 else grad
    # x <- x - δ sign(g)
    param.add_(torch.sign(g), alpha=-lr)


def signum_update(
    param: Tensor, grad: Tensor, momentum_buffer: Tensor, *, lr: float, momentum: float, weight_decay: float
) -> None:
    r"""One Signum step on one tensor, in place on ``param`` and ``momentum_buffer``.

    .. math::
        g &\leftarrow \nabla f(x) + \lambda x \\
        m &\leftarrow \beta m + (1 - \beta)\, g \\
        x &\leftarrow x - \delta\,\operatorname{sign}(m)

    with :math:`\beta` = ``momentum``, :math:`m` = ``momentum_buffer`` (starting at 0),
    :math:`\delta` = ``lr`` (Algorithm 3 of Bernstein et al. 2018). With :math:`\beta = 0`,
    :math:`m = g` and this is :func:`sign_sgd_update`. The factor :math:`1-\beta` does not
    change the sign of :math:`m`; it keeps :math:`m` on the scale of the gradient.
    """
    # g <- ∇f + λx
    g = grad.add(param, alpha=weight_decay) if weight_decay != 0 else grad
    # m <- β m + (1 - β) g
    momentum_buffer.mul_(momentum).add_(g, alpha=1 - momentum)
    # x <- x - δ sign(m)
    param.add_(torch.sign(momentum_buffer), alpha=-lr)


class SignSGD(Optimizer):
    """Sign descent (Bernstein et al. 2018, Algorithm 1); see :func:`sign_sgd_update`.

    Args:
        params: parameters or parameter groups.
        lr: step δ ≥ 0 taken by every coordinate (default 1e-3).
        weight_decay: λ ≥ 0, an L2 penalty added to the gradient before the sign (default 0).

    No state.

    Examples:
        >>> import torch
        >>> from gd_lib.optim import SignSGD
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = SignSGD([w], lr=0.1)
        >>> (w ** 2).sum().backward()  # gradient 2w = (2, -4)
        >>> opt.step()
        >>> w.detach()  # w - 0.1 * sign(g)
        tensor([ 0.9000, -1.9000])
    """

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.0):
        check_nonnegative("lr", lr)
        check_nonnegative("weight_decay", weight_decay)
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One step for every parameter with a gradient; returns the closure's loss."""
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            for p in params_with_grad(group["params"], type(self).__name__):
                # complex parameters: real and imaginary parts as separate coordinates
                sign_sgd_update(as_real(p), as_real(p.grad), lr=float(group["lr"]), weight_decay=group["weight_decay"])
        return loss


class Signum(Optimizer):
    """Sign of momentum (Bernstein et al. 2018, Algorithm 3); see :func:`signum_update`.

    Args:
        params: parameters or parameter groups.
        lr: step δ ≥ 0 taken by every coordinate (default 1e-3).
        momentum: β in [0, 1) (default 0.9); 0 gives :class:`SignSGD`.
        weight_decay: λ ≥ 0, an L2 penalty added to the gradient (default 0).

    State per parameter: ``momentum_buffer`` (m).

    Examples:
        >>> import torch
        >>> from gd_lib.optim import Signum
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = Signum([w], lr=0.1, momentum=0.9)
        >>> (w ** 2).sum().backward()  # gradient 2w = (2, -4)
        >>> opt.step()
        >>> w.detach()  # sign of the momentum = sign(g) at the first step
        tensor([ 0.9000, -1.9000])
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 0.0):
        check_nonnegative("lr", lr)
        check_in_range("momentum", momentum, 0.0, 1.0)
        check_nonnegative("weight_decay", weight_decay)
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One step for every parameter with a gradient; returns the closure's loss."""
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            for p in params_with_grad(group["params"], type(self).__name__):
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                # complex parameters: real and imaginary parts as separate coordinates
                signum_update(
                    as_real(p),
                    as_real(p.grad),
                    as_real(state["momentum_buffer"]),
                    lr=float(group["lr"]),
                    momentum=group["momentum"],
                    weight_decay=group["weight_decay"],
                )
        return loss
