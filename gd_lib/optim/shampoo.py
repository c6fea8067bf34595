r"""Shampoo: Kronecker-factored preconditioning, with grafting, blocking and momentum.

For a matrix parameter :math:`W \in \mathbb{R}^{m\times n}` with gradient :math:`G`,
Shampoo keeps one statistic per side and preconditions on both:

.. math::
    L_t &= \beta_2 L_{t-1} + (1-\beta_2)\, G_t G_t^\top
          \quad(\text{or } L_t = L_{t-1} + G_t G_t^\top \text{ when } \beta_2 = 1) \\
    R_t &= \beta_2 R_{t-1} + (1-\beta_2)\, G_t^\top G_t \\
    P_L &= \big(L_t / (1-\beta_2^t) + \varepsilon I\big)^{-1/4}, \qquad
    P_R = \big(R_t / (1-\beta_2^t) + \varepsilon I\big)^{-1/4} \\
    D_t &= P_L\, \hat G_t\, P_R

For a tensor of order :math:`k` there is one statistic per mode and each root is
:math:`-1/(2k)`; a vector gets a single full-matrix statistic with root :math:`-1/2`
(full-matrix AdaGrad on it), exactly as distributed Shampoo does. With
:math:`\beta_2 = 1`, no filtering and a single step, :math:`D = U V^\top` for
:math:`G = U \Sigma V^\top`: Shampoo's first step is the spectral (orthogonalised) step.

The full step, as the recipe of Shi et al. (2023) orders it (``_per_group_step_impl``):

1. :math:`G \leftarrow G + \lambda W` if weight decay is coupled (L2);
2. update :math:`L, R` with :math:`G` and the grafting accumulator :math:`V` (below);
3. every ``precondition_frequency`` steps (from ``start_preconditioning_step`` on),
   recompute :math:`P_L, P_R` (eigendecomposition, or the coupled Newton iteration);
4. gradient filtering :math:`\tilde G \leftarrow \beta_1 \tilde G + (1-\beta_1) G`,
   :math:`\hat G = \tilde G / (1-\beta_1^t)` (:math:`\hat G = G` when :math:`\beta_1 = 0`);
5. :math:`D = P_L \hat G P_R`, rescaled to the norm of the grafted method's step
   :math:`D_g` (layer-wise grafting): :math:`D \leftarrow (\|D_g\|_F / \|D\|_F)\, D`;
   before ``start_preconditioning_step`` the step is :math:`D_g` itself;
6. :math:`D \leftarrow D + \lambda W` if weight decay is decoupled (AdamW-style);
7. momentum :math:`M \leftarrow \mu M + (1-\tau) D`, then :math:`D \leftarrow (1-\tau) D +
   \mu M` (Nesterov) or :math:`D \leftarrow M`;
8. :math:`W \leftarrow W - \eta D`.

Grafting directions (Agarwal et al. 2020; ``grafting``): ``"sgd"`` :math:`D_g = \hat G`;
``"adagrad"`` :math:`V \mathrel{+}= G^2,\ D_g = \hat G/(\sqrt V + \epsilon_g)`;
``"adam"`` :math:`V \leftarrow \beta_g V + (1-\beta_g) G^2,\ D_g = \hat G /
(\sqrt{V/(1-\beta_g^t)} + \epsilon_g)`; ``"none"`` keeps Shampoo's own scale. With
:math:`\beta_1` as Adam's and ``"adam"`` grafting, the steps before preconditioning
starts are exactly Adam's; with ``"adagrad"`` and :math:`\beta_1 = 0`, AdaGrad's.

Blocking: a dimension longer than ``max_preconditioner_dim`` is cut into blocks of at
most that size, and every block of the parameter is a separate Shampoo problem with its
own statistics and its own grafting norm (the recipe's "blocking for large-dimensional
tensors": a block-diagonal refinement of the Kronecker preconditioner). Blocks of equal
shape are stacked and processed as one batch (batched matmul and eigh).

Deviations from distributed Shampoo, on purpose: ``merge_dims`` defaults to False
(the recipe merges small dimensions by default, which turns a small matrix into a vector
and loses the two-sided preconditioner this course teaches); with ``grafting="none"``
the steps before preconditioning starts use the plain (filtered) gradient, where the
recipe's zero-initialised inverse factors give no step at all.

References:
    Gupta, Koren & Singer (2018), "Shampoo: Preconditioned Stochastic Tensor
    Optimization", ICML.
    Anil, Gupta, Koren, Regan & Singer (2020), "Scalable Second Order Optimization for
    Deep Learning", arXiv:2002.09018 (grafting, blocking, coupled Newton roots).
    Agarwal, Anil, Hazan, Koren & Zhang (2020), "Disentangling Adaptive Gradient Methods
    from Learning Rates", arXiv:2002.11803 (grafting).
    Shi, Lee, Iwasaki, Gallego-Posada, Li, Rangadurai, Mudigere & Rabbat (2023), "A
    Distributed Data-Parallel PyTorch Implementation of the Distributed Shampoo
    Optimizer for Training Neural Networks At-Scale", arXiv:2309.06497
    (facebookresearch/optimizers, the recipe followed here).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import (
    check_in_range,
    check_nonnegative,
    check_positive,
    check_positive_int,
    params_with_grad,
)
from ..distributed.work import WorkSharing
from ..linalg import inverse_root_eigh, inverse_root_newton, working_dtype
from ._base import Optimizer
from ._foreach import as_real
from ._groups import evaluate_closure
from ._kronecker import gram_matrices, merge_small_dims, mode_products

__all__ = [
    "Shampoo",
    "ShampooConfig",
    "BlockPlan",
    "make_block_plan",
    "shampoo_update",
    "accumulate_statistics",
    "update_inverse_roots_",
    "apply_shampoo_step",
]

GRAFTING_METHODS = ("none", "sgd", "adagrad", "adam")
ROOT_METHODS = ("eigh", "newton")


@dataclass(frozen=True)
class ShampooConfig:
    """Hyperparameters of :class:`Shampoo` except the learning rate (which schedulers change).

    Names and defaults follow distributed Shampoo's ``DistributedShampoo`` (2023/24), except
    ``merge_dims`` (False here) and ``grafting`` spelled as a string.

    betas: (β1, β2). β1 filters the gradient (EMA, 0 = off); β2 averages the statistics
        L, R (1.0 = plain sum, as AdaGrad). Default (0.9, 1.0).
    epsilon: ε > 0 added to the eigenvalues of L/(1-β2^t) before the inverse root (1e-12).
    momentum, dampening, nesterov: heavy-ball / Nesterov momentum on the final direction.
    weight_decay: λ ≥ 0; ``decoupled_weight_decay`` adds λW to the direction after
        preconditioning (AdamW-style, default) instead of to the gradient (L2).
    max_preconditioner_dim: block size b; longer dimensions are split into blocks (1024).
    precondition_frequency: recompute the inverse roots every this many steps (1).
    start_preconditioning_step: first step that uses the Shampoo direction; -1 means
        ``precondition_frequency`` (the recipe's default). Must be ≥ precondition_frequency.
    use_bias_correction: divide the β1 filter and the β2 statistics by 1 - β^t.
    grafting: "none", "sgd", "adagrad" or "adam": whose step norm Shampoo takes, per block.
    grafting_beta2, grafting_epsilon: β and ε of the Adam/AdaGrad grafting accumulator.
    root_method: "eigh" (exact, default) or "newton" (coupled Newton iteration).
    newton_max_iterations, newton_tolerance, newton_max_error_ratio: for root_method="newton": stop
        once max|M - I| ≤ tolerance (1e-3, as scalable Shampoo and pytorch_optimizer; the
        root's relative error is then about tolerance/4) or when the error stops shrinking
        (new ≥ ratio × old, ratio 1.0; see :func:`gd_lib.linalg.inverse_root_newton`).
    merge_dims: merge adjacent small dimensions while their product ≤ max_preconditioner_dim.
    """

    betas: tuple[float, float] = (0.9, 1.0)
    epsilon: float = 1e-12
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    decoupled_weight_decay: bool = True
    max_preconditioner_dim: int = 1024
    precondition_frequency: int = 1
    start_preconditioning_step: int = -1
    use_bias_correction: bool = True
    grafting: str = "none"
    grafting_beta2: float = 0.999
    grafting_epsilon: float = 1e-10
    root_method: str = "eigh"
    newton_max_iterations: int = 100
    newton_tolerance: float = 1e-3
    newton_max_error_ratio: float = 1.0
    merge_dims: bool = False

    def __post_init__(self):
        betas = self.betas
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Invalid betas: {betas!r}; expected a pair (β1 in [0, 1), β2 in (0, 1])")
        check_in_range("betas[0]", betas[0], 0.0, 1.0)
        check_in_range("betas[1]", betas[1], 0.0, 1.0, low_inclusive=False, high_inclusive=True)
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        check_positive("epsilon", self.epsilon)
        check_in_range("momentum", self.momentum, 0.0, 1.0)
        check_in_range("dampening", self.dampening, 0.0, 1.0)
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError(
                f"Invalid nesterov=True with momentum={self.momentum!r}, dampening="
                f"{self.dampening!r}; Nesterov needs momentum > 0 and dampening = 0"
            )
        check_nonnegative("weight_decay", self.weight_decay)
        check_positive_int("max_preconditioner_dim", self.max_preconditioner_dim)
        check_positive_int("precondition_frequency", self.precondition_frequency)
        start = self.start_preconditioning_step
        if isinstance(start, bool) or not isinstance(start, int) or start < -1 or start == 0:
            raise ValueError(f"Invalid start_preconditioning_step: {start!r}; expected -1 or an integer >= 1")
        if start != -1 and start < self.precondition_frequency:
            raise ValueError(
                f"Invalid start_preconditioning_step: {start!r}; expected -1 or an integer "
                f">= precondition_frequency ({self.precondition_frequency})"
            )
        if self.grafting not in GRAFTING_METHODS:
            raise ValueError(f"Invalid grafting: {self.grafting!r}; expected one of {GRAFTING_METHODS}")
        check_in_range("grafting_beta2", self.grafting_beta2, 0.0, 1.0)
        check_positive("grafting_epsilon", self.grafting_epsilon)
        if self.root_method not in ROOT_METHODS:
            raise ValueError(f"Invalid root_method: {self.root_method!r}; expected one of {ROOT_METHODS}")
        check_positive_int("newton_max_iterations", self.newton_max_iterations)
        check_positive("newton_tolerance", self.newton_tolerance)
        if not (isinstance(self.newton_max_error_ratio, (int, float)) and self.newton_max_error_ratio >= 1):
            raise ValueError(f"Invalid newton_max_error_ratio: {self.newton_max_error_ratio!r}; expected a number >= 1")

    @property
    def first_preconditioned_step(self) -> int:
        """``start_preconditioning_step``, with -1 resolved to ``precondition_frequency``."""
        start = self.start_preconditioning_step
        return self.precondition_frequency if start == -1 else start


# --- blocking ----------------------------------------------------------------------


class BlockPlan(NamedTuple):
    """How a parameter is cut into Shampoo blocks.

    shape:   the parameter's shape after dropping size-1 dimensions (and merging, if asked)
    classes: ``((block_shape, (slices, ...)), ...)``: blocks grouped by shape, each class
             processed as one stacked batch of ``len(slices)`` blocks
    """

    shape: tuple[int, ...]
    classes: tuple[tuple[tuple[int, ...], tuple[tuple[slice, ...], ...]], ...]


def preconditioner_shape(shape: Sequence[int], max_dim: int, merge_dims: bool) -> tuple[int, ...]:
    """Drop size-1 dimensions (a scalar becomes ``(1,)``); with ``merge_dims``, merge adjacent small
    ones (:func:`gd_lib.optim._kronecker.merge_small_dims`, distributed Shampoo's rule)."""
    if merge_dims:
        return merge_small_dims(shape, max_dim)
    return tuple(d for d in shape if d != 1) or (1,)


@cache
def make_block_plan(shape: tuple[int, ...], max_dim: int, merge_dims: bool) -> BlockPlan:
    """Cut every dimension into chunks of ``max_dim`` (last one shorter) and group the blocks."""
    pshape = preconditioner_shape(shape, max_dim, merge_dims)
    chunks_per_dim = [[slice(s, min(s + max_dim, d)) for s in range(0, d, max_dim)] for d in pshape]
    classes: dict[tuple[int, ...], list[tuple[slice, ...]]] = {}
    for slices in itertools.product(*chunks_per_dim):
        block_shape = tuple(s.stop - s.start for s in slices)
        classes.setdefault(block_shape, []).append(slices)
    return BlockPlan(pshape, tuple((bs, tuple(sl)) for bs, sl in classes.items()))


def gather_blocks(X: Tensor, plan: BlockPlan) -> list[Tensor]:
    """``X`` (parameter-shaped) as one stacked tensor ``(n_blocks, *block_shape)`` per class."""
    X = X.reshape(plan.shape)
    if len(plan.classes) == 1 and len(plan.classes[0][1]) == 1:
        return [X.unsqueeze(0)]  # a single block: a view, no copy
    return [torch.stack([X[s] for s in slices]) for _, slices in plan.classes]


def scatter_blocks(blocks: list[Tensor], plan: BlockPlan, out_shape: torch.Size) -> Tensor:
    """Inverse of :func:`gather_blocks`: a tensor of ``out_shape`` assembled from the blocks."""
    if len(plan.classes) == 1 and len(plan.classes[0][1]) == 1:
        return blocks[0][0].reshape(out_shape)
    out = blocks[0].new_empty(plan.shape)
    for stacked, (_, slices) in zip(blocks, plan.classes):
        for i, s in enumerate(slices):
            out[s] = stacked[i]
    return out.reshape(out_shape)


# --- the maths, on stacked blocks (n, d_1, ..., d_k) ---------------------------------


def update_statistics_(factors: list[Tensor], G: Tensor, beta2: float) -> None:
    r""":math:`L_j \leftarrow \beta_2 L_j + (1-\beta_2)\, G_{(j)} G_{(j)}^\top`, or the plain sum for β2 = 1."""
    grams = gram_matrices(G.to(factors[0].dtype))
    if beta2 == 1.0:
        torch._foreach_add_(factors, grams)
    else:
        torch._foreach_lerp_(factors, grams, 1.0 - beta2)


def compute_inverse_roots(
    factors: list[Tensor],
    *,
    root: int,
    epsilon: float,
    bias_correction2: float,
    method: str,
    newton_max_iterations: int,
    newton_tolerance: float,
    newton_max_error_ratio: float | None = 1.0,
) -> list[Tensor]:
    r""":math:`P_j = \big(L_j / (1-\beta_2^t) + \varepsilon I\big)^{-1/\text{root}}` for each (batched) statistic.

    Raises ``ValueError`` (mentioning "non-finite") if a statistic holds NaN or inf, as
    distributed Shampoo does, instead of silently preconditioning with garbage.
    The damping is :func:`gd_lib.linalg.inverse_root_from_eigh`'s: eigenvalues made
    non-negative first (round-off can make them slightly negative), then + ε; the
    Newton path adds ε only.
    """
    roots = []
    for L in factors:
        A = L / bias_correction2
        if not bool(torch.isfinite(A).all()):
            raise ValueError(
                "Shampoo: a preconditioner statistic has non-finite (NaN or inf) entries; "
                "check the loss and gradients for NaN/inf"
            )
        if method == "eigh":
            roots.append(inverse_root_eigh(A, root, epsilon))
        else:
            roots.append(
                inverse_root_newton(
                    A,
                    root,
                    epsilon,
                    max_iterations=newton_max_iterations,
                    tolerance=newton_tolerance,
                    max_error_ratio=newton_max_error_ratio,
                ).X
            )
    return roots


def grafting_direction(
    G_hat: Tensor, G: Tensor, accumulator: Tensor | None, *, method: str, beta2: float, epsilon: float, step: int
) -> Tensor:
    r"""The grafted method's step :math:`D_g`, updating its accumulator :math:`V` in place.

    sgd: :math:`\hat G`;  adagrad: :math:`V \mathrel{+}= G^2`, :math:`\hat G / (\sqrt V + \epsilon)`;
    adam: :math:`V \leftarrow \beta V + (1-\beta) G^2`, :math:`\hat G / (\sqrt{V / (1-\beta^t)} + \epsilon)`.
    The accumulator sees the raw gradient :math:`G`, the numerator the filtered :math:`\hat G`.
    """
    if method in ("sgd", "none"):
        return G_hat
    if method == "adagrad":
        # V <- V + G²
        accumulator.addcmul_(G, G)
        denom = accumulator.sqrt().add_(epsilon)
    else:
        # V <- β V + (1 - β) G²
        accumulator.mul_(beta2).addcmul_(G, G, value=1.0 - beta2)
        denom = (accumulator / (1.0 - beta2**step)).sqrt_().add_(epsilon)
    return G_hat / denom


def graft_(shampoo_blocks: Tensor, grafting_blocks: Tensor) -> Tensor:
    r"""Per block: :math:`D \leftarrow \|D_g\|_F / (\|D\|_F + 10^{-16})\; D` (in place on ``shampoo_blocks``)."""
    n = shampoo_blocks.shape[0]
    graft_norm = torch.linalg.vector_norm(grafting_blocks.reshape(n, -1), dim=1)
    shampoo_norm = torch.linalg.vector_norm(shampoo_blocks.reshape(n, -1), dim=1)
    scale = graft_norm / (shampoo_norm + 1e-16)
    return shampoo_blocks.mul_(scale.reshape((n,) + (1,) * (shampoo_blocks.dim() - 1)))


def init_state(param: Tensor, config: ShampooConfig) -> dict:
    """Zero statistics (per block class and mode), inverse roots, and the first-order buffers."""
    plan = make_block_plan(tuple(param.shape), config.max_preconditioner_dim, config.merge_dims)
    factor_dtype = working_dtype(param.dtype)
    state: dict = {"step": 0, "factors": [], "inverse_roots": []}
    for block_shape, slices in plan.classes:
        n = len(slices)
        state["factors"].append([torch.zeros(n, d, d, dtype=factor_dtype, device=param.device) for d in block_shape])
        state["inverse_roots"].append(
            [torch.zeros(n, d, d, dtype=factor_dtype, device=param.device) for d in block_shape]
        )
    if config.betas[0] > 0:
        state["filtered_grad"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    if config.grafting in ("adagrad", "adam"):
        state["grafting_accumulator"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    if config.momentum > 0:
        state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    return state


def is_root_step(step: int, config: ShampooConfig) -> bool:
    """The recipe's schedule: at the start step, then every ``precondition_frequency`` steps after it."""
    start = config.first_preconditioned_step
    return step == start or (step > start and step % config.precondition_frequency == 0)


def shampoo_update(param: Tensor, grad: Tensor, state: dict, config: ShampooConfig, lr: float) -> None:
    """One Shampoo step on one parameter, in place on ``param`` and ``state`` (see the module docstring).

    The three stages, which :class:`Shampoo` also runs separately so that the root
    computations of all parameters can be divided between data-parallel ranks:
    :func:`accumulate_statistics` (steps 1–2), :func:`update_inverse_roots_` (step 3,
    the expensive one) and :func:`apply_shampoo_step` (steps 4–8).
    """
    grad, grad_blocks = accumulate_statistics(param, grad, state, config)
    # P_L <- (L / (1 - β2^t) + εI)^{-1/4},  P_R <- (R / (1 - β2^t) + εI)^{-1/4}   (every f steps)
    if is_root_step(state["step"], config):
        update_inverse_roots_(state, config)
    apply_shampoo_step(param, grad, grad_blocks, state, config, lr)


def accumulate_statistics(
    param: Tensor, grad: Tensor, state: dict, config: ShampooConfig
) -> tuple[Tensor, list[Tensor]]:
    """Steps 1–2: count the step, couple weight decay, update L, R; returns ``(G, G's blocks)``."""
    plan = make_block_plan(tuple(param.shape), config.max_preconditioner_dim, config.merge_dims)
    state["step"] += 1
    # G <- G + λ W   (coupled weight decay only)
    if config.weight_decay != 0 and not config.decoupled_weight_decay:
        grad = grad.add(param, alpha=config.weight_decay)
    grad_blocks = gather_blocks(grad, plan)

    # L <- β2 L + (1 - β2) G Gᵀ,  R <- β2 R + (1 - β2) Gᵀ G   (per block, per mode)
    for factors, G in zip(state["factors"], grad_blocks):
        update_statistics_(factors, G, config.betas[1])
    return grad, grad_blocks


def _bias_correction2(state: dict, config: ShampooConfig) -> float:
    beta2 = config.betas[1]
    return 1.0 - beta2 ** state["step"] if (config.use_bias_correction and beta2 < 1.0) else 1.0


def inverse_root_of(state: dict, config: ShampooConfig, c: int, j: int) -> Tensor:
    """Step 3 for one statistic: P_j = (L_j / (1 - β2^t) + εI)^(-1/(2k)) of block class ``c``, mode ``j``."""
    factors = state["factors"][c]
    return compute_inverse_roots(
        [factors[j]],
        root=2 * len(factors),
        epsilon=config.epsilon,
        bias_correction2=_bias_correction2(state, config),
        method=config.root_method,
        newton_max_iterations=config.newton_max_iterations,
        newton_tolerance=config.newton_tolerance,
        newton_max_error_ratio=config.newton_max_error_ratio,
    )[0]


def update_inverse_roots_(state: dict, config: ShampooConfig) -> None:
    """Step 3: recompute every inverse root :math:`P_j` of one parameter in place."""
    for c, roots in enumerate(state["inverse_roots"]):
        for j, P in enumerate(roots):
            P.copy_(inverse_root_of(state, config, c, j))


def apply_shampoo_step(
    param: Tensor, grad: Tensor, grad_blocks: list[Tensor], state: dict, config: ShampooConfig, lr: float
) -> None:
    """Steps 4–8: filter, precondition with the current :math:`P_j`, graft, decay, momentum, step."""
    beta1 = config.betas[0]
    plan = make_block_plan(tuple(param.shape), config.max_preconditioner_dim, config.merge_dims)
    step = state["step"]

    # G̃ <- β1 G̃ + (1 - β1) G;  Ĝ <- G̃ / (1 - β1^t)
    if beta1 > 0:
        state["filtered_grad"].lerp_(grad, 1.0 - beta1)
        G_hat = state["filtered_grad"]
        if config.use_bias_correction:
            G_hat = G_hat / (1.0 - beta1**step)
    else:
        G_hat = grad

    # D_g <- grafted method's step (V updated with the raw G)
    D_graft = grafting_direction(
        G_hat,
        grad,
        state.get("grafting_accumulator"),
        method=config.grafting,
        beta2=config.grafting_beta2,
        epsilon=config.grafting_epsilon,
        step=step,
    )

    if step >= config.first_preconditioned_step:
        # D <- P_L Ĝ P_R   (per block)
        G_hat_blocks = gather_blocks(G_hat, plan) if G_hat is not grad else grad_blocks
        D_blocks = [
            mode_products(G.to(roots[0].dtype), roots) for G, roots in zip(G_hat_blocks, state["inverse_roots"])
        ]
        # D <- ||D_g|| / ||D|| · D   (per block)
        if config.grafting != "none":
            graft_blocks = gather_blocks(D_graft, plan)
            D_blocks = [graft_(D, Dg.to(D.dtype)) for D, Dg in zip(D_blocks, graft_blocks)]
        D = scatter_blocks(D_blocks, plan, param.shape).to(param.dtype)
    else:
        # before preconditioning starts: the grafted method's step
        D = D_graft

    # D <- D + λ W   (decoupled weight decay)
    if config.weight_decay != 0 and config.decoupled_weight_decay:
        D = D.add(param, alpha=config.weight_decay)
    # M <- μ M + (1 - τ) D;  D <- (1 - τ) D + μ M (Nesterov) or D <- M
    if config.momentum > 0:
        M = state["momentum_buffer"]
        M.mul_(config.momentum).add_(D, alpha=1.0 - config.dampening)
        D = D.mul(1.0 - config.dampening).add_(M, alpha=config.momentum) if config.nesterov else M
    # W <- W - η D
    param.add_(D, alpha=-lr)


class Shampoo(Optimizer):
    """Shampoo with grafting, blocking and momentum (distributed Shampoo's recipe, one device).

    Args:
        params: parameters or parameter groups. A group may carry its own ``config``.
        lr: learning rate η (default 1e-2, the recipe's).
        config: a :class:`ShampooConfig` (default ``ShampooConfig()``).
        **overrides: fields of the config to replace, e.g. ``Shampoo(params, lr=1e-3,
            grafting="adam", precondition_frequency=10)``; checked by the config.

    State per parameter: ``step`` (int), ``factors`` and ``inverse_roots`` (one list per
    class of equally shaped blocks, one ``(n_blocks, d, d)`` tensor per mode),
    ``filtered_grad`` (β1 > 0), ``grafting_accumulator`` (AdaGrad/Adam grafting),
    ``momentum_buffer`` (momentum > 0). See :func:`shampoo_update` for the step.
    Complex parameters are preconditioned as their ``torch.view_as_real`` twin (a trailing
    mode of size 2); zero-size parameters are skipped. :meth:`state_dict` holds plain data
    only (each group's config as a dict), so ``torch.load(weights_only=True)`` reads it.

    Data parallelism: with ``process_group`` (a ``torch.distributed`` group, e.g.
    ``dist.group.WORLD``; every rank must see the same gradients, as under DDP) the
    inverse roots — one unit per statistic L_j of each block class, costed
    n_blocks · d³ — are assigned to ranks by
    :func:`gd_lib.distributed.assign_work`, computed by their owner only and all-gathered
    (distributed Shampoo's scheme, Shi et al. 2023, which shares the search directions
    instead). Statistics and every other buffer stay replicated, so the state dict does not
    depend on the world size. ``work_log`` counts this rank's root computations.

    Examples:
        >>> import torch
        >>> from gd_lib.optim import Shampoo
        >>> w = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 3.0]]))  # loss 14.25
        >>> opt = Shampoo([w], lr=0.5)
        >>> for _ in range(20):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     opt.step()
        >>> bool((w ** 2).sum() < 14.25 / 4)  # the loss fell to under a quarter
        True
    """

    def __init__(
        self, params, lr: float = 1e-2, config: ShampooConfig | None = None, *, process_group=None, **overrides
    ):
        check_nonnegative("lr", lr)
        config = ShampooConfig() if config is None else config
        if not isinstance(config, ShampooConfig):
            raise ValueError(f"Invalid config: {config!r}; expected a ShampooConfig")
        if overrides:
            config = dataclasses.replace(config, **overrides)
        super().__init__(params, dict(lr=lr, config=config))
        for group in self.param_groups:
            if not isinstance(group["config"], ShampooConfig):
                raise ValueError(f"Invalid config in a parameter group: {group['config']!r}; expected a ShampooConfig")
        self._sharing = WorkSharing(process_group)
        self._sharing.check_replicated([p for g in self.param_groups for p in g["params"]])

    @property
    def work_log(self):
        """This rank's :class:`~gd_lib.distributed.WorkLog` (``counts["inverse_root"]``)."""
        return self._sharing.log

    def state_dict(self) -> dict:
        """torch's state dict with each group's ``config`` as a plain dict of its fields.

        Plain data (numbers, strings, tuples) only, so that ``torch.load(path)`` with its
        default ``weights_only=True`` reads a Shampoo checkpoint; :meth:`load_state_dict`
        rebuilds the :class:`ShampooConfig` (and checks it).
        """
        state_dict = super().state_dict()
        for group in state_dict["param_groups"]:
            if isinstance(group.get("config"), ShampooConfig):
                group["config"] = dataclasses.asdict(group["config"])
        return state_dict

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state dict whose configs are plain dicts (or, from older saves, ShampooConfig)."""
        groups = []
        for group in state_dict["param_groups"]:
            group = dict(group)
            if isinstance(group.get("config"), dict):
                group["config"] = ShampooConfig(**group["config"])
            groups.append(group)
        super().load_state_dict({**state_dict, "param_groups": groups})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One Shampoo step for every parameter with a gradient; returns the closure's loss."""
        loss = evaluate_closure(closure)
        # 1-2. statistics L_j <- β2 L_j + (1 - β2) G_(j) G_(j)ᵀ for every parameter
        pending = []  # (param, grad, grad_blocks, state, group)
        for group in self.param_groups:
            config: ShampooConfig = group["config"]
            for p in params_with_grad(group["params"], "Shampoo"):
                if p.numel() == 0:
                    continue  # a zero-size parameter: nothing to precondition or move
                state = self.state[p]
                # complex parameters as their real view (..., 2): Shampoo on the real twin
                param = as_real(p)
                if len(state) == 0:
                    state.update(init_state(param, config))
                grad, grad_blocks = accumulate_statistics(param, as_real(p.grad), state, config)
                pending.append((param, grad, grad_blocks, state, group))
        # 3. P_j <- (L_j / (1 - β2^t) + εI)^{-1/(2k)}: each rank computes the roots it owns, then all share
        self._update_inverse_roots([(state, group["config"]) for _, _, _, state, group in pending])
        # 4-8. filter, precondition, graft, decay, momentum, W <- W - η D
        for p, grad, grad_blocks, state, group in pending:
            apply_shampoo_step(p, grad, grad_blocks, state, group["config"], float(group["lr"]))
        return loss

    def _update_inverse_roots(self, states: list[tuple[dict, ShampooConfig]]) -> None:
        units = [
            (state, config, c, j)
            for state, config in states
            if is_root_step(state["step"], config)
            for c, roots in enumerate(state["inverse_roots"])
            for j in range(len(roots))
        ]
        if not units:
            return

        def allocate(unit):
            state, config, c, j = unit
            # the owner raises on non-finite statistics; so does every other rank (no hang)
            if not bool(torch.isfinite(state["factors"][c][j]).all()):
                inverse_root_of(state, config, c, j)
            return [torch.empty_like(state["inverse_roots"][c][j])]

        results = self._sharing.compute_shared(
            units,
            [_root_cost(state["inverse_roots"][c][j]) for state, _, c, j in units],
            lambda unit: [inverse_root_of(*unit)],
            allocate,
            "inverse_root",
        )
        for (state, _, c, j), (root,) in zip(units, results):
            state["inverse_roots"][c][j].copy_(root)


def _root_cost(P: Tensor) -> float:
    """An inverse root of ``n`` stacked ``d × d`` statistics costs about ``n d³`` (eigh or Newton)."""
    n, d = P.shape[0], P.shape[-1]
    return float(n * d**3)
