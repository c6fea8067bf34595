r"""SOAP: Adam run in the eigenbasis of Shampoo's preconditioner.

For a matrix parameter :math:`W` with gradient :math:`G`, SOAP keeps Shampoo's statistics
:math:`L, R` and their eigenbases :math:`Q_L, Q_R`, and runs Adam on the rotated gradient
:math:`G' = Q_L^\top G Q_R` (Vyas et al. 2024, Algorithm 3):

.. math::
    G' &= Q_L^\top G\, Q_R \\
    m &\leftarrow \beta_1 m + (1-\beta_1)\, G', \qquad
    v \leftarrow \beta_2 v + (1-\beta_2)\, G'^{\,2} \\
    N &= Q_L \big(m / (\sqrt v + \epsilon)\big) Q_R^\top \\
    W &\leftarrow W - \eta\, \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\, N, \qquad
    W \leftarrow W - \eta \lambda W \\
    L &\leftarrow \beta_s L + (1-\beta_s)\, G G^\top, \qquad
    R \leftarrow \beta_s R + (1-\beta_s)\, G^\top G

Every ``precondition_frequency`` steps the bases are refreshed by one step of power
iteration and a QR decomposition (:func:`gd_lib.linalg.qr_power_iteration_refresh`),
warm-started from the old basis and sorted by estimated eigenvalue; :math:`v` is permuted
with the same sort (it is *not* rotated: it lives on the old axes), and :math:`m` is
carried over to the new basis, :math:`m \leftarrow Q_{L,\text{new}}^\top Q_L\, m\,
Q_R^\top Q_{R,\text{new}}`. The very first call only initialises :math:`L, R` and takes
:math:`Q_L, Q_R` from an exact eigendecomposition (descending); it does not move
:math:`W`, "so that we never use the current gradients in the projection". Order-k
tensors use one statistic per mode; a mode longer than ``max_precond_dim`` (and a 1-D
parameter unless ``precondition_1d``) keeps the identity basis there. With the identity
basis on every mode SOAP is exactly AdamW (its eps inside the bias-corrected step),
one step late.

Map to the reference implementation (nikhilvyas/SOAP, ``soap.py``): names and defaults
are its (``shampoo_beta < 0`` means ``betas[1]``; ``GG`` → ``factors``, ``Q`` →
``eigenbases``); ``exp_avg`` lives in the eigenbasis as there. Two differences, both only
in floating point: the reference rotates ``exp_avg`` back and forth at *every* step
(``project_back`` then ``project``, identical in exact arithmetic when the basis did not
change), this code only when the basis changes; and the reference runs the QR refresh in
float32 even for float64 parameters, this code in the parameter's precision (float32 for
half types). ``data_format="channels_last"`` is not supported (``merge_dims`` assumes
NCHW).

References:
    Vyas, Morwani, Zhao, Kwun, Shapira, Brandfonbrener, Janson & Kakade (2024), "SOAP:
    Improving and Stabilizing Shampoo using Adam", arXiv:2409.11321; code
    github.com/nikhilvyas/SOAP (MIT).
    Gupta, Koren & Singer (2018), "Shampoo", ICML; Kingma & Ba (2015), "Adam", ICLR.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .._checks import (
    check_betas,
    check_in_range,
    check_nonnegative,
    check_positive_int,
    params_with_grad,
)
from ..distributed.work import WorkSharing
from ..linalg import qr_power_iteration_refresh, symmetric_eigh, working_dtype
from ._base import Optimizer
from ._foreach import as_real
from ._groups import evaluate_closure
from ._kronecker import gram_matrices, merge_small_dims, mode_products

__all__ = [
    "SOAP",
    "soap_update",
    "preconditioned_shape",
    "project",
    "project_back",
    "init_statistics",
    "initial_eigenbasis",
    "refresh_eigenbases_",
    "apply_refreshed_eigenbases_",
]


def preconditioned_shape(param: Tensor, merge_dims: bool, max_precond_dim: int) -> tuple[int, ...]:
    """The reference's rule: merged (:func:`gd_lib.optim._kronecker.merge_small_dims`) only with
    ``merge_dims`` and for two or more dimensions, else the parameter's shape, size-1 dimensions kept."""
    if merge_dims and param.dim() > 1:
        return merge_small_dims(param.shape, max_precond_dim)
    return tuple(param.shape)


def project(X: Tensor, eigenbases: Sequence[Tensor | None], shape: tuple[int, ...]) -> Tensor:
    r""":math:`X' = X \times_1 Q_1^\top \cdots \times_k Q_k^\top` (for a matrix :math:`Q_L^\top X Q_R`)."""
    Y = mode_products(
        X.reshape(shape).unsqueeze(0), [None if Q is None else Q.unsqueeze(0) for Q in eigenbases], transpose=True
    )
    return Y.squeeze(0).reshape(X.shape)


