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
from typing import Sequence

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
        p.device == first.device and p.dtype == first.dtype
        and not (p.grad is not None and p.grad.is_sparse)
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
