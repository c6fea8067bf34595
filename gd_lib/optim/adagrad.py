"""Adagrad: per-coordinate step sizes from the sum of all past squared gradients.

References:
    Duchi, Hazan & Singer (2011), "Adaptive Subgradient Methods for Online Learning and
    Stochastic Optimization", JMLR 12 (the diagonal version, Section 1.3 / Figure 1).

Same class name, hyperparameters, defaults, state keys and arithmetic as ``torch.optim.Adagrad``
(torch 2.13), so trajectories agree to rounding. Two deliberate differences: state is
created at a parameter's first gradient (torch creates it for every parameter in
``__init__``), and a parameter group's own ``initial_accumulator_value`` is used (torch
uses the constructor's value for every group).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import check_nonnegative, check_tensor_lr, check_unsupported_flags
from ._base import Optimizer
from ._foreach import apply_update, as_real, foreach_grads, scalar_dtype
from ._groups import advance_steps, evaluate_closure, groups_with_grads

__all__ = ["Adagrad", "adagrad_update", "adagrad_update_foreach"]


def adagrad_update(
    param: Tensor,
    grad: Tensor,
    state_sum: Tensor,
    step: float,
    *,
    lr: float,
    lr_decay: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    r"""One Adagrad step on one tensor, in place on ``param`` and ``state_sum``.

    With :math:`G` = ``state_sum`` (starting at ``initial_accumulator_value``), learning-rate
    decay :math:`\eta` (``lr_decay``) and step count :math:`t` (``step``, already incremented):

    .. math::
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1} \\
        \gamma_t &\leftarrow \gamma / (1 + (t-1)\,\eta) \\
        G_t &\leftarrow G_{t-1} + g_t^2 \\
        \theta_t &\leftarrow \theta_{t-1} - \gamma_t\, g_t / (\sqrt{G_t} + \epsilon)

    This is the diagonal Adagrad of Duchi et al. (2011), Figure 1, with their
    :math:`\eta \to \gamma`, :math:`\mathrm{diag}(G_t)^{1/2} \to \sqrt{G_t}` and
    :math:`\delta \to \epsilon`; the :math:`\lambda` penalty and the :math:`\eta` decay are
    torch's additions. A sparse gradient updates only the rows it touches (the classic use:
    embeddings of rare features); weight decay then is not allowed.
    """
    # g <- ±∇f + λθ   (new tensors: p.grad is never written)
    g = -grad if maximize else grad
    if weight_decay != 0:
        if g.is_sparse:
            raise RuntimeError("Adagrad: weight_decay is not compatible with sparse gradients")
        g = g.add(param, alpha=weight_decay)
    # γ_t <- γ / (1 + (t - 1) η)
    clr = lr / (1 + (step - 1) * lr_decay)
    if g.is_sparse:
        # the update is non-linear in g, so duplicate indices must be summed first
        g = g.coalesce()
        indices, values = g._indices(), g._values()

        def like_g(new_values):  # same (valid, coalesced) indices as g: no invariant check needed
            return torch.sparse_coo_tensor(indices, new_values, g.size(), check_invariants=False)

        # G <- G + g² on the touched entries
        state_sum.add_(like_g(values.pow(2)))
        # sqrt(G) + ε on the touched entries ;  θ <- θ - γ_t g / (sqrt(G) + ε) there
        std_values = state_sum.sparse_mask(g)._values().sqrt_().add_(eps)
        param.add_(like_g(values / std_values), alpha=-clr)
    else:
        # G <- G + g²
        state_sum.addcmul_(g, g, value=1)
        # θ <- θ - γ_t g / (sqrt(G) + ε)
        std = state_sum.sqrt().add_(eps)
        param.addcdiv_(g, std, value=-clr)


def adagrad_update_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    steps: list[float],
    *,
    lr: float,
    lr_decay: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    """:func:`adagrad_update` on lists of dense tensors of one device and dtype, with foreach ops.

    Same arithmetic in the same order (equal bit for bit on the CPU; torch's own foreach
    Adagrad multiplies g by -γ_t before dividing, which rounds differently).
    """
    # g <- ±∇f + λθ
    g = foreach_grads(params, grads, maximize=maximize, weight_decay=weight_decay)
    # -γ_t per tensor (steps may differ between tensors)
    neg_clrs = [-(lr / (1 + (t - 1) * lr_decay)) for t in steps]
    # G <- G + g²
    torch._foreach_addcmul_(state_sums, g, g, value=1)
    # θ <- θ - γ_t g / (sqrt(G) + ε)
    std = torch._foreach_sqrt(state_sums)
    torch._foreach_add_(std, eps)
    torch._foreach_addcdiv_(params, g, std, neg_clrs)


class Adagrad(Optimizer):
    """Adagrad (Duchi, Hazan & Singer 2011); see :func:`adagrad_update`.

    Args:
        params: parameters or parameter groups.
        lr: learning rate γ (default 1e-2).
        lr_decay: η ≥ 0, the step size decays as γ/(1 + (t-1)η) (default 0).
        weight_decay: L2 penalty λ ≥ 0 (default 0).
        initial_accumulator_value: starting value ≥ 0 of the sum of squares (default 0).
        eps: ε ≥ 0 added to the root (default 1e-10).
        foreach: True / False / None (default: multi-tensor path when all parameters share
            one device and dtype and no gradient is sparse).
        maximize: ascend instead of descend.

    State per parameter, as torch.optim.Adagrad: ``step`` (a scalar tensor) and ``sum`` (G).
    Sparse gradients are supported (per-tensor path), as in torch.optim.Adagrad.

    Examples:
        >>> import torch
        >>> from gd_lib.optim import Adagrad
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = Adagrad([w], lr=0.1)
        >>> (w ** 2).sum().backward()  # gradient 2w = (2, -4)
        >>> opt.step()
        >>> w.detach()  # first step g / sqrt(g^2) = sign(g)
        tensor([ 0.9000, -1.9000])
    """

    _scalar_tensor_keys = ("step",)  # scalar tensors, as in torch.optim

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ):
        check_unsupported_flags("Adagrad", differentiable=differentiable, fused=fused)
        check_tensor_lr(lr)
        check_nonnegative("lr", lr)
        check_nonnegative("lr_decay", lr_decay)
        check_nonnegative("weight_decay", weight_decay)
        check_nonnegative("initial_accumulator_value", initial_accumulator_value)
        check_nonnegative("eps", eps)
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            foreach=foreach,
            maximize=maximize,
            differentiable=False,
            fused=None,
        )
        super().__init__(params, defaults)

    @staticmethod
    def _init_state(p: Tensor, group: dict) -> dict:
        """A parameter's state at its first gradient: G starts at ``initial_accumulator_value``."""
        value = group["initial_accumulator_value"]
        return {
            "step": torch.tensor(0.0, dtype=scalar_dtype()),
            "sum": torch.full_like(
                p, complex(value, value) if torch.is_complex(p) else value, memory_format=torch.preserve_format
            ),
        }

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One step for every parameter with a gradient; returns the closure's loss."""
        loss = evaluate_closure(closure)
        # sparse gradients are supported (on the per-tensor path)
        for group, params, states in groups_with_grads(self, "Adagrad", self._init_state, sparse_ok=True):
            # t <- t + 1
            steps = advance_steps(states)
            hyper = dict(
                lr=float(group["lr"]),
                lr_decay=group["lr_decay"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
            )
            # complex parameters: real and imaginary parts as separate coordinates
            lists = (
                [as_real(p) for p in params],
                [p.grad if p.grad.is_sparse else as_real(p.grad) for p in params],
                [as_real(s["sum"]) for s in states],
                steps,
            )
            apply_update(adagrad_update, adagrad_update_foreach, lists, hyper, params=params, foreach=group["foreach"])
        return loss
