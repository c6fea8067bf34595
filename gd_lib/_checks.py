"""Argument checks for all of gd_lib: optimizers, schedules, averaging, data, training, μP.

Each check raises ``ValueError`` naming the argument and the allowed range, so that a student
who passes ``lr=-1`` reads what went wrong and what is allowed. A number is a real number
(``int``, ``float``, numpy scalars; not ``bool``) or a one-element tensor (torch.optim accepts a
tensor learning rate). The checks import nothing of gd_lib, so that importing a schedule or a
data set does not import the optimizers.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import torch


def _is_number(value) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() == 1
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(name: str, value, minimum: int = 0, maximum: int | None = None) -> None:
    """``value`` must be an integer in ``[minimum, maximum]``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"Invalid {name}: {value!r}; expected an integer {allowed}")


def check_number(
    name: str,
    value,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    """``value`` must be a finite real number in the given interval."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value >= low if low_inclusive else value > low) and (value <= high if high_inclusive else value < high)
    if not ok:
        lb, rb = ("[" if low_inclusive else "("), ("]" if high_inclusive else ")")
        raise ValueError(f"Invalid {name}: {value!r}; expected a finite number in {lb}{low}, {high}{rb}")


def check_choice(name: str, value, choices) -> None:
    """``value`` must be one of ``choices``."""
    if not any(value == choice for choice in choices):
        raise ValueError(f"Invalid {name}: {value!r}; expected one of {', '.join(map(repr, choices))}")


# --- the optimizers' checks (torch.optim's wording) ---------------------------------


def check_nonnegative(name: str, value) -> None:
    """``value`` must be a finite number ≥ 0 (learning rates, eps, weight decay...)."""
    if not _is_number(value) or not math.isfinite(float(value)) or float(value) < 0.0:
        raise ValueError(f"Invalid {name}: {value!r}; expected a finite number >= 0")


def check_positive(name: str, value) -> None:
    """``value`` must be a finite number > 0."""
    if not _is_number(value) or not math.isfinite(float(value)) or float(value) <= 0.0:
        raise ValueError(f"Invalid {name}: {value!r}; expected a finite number > 0")


def check_in_range(
    name: str, value, low: float, high: float, *, high_inclusive: bool = False, low_inclusive: bool = True
) -> None:
    """``value`` must lie in [low, high) (or the bracket types asked for)."""
    ok = _is_number(value) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v >= low if low_inclusive else v > low) and (v <= high if high_inclusive else v < high)
    if not ok:
        lb = "[" if low_inclusive else "("
        rb = "]" if high_inclusive else ")"
        raise ValueError(f"Invalid {name}: {value!r}; expected a number in {lb}{low}, {high}{rb}")


def check_betas(betas, name: str = "betas", count: int = 2) -> None:
    """Each beta must lie in [0, 1)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != count:
        raise ValueError(f"Invalid {name}: {betas!r}; expected a tuple of {count} numbers in [0, 1)")
    for i, beta in enumerate(betas):
        check_in_range(f"{name}[{i}]", beta, 0.0, 1.0)


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid {name}: {value!r}; expected an integer >= 1")


def reject_sparse(param: torch.Tensor, optimizer_name: str) -> None:
    """Raise a clear error for sparse gradients where the method does not support them."""
    if param.grad is not None and param.grad.is_sparse:
        raise RuntimeError(
            f"{optimizer_name} does not support sparse gradients; "
            "use a dense embedding (sparse=False) or torch.optim.SparseAdam"
        )


def params_with_grad(params: Iterable[torch.Tensor], optimizer_name: str) -> list[torch.Tensor]:
    """The parameters of a group that have a gradient (others are skipped), dense only."""
    out = []
    for p in params:
        if p.grad is None:
            continue
        reject_sparse(p, optimizer_name)
        out.append(p)
    return out


def check_unsupported_flags(optimizer_name: str, **flags) -> None:
    """torch.optim's implementation flags gd_lib has no path for (``fused``, ``capturable``, ...).

    ``False`` and ``None`` ask for nothing and are accepted, so that configuration-driven code
    written for torch.optim runs unchanged; ``True`` raises ``ValueError`` naming the flag.
    """
    for name, value in flags.items():
        if value:
            raise ValueError(
                f"Invalid {name}={value!r}: gd_lib's {optimizer_name} has no {name} implementation; "
                f"pass {name}=False or leave it out (the foreach path is gd_lib's fast path)"
            )


def check_tensor_lr(lr) -> None:
    """A tensor learning rate must hold one element (torch.optim's rule)."""
    if isinstance(lr, torch.Tensor) and lr.numel() != 1:
        raise ValueError(f"Invalid lr: a tensor lr must have 1 element, got shape {tuple(lr.shape)}")
