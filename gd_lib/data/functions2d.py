"""2-D test functions for optimizer trajectories, with their minima known in closed form.

Each is a :class:`Function2D`: called on a tensor ``xy`` of shape ``(..., 2)``
it returns ``f`` of shape ``(...)``, differentiable by autograd, so that a
trajectory, a contour grid and a batched evaluation are one call each.

==================  ====================================================  =====================
name                f(x, y)                                               global minima (f = 0)
==================  ====================================================  =====================
``rosenbrock``      ``(a − x)² + b (y − x²)²``, a = 1, b = 100             ``(a, a²)``
``beale``           ``(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²``  ``(3, 0.5)``
``himmelblau``      ``(x² + y − 11)² + (x + y² − 7)²``                     four, see below
``two_basins``      ``r(x) [(x − a)²(x − b)² + ½ y²]``, ``r(x) = 1 + c (x − a)²``  ``(a, 0)``, ``(b, 0)``
==================  ====================================================  =====================

Himmelblau's minima: ``(3, 2)`` exactly and three roots of a cubic, given
here to 1e-6 (Himmelblau, 1972). ``two_basins`` is the narrow/wide-basin toy:
both minima have ``f = 0``, but the Hessian at ``(b, 0)`` is ``r(b) = 1 + c(b − a)²``
times the one at ``(a, 0)`` (``diag(2(a − b)², 1)``), so with the defaults
(``a = −1, b = 1, c = 4``) the right basin is 17× sharper: gradient descent with
step ``η`` can settle there only if ``η < 2/λ_max = 2/136``, in the left one if
``η < 2/8``.

References:
    H. Rosenbrock. An automatic method for finding the greatest or least value of a function. 1960.
    E. Beale. On an iterative method for finding a local minimum of a function of more than one
    variable. 1958.
    D. Himmelblau. Applied nonlinear programming. 1972.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Function2D:
    """A 2-D test function: ``f(xy)`` with ``xy`` of shape ``(..., 2)``, and what is known about it.

    Attributes:
        name: its name.
        fn: the function on ``(..., 2)`` tensors.
        minima: the global minimizers ``((x, y), ...)``.
        minimum_value: ``f`` at the minimizers.
        domain: ``((x_min, x_max), (y_min, y_max))``, a box for plots.
        start: a customary starting point.
    """

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    minima: tuple[tuple[float, float], ...]
    minimum_value: float
    domain: tuple[tuple[float, float], tuple[float, float]]
    start: tuple[float, float]

    def __call__(self, xy: torch.Tensor) -> torch.Tensor:
        if xy.shape[-1] != 2:
            raise ValueError(f"expected a tensor of shape (..., 2), got {tuple(xy.shape)}")
        return self.fn(xy)

    def grid(self, n: int = 200, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(X, Y, Z)`` on an ``n × n`` grid over :attr:`domain` (for contour plots)."""
        (x0, x1), (y0, y1) = self.domain
        X, Y = torch.meshgrid(
            torch.linspace(x0, x1, n, dtype=dtype), torch.linspace(y0, y1, n, dtype=dtype), indexing="xy"
        )
        return X, Y, self.fn(torch.stack([X, Y], dim=-1))


def rosenbrock_fn(xy: torch.Tensor, a: float = 1.0, b: float = 100.0) -> torch.Tensor:
    """``(a − x)² + b (y − x²)²``."""
    x, y = xy[..., 0], xy[..., 1]
    return (a - x) ** 2 + b * (y - x**2) ** 2


def beale_fn(xy: torch.Tensor) -> torch.Tensor:
    """``(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²``."""
    x, y = xy[..., 0], xy[..., 1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def himmelblau_fn(xy: torch.Tensor) -> torch.Tensor:
    """``(x² + y − 11)² + (x + y² − 7)²``."""
    x, y = xy[..., 0], xy[..., 1]
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


def two_basins_fn(xy: torch.Tensor, a: float = -1.0, b: float = 1.0, c: float = 4.0) -> torch.Tensor:
    """``r(x) [(x − a)²(x − b)² + ½ y²]`` with ``r(x) = 1 + c (x − a)²``: a wide basin at
    ``(a, 0)`` and a sharp one at ``(b, 0)``, both with ``f = 0``."""
    x, y = xy[..., 0], xy[..., 1]
    r = 1.0 + c * (x - a) ** 2
    return r * ((x - a) ** 2 * (x - b) ** 2 + 0.5 * y**2)


ROSENBROCK = Function2D("rosenbrock", rosenbrock_fn, ((1.0, 1.0),), 0.0, ((-2.0, 2.0), (-1.0, 3.0)), (-1.2, 1.0))
BEALE = Function2D("beale", beale_fn, ((3.0, 0.5),), 0.0, ((-4.5, 4.5), (-4.5, 4.5)), (1.0, 1.5))
HIMMELBLAU = Function2D(
    "himmelblau",
    himmelblau_fn,
    ((3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126)),
    0.0,
    ((-5.0, 5.0), (-5.0, 5.0)),
    (0.0, 0.0),
)
TWO_BASINS = Function2D(
    "two_basins", two_basins_fn, ((-1.0, 0.0), (1.0, 0.0)), 0.0, ((-2.0, 2.0), (-1.5, 1.5)), (0.0, 1.0)
)

FUNCTIONS_2D: dict[str, Function2D] = {f.name: f for f in (ROSENBROCK, BEALE, HIMMELBLAU, TWO_BASINS)}


def function_2d(name: str) -> Function2D:
    """The test function called ``name`` (one of :data:`FUNCTIONS_2D`)."""
    if name not in FUNCTIONS_2D:
        raise ValueError(f"Invalid name: {name!r}; expected one of {sorted(FUNCTIONS_2D)}")
    return FUNCTIONS_2D[name]
