"""Hyperparameter search spaces and quasirandom search (AlgoPerf's external tuning).

AlgoPerf's external-tuning ruleset draws each study's trials from the
submission's search space by quasirandom search (Bousquet et al. 2017,
"Critical Hyper-Parameters: No Random, No Cry"). Here: a Halton sequence in
the unit cube, randomly shifted per study (a Cranley–Patterson rotation
u_i = frac(h_i + s) with s drawn from the study's seed), then mapped through
each parameter's distribution.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53)


def radical_inverse(index: int, base: int) -> float:
    """Van der Corput radical inverse: the base-``base`` digits of ``index`` mirrored behind the point."""
    if index < 0:
        raise ValueError(f"Invalid index: {index}; expected an integer >= 0")
    result, scale = 0.0, 1.0 / base
    while index:
        index, digit = divmod(index, base)
        result += digit * scale
        scale /= base
    return result


def halton(n: int, dim: int, seed: int | None = None) -> np.ndarray:
    """``n`` points of the ``dim``-dimensional Halton sequence in [0, 1)^dim.

    Point ``i`` has coordinates ``radical_inverse(i + 1, p_j)`` for the first
    ``dim`` primes ``p_j``. With a ``seed`` the whole set is shifted by a
    uniform random vector modulo 1 (still low-discrepancy, different per study).
    """
    if n < 0:
        raise ValueError(f"Invalid n: {n}; expected an integer >= 0")
    if not 1 <= dim <= len(_PRIMES):
        raise ValueError(f"Invalid dim: {dim}; expected 1 <= dim <= {len(_PRIMES)}")
    points = np.array(
        [[radical_inverse(i + 1, _PRIMES[j]) for j in range(dim)] for i in range(n)], dtype=float
    ).reshape(n, dim)
    if seed is not None:
        shift = np.random.default_rng(seed).random(dim)
        points = np.mod(points + shift, 1.0)
    return points


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def __post_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"Invalid Uniform range: [{self.low}, {self.high}]; expected finite low < high")

    def __call__(self, u: float) -> float:
        return self.low + u * (self.high - self.low)


@dataclass(frozen=True)
class LogUniform:
    low: float
    high: float

    def __post_init__(self):
        if not (0 < self.low < self.high and math.isfinite(self.high)):
            raise ValueError(f"Invalid LogUniform range: [{self.low}, {self.high}]; expected 0 < low < high")

    def __call__(self, u: float) -> float:
        return math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))


@dataclass(frozen=True)
class Choice:
    values: tuple

    def __post_init__(self):
        if len(self.values) == 0:
            raise ValueError("Invalid Choice: expected at least one value")

    def __call__(self, u: float):
        return self.values[min(int(u * len(self.values)), len(self.values) - 1)]


SearchSpace = Mapping[str, object]  # name -> Uniform | LogUniform | Choice | a fixed value


def sample_search_space(space: SearchSpace, n: int, seed: int) -> list[dict]:
    """``n`` hyperparameter settings drawn by shifted-Halton quasirandom search.

    Parameters that are plain values (not a distribution) are fixed; with none
    to search, every trial gets the same fixed setting.
    """
    names = sorted(k for k, v in space.items() if callable(v))
    fixed = {k: v for k, v in space.items() if not callable(v)}
    if not names:
        return [dict(fixed) for _ in range(n)]
    points = halton(n, len(names), seed=seed)
    return [{**fixed, **{name: space[name](float(u)) for name, u in zip(names, row)}} for row in points]
