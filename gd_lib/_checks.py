"""Argument checks for the training tools (schedules, averaging, data, train).

The same contract as :mod:`gd_lib.optim._validation` (``ValueError`` naming the
argument and the allowed range), kept apart so that importing a schedule or a
data set does not import every optimizer.
"""
from __future__ import annotations

import math
import numbers


def check_int(name: str, value, minimum: int = 0, maximum: int | None = None) -> None:
    """``value`` must be an integer in ``[minimum, maximum]``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"Invalid {name}: {value!r}; expected an integer {allowed}")


def check_number(name: str, value, low: float = -math.inf, high: float = math.inf, *,
                 low_inclusive: bool = True, high_inclusive: bool = True) -> None:
    """``value`` must be a finite real number in the given interval."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value >= low if low_inclusive else value > low) and \
             (value <= high if high_inclusive else value < high)
    if not ok:
        lb, rb = ("[" if low_inclusive else "("), ("]" if high_inclusive else ")")
        raise ValueError(f"Invalid {name}: {value!r}; expected a finite number in {lb}{low}, {high}{rb}")


def check_choice(name: str, value, choices) -> None:
    """``value`` must be one of ``choices``."""
    if not any(value == choice for choice in choices):
        raise ValueError(f"Invalid {name}: {value!r}; expected one of {', '.join(map(repr, choices))}")