def project_back(X: Tensor, eigenbases: Sequence[Tensor | None], shape: tuple[int, ...]) -> Tensor:
    r""":math:`X = X' \times_1 Q_1 \cdots \times_k Q_k` (for a matrix :math:`Q_L X' Q_R^\top`)."""
    Y = mode_products(X.reshape(shape).unsqueeze(0), [None if Q is None else Q.unsqueeze(0) for Q in eigenbases])
    return Y.squeeze(0).reshape(X.shape)


def update_factors_(factors: Sequence[Tensor | None], G: Tensor, shape: tuple[int, ...], beta: float) -> None:
    r""":math:`L_j \leftarrow \beta L_j + (1-\beta)\, G_{(j)} G_{(j)}^\top` for the preconditioned modes."""
    grams = gram_matrices(
        G.reshape(shape).unsqueeze(0).to(working_dtype(G.dtype)), modes=[L is not None for L in factors]
    )
    for L, gram in zip(factors, grams):
        if L is not None:
            L.lerp_(gram.squeeze(0), 1.0 - beta)


def init_state(param: Tensor, grad: Tensor, group: dict) -> dict:
    """First call: zero moments, statistics L_j from this gradient, eigenbases by eigh."""
    state = init_statistics(param, grad, group)
    # Q_L <- eigenvectors of L, by decreasing eigenvalue
    state["eigenbases"] = [None if L is None else initial_eigenbasis(L) for L in state["factors"]]
    return state


def init_statistics(param: Tensor, grad: Tensor, group: dict) -> dict:
    """:func:`init_state` without the eigendecompositions (``eigenbases`` all None until set)."""
    shape = preconditioned_shape(param, group["merge_dims"], group["max_precond_dim"])
    beta = _shampoo_beta(group)
    if param.dim() == 1 and not group["precondition_1d"]:
        preconditioned = [False]
    else:
        preconditioned = [d <= group["max_precond_dim"] for d in shape]
    dtype = working_dtype(param.dtype)
    factors = [
        torch.zeros(d, d, dtype=dtype, device=param.device) if keep else None for d, keep in zip(shape, preconditioned)
    ]
    # L <- (1 - β_s) G Gᵀ   (from zero)
    update_factors_(factors, grad, shape, beta)
    return {
        "step": 0,
        "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
        "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
        "factors": factors,
        "eigenbases": [None] * len(factors),
    }


def initial_eigenbasis(L: Tensor) -> Tensor:
    """The eigenvectors of ``L`` by decreasing eigenvalue (the first call's exact basis)."""
    return symmetric_eigh(L, descending=True)[1]


def _shampoo_beta(group: dict) -> float:
    return group["shampoo_beta"] if group["shampoo_beta"] >= 0 else group["betas"][1]


def refresh_eigenbases_(state: dict, shape: tuple[int, ...]) -> None:
    r"""New bases by power iteration + QR; :math:`v` permuted, :math:`m` rotated to the new basis."""
    # Q_new, π <- qr(L Q[:, π]) with π sorting diag(Qᵀ L Q) descending   (per mode)
    refreshed = [
        None if L is None else qr_power_iteration_refresh(L, Q) for L, Q in zip(state["factors"], state["eigenbases"])
    ]
    apply_refreshed_eigenbases_(state, shape, refreshed)


def apply_refreshed_eigenbases_(
    state: dict, shape: tuple[int, ...], refreshed: Sequence[tuple[Tensor, Tensor] | None]
) -> None:
    r"""Install ``refreshed[j] = (Q_new, π)`` (None: identity mode): :math:`v` permuted by π, :math:`m` rotated."""
    old = state["eigenbases"]
    # m back to the original coordinates with the old bases
    exp_avg = project_back(state["exp_avg"], old, shape)
    exp_avg_sq = state["exp_avg_sq"].reshape(shape)
    new = []
    for j, (result, Q) in enumerate(zip(refreshed, old)):
        if result is None:
            new.append(None)
            continue
        Q_new, order = result
        # v <- v permuted along mode j by π (its axes follow the sorted old basis)
        exp_avg_sq = exp_avg_sq.index_select(j, order)
        new.append(Q_new.to(Q.dtype))
    state["eigenbases"] = new
    state["exp_avg_sq"] = exp_avg_sq.reshape(state["exp_avg_sq"].shape).contiguous()
    # m into the new bases
    state["exp_avg"] = project(exp_avg, new, shape)


