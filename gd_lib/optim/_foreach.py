"""Plumbing shared by the first-order optimizers: the fast multi-tensor path and scalar state.

Every optimizer here has two paths that compute the same thing:

- the readable per-tensor path, a small function such as ``adam_update(param, grad, ...)``
  written next to the paper's algorithm box: it is the reference;
- the fast path, the same arithmetic in the same order on whole lists of tensors
  with ``torch._foreach_*`` ops (one kernel launch per op for all tensors on a GPU,
  one Python call per op instead of one per tensor everywhere).

This module decides which path runs and groups tensors for the fast one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import torch


def scalar_dtype() -> torch.dtype:
    """dtype of scalar state such as ``step``: float64 if that is the default dtype, else float32.

    torch.optim keeps ``step`` (and NAdam's ``mu_product``) in this dtype on the CPU;
    using the same one makes the trajectories agree bit for bit.
    """
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def use_foreach(foreach: bool | None, params: Sequence[torch.Tensor]) -> bool:
    """Whether a group takes the fast multi-tensor path.

    ``foreach=True`` / ``False`` is obeyed. ``None`` (the default) picks the fast path
    when every parameter is dense and all share one device and one dtype.
    """
    if foreach is not None:
        return bool(foreach)
    if not params:
        return False
    first = params[0]
    return all(
        p.device == first.device and p.dtype == first.dtype and not (p.grad is not None and p.grad.is_sparse)
        for p in params
    )


def group_by_device_and_dtype(tensors: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices of ``tensors`` bucketed by (device, dtype): foreach ops need one of each per call."""
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for i, t in enumerate(tensors):
        buckets[(t.device, t.dtype)].append(i)
    return list(buckets.values())


def as_real(t: torch.Tensor | None) -> torch.Tensor | None:
    """A complex tensor as a real view with a trailing dimension of 2 (in-place ops write through).

    Element-wise optimizers treat the real and imaginary parts as separate coordinates,
    as torch.optim does.
    """
    if t is not None and torch.is_complex(t):
        return torch.view_as_real(t)
    return t


def buckets(*lists: Sequence):
    """Yield ``lists`` restricted to each (device, dtype) bucket of the first list.

    Entries of the other lists may be anything (a state tensor, a step count, ``None``).
    """
    for idx in group_by_device_and_dtype(lists[0]):
        yield tuple([lst[i] for i in idx] for lst in lists)


def apply_update(
    update: Callable,
    update_foreach: Callable,
    lists: Sequence[Sequence],
    hyper: dict,
    *,
    params: Sequence[torch.Tensor],
    foreach: bool | None,
) -> list:
    """Run one group's update: ``update`` tensor by tensor, or ``update_foreach`` per bucket.

    ``lists`` are the update's positional arguments, one list per argument and one entry per
    parameter (``lists[0]`` the tensors to bucket); ``hyper`` its keyword arguments.
    ``params`` and ``foreach`` choose the path (:func:`use_foreach`); a sparse gradient
    always takes the per-tensor path, since foreach ops need dense tensors.

    Returns what the update returns for each tensor, in the order of ``lists`` (``None``
    for in-place updates; SGD's momentum buffers, which its first step creates).
    """
    if not use_foreach(foreach, params) or any(p.grad.is_sparse for p in params):
        return [update(*args, **hyper) for args in zip(*lists)]
    results: list = [None] * len(lists[0])
    for idx in group_by_device_and_dtype(lists[0]):
        out = update_foreach(*([lst[i] for i in idx] for lst in lists), **hyper)
        if out is not None:
            for i, result in zip(idx, out):
                results[i] = result
    return results


def foreach_grads(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    *,
    maximize: bool,
    weight_decay: float,
    decoupled_weight_decay: bool = False,
    lr: float = 0.0,
) -> list[torch.Tensor]:
    """The gradients a foreach path steps with: g <- ±∇f, then weight decay λ.

    - L2 penalty (the default): g <- g + λθ;
    - ``decoupled_weight_decay=True`` (AdamW, NAdamW): θ <- (1 - γλ) θ in place, with γ = ``lr``,
      and g stays ±∇f.

    ``grads`` are never written: negation and the penalty make new tensors. The per-tensor
    paths write the same two lines out in each optimizer's update function.
    """
    # g <- -∇f when maximizing
    g = torch._foreach_neg(grads) if maximize else list(grads)
    if weight_decay != 0:
        if decoupled_weight_decay:
            # θ <- (1 - γλ) θ
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        else:
            # g <- g + λθ
            g = torch._foreach_add(g, params, alpha=weight_decay)
    return g
