r"""Trace of an operator from products with random sign vectors (Hutchinson 1989).

For a Rademacher probe :math:`\varepsilon \in \{-1, +1\}^P` (independent fair signs),
:math:`\mathbb E[\varepsilon\varepsilon^\top] = I`, so

.. math::
    \operatorname{tr}(A) = \mathbb E[\varepsilon^\top A \varepsilon]
        \approx \frac1S \sum_{s=1}^S \varepsilon_s^\top A\,\varepsilon_s,
    \qquad \operatorname{Var}[\varepsilon^\top A \varepsilon] = 2\sum_{i \ne j} A_{ij}^2
    \ \ (A \text{ symmetric}).

Rademacher probes have the smallest variance among probes with identity covariance
(Hutchinson 1989; Avron & Toledo 2011). The standard error returned is the sample standard
deviation of the :math:`S` terms over :math:`\sqrt S`.

References:
    Hutchinson (1989), "A stochastic estimator of the trace of the influence matrix for Laplacian
      smoothing splines", Comm. Statist. Simulation Comput. 18(3).
    Avron & Toledo (2011), "Randomized algorithms for estimating the trace of an implicit symmetric
      positive semi-definite matrix", J. ACM 58(2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .operators import operator_layout

__all__ = ["TraceEstimate", "rademacher", "hutchinson_trace"]


class TraceEstimate(NamedTuple):
    trace: float
    standard_error: float
    num_samples: int


def rademacher(dim: int, generator: torch.Generator, dtype=torch.float64) -> Tensor:
    """A vector of independent fair signs ±1."""
    return torch.randint(0, 2, (dim,), generator=generator).to(dtype) * 2 - 1


def hutchinson_trace(
    matvec: Callable[[Tensor], Tensor], num_samples: int = 100, *, dim: int | None = None, seed: int = 0
) -> TraceEstimate:
    r""":math:`\frac1S\sum_s \varepsilon_s^\top A \varepsilon_s` with ``num_samples`` seeded Rademacher probes."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"Invalid num_samples: {num_samples!r}; expected an integer >= 1")
    dim, dtype, device = operator_layout(matvec, dim)
    generator = torch.Generator().manual_seed(seed)
    terms = []
    for _ in range(num_samples):
        # ε ~ Rademacher, term = ε^T A ε
        eps = rademacher(dim, generator, dtype).to(device)
        terms.append(float(torch.dot(eps, matvec(eps))))
    values = torch.tensor(terms, dtype=torch.float64)
    stderr = float(values.std(unbiased=True) / num_samples**0.5) if num_samples > 1 else float("nan")
    return TraceEstimate(float(values.mean()), stderr, num_samples)
