r"""Sharpness: the top eigenvalue :math:`\lambda_{\max}(\nabla^2 L)` of the training loss's Hessian.

Gradient descent with step size :math:`\eta` is stable on a quadratic only while
:math:`\lambda_{\max} < 2/\eta`; in full-batch training the sharpness rises until it hovers at
that edge ("edge of stability", Cohen et al. 2021). :class:`SharpnessTracker` measures it every
``every`` steps during training.

Two ways to get :math:`\lambda_{\max}` from Hessian-vector products:

* power iteration, :math:`v \leftarrow Hv/\|Hv\|`, :math:`\lambda = v^\top H v` — converges to the
  eigenvalue of largest *magnitude*, at a rate :math:`|\lambda_2/\lambda_1|` per step (so it can
  be slow, and returns a negative eigenvalue when that one is larger in magnitude);
* Lanczos (:mod:`gd_lib.curvature.lanczos`) — the largest algebraic eigenvalue, much faster for
  the same number of products; the default.

References:
    Cohen, Kaur, Li, Kolter & Talwalkar (2021), "Gradient descent on neural networks typically
      occurs at the edge of stability", ICLR.
    Golub & Van Loan (2013), Matrix Computations, section 7.3.1 (the power method).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .lanczos import lanczos
from .operators import hessian_operator, operator_layout

__all__ = ["PowerIterationResult", "power_iteration", "sharpness", "SharpnessTracker"]

_METHODS = ("lanczos", "power")


class PowerIterationResult(NamedTuple):
    eigenvalue: float
    eigenvector: Tensor
    iterations: int


def power_iteration(
    matvec: Callable[[Tensor], Tensor],
    num_iterations: int = 100,
    *,
    dim: int | None = None,
    tol: float = 1e-8,
    seed: int = 0,
) -> PowerIterationResult:
    r"""The eigenvalue of largest magnitude: :math:`v \leftarrow A v / \|Av\|`, :math:`\lambda = v^\top A v`.

    Stops when the Rayleigh quotient changes by less than ``tol`` relative to its size.
    """
    if isinstance(num_iterations, bool) or not isinstance(num_iterations, int) or num_iterations < 1:
        raise ValueError(f"Invalid num_iterations: {num_iterations!r}; expected an integer >= 1")
    dim, dtype, device = operator_layout(matvec, dim)
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(dim, generator=generator, dtype=dtype).to(device)
    v = v / v.norm()
    eigenvalue = float("nan")
    for i in range(1, num_iterations + 1):
        # λ = v^T A v
        Av = matvec(v)
        new = float(torch.dot(v, Av))
        norm = Av.norm()
        if float(norm) == 0.0:
            return PowerIterationResult(0.0, v, i)
        # v <- A v / ||A v||
        v = Av / norm
        if abs(new - eigenvalue) <= tol * abs(new):
            return PowerIterationResult(new, v, i)
        eigenvalue = new
    return PowerIterationResult(eigenvalue, v, num_iterations)


def sharpness(
    model: nn.Module, loss_fn, X: Tensor, y: Tensor, *, method: str = "lanczos", num_iterations: int = 20, seed: int = 0
) -> float:
    r""":math:`\lambda_{\max}(\nabla_\theta^2 L)` on the batch ``(X, y)``, from Hessian-vector products.

    Leaves ``p.grad`` and the global random state alone.
    """
    if method not in _METHODS:
        raise ValueError(f"Invalid method: {method!r}; expected one of {_METHODS}")
    H = hessian_operator(model, loss_fn, X, y)
    if method == "power":
        return power_iteration(H, num_iterations, seed=seed).eigenvalue
    return float(lanczos(H, k=1, num_iterations=min(num_iterations, H.dim), seed=seed).eigenvalues[0])


class SharpnessTracker:
    r"""Record :math:`(t, \lambda_{\max})` every ``every`` steps of a training loop.

    Example::

        tracker = SharpnessTracker(model, nn.CrossEntropyLoss(), X, y, every=10)
        for t in range(steps):
            ...  # an optimizer step
            tracker(t)            # measures when t % every == 0
        steps, values = tracker.steps, tracker.values

    The batch ``(X, y)`` is fixed (full-batch sharpness is what the edge-of-stability plots show);
    each measurement costs ``num_iterations`` Hessian-vector products and uses the same seed, so
    changes between measurements come from the parameters, not from the probe.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn,
        X: Tensor,
        y: Tensor,
        every: int = 1,
        *,
        method: str = "lanczos",
        num_iterations: int = 20,
        seed: int = 0,
    ):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"Invalid every: {every!r}; expected an integer >= 1")
        if method not in _METHODS:
            raise ValueError(f"Invalid method: {method!r}; expected one of {_METHODS}")
        self.model, self.loss_fn, self.X, self.y = model, loss_fn, X, y
        self.every, self.method, self.num_iterations, self.seed = every, method, num_iterations, seed
        self.history: list[tuple[int, float]] = []

    def __call__(self, step: int) -> float | None:
        """Measure and record the sharpness if ``step`` is a multiple of ``every``; else ``None``."""
        if step % self.every != 0:
            return None
        value = sharpness(
            self.model,
            self.loss_fn,
            self.X,
            self.y,
            method=self.method,
            num_iterations=self.num_iterations,
            seed=self.seed,
        )
        self.history.append((int(step), value))
        return value

    @property
    def steps(self) -> list[int]:
        return [s for s, _ in self.history]

    @property
    def values(self) -> list[float]:
        return [v for _, v in self.history]