def soap_update(
    param: Tensor,
    grad: Tensor,
    state: dict,
    *,
    lr: float,
    betas: tuple[float, float],
    shampoo_beta: float,
    eps: float,
    weight_decay: float,
    precondition_frequency: int,
    shape: tuple[int, ...],
    normalize_grads: bool,
    correct_bias: bool,
    refresh: bool = True,
) -> None:
    """One SOAP step on one parameter after its first call (see the module docstring).

    ``refresh=False`` leaves the periodic basis refresh to the caller (:class:`SOAP` does it
    for all parameters at once, so that data-parallel ranks can divide it).
    """
    beta1, beta2 = betas
    Q = state["eigenbases"]
    # G' <- Q_Lᵀ G Q_R
    G_rot = project(grad, Q, shape)
    state["step"] += 1
    step = state["step"]
    m, v = state["exp_avg"], state["exp_avg_sq"]
    # m <- β1 m + (1 - β1) G';  v <- β2 v + (1 - β2) G'²
    m.mul_(beta1).add_(G_rot, alpha=1.0 - beta1)
    v.mul_(beta2).addcmul_(G_rot, G_rot, value=1.0 - beta2)
    # N <- Q_L (m / (√v + ε)) Q_Rᵀ
    N = project_back(m / (v.sqrt().add_(eps)), Q, shape)
    step_size = lr
    if correct_bias:
        step_size = lr * (1.0 - beta2**step) ** 0.5 / (1.0 - beta1**step)
    if normalize_grads:
        N = N / (1e-30 + N.square().mean().sqrt())
    # W <- W - η √(1-β2^t)/(1-β1^t) N
    param.add_(N, alpha=-step_size)
    # W <- W - η λ W   (decoupled, after the step, as the reference)
    if weight_decay > 0:
        param.add_(param, alpha=-lr * weight_decay)
    # L <- β_s L + (1 - β_s) G Gᵀ,  R <- β_s R + (1 - β_s) Gᵀ G
    update_factors_(state["factors"], grad, shape, shampoo_beta)
    # every f steps: Q <- qr(L Q) (one power-iteration step), v permuted, m rotated
    if refresh and step % precondition_frequency == 0:
        refresh_eigenbases_(state, shape)


