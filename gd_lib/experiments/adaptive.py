r"""Lecture 1, SGD and the zoo of adaptive methods: the experiments behind the figures.

Five experiments, each a function returning plain numbers and arrays:

* :func:`trajectories_2d` — SGD, momentum, Nesterov, AdaGrad, RMSProp, Adam, AdamW, Lion and
  sign descent on the Rosenbrock function or on a 2-D ill-conditioned quadratic (the paths,
  losses, and the first step inside a ball around the minimum).
* :func:`stability_limits`, :func:`iteration_spectral_radius` — the largest stable learning rate
  of gradient descent, heavy ball and Nesterov (torch's forms) on a quadratic of curvature λ,
  in closed form and as the spectral radius of each method's linear iteration.
* :func:`gd_threshold` — full-batch gradient descent on linear least squares
  :math:`\ell(w) = \frac1{2n}\|Xw - y\|^2` diverges exactly when :math:`\eta > 2/L`,
  :math:`L = \lambda_{\max}(X^\top X/n)`; measured by bisection and on an lr grid.
* :func:`sgd_noise_floor` — constant-lr minibatch SGD on the same problem: the exact
  mean-square stability threshold :math:`\eta_c` and the exact stationary excess loss (the
  "noise floor"), next to simulated runs.
* :func:`ggt_vs_diagonal` — full-matrix adaptive regularization (GGT, Agarwal et al. 2019)
  against diagonal AdaGrad and Adam on a rotated (strongly correlated) quadratic.

**SGD on least squares, exactly.** With minibatches of ``B`` indices drawn uniformly with
replacement, :math:`H_B = \frac1B\sum_{j} x_{i_j}x_{i_j}^\top`, the error :math:`e = w - w^*`
follows :math:`e_{t+1} = (I - \eta H_B)e_t - \eta\,g_B(w^*)`. Its second moment
:math:`M_t = \mathbb E[e_te_t^\top]` obeys the linear recursion
:math:`M_{t+1} = \mathcal T_\eta(M_t) + \eta^2\Sigma` with

.. math::
    \mathcal T_\eta(M) = M - \eta(HM + MH) + \eta^2\Big[\big(1 - \tfrac1B\big) HMH
        + \tfrac1B\,\tfrac1n\textstyle\sum_i (x_i^\top M x_i)\, x_ix_i^\top\Big],
    \qquad \Sigma = \tfrac1B\,\tfrac1n\textstyle\sum_i r_i^2\, x_ix_i^\top,

:math:`r_i = x_i^\top w^* - y_i` (the cross terms vanish because :math:`\mathbb E[e_t] \to 0` and
the batch at step t is independent of :math:`e_t`). SGD is mean-square stable iff the spectral
radius :math:`\rho(\mathcal T_\eta) < 1`; the critical lr :math:`\eta_c` solves
:math:`\rho(\mathcal T_{\eta_c}) = 1` (always :math:`\le 2/L`, with equality as
:math:`B \to \infty`). Below it, :math:`M_\infty = (I - \mathcal T_\eta)^{-1}\eta^2\Sigma` and
the excess loss settles at :math:`\ell(w) - \ell(w^*) = \tfrac12\operatorname{tr}(HM_\infty)`.
(The classical analysis: Bach & Moulines 2013; the linear-operator view: Ma, Bassily & Belkin
2018, "The power of interpolation", whose critical lr is the :math:`\Sigma = 0` case.)

References:
    Rosenbrock (1960); Robbins & Monro (1951); Polyak (1964, momentum); Nesterov (1983);
    Duchi, Hazan & Singer (2011, AdaGrad); Tieleman & Hinton (2012, RMSProp);
    Kingma & Ba (2015, Adam); Loshchilov & Hutter (2019, AdamW); Chen et al. (2023, Lion);
    Bernstein et al. (2018, signSGD); Agarwal et al. (2019, GGT, arXiv:1806.02958).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

import gd_lib
import gd_lib.optim as optim
from gd_lib.data import Quadratic, least_squares
from gd_lib.data.functions2d import rosenbrock_fn
from gd_lib.demo import rosenbrock_value_and_grad

__all__ = [
    "OPTIMIZERS_2D",
    "make_optimizer",
    "rosenbrock_problem",
    "quadratic_2d",
    "objective_2d",
    "trajectories_2d",
    "hessian_top_eigenvalue_rosenbrock",
    "QUADRATIC_LRS",
    "gd_threshold",
    "sgd_second_moment_operator",
    "sgd_critical_lr",
    "predicted_noise_floor",
    "sgd_noise_floor",
    "correlated_quadratic",
    "ggt_vs_diagonal",
    "stability_limits",
    "iteration_spectral_radius",
    "stability_diagram",
]

#: The optimizers of the lecture's figures, in legend order.
OPTIMIZERS_2D: tuple[str, ...] = (
    "SGD",
    "momentum",
    "Nesterov",
    "AdaGrad",
    "RMSProp",
    "Adam",
    "AdamW",
    "Lion",
    "sign descent",
)

ROSENBROCK_START = (0.0, 0.0)
ROSENBROCK_MINIMUM = (1.0, 1.0)


def make_optimizer(
    name: str, params, lr: float, *, momentum: float = 0.9, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.Optimizer:
    """The ``gd_lib.optim`` optimizer behind a name of :data:`OPTIMIZERS_2D`.

    ``momentum`` goes to momentum/Nesterov SGD, ``betas`` to Adam and AdamW, ``betas[1]`` to
    RMSProp (its ``alpha``); AdaGrad, Lion (β = (0.9, 0.99)) and sign descent keep their defaults.
    """
    if name == "SGD":
        return optim.SGD(params, lr=lr)
    if name == "momentum":
        return optim.SGD(params, lr=lr, momentum=momentum)
    if name == "Nesterov":
        return optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0)
    if name == "AdaGrad":
        return optim.Adagrad(params, lr=lr)
    if name == "RMSProp":
        return optim.RMSprop(params, lr=lr, alpha=betas[1])
    if name == "Adam":
        return optim.Adam(params, lr=lr, betas=betas)
    if name == "AdamW":
        return optim.AdamW(params, lr=lr, betas=betas)
    if name == "Lion":
        return optim.Lion(params, lr=lr)
    if name == "sign descent":
        return optim.SignSGD(params, lr=lr)
    raise ValueError(f"Invalid name: {name!r}; expected one of {OPTIMIZERS_2D}")


# ---------------------------------------------------------------------------
# 2-D problems: Rosenbrock and a rotated ill-conditioned quadratic
# ---------------------------------------------------------------------------


def rosenbrock_problem():
    """``(value_and_grad, minimum)`` for f(x, y) = (1 − x)² + 100 (y − x²)² (gd_lib.data.ROSENBROCK)."""
    return (lambda xy: rosenbrock_value_and_grad(*xy)), ROSENBROCK_MINIMUM


def objective_2d(problem: str = "rosenbrock", condition_number: float = 50.0, angle_degrees: float = 30.0):
    """The 2-D objective as ``f(xy)`` with ``xy[0], xy[1]`` the coordinates (arrays of any shape),
    the layout ``gd_lib.plotting.plot_trajectories_2d`` evaluates on its grid; the quadratic is
    shifted to f − f* (minimum 0)."""
    if problem == "rosenbrock":
        return lambda xy: rosenbrock_fn(torch.stack([torch.as_tensor(xy[0]), torch.as_tensor(xy[1])], -1))
    if problem == "quadratic":
        q = quadratic_2d(condition_number, angle_degrees)
        A, x_star = q.A.numpy(), q.x_star.numpy()

        def f(xy):
            dx, dy = np.asarray(xy[0]) - x_star[0], np.asarray(xy[1]) - x_star[1]
            return 0.5 * (A[0, 0] * dx * dx + 2 * A[0, 1] * dx * dy + A[1, 1] * dy * dy)

        return f
    raise ValueError(f"Invalid problem: {problem!r}; expected 'rosenbrock' or 'quadratic'")


def hessian_top_eigenvalue_rosenbrock(x: float = 1.0, y: float = 1.0) -> float:
    """λ_max of ∇²f at (x, y): ∇²f = [[2 − 400(y − x²) + 800x², −400x], [−400x, 200]]."""
    H = np.array([[2 - 400 * (y - x * x) + 800 * x * x, -400 * x], [-400 * x, 200.0]])
    return float(np.linalg.eigvalsh(H)[-1])


def quadratic_2d(condition_number: float = 50.0, angle_degrees: float = 30.0) -> Quadratic:
    """f(x) = ½ xᵀAx − bᵀx with A = R diag(1, 1/κ) Rᵀ, R the rotation by ``angle_degrees``,
    minimum x* = (1, 1) (a ``gd_lib.data.Quadratic``; ``angle_degrees = 0`` is axis-aligned)."""
    if not (math.isfinite(condition_number) and condition_number >= 1):
        raise ValueError(f"Invalid condition_number: {condition_number!r}; expected a number >= 1")
    theta = math.radians(angle_degrees)
    Q = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=torch.float64)
    eigenvalues = torch.tensor([1.0, 1.0 / condition_number], dtype=torch.float64)
    A = (Q * eigenvalues) @ Q.T
    A = 0.5 * (A + A.T)
    x_star = torch.ones(2, dtype=torch.float64)
    return Quadratic(A, A @ x_star, eigenvalues, Q, x_star)


def _run_path(
    name: str, value_and_grad, start, lr: float, steps: int, radius: float, minimum, momentum: float, betas
) -> dict:
    """``steps`` steps of one optimizer from ``start``; stops early on divergence (|x| > 1e3)."""
    xy = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    opt = make_optimizer(name, [xy], lr, momentum=momentum, betas=betas)

    def closure():
        value, grad = value_and_grad(xy.detach().tolist())
        xy.grad = torch.tensor(grad, dtype=torch.float64)
        return value

    path = [list(start)]
    losses = []
    target = np.asarray(minimum, dtype=float)
    first_inside, diverged = None, False
    for t in range(1, steps + 1):
        losses.append(float(opt.step(closure)))
        point = xy.detach().tolist()
        if not all(math.isfinite(v) and abs(v) < 1e3 for v in point):
            diverged = True
            break
        path.append(point)
        if first_inside is None and np.linalg.norm(np.asarray(point) - target) < radius:
            first_inside = t
    if not diverged:
        losses.append(float(value_and_grad(path[-1])[0]))
    return {
        "path": np.asarray(path),
        "loss": np.asarray(losses),
        "steps_to_neighbourhood": first_inside,
        "diverged": diverged,
    }


def trajectories_2d(
    problem: str = "rosenbrock",
    lr: float | dict = 0.003,
    steps: int | None = None,
    *,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    start: Sequence[float] | None = None,
    optimizers: Sequence[str] = OPTIMIZERS_2D,
    condition_number: float = 50.0,
    angle_degrees: float = 30.0,
    radius: float = 0.1,
    quick: bool | None = None,
) -> dict:
    """Paths of the optimizers of :data:`OPTIMIZERS_2D` on a 2-D problem, all in float64.

    Args:
        problem: ``"rosenbrock"`` (start (0, 0), minimum (1, 1)) or ``"quadratic"``
            (:func:`quadratic_2d` with ``condition_number``, ``angle_degrees``; start (−2, 2),
            minimum (1, 1)).
        lr: one learning rate for all, or ``{name: lr}``.
        steps: default 1000 (quick) / 3000 (full) on Rosenbrock, 200 / 500 on the quadratic.
        radius: the neighbourhood of the minimum: ``steps_to_neighbourhood`` is the first step
            whose iterate lies within ``radius`` (Euclidean) of the minimum, None if never.

    Returns ``{"paths": {name: (T+1, 2)}, "losses": {name: (T+1,)}, "steps_to_neighbourhood":
    {name: int | None}, "diverged": {name: bool}, "minimum": (x, y), "start": (x, y), "lr": {...},
    "steps": int}``; a diverged path stops at its last iterate inside |x|, |y| < 1e3.
    """
    quick = gd_lib.quick_mode(quick)
    if problem == "rosenbrock":
        value_and_grad, minimum = rosenbrock_problem()
        start = tuple(ROSENBROCK_START if start is None else start)
        steps = steps or gd_lib.step_budget(800, 3000, quick)
    elif problem == "quadratic":
        q = quadratic_2d(condition_number, angle_degrees)

        def value_and_grad(xy):
            x = torch.tensor(xy, dtype=torch.float64)
            return float(q(x) - q.f_star), q.grad(x).tolist()

        minimum = tuple(q.x_star.tolist())
        start = tuple((-2.0, 2.0) if start is None else start)
        steps = steps or gd_lib.step_budget(200, 500, quick)
    else:
        raise ValueError(f"Invalid problem: {problem!r}; expected 'rosenbrock' or 'quadratic'")
    lrs = dict(lr) if isinstance(lr, dict) else {name: float(lr) for name in optimizers}
    runs = {
        name: _run_path(name, value_and_grad, start, lrs[name], steps, radius, minimum, momentum, betas)
        for name in optimizers
    }
    return {
        "paths": {n: r["path"] for n, r in runs.items()},
        "losses": {n: r["loss"] for n, r in runs.items()},
        "steps_to_neighbourhood": {n: r["steps_to_neighbourhood"] for n, r in runs.items()},
        "diverged": {n: r["diverged"] for n, r in runs.items()},
        "minimum": minimum,
        "start": start,
        "lr": lrs,
        "steps": steps,
        "radius": radius,
    }


# ---------------------------------------------------------------------------
# Stability of GD, heavy ball and Nesterov on a quadratic
# ---------------------------------------------------------------------------


def stability_limits(curvature: float, momentum: float = 0.9) -> dict:
    r"""The largest stable learning rate on :math:`f(x) = \tfrac\lambda2 x^2` (λ = ``curvature``)
    of gradient descent, heavy ball and Nesterov, in torch's forms (``gd_lib.optim.SGD``).

    With :math:`h = \eta\lambda` and μ = ``momentum`` each method is a linear recursion:

    * GD: :math:`x_{t+1} = (1 - h)x_t`, stable iff :math:`|1 - h| < 1`, i.e. :math:`\eta < 2/\lambda`;
    * heavy ball (:math:`b_t = \mu b_{t-1} + g_t`, :math:`x_{t+1} = x_t - \eta b_t`):
      :math:`x_{t+1} = (1 + \mu - h)x_t - \mu x_{t-1}`, characteristic polynomial
      :math:`z^2 - (1 + \mu - h)z + \mu`; both roots inside the unit circle iff
      :math:`|1 + \mu - h| < 1 + \mu` (and μ < 1), i.e. :math:`\eta < 2(1 + \mu)/\lambda`;
    * Nesterov (:math:`x_{t+1} = x_t - \eta(g_t + \mu b_t)`): in :math:`(x_t, \eta b_{t-1})` the
      iteration matrix is :math:`\begin{pmatrix}1 - h(1+\mu) & -\mu^2\\ h & \mu\end{pmatrix}`, with
      characteristic polynomial :math:`z^2 - (1+\mu)(1-h)z + \mu(1-h)`; the Schur–Cohn conditions
      :math:`|\mu(1-h)| < 1`, :math:`(1+\mu)|1-h| < 1 + \mu(1-h)` give
      :math:`\eta < \frac{2(1+\mu)}{(1+2\mu)\lambda}` — *below* GD's limit for μ > 0.

    Returns ``{"SGD": lr, "momentum": lr, "Nesterov": lr}``.
    """
    if not (curvature > 0 and math.isfinite(curvature)):
        raise ValueError(f"Invalid curvature: {curvature!r}; expected a finite number > 0")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"Invalid momentum: {momentum!r}; expected a number in [0, 1)")
    mu = float(momentum)
    return {
        "SGD": 2.0 / curvature,
        "momentum": 2.0 * (1 + mu) / curvature,
        "Nesterov": 2.0 * (1 + mu) / ((1 + 2 * mu) * curvature),
    }


def iteration_spectral_radius(method: str, h: float, momentum: float = 0.9) -> float:
    r"""The spectral radius of one method's iteration on :math:`f = \tfrac\lambda2 x^2` at
    :math:`h = \eta\lambda` (see :func:`stability_limits`): the factor by which the error
    eventually shrinks (< 1) or grows (> 1) per step."""
    mu = float(momentum)
    if method == "SGD":
        M = np.array([[1.0 - h]])
    elif method == "momentum":
        M = np.array([[1.0 + mu - h, -mu], [1.0, 0.0]])  # (x_t, x_{t-1})
    elif method == "Nesterov":
        M = np.array([[1.0 - h * (1 + mu), -mu * mu], [h, mu]])  # (x_t, η b_{t-1})
    else:
        raise ValueError(f"Invalid method: {method!r}; expected 'SGD', 'momentum' or 'Nesterov'")
    return float(np.abs(np.linalg.eigvals(M)).max())


def stability_diagram(momentum: float = 0.9, h_max: float = 4.5, points: int = 451) -> dict:
    """Spectral radius against :math:`h = \\eta\\lambda` for GD, heavy ball and Nesterov.

    Returns ``{"h": array, "radius": {method: array}, "limits": {method: h at which the radius
    crosses 1}}`` (the limits of :func:`stability_limits` at λ = 1)."""
    h = np.linspace(0.0, h_max, points)
    radius = {
        m: np.array([iteration_spectral_radius(m, float(v), momentum) for v in h])
        for m in ("SGD", "momentum", "Nesterov")
    }
    return {"h": h, "radius": radius, "limits": stability_limits(1.0, momentum), "momentum": momentum}


#: Learning rates for the quadratic of :func:`quadratic_2d` (L = 1): 1/L-ish for the SGD family,
#: a step of about 0.1 per coordinate for the adaptive and sign methods.
QUADRATIC_LRS = {
    "SGD": 1.0,
    "momentum": 0.5,
    "Nesterov": 0.5,
    "AdaGrad": 0.5,
    "RMSProp": 0.03,
    "Adam": 0.1,
    "AdamW": 0.1,
    "Lion": 0.03,
    "sign descent": 0.03,
}


# ---------------------------------------------------------------------------
# Least squares: GD's threshold 2/L
# ---------------------------------------------------------------------------


def _least_squares(quick: bool, noise: float = 0.5, seed: int = 0):
    """The GD problem: n = 200, d = 20 (40 in full mode), κ = 100, L = 1."""
    return least_squares(
        n=200, d=20 if quick else 40, condition_number=100.0, noise=noise, L=1.0, seed=seed, dtype=torch.float64
    )


def _sgd_least_squares(noise: float = 0.5, seed: int = 0):
    """The SGD problem: n = 200, d = 10, κ = 10, L = 1 (the exact operator is d² × d²)."""
    return least_squares(n=200, d=10, condition_number=10.0, noise=noise, L=1.0, seed=seed, dtype=torch.float64)


def _gd_final_losses(problem, lrs: Sequence[float], steps: int) -> np.ndarray:
    """Full-batch GD (``gd_lib.optim.SGD``) from w = 0 for every lr at once: one param group per lr."""
    ws = [torch.nn.Parameter(torch.zeros(problem.X.shape[1], dtype=torch.float64)) for _ in lrs]
    opt = optim.SGD([{"params": [w], "lr": float(lr)} for w, lr in zip(ws, lrs)], lr=float(lrs[0]))
    for _ in range(steps):
        for w in ws:
            w.grad = problem.grad(w.detach())
        opt.step()
    with torch.no_grad():
        return np.array([float(problem.loss(w)) for w in ws])


def gd_threshold(
    quick: bool | None = None, *, steps: int | None = None, bisection_steps: int = 12, grid_size: int = 21
) -> dict:
    r"""The lr at which full-batch GD on least squares starts to diverge, measured, against 2/L.

    "Diverges" means: the loss after ``steps`` steps from w = 0 exceeds the loss at w = 0.
    The threshold is located by bisection on [1/L, 3/L] (``bisection_steps`` halvings: a
    bracket of width 2/L · 2^-12 ≈ 5e-4/L) and the final losses are also returned on a grid of
    η·L in [1, 3]. The error along the top eigenvector scales as :math:`|1 - \eta L|^t`, so with
    ``steps`` = 300 (quick mode) a 0.5 % excess over 2/L grows that part of the loss by
    :math:`1.01^{600} \approx 400`.

    Returns ``{"L", "two_over_L", "threshold", "relative_error", "lrs", "final_losses",
    "initial_loss", "curves": {lr: losses per step}}``.
    """
    quick = gd_lib.quick_mode(quick)
    steps = steps or gd_lib.step_budget(300, 1000, quick, minimum=50)
    problem = _least_squares(quick)
    L = problem.L
    initial_loss = float(problem.loss(torch.zeros(problem.X.shape[1], dtype=torch.float64)))

    def diverges(lr):
        return _gd_final_losses(problem, [lr], steps)[0] > initial_loss

    low, high = 1.0 / L, 3.0 / L
    assert not diverges(low) and diverges(high)
    for _ in range(bisection_steps):
        mid = 0.5 * (low + high)
        if diverges(mid):
            high = mid
        else:
            low = mid
    threshold = 0.5 * (low + high)
    lrs = np.linspace(1.0, 3.0, grid_size) / L
    final = _gd_final_losses(problem, lrs, steps)
    # loss curves at a few lrs, for the figure
    curve_lrs = [1.0 / L, 1.9 / L, 2.05 / L]
    curves = {}
    for lr in curve_lrs:
        w = torch.nn.Parameter(torch.zeros(problem.X.shape[1], dtype=torch.float64))
        opt = optim.SGD([w], lr=lr)
        values = [initial_loss]
        for _ in range(min(steps, 200)):
            w.grad = problem.grad(w.detach())
            opt.step()
            values.append(float(problem.loss(w.detach())))
        curves[float(lr)] = np.asarray(values)
    return {
        "L": L,
        "two_over_L": 2.0 / L,
        "threshold": threshold,
        "relative_error": abs(threshold - 2.0 / L) / (2.0 / L),
        "lrs": lrs,
        "final_losses": final,
        "initial_loss": initial_loss,
        "f_star": float(problem.loss(problem.w_star)),
        "curves": curves,
        "steps": steps,
    }


# ---------------------------------------------------------------------------
# Least squares: SGD's noise floor and critical lr, exactly
# ---------------------------------------------------------------------------


def sgd_second_moment_operator(X: torch.Tensor, lr: float, batch_size: int) -> np.ndarray:
    r"""The matrix of :math:`\mathcal T_\eta` (module docstring) acting on row-major vec(M): (d², d²).

    vec(HM) = (H ⊗ I) vec(M), vec(MH) = (I ⊗ H) vec(M), vec(HMH) = (H ⊗ H) vec(M), and
    vec(Σ_i (x_iᵀMx_i) x_ix_iᵀ) = Σ_i (x_i ⊗ x_i)(x_i ⊗ x_i)ᵀ vec(M).
    """
    X = X.detach().double().cpu().numpy()
    n, d = X.shape
    H = X.T @ X / n
    eye = np.eye(d)
    Z = np.einsum("ni,nj->nij", X, X).reshape(n, d * d)  # rows x_i ⊗ x_i
    K = Z.T @ Z / n
    return (
        np.eye(d * d)
        - lr * (np.kron(H, eye) + np.kron(eye, H))
        + lr**2 * ((1 - 1 / batch_size) * np.kron(H, H) + K / batch_size)
    )


def _spectral_radius(T: np.ndarray) -> float:
    return float(np.abs(np.linalg.eigvalsh(0.5 * (T + T.T))).max())


def sgd_critical_lr(X: torch.Tensor, batch_size: int, *, iterations: int = 22) -> float:
    r"""η_c with ρ(𝒯_η) = 1, by bisection on (0, 2/L] (𝒯_η is symmetric; ρ < 1 below η_c)."""
    n = X.shape[0]
    L = float(torch.linalg.eigvalsh(X.T.double() @ X.double() / n)[-1])
    low, high = 0.0, 2.0 / L
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        if _spectral_radius(sgd_second_moment_operator(X, mid, batch_size)) < 1.0:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def predicted_noise_floor(problem, lr: float, batch_size: int) -> float:
    r""":math:`\tfrac12\operatorname{tr}(H M_\infty)`, :math:`M_\infty = (I - \mathcal T_\eta)^{-1}\eta^2\Sigma`."""
    X = problem.X.double().numpy()
    n, d = X.shape
    H = X.T @ X / n
    r = X @ problem.w_star.double().numpy() - problem.y.double().numpy()
    Sigma = (X * (r**2)[:, None]).T @ X / n / batch_size
    T = sgd_second_moment_operator(problem.X, lr, batch_size)
    M = np.linalg.solve(np.eye(d * d) - T, lr**2 * Sigma.reshape(-1)).reshape(d, d)
    return 0.5 * float(np.trace(H @ M))


def _simulate_sgd(problem, lrs: Sequence[float], batch_size: int, steps: int, runs: int, seed: int) -> list[np.ndarray]:
    """Excess loss ℓ(w_t) − ℓ(w*), averaged over ``runs`` independent SGD runs, for every lr.

    One ``gd_lib.optim.SGD`` with a param group per lr, each holding a (runs, d) tensor whose
    rows are independent runs; minibatches are drawn with replacement. A diverging lr stops
    being recorded once its excess loss passes 1e6.
    """
    gen = torch.Generator().manual_seed(seed)
    X, y = problem.X.double(), problem.y.double()
    n, d = X.shape
    H = X.T @ X / n
    w_star = problem.w_star.double()
    Ws = [torch.nn.Parameter(torch.zeros(runs, d, dtype=torch.float64)) for _ in lrs]
    opt = optim.SGD([{"params": [W], "lr": float(lr)} for W, lr in zip(Ws, lrs)], lr=float(lrs[0]))

    def excess():
        E = torch.stack([W.detach() for W in Ws]) - w_star  # (lrs, runs, d)
        return (0.5 * ((E @ H) * E).sum(-1).mean(-1)).tolist()

    values = [excess()]
    for _ in range(steps):
        idx = torch.randint(0, n, (len(Ws), runs, batch_size), generator=gen)
        for W, i in zip(Ws, idx):
            Xb, yb = X[i], y[i]  # (runs, B, d), (runs, B)
            residual = (Xb @ W.detach().unsqueeze(-1)).squeeze(-1) - yb
            W.grad = (Xb * residual.unsqueeze(-1)).mean(1)  # per-run minibatch gradient
        opt.step()
        values.append(excess())
        for W, v in zip(Ws, values[-1]):
            if not math.isfinite(v) or v > 1e6:
                W.grad = None  # stop the diverged lr here
                W.requires_grad_(False)
    curves = np.asarray(values).T
    out = []
    for curve in curves:
        stop = np.flatnonzero(~np.isfinite(curve) | (curve > 1e6))
        out.append(curve[: stop[0] + 1] if len(stop) else curve)
    return out


def sgd_noise_floor(
    quick: bool | None = None,
    *,
    batch_size: int = 1,
    lr_fractions: Sequence[float] = (0.1, 0.3, 0.9, 1.3),
    steps: int | None = None,
    runs: int | None = None,
    seed: int = 0,
) -> dict:
    """Constant-lr SGD on least squares: η_c, 2/L, the predicted floors and simulated excess losses.

    ``lr_fractions`` are multiples of η_c (the last, above 1, diverges). Returns ``{"L",
    "two_over_L", "critical_lr", "lrs", "predicted_floor": {lr: value or inf}, "excess_loss": {lr:
    array per step}, "measured_floor": {lr: mean over the second half of the run, or inf},
    "batch_size", "noise"}``.
    """
    quick = gd_lib.quick_mode(quick)
    steps = steps or gd_lib.step_budget(1000, 5000, quick, minimum=20)
    runs = runs or (32 if quick else 256)
    problem = _sgd_least_squares()
    critical = sgd_critical_lr(problem.X, batch_size)
    lrs = [float(f * critical) for f in lr_fractions]
    predicted, curves, measured = {}, {}, {}
    simulated = _simulate_sgd(problem, lrs, batch_size, steps, runs, seed)
    for lr, curve in zip(lrs, simulated):
        predicted[lr] = predicted_noise_floor(problem, lr, batch_size) if lr < critical else math.inf
        curves[lr] = curve
        tail = curves[lr][len(curves[lr]) // 2 :]
        finished = len(curves[lr]) == steps + 1 and np.isfinite(tail).all()
        measured[lr] = float(tail.mean()) if finished else math.inf
    return {
        "L": problem.L,
        "two_over_L": 2.0 / problem.L,
        "critical_lr": critical,
        "lrs": lrs,
        "predicted_floor": predicted,
        "excess_loss": curves,
        "measured_floor": measured,
        "batch_size": batch_size,
        "noise": problem.noise,
        "runs": runs,
        "steps": steps,
    }


# ---------------------------------------------------------------------------
# GGT against diagonal AdaGrad / Adam on a rotated quadratic
# ---------------------------------------------------------------------------


def correlated_quadratic(dim: int = 10, correlation: float = 0.99, seed: int = 0) -> Quadratic:
    r"""f(x) = ½ (x − x*)ᵀ A (x − x*) + f* with A = (1 − ρ) I + ρ 𝟙𝟙ᵀ (every pair of coordinates
    correlated by ρ = ``correlation``), x* ~ N(0, I) (a ``gd_lib.data.Quadratic``).

    Its diagonal is constant (diag A = I), so a diagonal preconditioner sees nothing to fix,
    while the condition number is κ = (1 + (d − 1)ρ)/(1 − ρ) (991 for d = 10, ρ = 0.99): the
    case full-matrix adaptivity is for (Agarwal et al. 2019, §1: "the full-matrix version ...
    can exploit correlations between coordinates").
    """
    if not 0.0 <= correlation < 1.0:
        raise ValueError(f"Invalid correlation: {correlation!r}; expected a number in [0, 1)")
    A = (1 - correlation) * torch.eye(dim, dtype=torch.float64) + correlation * torch.ones(
        dim, dim, dtype=torch.float64
    )
    eigenvalues, Q = torch.linalg.eigh(A)
    x_star = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return Quadratic(A, A @ x_star, eigenvalues, Q, x_star)


def _quadratic_run(name: str, q: Quadratic, lr: float, steps: int, window: int) -> np.ndarray:
    x = torch.nn.Parameter(torch.zeros(q.dim, dtype=torch.float64))
    if name == "GGT":
        opt = optim.GGT([x], lr=lr, window=window, betas=(0.9, 1.0), eps=1e-4)
    elif name == "AdaGrad":
        opt = optim.Adagrad([x], lr=lr)
    elif name == "Adam":
        opt = optim.Adam([x], lr=lr)
    elif name == "GD":
        opt = optim.SGD([x], lr=lr)
    else:
        raise ValueError(f"Invalid name: {name!r}; expected 'GD', 'AdaGrad', 'Adam' or 'GGT'")
    values = []
    for _ in range(steps):
        with torch.no_grad():
            values.append(float(q(x) - q.f_star))
        if not math.isfinite(values[-1]) or values[-1] > 1e8:
            break
        x.grad = q.grad(x.detach())
        opt.step()
    else:
        with torch.no_grad():
            values.append(float(q(x) - q.f_star))
    values = np.asarray(values)
    if len(values) < steps + 1:  # diverged: pad so that every curve has the same length
        values = np.concatenate([values, np.full(steps + 1 - len(values), np.inf)])
    return np.where(np.isfinite(values), values, np.inf)


def ggt_vs_diagonal(
    quick: bool | None = None,
    *,
    dim: int = 10,
    correlation: float = 0.99,
    steps: int | None = None,
    methods: Sequence[str] = ("GD", "AdaGrad", "Adam", "GGT"),
    lr_grid: Sequence[float] | None = None,
    seed: int = 0,
) -> dict:
    """Best-lr loss curves on the correlated quadratic of :func:`correlated_quadratic`.

    Every method gets the lr of ``lr_grid`` (default 10^-2 … 10^0.5 in steps of √10) with the
    lowest final suboptimality f(x_T) − f*; GGT (``gd_lib.optim.GGT``) keeps a window of
    ``2 · dim`` gradients, β = (0.9, 1), ε = 1e-4; AdaGrad and Adam are torch's defaults but lr.

    Returns ``{"curves": {method: array (T+1)}, "best_lr": {method: lr}, "final": {method: value},
    "sweep": {method: {lr: final}}, "condition_number", "dim", "correlation", "steps"}``.
    """
    quick = gd_lib.quick_mode(quick)
    steps = steps or gd_lib.step_budget(100, 300, quick, minimum=10)
    lr_grid = list(lr_grid) if lr_grid is not None else [10.0 ** (k / 2) for k in range(-4, 2)]
    q = correlated_quadratic(dim, correlation, seed)
    curves, best_lr, final, sweep = {}, {}, {}, {}
    for name in methods:
        runs = {lr: _quadratic_run(name, q, lr, steps, 2 * dim) for lr in lr_grid}
        sweep[name] = {lr: float(v[-1]) for lr, v in runs.items()}
        best = min(runs, key=lambda lr: runs[lr][-1])
        curves[name], best_lr[name], final[name] = runs[best], best, float(runs[best][-1])
    return {
        "curves": curves,
        "best_lr": best_lr,
        "final": final,
        "sweep": sweep,
        "condition_number": q.condition_number,
        "dim": dim,
        "correlation": correlation,
        "steps": steps,
    }
