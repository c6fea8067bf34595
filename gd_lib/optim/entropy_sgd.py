r"""Entropy-SGD: gradient descent on the local entropy, estimated by Langevin dynamics.

Reference:
    Chaudhari, Choromanska, Soatto, LeCun, Baldassi, Borgs, Chayes, Sagun & Zecchina
    (2017), "Entropy-SGD: Biasing Gradient Descent Into Wide Valleys", ICLR;
    arXiv:1611.01838 (Algorithm 1; Section 4.3, scoping).

The local entropy :math:`F(x;\gamma) = \log \int \exp(-f(x') - \tfrac{\gamma}{2}\|x - x'\|^2)\,dx'`
is large in wide valleys. Its gradient is :math:`-\gamma\,(x - \langle x'\rangle)`, where
:math:`\langle x'\rangle` is the mean of the Gibbs measure centred at x; Algorithm 1
estimates that mean by L steps of stochastic gradient Langevin dynamics (SGLD):

.. math::
    &x' \leftarrow x, \quad \mu \leftarrow x \\
    &\text{for } \ell = 1, \dots, L: \\
    &\qquad dx' = \nabla f(x') - \gamma\,(x - x') \\
    &\qquad x' \leftarrow x' - \eta'\, dx' + \sqrt{\eta'}\,\varepsilon\,\xi_\ell,
        \qquad \xi_\ell \sim \mathcal N(0, I) \\
    &\qquad \mu \leftarrow (1-\alpha)\,\mu + \alpha\, x' \\
    &x \leftarrow x - \eta\,\gamma\,(x - \mu)

with scoping :math:`\gamma_t = \gamma_0 (1 + \gamma_1)^t` at outer step t (0 at the first).
Map to the code: η -> ``lr``, η' -> ``langevin_lr``, L -> ``langevin_steps``, γ0 ->
``gamma``, γ1 -> ``scoping``, ε -> ``noise`` (the thermal noise), α -> ``alpha``.
Every evaluation of ∇f(x') is one call of the closure (a fresh minibatch in training).

The authors' code (ucla-vision/entropy-sgd) differs from the algorithm box in ways worth
knowing: its μ-average keeps weight 0.75 on the old μ (α = 0.25, the default here), its
noise is :math:`\sqrt{2\eta'}\,\varepsilon` instead of :math:`\sqrt{\eta'}\,\varepsilon`,
and its outer step is :math:`x \leftarrow x - \eta\,(x - \mu)` with Nesterov momentum
(γ folded into η). This module follows Algorithm 1.

Noise: drawn from ``generator`` in parameter order, one ``randn`` per tensor and inner
step. Without a generator the optimizer makes its own, seeded from torch's global RNG when
it is built (so ``torch.manual_seed`` before construction makes a run reproducible). The
generator's state is part of ``state_dict()``, so a resumed run draws the same noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import check_in_range, check_nonnegative, check_positive_int, params_with_grad
from ._base import Optimizer
from ._foreach import as_real
from ._groups import evaluate_closure, require_closure

__all__ = ["EntropySGD", "langevin_step", "local_entropy_step"]


def langevin_step(
    x_prime: Tensor,
    grad: Tensor,
    x: Tensor,
    mu: Tensor,
    noise_sample: Tensor,
    *,
    gamma: float,
    langevin_lr: float,
    noise: float,
    alpha: float,
) -> None:
    r"""One SGLD step of the inner loop, in place on ``x_prime`` (the parameter) and ``mu``.

    .. math::
        dx' &= \nabla f(x') - \gamma\,(x - x') \\
        x' &\leftarrow x' - \eta'\, dx' + \sqrt{\eta'}\,\varepsilon\,\xi \\
        \mu &\leftarrow (1-\alpha)\,\mu + \alpha\, x'

    with ``noise_sample`` = ξ ~ N(0, I).
    """
    # dx' = ∇f(x') - γ (x - x')   (a new tensor: p.grad is never written)
    dx = grad - gamma * (x - x_prime)
    # x' <- x' - η' dx' + sqrt(η') ε ξ
    x_prime.add_(dx, alpha=-langevin_lr).add_(noise_sample, alpha=math.sqrt(langevin_lr) * noise)
    # μ <- (1 - α) μ + α x'
    mu.lerp_(x_prime, alpha)


def local_entropy_step(param: Tensor, x: Tensor, mu: Tensor, *, lr: float, gamma: float) -> None:
    r"""The outer step :math:`x \leftarrow x - \eta\gamma\,(x - \mu)`, written into ``param``."""
    # param <- x - ηγ (x - μ)
    param.copy_(x).add_(x - mu, alpha=-lr * gamma)


class EntropySGD(Optimizer):
    """Entropy-SGD (Chaudhari et al. 2017, Algorithm 1); needs a closure.

    Each ``step(closure)`` runs ``langevin_steps`` SGLD steps (one closure call each,
    evaluated at the moving point x'), then moves x towards the SGLD average μ. It
    returns the loss of the first closure call, the loss at x.

    Args:
        params: parameters or parameter groups.
        lr: η ≥ 0, the outer step (default 1.0).
        langevin_steps: L ≥ 1 (default 20).
        langevin_lr: η' ≥ 0, the SGLD step (default 0.1).
        gamma: γ0 ≥ 0, the coupling ("scope") between x' and x (default 0.03).
        scoping: γ1 ≥ 0, γ grows as γ0 (1 + γ1)^t (default 1e-3).
        noise: ε ≥ 0, the thermal noise of SGLD (default 1e-4; 0 makes it deterministic).
        alpha: α in (0, 1], the weight of x' in the running average μ (default 0.25).
        generator: a ``torch.Generator`` for the noise (default: a private one, seeded
            from torch's global RNG at construction).

    State per parameter: ``step`` (outer steps taken). The generator's state is saved
    by ``state_dict()`` under ``"generator_state"``. A NaN or infinite gradient raises
    (the next closure call would spread it to every parameter); the parameters are put
    back at x first.

    Examples:
        >>> import torch
        >>> from gd_lib.optim import EntropySGD
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))  # loss 5
        >>> opt = EntropySGD([w], lr=1.0, gamma=0.3, langevin_steps=5, generator=torch.Generator().manual_seed(0))
        >>> def closure():  # Langevin steps evaluate the loss several times per step
        ...     opt.zero_grad()
        ...     loss = (w ** 2).sum()
        ...     loss.backward()
        ...     return loss
        >>> for _ in range(20):
        ...     _ = opt.step(closure)
        >>> bool((w ** 2).sum() < 5 / 4)  # the loss fell to under a quarter
        True
    """

    def __init__(
        self,
        params,
        lr: float = 1.0,
        langevin_steps: int = 20,
        langevin_lr: float = 0.1,
        gamma: float = 0.03,
        scoping: float = 1e-3,
        noise: float = 1e-4,
        alpha: float = 0.25,
        generator: torch.Generator | None = None,
    ):
        check_nonnegative("lr", lr)
        check_positive_int("langevin_steps", langevin_steps)
        check_nonnegative("langevin_lr", langevin_lr)
        check_nonnegative("gamma", gamma)
        check_nonnegative("scoping", scoping)
        check_nonnegative("noise", noise)
        check_in_range("alpha", alpha, 0.0, 1.0, low_inclusive=False, high_inclusive=True)
        defaults = dict(
            lr=lr,
            langevin_steps=langevin_steps,
            langevin_lr=langevin_lr,
            gamma=gamma,
            scoping=scoping,
            noise=noise,
            alpha=alpha,
        )
        super().__init__(params, defaults)
        if generator is None:
            device = self.param_groups[0]["params"][0].device
            seed = int(torch.randint(0, 2**62, (1,)).item())  # from the global RNG
            generator = torch.Generator(device=device).manual_seed(seed)
        self.generator = generator

    def state_dict(self) -> dict:
        state_dict = super().state_dict()
        state_dict["generator_state"] = self.generator.get_state()
        return state_dict

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        generator_state = state_dict.pop("generator_state", None)
        super().load_state_dict(state_dict)
        if generator_state is not None:
            self.generator.set_state(generator_state)

    def _restore(self, x_saved: dict) -> None:
        for p, x in x_saved.items():
            p.copy_(x)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One outer step (L closure calls); returns the loss at the starting point x."""
        require_closure(
            closure, "EntropySGD needs a closure: step(closure) re-evaluates the loss at every Langevin step"
        )
        # x' <- x ;  μ <- x   (x kept aside; the parameters themselves play x')
        x_saved = {p: p.detach().clone() for group in self.param_groups for p in group["params"]}
        mu = {p: x.clone() for p, x in x_saved.items()}
        first_loss = None
        active: set = set()
        for ell in range(max(g["langevin_steps"] for g in self.param_groups)):
            loss = evaluate_closure(closure)
            if ell == 0:
                first_loss = loss
            grads_ok = True
            for group in self.param_groups:
                if ell >= group["langevin_steps"]:
                    continue
                for p in params_with_grad(group["params"], type(self).__name__):
                    if not bool(torch.isfinite(p.grad).all()):
                        grads_ok = False
            if not grads_ok:
                self._restore(x_saved)
                raise FloatingPointError(
                    "EntropySGD: a gradient contains NaN or inf; the parameters were put back at x and the step refused"
                )
            for group in self.param_groups:
                if ell >= group["langevin_steps"]:
                    continue
                for p in params_with_grad(group["params"], type(self).__name__):
                    state = self.state[p]
                    if "step" not in state:
                        state["step"] = 0
                    active.add(p)
                    # γ_t = γ0 (1 + γ1)^t
                    gamma = group["gamma"] * (1 + group["scoping"]) ** state["step"]
                    # ξ ~ N(0, I) from the optimizer's generator; complex parameters as their
                    # real view (real and imaginary parts are coordinates with unit variance)
                    x = as_real(p)
                    xi = torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=self.generator.device).to(
                        p.device
                    )
                    langevin_step(
                        x,
                        as_real(p.grad),
                        as_real(x_saved[p]),
                        as_real(mu[p]),
                        xi,
                        gamma=gamma,
                        langevin_lr=group["langevin_lr"],
                        noise=group["noise"],
                        alpha=group["alpha"],
                    )
        # x <- x - ηγ (x - μ)
        for group in self.param_groups:
            for p in group["params"]:
                if p not in active:
                    continue
                state = self.state[p]
                gamma = group["gamma"] * (1 + group["scoping"]) ** state["step"]
                local_entropy_step(p, x_saved[p], mu[p], lr=float(group["lr"]), gamma=gamma)
                state["step"] += 1
        return first_loss