class SOAP(Optimizer):
    """SOAP (Vyas et al. 2024): Adam in Shampoo's eigenbasis; see :func:`soap_update`.

    Args (names and defaults of the reference implementation, nikhilvyas/SOAP):
        params: parameters or parameter groups.
        lr: learning rate η (3e-3).
        betas: Adam's (β1, β2) (0.95, 0.95).
        shampoo_beta: β_s of the statistics L, R; < 0 means ``betas[1]`` (-1).
        eps: Adam's ε (1e-8).
        weight_decay: decoupled weight decay λ (0.01), applied after the step.
        precondition_frequency: refresh the eigenbases every this many steps (10).
        max_precond_dim: modes longer than this keep the identity basis (10000).
        merge_dims: merge adjacent small dimensions first (False).
        precondition_1d: give 1-D parameters a full L too (False).
        normalize_grads: rescale each step to unit RMS (False).
        correct_bias: Adam's bias correction (True).

    Complex parameters are preconditioned as their ``torch.view_as_real`` twin (a trailing
    mode of size 2), so a complex run equals the real one; zero-size parameters are skipped.

    State per parameter: ``step`` (int; 0 after the first, initialising call),
    ``exp_avg`` (in the eigenbasis), ``exp_avg_sq``, ``factors`` and ``eigenbases``
    (one entry per mode, None where the basis is the identity).

    Data parallelism: with ``process_group`` (a ``torch.distributed`` group; every rank must
    see the same gradients, as under DDP) the eigendecompositions of the first call and the
    periodic QR refreshes — one unit per preconditioned mode, costed d³ — are assigned to
    ranks by :func:`gd_lib.distributed.assign_work`, computed by their owner only and
    all-gathered; everything else (statistics, moments, the rotations) stays replicated.
    ``work_log`` counts this rank's ``eigh`` and ``qr_refresh`` computations.

    Examples:
        >>> import torch
        >>> from gd_lib.optim import SOAP
        >>> w = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 3.0]]))  # loss 14.25
        >>> opt = SOAP([w], lr=0.1, precondition_frequency=1)
        >>> for _ in range(20):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     opt.step()
        >>> bool((w ** 2).sum() < 14.25 / 4)  # the loss fell to under a quarter
        True
    """

    def __init__(
        self,
        params,
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.95, 0.95),
        shampoo_beta: float = -1,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        precondition_frequency: int = 10,
        max_precond_dim: int = 10000,
        merge_dims: bool = False,
        precondition_1d: bool = False,
        normalize_grads: bool = False,
        correct_bias: bool = True,
        *,
        process_group=None,
    ):
        check_nonnegative("lr", lr)
        check_betas(betas)
        if not (isinstance(shampoo_beta, (int, float)) and shampoo_beta < 0):
            check_in_range("shampoo_beta", shampoo_beta, 0.0, 1.0)
        check_nonnegative("eps", eps)
        check_nonnegative("weight_decay", weight_decay)
        check_positive_int("precondition_frequency", precondition_frequency)
        check_positive_int("max_precond_dim", max_precond_dim)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            shampoo_beta=shampoo_beta,
            eps=eps,
            weight_decay=weight_decay,
            precondition_frequency=precondition_frequency,
            max_precond_dim=max_precond_dim,
            merge_dims=merge_dims,
            precondition_1d=precondition_1d,
            normalize_grads=normalize_grads,
            correct_bias=correct_bias,
        )
        super().__init__(params, defaults)
        self._sharing = WorkSharing(process_group)
        self._sharing.check_replicated([p for g in self.param_groups for p in g["params"]])

    @property
    def work_log(self):
        """This rank's :class:`~gd_lib.distributed.WorkLog` (``counts["eigh"]``, ``counts["qr_refresh"]``)."""
        return self._sharing.log

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One SOAP step for every parameter with a gradient; returns the closure's loss."""
        loss = evaluate_closure(closure)
        # 1. first call: statistics only; later calls: the SOAP step (the basis refresh waits)
        units = []  # (kind, state, mode j, shape): the eigendecompositions and refreshes due
        for group in self.param_groups:
            for p in params_with_grad(group["params"], "SOAP"):
                if p.numel() == 0:
                    continue  # a zero-size parameter: nothing to precondition or move
                state = self.state[p]
                # complex parameters as their real view (..., 2): SOAP on the real twin
                param, grad = as_real(p), as_real(p.grad)
                shape = preconditioned_shape(param, group["merge_dims"], group["max_precond_dim"])
                if len(state) == 0:
                    # first call: statistics and exact eigenbases only, no step
                    state.update(init_statistics(param, grad, group))
                    kind = "eigh"
                else:
                    soap_update(
                        param,
                        grad,
                        state,
                        lr=float(group["lr"]),
                        betas=group["betas"],
                        shampoo_beta=_shampoo_beta(group),
                        eps=group["eps"],
                        weight_decay=group["weight_decay"],
                        precondition_frequency=group["precondition_frequency"],
                        shape=shape,
                        normalize_grads=group["normalize_grads"],
                        correct_bias=group["correct_bias"],
                        refresh=False,
                    )
                    if state["step"] % group["precondition_frequency"] != 0:
                        continue
                    kind = "qr_refresh"
                units += [(kind, state, j, shape) for j, L in enumerate(state["factors"]) if L is not None]
                if kind == "qr_refresh" and not any(L is not None for L in state["factors"]):
                    apply_refreshed_eigenbases_(state, shape, [None] * len(state["factors"]))
        if units:
            self._compute_bases(units)
        return loss

    def _compute_bases(self, units: list) -> None:
        """2. Q <- eigh(L) or qr(L Q): each rank computes the modes it owns, then all share; 3. install."""

        def compute(unit):
            kind, state, j, _ = unit
            L = state["factors"][j]
            if kind == "eigh":
                return [initial_eigenbasis(L)]
            return list(qr_power_iteration_refresh(L, state["eigenbases"][j]))

        def allocate(unit):
            kind, state, j, _ = unit
            L = state["factors"][j]
            if not bool(torch.isfinite(L).all()):
                symmetric_eigh(L)  # raises as the owner does, so that no rank waits for it
            if kind == "eigh":
                return [torch.empty_like(L)]
            Q = state["eigenbases"][j]
            return [torch.empty_like(Q), torch.empty(Q.shape[-1], dtype=torch.long, device=Q.device)]

        results = self._sharing.compute_shared(
            units,
            [float(state["factors"][j].shape[-1]) ** 3 for _, state, j, _ in units],
            compute,
            allocate,
            kind=lambda unit: unit[0],
        )
        refreshes: dict[int, tuple[dict, tuple, list]] = {}
        for (kind, state, j, shape), result in zip(units, results):
            if kind == "eigh":
                state["eigenbases"][j] = result[0]
            else:
                entry = refreshes.setdefault(id(state), (state, shape, [None] * len(state["factors"])))
                entry[2][j] = tuple(result)
        for state, shape, refreshed in refreshes.values():
            apply_refreshed_eigenbases_(state, shape, refreshed)
