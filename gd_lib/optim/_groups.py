"""Plumbing of ``step()`` shared by the first-order optimizers: the closure and the param groups.

Every ``step()`` here starts the same way: evaluate the closure (if any) with autograd on,
then, group by group, take the parameters that have a gradient, create their state at the
first gradient, and count the step. These helpers do that; the optimizer's own file keeps
what differs: which state it creates, and the update it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from .._checks import params_with_grad


def require_closure(closure: Callable[[], Tensor] | None, message: str) -> Callable[[], Tensor]:
    """``closure``, or ``RuntimeError(message)`` when there is none (optimizers that re-evaluate the loss)."""
    if closure is None:
        raise RuntimeError(message)
    return closure


def evaluate_closure(closure: Callable[[], Tensor] | None, *, required: str | None = None) -> Tensor | None:
    """The closure's loss, computed with autograd on (``step`` runs under ``no_grad``); ``None`` without one.

    ``required``: for an optimizer that cannot step without a closure, the message of the
    ``RuntimeError`` raised when there is none.
    """
    if required is not None:
        require_closure(closure, required)
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def groups_with_grads(
    optimizer: torch.optim.Optimizer,
    optimizer_name: str,
    init_state: Callable[[Tensor, dict], dict] | None = None,
    *,
    sparse_ok: bool = False,
) -> Iterator[tuple[dict, list[Tensor], list[dict]]]:
    """Yield ``(group, params, states)`` for every param group with at least one gradient.

    ``params`` are the group's parameters that have a gradient (the others are skipped);
    ``states`` their ``optimizer.state`` entries, filled with ``init_state(p, group)`` where
    still empty (a parameter's first gradient). A sparse gradient raises an error naming
    ``optimizer_name`` unless ``sparse_ok``.
    """
    for group in optimizer.param_groups:
        if sparse_ok:
            params = [p for p in group["params"] if p.grad is not None]
        else:
            params = params_with_grad(group["params"], optimizer_name)
        if not params:
            continue
        states = [optimizer.state[p] for p in params]
        if init_state is not None:
            for p, state in zip(params, states):
                if len(state) == 0:
                    state.update(init_state(p, group))
        yield group, params, states


def advance_steps(states: list[dict]) -> list[float]:
    """t <- t + 1 in each state's scalar ``step`` tensor; returns the new counts as floats."""
    for state in states:
        state["step"] += 1
    return [state["step"].item() for state in states]
