"""ModularDescent: steepest descent of a whole network under its modular norm.

References:
    Bernstein & Newhouse (2024), "Modular Duality in Deep Learning", arXiv:2410.21265
    (the dualization of the modular norm; Theorem 4.3 in the course notes).
    Large, Liu, Huh, Bahng, Isola & Bernstein (2024), "Scalable Optimization in the Modular
    Norm", NeurIPS, arXiv:2405.14813 (mass, sensitivity, the modular norm).
    modula (github.com/modula-systems/modula): ``Module.dualize``, the reference design.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import check_in_range, check_nonnegative, check_positive_int, params_with_grad
from ..geometry.modular import Module
from ..linalg import newton_schulz, polar_factor
from ._base import Optimizer
from ._groups import evaluate_closure

__all__ = ["ModularDescent", "modular_descent_update"]

_ORTHOGONALIZERS = ("newton_schulz", "svd")


def modular_descent_update(
    grad: Tensor,
    momentum: Tensor | None,
    atom,
    target_norm: float,
    beta: float,
    nesterov: bool,
    orthogonalize: Callable[[Tensor], Tensor],
) -> Tensor:
    """The normalized update of one atom's weight::

        M ← β M + (1 − β) G                       (if a momentum buffer is kept)
        U ← β M + (1 − β) G if nesterov else M     (U = G without momentum)
        return t · D(U)

    where D is the atom's dual map (``Linear``: √(fan_out/fan_in) U Vᵀ; ``Embedding``: rows
    to RMS 1; ``Bias``: G/‖G‖_RMS) and t its target norm from the modular tree. Across all
    atoms these updates are ``module.dualize(U)``: the unit-modular-norm direction that
    maximizes ⟨U, Δw⟩.
    """
    if momentum is not None:
        # M <- β M + (1 - β) G
        momentum.lerp_(grad, 1 - beta)
        update = grad.lerp(momentum, beta) if nesterov else momentum
    else:
        update = grad
    # t · D(U)
    return target_norm * atom.dual_map(update, orthogonalize=orthogonalize)


class ModularDescent(Optimizer):
    """Normalized descent in the modular norm of a network described by a modular tree.

    For every atom i (a weight tensor in ``module``) with gradient G_i::

        W_i ← (1 − lr · weight_decay) W_i − lr · t_i · D_i(M_i)

    where M_i is G_i or its momentum, D_i the atom's dual map and t_i its target norm
    (``module.target_norms()``). Without momentum, the whole update −lr · dualize(G) has
    modular norm exactly ``lr`` (when every atom has a nonzero gradient): the step size
    is set in the network's own norm, so it transfers across width and depth.

    Args:
        module: a ``gd_lib.geometry.modular.Module`` whose atoms are bound to the model's
            parameters (``Linear.of(layer)``, ``from_sequential(model)``, ...). The optimizer
            steps exactly those tensors.
        lr: the modular norm of each step (≥ 0).
        momentum: β in [0, 1); 0 (default) keeps no buffer and steps along dualize(G).
        nesterov: Nesterov momentum as in Muon.
        weight_decay: decoupled, W ← (1 − lr·wd) W.
        orthogonalize: ``"newton_schulz"`` (default, Muon's quintic) or ``"svd"`` (exact U Vᵀ),
            used by Linear atoms.
        ns_steps: Newton–Schulz steps.

    Examples:
        >>> import torch
        >>> from gd_lib.optim import ModularDescent
        >>> from gd_lib.geometry.modular import from_sequential
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
        >>> opt = ModularDescent(from_sequential(model), lr=0.1)  # lr is each step's modular norm
        >>> loss_fn = torch.nn.functional.cross_entropy
        >>> first = loss_fn(model(x), y).item()
        >>> for _ in range(10):
        ...     opt.zero_grad()
        ...     loss_fn(model(x), y).backward()
        ...     opt.step()
        >>> loss_fn(model(x), y).item() < first
        True
    """

    def __init__(
        self,
        module: Module,
        lr: float = 0.1,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        orthogonalize: str = "newton_schulz",
        ns_steps: int = 5,
    ):
        if not isinstance(module, Module):
            raise TypeError(
                "ModularDescent takes a gd_lib.geometry.modular.Module (the network's modular "
                f"tree), got {type(module).__name__}"
            )
        check_nonnegative("lr", lr)
        check_in_range("momentum", momentum, 0.0, 1.0)
        check_nonnegative("weight_decay", weight_decay)
        check_positive_int("ns_steps", ns_steps)
        if orthogonalize not in _ORTHOGONALIZERS:
            raise ValueError(f"Invalid orthogonalize: {orthogonalize!r}; expected one of {_ORTHOGONALIZERS}")
        params = module.bound_weights()
        if len({id(p) for p in params}) != len(params):
            raise ValueError("a tensor is bound to two atoms of the modular tree")
        self.module = module
        self._atom_of = {p: (atom, t) for p, atom, t in zip(params, module.atoms(), module.target_norms())}
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=bool(nesterov),
            weight_decay=weight_decay,
            orthogonalize=orthogonalize,
            ns_steps=ns_steps,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        if self.param_groups:
            raise ValueError("ModularDescent has one param group: the atoms of its modular tree")
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            if group["orthogonalize"] == "svd":
                orthogonalize = polar_factor
            else:
                steps = group["ns_steps"]

                def orthogonalize(G, steps=steps):
                    return newton_schulz(G, steps)

            lr, beta = float(group["lr"]), group["momentum"]
            for p in params_with_grad(group["params"], "ModularDescent"):
                atom, target = self._atom_of[p]
                state = self.state[p]
                momentum = None
                if beta > 0:
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    momentum = state["momentum_buffer"]
                update = modular_descent_update(p.grad, momentum, atom, target, beta, group["nesterov"], orthogonalize)
                # W <- (1 - lr·wd) W - lr · t · D(M)
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update, alpha=-lr)
        return loss
