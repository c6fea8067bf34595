"""Ill-conditioned quadratics with a chosen spectrum, and linear least squares with a chosen condition.

Quadratic: ``f(x) = ½ xᵀ A x − bᵀ x`` with ``A = Q diag(λ) Qᵀ``; ``∇f(x) = A x − b``,
``x* = A⁻¹ b``, ``f* = −½ bᵀ x*``; smoothness ``L = λ_max``, strong convexity
``μ = λ_min``, condition number ``κ = L/μ``. ``Q = I`` gives the diagonal
(axis-aligned) problem; ``rotate=True`` a Haar-random rotation, which is what
separates diagonal preconditioners (Adam) from full-matrix ones (Newton, Shampoo).

Least squares: ``ℓ(w) = (1/2n) ‖X w − y‖²`` with ``y = X w_true + σ ε``; its
Hessian is ``H = XᵀX / n``, so the full-batch gradient ``∇ℓ(w) = Xᵀ(Xw − y)/n``
is ``L``-Lipschitz with ``L = λ_max(H)``. ``X = √n U diag(s) Vᵀ`` with
orthonormal ``U, V`` makes ``H = V diag(s²) Vᵀ`` exactly, with ``s²`` spaced
geometrically from ``L`` down to ``L/κ``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gd_lib._checks import check_int, check_number


def _haar_orthogonal(d: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """A Haar-random orthogonal matrix: QR of a Gaussian matrix with the signs of diag(R) fixed."""
    q, r = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


def spectrum(
    dim: int, condition_number: float, kind: str = "geometric", largest: float = 1.0, dtype=torch.float64
) -> torch.Tensor:
    """``dim`` eigenvalues from ``largest`` down to ``largest/κ``, in decreasing order.

    ``kind="geometric"``: evenly spaced in log; ``"linear"``: evenly spaced;
    ``"outlier"``: one eigenvalue ``largest``, the rest evenly spaced in log over
    ``[largest/κ, largest/10]`` (a few large directions, as in neural-net Hessians).
    """
    check_int("dim", dim, 1)
    check_number("condition_number", condition_number, 1.0)
    check_number("largest", largest, 0.0, low_inclusive=False)
    if kind not in ("geometric", "linear", "outlier"):
        raise ValueError(f"Invalid kind: {kind!r}; expected 'geometric', 'linear' or 'outlier'")
    low = largest / condition_number
    if dim == 1:
        return torch.tensor([largest], dtype=dtype)
    if kind == "geometric":
        # λ_i = largest · κ^{-i/(dim-1)}
        lam = largest * condition_number ** (-torch.arange(dim, dtype=torch.float64) / (dim - 1))
    elif kind == "linear":
        lam = torch.linspace(largest, low, dim, dtype=torch.float64)
    else:
        top = min(largest, max(low, largest / 10))
        rest = top * (low / top) ** (torch.arange(dim - 1, dtype=torch.float64) / max(dim - 2, 1))
        lam = torch.cat([torch.tensor([largest], dtype=torch.float64), rest])
    lam[0], lam[-1] = largest, low  # exact ends despite round-off
    return lam.to(dtype)


@dataclass
class Quadratic:
    """``f(x) = ½ xᵀ A x − bᵀ x`` with ``A = Q diag(eigenvalues) Qᵀ`` (see the module docstring)."""

    A: torch.Tensor
    b: torch.Tensor
    eigenvalues: torch.Tensor
    Q: torch.Tensor
    x_star: torch.Tensor

    @property
    def dim(self) -> int:
        return self.A.shape[0]

    @property
    def L(self) -> float:
        return float(self.eigenvalues.max())

    @property
    def mu(self) -> float:
        return float(self.eigenvalues.min())

    @property
    def condition_number(self) -> float:
        return self.L / self.mu

    @property
    def f_star(self) -> float:
        return float(-0.5 * self.b @ self.x_star)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``½ xᵀAx − bᵀx`` for ``x`` of shape ``(dim,)`` or ``(..., dim)``."""
        return 0.5 * ((x @ self.A) * x).sum(-1) - x @ self.b

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """``A x − b``."""
        return x @ self.A - self.b


