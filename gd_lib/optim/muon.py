"""Muon: MomentUm Orthogonalized by Newton–Schulz, with an AdamW fallback for non-matrix params.

References:
    Jordan, Jin, Boza, You, Cesista, Newhouse & Bernstein (2024), "Muon: An optimizer for
    hidden layers in neural networks", kellerjordan.github.io/posts/muon; reference code
    github.com/KellerJordan/Muon (``muon.py``: ``muon_update``, ``adam_update`` (here :func:`adam_direction`),
    ``SingleDeviceMuonWithAuxAdam``), whose names, defaults and update rule this follows.
    Bernstein & Newhouse (2024), "Old Optimizer, New Norm: An Anthology", arXiv:2409.20325
    (why: spectral-norm steepest descent for hidden weight matrices).

Differences from the reference, all deliberate:
    - ``p.grad`` is never written (the reference lerps the gradient in place for Nesterov);
    - Newton–Schulz folds its scale-and-add into ``addmm`` (as ``torch.optim.Muon``), where
      the reference writes ``b * A + c * A @ A``: in bfloat16 that rounds once per product
      instead of three times, so the two agree to bfloat16 rounding, not bit for bit;
    - a parameter without a gradient is skipped (the reference gives it a zero gradient,
      which only matters for its distributed all-gather);
    - conv weights (any ndim > 2) are flattened to (out_channels, -1) and the shape scale
      max(1, rows/cols)^½ uses that matrix's shape; the reference's scale uses the last two
      dims of the 4-D gradient (kernel height/width), which is 1 for square kernels and
      equally 1 here unless out_channels > in_channels·k·k.

``torch.optim.Muon`` (torch ≥ 2.9) is the same update with other defaults and the shape
scale folded into the learning rate (``adjust_lr_fn``); ``Muon(params, lr=1e-3,
weight_decay=0.1, adjust_lr_fn="original", ns_dtype=torch.bfloat16)`` steps as it does, bit
for bit (see ``tests/test_muon.py``), and ``adjust_lr_fn="match_rms_adamw"`` is Moonshot's scale
0.2·√max(rows, cols) (Liu et al. 2025, "Muon is Scalable for LLM Training").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from .._checks import check_betas, check_in_range, check_nonnegative, check_positive_int, params_with_grad
from ..distributed.work import WorkSharing
from ..linalg import MUON_QUINTIC_COEFFICIENTS, muon_newton_schulz_dtype, newton_schulz_flops, newton_schulz_iterations
from ._base import Optimizer
from ._groups import evaluate_closure

#: ``adjust_lr_fn`` values: None (the reference's update scale), or torch.optim.Muon's two
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")

__all__ = [
    "Muon",
    "muon_update",
    "muon_momentum_direction",
    "muon_orthogonalize",
    "adjusted_lr",
    "adam_direction",
    "muon_param_groups",
]

_MUON_KEYS = {
    "params",
    "param_names",
    "use_muon",
    "lr",
    "momentum",
    "nesterov",
    "ns_steps",
    "weight_decay",
    "ns_coefficients",
    "eps",
    "adjust_lr_fn",
    "ns_dtype",
}
_ADAM_KEYS = {"params", "param_names", "use_muon", "lr", "betas", "eps", "weight_decay"}


def muon_update(
    grad: Tensor,
    momentum: Tensor,
    beta: float = 0.95,
    ns_steps: int = 5,
    nesterov: bool = True,
    *,
    ns_coefficients: tuple[float, float, float] = MUON_QUINTIC_COEFFICIENTS,
    eps: float = 1e-7,
    ns_dtype: torch.dtype | None = None,
) -> Tensor:
    """Muon's update direction for one weight matrix; updates ``momentum`` in place.

    With gradient G, momentum buffer M, β = ``beta``::

        M ← β M + (1 − β) G                      (momentum.lerp_(G, 1 − β))
        U ← β M + (1 − β) G  if nesterov else M   (Nesterov: one more lerp, towards M)
        O ← NewtonSchulz5(U)  ≈ U_U V_Uᵀ          (U viewed as out × rest for conv weights)
        return O · max(1, rows/cols)^½

    The step is then W ← (1 − lr·wd) W − lr · O (see ``Muon``). ``grad`` is not modified.
    Returns a tensor of ``grad``'s shape in ``ns_dtype`` (default: bfloat16, as the reference's
    ``muon_update``, where the device multiplies bfloat16 natively; see
    :func:`muon_orthogonalize`); the parameter update adds it into W's dtype. The two
    halves are :func:`muon_momentum_direction` (cheap, every rank) and
    :func:`muon_orthogonalize` (the expensive Newton–Schulz, which a distributed Muon
    gives to one owner rank).
    """
    update = muon_momentum_direction(grad, momentum, beta, nesterov)
    return muon_orthogonalize(update, ns_steps, ns_coefficients=ns_coefficients, eps=eps, ns_dtype=ns_dtype)


def muon_momentum_direction(grad: Tensor, momentum: Tensor, beta: float = 0.95, nesterov: bool = True) -> Tensor:
    """``M ← β M + (1 − β) G``; returns U (Nesterov ``β M + (1 − β) G``, else M). Updates ``momentum``."""
    # M <- β M + (1 - β) G
    momentum.lerp_(grad, 1 - beta)
    # U <- (1 - β) G + β M  (Nesterov) or M
    return grad.lerp(momentum, beta) if nesterov else momentum


def muon_orthogonalize(
    update: Tensor,
    ns_steps: int = 5,
    *,
    ns_coefficients: tuple[float, float, float] = MUON_QUINTIC_COEFFICIENTS,
    eps: float = 1e-7,
    ns_dtype: torch.dtype | None = None,
    shape_scale: bool = True,
) -> Tensor:
    """``O = NewtonSchulz5(U) · max(1, rows/cols)^½``, in ``update``'s shape and in ``ns_dtype``.

    The Newton–Schulz iteration runs in ``ns_dtype`` and the result stays in that dtype, scale
    included, as in the reference. ``None`` (default) is bfloat16, as KellerJordan/Muon and
    torch.optim.Muon, on CUDA and on CPUs with native bfloat16 products (AVX512-BF16, AMX),
    and float32 on other CPUs, where bfloat16 products are emulated and about 55× slower
    (:func:`gd_lib.linalg.fast_bfloat16_matmul`); float64 stays float64 on a CPU
    (:func:`gd_lib.linalg.muon_newton_schulz_dtype`). ``torch.float32`` / ``torch.float64`` give a
    more exact polar factor; ``torch.bfloat16`` the references' rounding on any device.
    ``shape_scale=False`` leaves the scale out (torch.optim.Muon folds it into the learning
    rate instead, see :func:`adjusted_lr`).
    """
    # conv filters: view (out, in, *kernel) as out × (in · kernel)
    matrix = update.reshape(update.shape[0], -1) if update.ndim > 2 else update
    rows, cols = matrix.shape[-2], matrix.shape[-1]
    X = matrix.to(ns_dtype or muon_newton_schulz_dtype(matrix.device, matrix.dtype))
    # O <- NS5(U), an approximate polar factor (on the wide orientation: the smaller Gram matrix)
    if rows > cols:
        orthogonal = newton_schulz_iterations(X.mT, ns_steps, ns_coefficients, eps).mT
    else:
        orthogonal = newton_schulz_iterations(X, ns_steps, ns_coefficients, eps)
    # scale so that the update's RMS does not shrink for tall matrices
    if shape_scale and rows > cols:
        orthogonal = orthogonal * (rows / cols) ** 0.5
    return orthogonal.reshape(update.shape)


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """The learning rate a Muon step uses for a weight of ``shape`` (conv weights as out × rest).

    ``None``: ``lr`` (the shape scale is in the update, :func:`muon_orthogonalize`);
    ``"original"``: ``lr · max(1, rows/cols)^½`` (the same step, the scale moved into lr);
    ``"match_rms_adamw"``: ``lr · 0.2 · max(rows, cols)^½`` (Moonshot's scale, which gives the
    update the RMS of a typical AdamW update, so AdamW's lr and weight decay carry over).
    """
    rows = shape[0]
    cols = 1
    for d in shape[1:]:
        cols *= d
    if adjust_lr_fn == "original":
        return lr * max(1.0, rows / cols) ** 0.5
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * max(rows, cols) ** 0.5
    return lr


def adam_direction(
    grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, step: int, betas: tuple[float, float], eps: float
) -> Tensor:
    """The reference's Adam direction (bias-corrected, ε outside the square root)::

        m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²
        return (m / (1 − β1^t)) / (√(v / (1 − β2^t)) + ε)

    ``exp_avg`` (m) and ``exp_avg_sq`` (v) are updated in place; ``step`` is t ≥ 1.
    """
    beta1, beta2 = betas
    # m <- β1 m + (1 - β1) g ; v <- β2 v + (1 - β2) g²
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.lerp_(grad.square(), 1 - beta2)
    # bias corrections
    m_hat = exp_avg / (1 - beta1**step)
    v_hat = exp_avg_sq / (1 - beta2**step)
    return m_hat / (v_hat.sqrt() + eps)


def muon_param_groups(model: nn.Module, head: nn.Module | Iterable[Tensor] | str | None = "auto") -> list[dict]:
    """Split a model's parameters by the usual Muon recipe into two param groups.

    Muon (``use_muon=True``): the hidden weights with ndim ≥ 2 (linear and conv weights).
    AdamW (``use_muon=False``): everything else, namely parameters with ndim < 2 (biases,
    gains), the weights of ``nn.Embedding`` modules and every parameter whose name contains
    ``"embed"`` (the reference recipe's rule, which catches positional embeddings kept as
    bare parameters), and the head. ``head`` is a module
    or an iterable of parameters; ``"auto"`` (default) takes the last ``nn.Linear`` in
    ``model.modules()`` order (the output layer of the usual MLP/transformer); ``None``
    treats no layer as the head. Frozen parameters (requires_grad=False) are left out.
    Add hyperparameters to the returned dicts (``lr``, ``betas``, ...) as needed.
    """
    adam_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            adam_ids.update(id(p) for p in module.parameters(recurse=False))
    if isinstance(head, str):
        if head != "auto":
            raise ValueError(f"Invalid head: {head!r}; expected 'auto', None, a module or parameters")
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        head = linears[-1] if linears else None
    if isinstance(head, nn.Module):
        adam_ids.update(id(p) for p in head.parameters())
    elif head is not None:
        adam_ids.update(id(p) for p in head)
    adam_ids.update(id(p) for name, p in model.named_parameters() if "embed" in name)
    muon, adam, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (adam if p.ndim < 2 or id(p) in adam_ids else muon).append(p)
    groups = []
    if muon:
        groups.append({"params": muon, "use_muon": True})
    if adam:
        groups.append({"params": adam, "use_muon": False})
    return groups


class Muon(Optimizer):
    """Muon for hidden weight matrices, with AdamW for every other parameter, in one optimizer.

    Param groups carry ``use_muon`` as in the reference's ``MuonWithAuxAdam``. A Muon group
    (``use_muon=True``) steps, for each weight W with gradient G::

        O = muon_update(G, M, momentum, ns_steps, nesterov)
        W ← (1 − lr · weight_decay) W − lr · O

    and an AdamW group (``use_muon=False``) steps W ← (1 − lr·wd) W − lr · adam_direction(...).
    ``lr`` is in units of spectral norm per update (RMS→RMS up to the shape scale).

    Args:
        params: parameters, named parameters (``model.named_parameters()``) or param groups.
            Groups with ``use_muon`` are taken as they are (a Muon group must hold only
            tensors with ndim ≥ 2); a plain parameter list, or a group without ``use_muon``,
            is split by ndim: ndim ≥ 2 → Muon, else AdamW. For the usual recipe (embeddings
            and head on AdamW too) pass ``muon_param_groups(model)``.
        lr, weight_decay, momentum, nesterov, ns_steps: Muon group defaults (reference:
            0.02, 0, 0.95, True, 5).
        ns_coefficients: (a, b, c) of the quintic Newton–Schulz polynomial (the reference's
            (3.4445, −4.7750, 2.0315)).
        eps: added to ‖U‖_F before Newton–Schulz (1e-7, as both references).
        adjust_lr_fn: where the shape scale goes, see :func:`adjusted_lr`: None (default,
            KellerJordan/Muon: the update is scaled by max(1, rows/cols)^½), ``"original"``
            (torch.optim.Muon's default: the same scale, on lr) or ``"match_rms_adamw"``.
        ns_dtype: the dtype Newton–Schulz runs in. None (default): bfloat16, as both
            references, wherever the device multiplies it natively (CUDA; CPUs with
            AVX512-BF16 or AMX), float32 on other CPUs, where emulated bfloat16 is ~55×
            slower (:func:`gd_lib.linalg.fast_bfloat16_matmul`); float64 weights stay float64
            on a CPU. ``torch.bfloat16`` forces
            the references' dtype; ``torch.float32`` / ``torch.float64`` a polar factor
            closer to exact.
        adam_lr, adam_betas, adam_eps, adam_weight_decay: AdamW group defaults (reference:
            3e-4, (0.9, 0.95), 1e-10, 0).
        process_group: a ``torch.distributed`` process group (e.g. ``dist.group.WORLD``) for
            data-parallel training, or None (default: one process). With a group, every rank
            must see the same gradients (DDP does that); each weight's Newton–Schulz runs on
            one owner rank (:func:`gd_lib.distributed.assign_work`, balanced by flops) and
            the orthogonalised updates are all-gathered, as in the distributed Muon of the
            reference and the NanoGPT speedrun; momentum stays on every rank, so the
            optimizer state is replicated and resuming does not depend on the world size.

    To step as ``torch.optim.Muon`` does: ``Muon(params, lr=1e-3, weight_decay=0.1,
    adjust_lr_fn="original", ns_dtype=torch.bfloat16)`` on 2-D weights (its defaults, its lr
    placement, its dtype on every device).
    Complex parameters are refused (RuntimeError), as torch.optim.Muon does.

    ``work_log`` (a :class:`gd_lib.distributed.WorkLog`) counts this rank's Newton–Schulz runs.

    Examples:
        >>> import torch
        >>> from gd_lib.optim import Muon
        >>> w = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 3.0]]))  # loss 14.25
        >>> opt = Muon([w], lr=0.2)  # matrices: orthogonalized momentum
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
        lr: float = 0.02,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        *,
        ns_coefficients: tuple[float, float, float] = MUON_QUINTIC_COEFFICIENTS,
        eps: float = 1e-7,
        adjust_lr_fn: str | None = None,
        ns_dtype: torch.dtype | None = None,
        adam_lr: float = 3e-4,
        adam_betas: tuple[float, float] = (0.9, 0.95),
        adam_eps: float = 1e-10,
        adam_weight_decay: float = 0.0,
        process_group=None,
    ):
        check_nonnegative("lr", lr)
        check_nonnegative("weight_decay", weight_decay)
        check_in_range("momentum", momentum, 0.0, 1.0)
        check_positive_int("ns_steps", ns_steps)
        check_nonnegative("adam_lr", adam_lr)
        check_betas(adam_betas, "adam_betas")
        check_nonnegative("adam_eps", adam_eps)
        check_nonnegative("adam_weight_decay", adam_weight_decay)
        self._muon_defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=bool(nesterov),
            ns_steps=ns_steps,
            weight_decay=weight_decay,
            ns_coefficients=tuple(ns_coefficients),
            eps=eps,
            adjust_lr_fn=adjust_lr_fn,
            ns_dtype=ns_dtype,
        )
        self._adam_defaults = dict(lr=adam_lr, betas=tuple(adam_betas), eps=adam_eps, weight_decay=adam_weight_decay)
        _check_muon_group(self._muon_defaults)
        super().__init__(params, {})
        self._sharing = WorkSharing(process_group)
        self._sharing.check_replicated([p for g in self.param_groups for p in g["params"]])

    @property
    def work_log(self):
        """This rank's :class:`~gd_lib.distributed.WorkLog` (``counts["newton_schulz"]``)."""
        return self._sharing.log

    def _missing_group_defaults(self, group: dict) -> dict:
        """An old checkpoint's group takes the defaults of its kind (Muon or AdamW)."""
        return self._muon_defaults if group.get("use_muon", True) else self._adam_defaults

    def add_param_group(self, param_group: dict) -> None:
        """Fill a group's defaults by its kind; split a group without ``use_muon`` by ndim.

        ``params`` may be tensors or ``(name, tensor)`` pairs (named parameters), as in
        torch.optim; the names end up in the group's ``param_names``.
        """
        group = dict(param_group)
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        if "use_muon" not in group:
            extra = set(group) - {"params"}
            if extra:
                raise ValueError(f"a param group with hyperparameters {sorted(extra)} must say use_muon=True/False")
            for use_muon in (True, False):
                part = [p for p in params if (_tensor(p).ndim >= 2) == use_muon]
                if part:
                    self.add_param_group({"params": part, "use_muon": use_muon})
            return
        use_muon = bool(group["use_muon"])
        allowed, defaults = (_MUON_KEYS, self._muon_defaults) if use_muon else (_ADAM_KEYS, self._adam_defaults)
        unknown = set(group) - allowed
        if unknown:
            raise ValueError(
                f"unknown keys {sorted(unknown)} in a use_muon={use_muon} group; allowed: {sorted(allowed)}"
            )
        for key, value in defaults.items():
            group.setdefault(key, value)
        check_nonnegative("lr", group["lr"])
        check_nonnegative("weight_decay", group["weight_decay"])
        if use_muon:
            _check_muon_group(group)
            flat = [tuple(_tensor(p).shape) for p in params if _tensor(p).ndim < 2]
            if flat:
                raise ValueError(
                    f"a use_muon=True group holds tensors with ndim < 2 (shapes {flat}); "
                    "put them in a use_muon=False group"
                )
        else:
            check_betas(group["betas"], "betas")
            check_nonnegative("eps", group["eps"])
        group["params"] = params
        super().add_param_group(group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = evaluate_closure(closure)
        # 1. AdamW groups step at once; Muon groups get their momentum direction U (every rank)
        pending = []  # (param, group, U)
        for group in self.param_groups:
            lr, weight_decay = float(group["lr"]), group["weight_decay"]
            for p in params_with_grad(group["params"], "Muon"):
                if torch.is_complex(p):
                    raise RuntimeError(
                        "Muon does not support complex parameters; optimize "
                        "torch.view_as_real(p) as a real parameter instead"
                    )
                state = self.state[p]
                if group["use_muon"]:
                    if len(state) == 0:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    update = muon_momentum_direction(
                        p.grad, state["momentum_buffer"], beta=group["momentum"], nesterov=group["nesterov"]
                    )
                    pending.append((p, group, update))
                    continue
                if len(state) == 0:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    state["step"] = 0
                state["step"] += 1
                update = adam_direction(
                    p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"], group["betas"], group["eps"]
                )
                _apply(p, update, lr, lr, weight_decay)
        if not pending:
            return loss

        # 2. O <- NS5(U): each rank orthogonalises the weights it owns, then all ranks share them
        def orthogonalize(unit):
            _, group, update = unit
            return [
                muon_orthogonalize(
                    update,
                    group["ns_steps"],
                    ns_coefficients=group["ns_coefficients"],
                    eps=group["eps"],
                    ns_dtype=group["ns_dtype"],
                    shape_scale=group["adjust_lr_fn"] is None,
                )
            ]

        def allocate(unit):
            _, group, update = unit
            ns_dtype = group["ns_dtype"] or muon_newton_schulz_dtype(update.device, update.dtype)
            return [torch.empty(update.shape, dtype=ns_dtype, device=update.device)]

        results = self._sharing.compute_shared(
            pending,
            [_ns_cost(update, group["ns_steps"]) for _, group, update in pending],
            orthogonalize,
            allocate,
            "newton_schulz",
        )
        # 3. W <- (1 - lr·wd) W - lr' · O  (every rank, identical O; lr' = lr unless adjust_lr_fn)
        for (p, group, _), (orthogonal,) in zip(pending, results):
            lr = float(group["lr"])
            _apply(p, orthogonal, lr, adjusted_lr(lr, group["adjust_lr_fn"], p.shape), group["weight_decay"])
        return loss


def _tensor(p) -> Tensor:
    """The tensor of a parameter given plain or as a ``(name, tensor)`` pair."""
    return p[1] if isinstance(p, tuple) else p


def _check_muon_group(group: dict) -> None:
    check_in_range("momentum", group["momentum"], 0.0, 1.0)
    check_positive_int("ns_steps", group["ns_steps"])
    coefficients = group["ns_coefficients"]
    if not isinstance(coefficients, (tuple, list)) or len(coefficients) != 3:
        raise ValueError(f"Invalid ns_coefficients: {coefficients!r}; expected three numbers (a, b, c)")
    check_nonnegative("eps", group["eps"])
    if group["adjust_lr_fn"] not in ADJUST_LR_FNS:
        raise ValueError(f"Invalid adjust_lr_fn: {group['adjust_lr_fn']!r}; expected one of {ADJUST_LR_FNS}")
    if group["ns_dtype"] not in (None, torch.bfloat16, torch.float16, torch.float32, torch.float64):
        raise ValueError(f"Invalid ns_dtype: {group['ns_dtype']!r}; expected None or a floating-point torch.dtype")


def _apply(p: Tensor, update: Tensor, lr: float, step_lr: float, weight_decay: float) -> None:
    # W <- (1 - lr·wd) W  (decoupled weight decay)
    p.mul_(1 - lr * weight_decay)
    # W <- W - lr' · update   (update in Newton–Schulz's dtype, added in W's)
    p.add_(update, alpha=-step_lr)


def _ns_cost(update: Tensor, ns_steps: int) -> float:
    """Newton–Schulz flops of one weight (conv weights as out × rest), to balance the ranks."""
    rows = update.shape[0]
    return float(newton_schulz_flops(rows, update.numel() // max(rows, 1), ns_steps))