def quadratic(
    eigenvalues: torch.Tensor | None = None,
    *,
    dim: int = 20,
    condition_number: float = 100.0,
    kind: str = "geometric",
    rotate: bool = True,
    seed: int = 0,
    dtype=torch.float64,
) -> Quadratic:
    """An ill-conditioned quadratic with the given ``eigenvalues`` (or ``spectrum(dim, κ, kind)``).

    ``x*`` is drawn ``N(0, I)`` and ``b = A x*``; ``rotate=False`` keeps ``A`` diagonal.
    """
    check_int("seed", seed, 0)
    gen = torch.Generator().manual_seed(seed)
    if eigenvalues is None:
        lam = spectrum(dim, condition_number, kind, dtype=torch.float64)
    else:
        lam = torch.as_tensor(eigenvalues, dtype=torch.float64).flatten()
        if lam.numel() < 1 or not bool((lam > 0).all()):
            raise ValueError("Invalid eigenvalues: expected one or more positive numbers")
    d = lam.numel()
    Q = _haar_orthogonal(d, gen) if rotate else torch.eye(d, dtype=torch.float64)
    A = (Q * lam) @ Q.T
    A = 0.5 * (A + A.T)  # exactly symmetric
    x_star = torch.randn(d, generator=gen, dtype=torch.float64)
    b = A @ x_star
    return Quadratic(A.to(dtype), b.to(dtype), lam.to(dtype), Q.to(dtype), x_star.to(dtype))


@dataclass
class LeastSquares:
    """``ℓ(w) = (1/2n) ‖X w − y‖²`` with its known quantities (see the module docstring).

    Attributes: ``X`` (n × d), ``y`` (n), ``w_true`` (the generating weights),
    ``w_star`` (the least-squares solution), ``L`` (= λ_max(XᵀX/n)), ``mu``
    (= λ_min), ``noise`` (σ).
    """

    X: torch.Tensor
    y: torch.Tensor
    w_true: torch.Tensor
    w_star: torch.Tensor
    L: float
    mu: float
    noise: float

    @property
    def condition_number(self) -> float:
        return self.L / self.mu

    def loss(self, w: torch.Tensor) -> torch.Tensor:
        """``(1/2n) ‖X w − y‖²``."""
        r = self.X @ w - self.y
        return 0.5 * (r * r).mean()

    def grad(self, w: torch.Tensor) -> torch.Tensor:
        """``Xᵀ (X w − y) / n``."""
        return self.X.T @ (self.X @ w - self.y) / self.X.shape[0]


def least_squares(
    n: int = 200,
    d: int = 20,
    condition_number: float = 100.0,
    noise: float = 0.1,
    *,
    L: float = 1.0,
    seed: int = 0,
    dtype=torch.float32,
) -> LeastSquares:
    """Linear least squares whose Hessian ``XᵀX/n`` has largest eigenvalue ``L`` and condition ``κ``.

    ``w_true ~ N(0, I)``, ``y = X w_true + noise · N(0, I)``. Needs ``n ≥ d``.
    """
    check_int("d", d, 1)
    check_int("n", n, d)
    check_number("noise", noise, 0.0)
    check_number("L", L, 0.0, low_inclusive=False)
    check_int("seed", seed, 0)
    gen = torch.Generator().manual_seed(seed)
    # X = √n U diag(s) Vᵀ, s² = the chosen spectrum of H = XᵀX/n
    U, _ = torch.linalg.qr(torch.randn(n, d, generator=gen, dtype=torch.float64))
    V = _haar_orthogonal(d, gen)
    s2 = spectrum(d, condition_number, "geometric", largest=L)
    X = n**0.5 * (U * s2.sqrt()) @ V.T
    w_true = torch.randn(d, generator=gen, dtype=torch.float64)
    y = X @ w_true + noise * torch.randn(n, generator=gen, dtype=torch.float64)
    w_star = torch.linalg.lstsq(X, y.unsqueeze(1)).solution.squeeze(1)
    return LeastSquares(
        X.to(dtype), y.to(dtype), w_true.to(dtype), w_star.to(dtype), float(s2.max()), float(s2.min()), float(noise)
    )
