r"""KFAC: Kronecker-factored approximate curvature (Martens & Grosse 2015; Grosse & Martens 2016).

For every ``nn.Linear`` and ``nn.Conv2d`` layer the Fisher block of :math:`\bar W = [W, b]` is
approximated by :math:`G \otimes A` (see :mod:`gd_lib.optim._kfac_factors` for the symbols):

.. math::
    A &\leftarrow \beta A + (1-\beta)\,\tfrac{1}{N|T|}\textstyle\sum_{n,t} \bar a_{n,t}\bar a_{n,t}^\top
        &&\text{every ``cov_update_freq`` steps} \\
    G &\leftarrow \beta G + (1-\beta)\,\tfrac{1}{N}\textstyle\sum_{n,t} \hat g_{n,t}\hat g_{n,t}^\top \\
    (d_A, Q_A), (d_G, Q_G) &\leftarrow \mathrm{eigh}(A), \mathrm{eigh}(G)
        &&\text{every ``inv_update_freq`` steps} \\
    V &= (G + \gamma_G I)^{-1}\,\nabla\bar W\,(A + \gamma_A I)^{-1},
        \quad (\gamma_A, \gamma_G) = (\pi\sqrt\lambda, \sqrt\lambda/\pi) \\
    \nu &= \min\big(1, \sqrt{\kappa / (\eta^2 \textstyle\sum_\ell \langle V_\ell, \nabla\bar W_\ell\rangle)}\big)
        &&\text{only with ``kl_clip`` } \kappa \\
    \bar W &\leftarrow \text{SGD step with momentum } \mu \text{ and weight decay on } \nu V

(β = ``stat_decay``, λ = ``damping``, η = ``lr``; π = 1 unless ``pi_damping``). The first
statistics replace the running averages instead of being mixed with zeros. The SGD step is
:func:`gd_lib.optim.sgd.sgd_update` with :math:`\nu V` in place of the gradient: weight decay
is added after preconditioning, then heavy-ball momentum (as KFAC-Pytorch does); Martens &
Grosse's own update uses a quadratic-model-based momentum and rescaling instead.

Which Fisher. By default (``fisher="empirical"``) :math:`\hat g` is the gradient of the loss
the user backpropagates, times the batch size (``loss_reduction="mean"``): the factor G then
describes the *empirical* Fisher :math:`\frac1N\sum_n \nabla\ell_n\nabla\ell_n^\top`, which costs
nothing extra but is not the Fisher (Kunstner, Hennig & Balles 2019). With
``fisher="sampled"`` (Martens & Grosse's choice, the "true Fisher") the user calls
:meth:`KFAC.sample_fisher_gradients` with the model's outputs before ``loss.backward()``: it
draws labels from the model's predictive distribution and backpropagates their negative
log-likelihood to every layer's output with ``torch.autograd.grad`` (``p.grad`` untouched).

Hooks. A forward hook records ā; it registers a tensor hook on the layer's output that records
ĝ during backward. (A full module backward hook, ``register_full_backward_hook``, would break
any model applying an in-place op to a layer's output, e.g. ``nn.ReLU(inplace=True)``:
pytorch/pytorch#61519; curvlinops uses the same tensor-hook workaround.) Statistics are only
recorded with gradients enabled and on steps where the factors are updated. Each layer must be
called once per forward pass.

Other parameters (norms, embeddings, grouped convolutions, free ``nn.Parameter`` s) are updated
by a first-order fallback in the same optimizer: SGD with the same momentum and weight decay
(default) or Adam (``fallback="adam"``), in a second parameter group.

References:
    Martens & Grosse (2015), "Optimizing Neural Networks with Kronecker-factored Approximate
      Curvature", ICML, arXiv:1503.05671.
    Grosse & Martens (2016), "A Kronecker-factored approximate Fisher matrix for convolution
      layers", ICML, arXiv:1602.01407.
    Ba, Grosse & Martens (2017), "Distributed Second-Order Optimization using Kronecker-Factored
      Approximations", ICLR (KL clipping).
    Kunstner, Hennig & Balles (2019), "Limitations of the empirical Fisher approximation for
      natural gradient descent", NeurIPS.
    KFAC-Pytorch (Wang et al., github.com/alecwangcq/KFAC-Pytorch): hyperparameter names
      ``stat_decay``, ``damping``, ``kl_clip`` and defaults lr, momentum, stat_decay, damping,
      and the cov/inverse update frequencies (``TCov=10``, ``TInv=100``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._checks import (
    check_betas,
    check_in_range,
    check_nonnegative,
    check_positive,
    check_positive_int,
    params_with_grad,
    reject_sparse,
)
from ..distributed.work import WorkSharing
from ._base import Optimizer
from ._groups import evaluate_closure
from ._kfac_factors import (
    KroneckerLayer,
    activation_factor,
    damped_inverse,
    damped_inverse_from_eigh,
    find_kronecker_layers,
    gradient_factor,
    gradient_matrix,
    kfac_precondition_inverse,
    kl_clip_scale,
    output_gradients,
    pi_correction,
    psd_eigh,
    running_average_,
    split_gradient_matrix,
    tikhonov_damping,
)
from .adam import adam_update
from .sgd import sgd_update

__all__ = ["KFAC", "KroneckerConfig"]

_FISHER_TYPES = ("empirical", "sampled")
_INVERSE_METHODS = ("eigh", "cholesky")
_FALLBACKS = ("sgd", "adam")
_REDUCTIONS = ("mean", "sum")
_LIKELIHOODS = ("categorical", "gaussian")


@dataclass(frozen=True)
class KroneckerConfig:
    """The structural settings of KFAC/EKFAC (fixed for a run; the step sizes live in param_groups).

    stat_decay:      β ∈ [0, 1) of the running averages of A, G (and EKFAC's s).
    cov_update_freq: update the statistics every this many steps (≥ 1).
    inv_update_freq: recompute eigendecompositions / inverses every this many steps (≥ 1).
    pi_damping:      split the damping between the factors by π (Martens & Grosse §6.3).
    fisher:          "empirical" (G from the user's loss) or "sampled" (labels drawn from the model).
    loss_reduction:  "mean" or "sum": how the backpropagated loss combines examples (empirical
                     Fisher only; "mean" multiplies dL/ds by the batch size to get ĝ).
    inverse_method:  "eigh" (store eigendecompositions; damping applied at step time) or
                     "cholesky" (store damped inverses; damping fixed at refresh time).
    fallback:        "sgd" or "adam" for the parameters of other modules.
    """

    stat_decay: float = 0.95
    cov_update_freq: int = 10
    inv_update_freq: int = 100
    pi_damping: bool = False
    fisher: str = "empirical"
    loss_reduction: str = "mean"
    inverse_method: str = "eigh"
    fallback: str = "sgd"

    def __post_init__(self):
        check_in_range("stat_decay", self.stat_decay, 0.0, 1.0)
        check_positive_int("cov_update_freq", self.cov_update_freq)
        check_positive_int("inv_update_freq", self.inv_update_freq)
        for name, value, allowed in [
            ("fisher", self.fisher, _FISHER_TYPES),
            ("loss_reduction", self.loss_reduction, _REDUCTIONS),
            ("inverse_method", self.inverse_method, _INVERSE_METHODS),
            ("fallback", self.fallback, _FALLBACKS),
        ]:
            if value not in allowed:
                raise ValueError(f"Invalid {name}: {value!r}; expected one of {allowed}")
        if not isinstance(self.pi_damping, bool):
            raise ValueError(f"Invalid pi_damping: {self.pi_damping!r}; expected True or False")


class KFAC(Optimizer):
    r"""Kronecker-factored natural-gradient optimizer for Linear and Conv2d layers; see the module docstring.

    Args:
        model: the ``nn.Module`` to train; its Linear/Conv2d layers are hooked.
        lr: learning rate η (default 1e-3).
        momentum: heavy-ball momentum μ ∈ [0, 1) (default 0.9).
        weight_decay: L2 penalty ≥ 0 added to the preconditioned direction (default 0).
        damping: Tikhonov damping λ > 0 (default 1e-3); each factor gets √λ (times π^{±1}).
        kl_clip: κ > 0 to clip the update's KL estimate, or None (default: no clipping).
        stat_decay, cov_update_freq, inv_update_freq, pi_damping, fisher, loss_reduction,
        inverse_method, fallback: see :class:`KroneckerConfig` (defaults 0.95, 10, 100,
            False, "empirical", "mean", "eigh", "sgd").
        fallback_lr: learning rate of the fallback group (default: ``lr``).
        fallback_betas, fallback_eps: Adam's β and ε when ``fallback="adam"``.
        process_group: a ``torch.distributed`` group for data-parallel training (DDP), or None
            (default: one process). With a group, the batch factors :math:`A, G` are averaged
            over the ranks (one all-reduce per statistics step: each rank saw only its shard
            of the batch), and the factor inversions — one unit per factor, costed d³ — are
            assigned to ranks by :func:`gd_lib.distributed.assign_work`, computed by their
            owner only and all-gathered (distributed K-FAC's scheme: Osawa et al. 2019,
            Pauloski et al. 2020). ``work_log`` counts this rank's ``eigh`` / ``cholesky``
            computations. EKFAC's eigenbasis statistics ``s`` are averaged over the ranks too.
            Subclasses that override ``_refresh`` do not support a process group.

    Param groups: the first holds the Kronecker-factored layers' weights and biases
    (``role="kronecker"``), the second every other trainable parameter (``role="fallback"``);
    empty groups are left out. State of a layer, in ``state[weight]``: ``step`` (int), ``A``,
    ``G``, and ``Q_A, d_A, Q_G, d_G, pi`` (eigh; with ``A_inv, G_inv`` built from them at the
    first step after each refresh, and ``inverse_damping``, the λ they were built with) or
    ``A_inv, G_inv`` (cholesky); plus
    ``momentum_buffer`` per parameter.

    Usage (empirical Fisher)::

        opt = KFAC(model, lr=0.01, damping=1e-3, cov_update_freq=1, inv_update_freq=10)
        opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()

    Sampled Fisher::

        out = model(x)
        opt.zero_grad()
        opt.sample_fisher_gradients(out, likelihood="categorical")
        F.cross_entropy(out, y).backward(); opt.step()

    Examples:
        >>> import torch
        >>> from gd_lib.optim import KFAC
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Linear(3, 2)
        >>> x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
        >>> opt = KFAC(model, lr=0.1, cov_update_freq=1, inv_update_freq=1)  # hooks model's Linear layers
        >>> loss_fn = torch.nn.functional.cross_entropy
        >>> first = loss_fn(model(x), y).item()
        >>> for _ in range(10):
        ...     opt.zero_grad()
        ...     loss_fn(model(x), y).backward()
        ...     opt.step()
        >>> loss_fn(model(x), y).item() < first
        True
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        damping: float = 1e-3,
        kl_clip: float | None = None,
        *,
        stat_decay: float = 0.95,
        cov_update_freq: int = 10,
        inv_update_freq: int = 100,
        pi_damping: bool = False,
        fisher: str = "empirical",
        loss_reduction: str = "mean",
        inverse_method: str = "eigh",
        fallback: str = "sgd",
        fallback_lr: float | None = None,
        fallback_betas: tuple[float, float] = (0.9, 0.999),
        fallback_eps: float = 1e-8,
        process_group=None,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"{type(self).__name__} is built from an nn.Module (it hooks its layers), got {type(model).__name__}"
            )
        check_nonnegative("lr", lr)
        check_in_range("momentum", momentum, 0.0, 1.0)
        check_nonnegative("weight_decay", weight_decay)
        check_positive("damping", damping)
        if kl_clip is not None:
            check_positive("kl_clip", kl_clip)
        if fallback_lr is not None:
            check_nonnegative("fallback_lr", fallback_lr)
        check_betas(fallback_betas, "fallback_betas")
        check_nonnegative("fallback_eps", fallback_eps)
        self.config = KroneckerConfig(
            stat_decay=stat_decay,
            cov_update_freq=cov_update_freq,
            inv_update_freq=inv_update_freq,
            pi_damping=pi_damping,
            fisher=fisher,
            loss_reduction=loss_reduction,
            inverse_method=inverse_method,
            fallback=fallback,
        )
        self._check_config()

        self._layers: list[KroneckerLayer] = find_kronecker_layers(model)
        kronecker_params = [p for layer in self._layers for p in (layer.weight, layer.bias) if p is not None]
        claimed = {id(p) for p in kronecker_params}
        other_params = [p for p in model.parameters() if p.requires_grad and id(p) not in claimed]
        groups = []
        if kronecker_params:
            groups.append({"params": kronecker_params, "role": "kronecker"})
        if other_params:
            groups.append(
                {"params": other_params, "role": "fallback", "lr": lr if fallback_lr is None else fallback_lr}
            )
        if not groups:
            raise ValueError(f"{type(self).__name__}: the model has no trainable parameters")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            damping=damping,
            kl_clip=kl_clip,
            betas=tuple(fallback_betas),
            eps=fallback_eps,
        )
        super().__init__(groups, defaults)
        if process_group is not None and not self._shardable_refresh():
            raise NotImplementedError(
                f"{type(self).__name__} overrides _refresh; its refresh cannot be "
                "divided between ranks, so process_group is not supported"
            )
        self._sharing = WorkSharing(process_group)
        self._sharing.check_replicated([p for g in self.param_groups for p in g["params"]])
        self._hook_handles: list = []
        self._register_hooks()

    def _check_config(self) -> None:
        """Subclasses restrict the configuration here (EKFAC has no π or Cholesky path)."""

    @property
    def work_log(self):
        """This rank's :class:`~gd_lib.distributed.WorkLog` (``counts["eigh"]`` or ``counts["cholesky"]``)."""
        return self._sharing.log

    def _shardable_refresh(self) -> bool:
        return type(self)._refresh is KFAC._refresh

    # -- hooks -------------------------------------------------------------------------------

    def _register_hooks(self) -> None:
        # the hooks reach the optimizer through a weak reference: a discarded optimizer stops
        # recording instead of being kept alive by the model
        ref = weakref.ref(self)
        for layer in self._layers:

            def forward_hook(module, inputs, output, layer=layer):
                opt = ref()
                if opt is not None:
                    opt._capture_forward(layer, inputs, output)

            self._hook_handles.append(layer.module.register_forward_hook(forward_hook))

    def remove_hooks(self) -> None:
        """Detach the optimizer from the model (no more statistics are recorded)."""
        for handle in self._hook_handles:
            handle.remove()
        self._hook_handles.clear()

    def _records_statistics_now(self, layer: KroneckerLayer) -> bool:
        step = self.state.get(layer.weight, {}).get("step", 0)
        return step % self.config.cov_update_freq == 0

    def _capture_forward(self, layer: KroneckerLayer, inputs, output: Tensor) -> None:
        if not torch.is_grad_enabled() or not self._records_statistics_now(layer):
            return
        # ā from the input (rows, or patches of a convolution)
        layer.activations = layer.activations_from_input(inputs[0].detach())
        if not output.requires_grad:
            return
        if self.config.fisher == "empirical":
            # ĝ is recorded when the user's backward reaches this output
            ref = weakref.ref(self)

            def tensor_hook(grad, layer=layer):
                opt = ref()
                if opt is not None:
                    opt._capture_backward(layer, grad)

            output.register_hook(tensor_hook)
        else:
            layer.output = output

    def _capture_backward(self, layer: KroneckerLayer, grad_s: Tensor) -> None:
        # ĝ_n = N ∂L/∂s_n for a mean over N examples (rows for Linear, images for Conv2d)
        if self.config.loss_reduction == "mean":
            scale = grad_s.shape[:-1].numel() if layer.kind == "linear" else grad_s.shape[0]
        else:
            scale = 1.0
        layer.output_gradients = output_gradients(grad_s.detach(), layer.kind, float(scale))

    def sample_fisher_gradients(
        self, outputs: Tensor, likelihood: str = "categorical", generator: torch.Generator | None = None
    ) -> None:
        r"""Record ĝ for the sampled ("true") Fisher; needs ``fisher="sampled"``.

        Draws :math:`\hat y_n \sim p(y \mid f_n)` from the model's predictive distribution
        (``likelihood="categorical"``: softmax of ``outputs`` of shape ``(N, C)``, the
        distribution of ``F.cross_entropy``; ``"gaussian"``: :math:`\mathcal N(f_n, I)`, the
        distribution of :math:`\ell_n = \tfrac12\|f_n - y_n\|^2`) and backpropagates
        :math:`\sum_n -\log p(\hat y_n \mid f_n)` to the output of every layer, so
        :math:`\hat g_{n,t} = \partial(-\log p(\hat y_n|f_n))/\partial s_{n,t}` and
        :math:`\mathbb E_{\hat y}[G]` is the Fisher's factor. Call it after the forward pass and
        before ``loss.backward()`` on the steps where statistics are recorded (it returns at once
        otherwise). The graph is retained for the user's backward; ``p.grad`` is not touched.
        For ``F.mse_loss`` (:math:`\ell_n = \|f_n - y_n\|^2/C`) the Gaussian G is off by the
        constant :math:`2/C`, which the learning rate and damping absorb.
        """
        if self.config.fisher != "sampled":
            raise RuntimeError("sample_fisher_gradients needs an optimizer built with fisher='sampled'")
        if likelihood not in _LIKELIHOODS:
            raise ValueError(f"Invalid likelihood: {likelihood!r}; expected one of {_LIKELIHOODS}")
        layers = [layer for layer in self._layers if layer.output is not None]
        if not layers:
            return
        if not outputs.requires_grad:
            raise RuntimeError(
                "sample_fisher_gradients: outputs do not require grad; call it on the "
                "outputs of a forward pass run with gradients enabled"
            )
        with torch.no_grad():
            if likelihood == "categorical":
                if outputs.dim() != 2:
                    raise ValueError("categorical likelihood expects outputs of shape (N, C)")
                labels = torch.multinomial(outputs.softmax(dim=1), 1, generator=generator).squeeze(1)
            else:
                noise = torch.randn(outputs.shape, generator=generator, dtype=outputs.dtype, device=outputs.device)
                labels = outputs + noise
        with torch.enable_grad():
            # Σ_n -log p(ŷ_n | f_n): a sum, so dL/ds_n is already the per-example ĝ_n
            if likelihood == "categorical":
                nll = nn.functional.cross_entropy(outputs, labels, reduction="sum")
            else:
                nll = 0.5 * (outputs - labels).square().sum()
            grads = torch.autograd.grad(nll, [layer.output for layer in layers], retain_graph=True, allow_unused=True)
        for layer, grad_s in zip(layers, grads):
            if grad_s is not None:
                layer.output_gradients = output_gradients(grad_s.detach(), layer.kind, 1.0)
            layer.output = None

    # -- the maths per layer (EKFAC overrides these) -------------------------------------------

    def _update_factors(self, layer: KroneckerLayer, state: dict, a: Tensor, g: Tensor) -> None:
        self._accumulate_factors(state, activation_factor(a), gradient_factor(g))

    def _accumulate_factors(self, state: dict, A_batch: Tensor, G_batch: Tensor) -> None:
        # A <- β A + (1 - β) A_batch,  G <- β G + (1 - β) G_batch  (first batch: copied)
        if "A" not in state:
            state["A"], state["G"] = A_batch, G_batch
        else:
            running_average_(state["A"], A_batch, self.config.stat_decay)
            running_average_(state["G"], G_batch, self.config.stat_decay)

    def _eigenbasis_batch_statistics(self, layer: KroneckerLayer, state: dict, a: Tensor, g: Tensor) -> Tensor | None:
        """After a refresh, with the same batch: nothing in KFAC (EKFAC's batch s, averaged over ranks next)."""
        return None

    def _accumulate_eigenbasis_statistics(self, state: dict, batch: Tensor) -> None:
        """Mix the (rank-averaged) batch statistic into the running one: EKFAC only."""

    def _refresh(self, layer: KroneckerLayer, state: dict, group: dict) -> None:
        for factor in ("A", "G"):
            for key, value in zip(self._inversion_keys(factor), self._invert_factor(state, group, factor)):
                state[key] = value
        self._finish_refresh(state)

    def _pi(self, state: dict) -> Tensor:
        # π from the traces (1 without π-damping)
        A, G = state["A"], state["G"]
        return pi_correction(A, G) if self.config.pi_damping else torch.ones((), dtype=A.dtype, device=A.device)

    def _inversion_keys(self, factor: str) -> tuple[str, ...]:
        """The state entries one factor's inversion produces: ``(d_A, Q_A)`` (eigh) or ``(A_inv,)``."""
        return (f"d_{factor}", f"Q_{factor}") if self.config.inverse_method == "eigh" else (f"{factor}_inv",)

    def _invert_factor(self, state: dict, group: dict, factor: str) -> tuple[Tensor, ...]:
        """The expensive part of a refresh, for one factor (``"A"`` or ``"G"``)."""
        M = state[factor]
        if self.config.inverse_method == "eigh":
            # A = Q_A diag(d_A) Q_Aᵀ   (or G = Q_G diag(d_G) Q_Gᵀ)
            return psd_eigh(M)
        # (A + γ_A I)⁻¹  (or (G + γ_G I)⁻¹) with the damping of this moment
        gamma_A, gamma_G = tikhonov_damping(group["damping"], self._pi(state))
        return (damped_inverse(M, gamma_A if factor == "A" else gamma_G),)

    def _finish_refresh(self, state: dict) -> None:
        if self.config.inverse_method == "eigh":
            state["pi"] = self._pi(state)
            # the damped inverses of the old eigendecomposition are stale
            for key in ("A_inv", "G_inv", "inverse_damping"):
                state.pop(key, None)

    def _refresh_all(self, due: list[tuple[KroneckerLayer, dict]], group: dict) -> None:
        """Refresh the layers ``due``; with a process group each rank inverts only the factors it owns."""
        if not self._shardable_refresh():
            for layer, state in due:
                self._refresh(layer, state, group)
            return
        units = [(state, factor) for _, state in due for factor in ("A", "G")]
        kind = self.config.inverse_method

        def allocate(unit):
            M = unit[0][unit[1]]
            if kind == "eigh":
                return [M.new_empty(M.shape[-1]), torch.empty_like(M)]
            return [torch.empty_like(M)]

        results = self._sharing.compute_shared(
            units,
            [float(state[factor].shape[-1]) ** 3 for state, factor in units],
            lambda unit: self._invert_factor(unit[0], group, unit[1]),
            allocate,
            kind,
        )
        for (state, factor), values in zip(units, results):
            for key, value in zip(self._inversion_keys(factor), values):
                state[key] = value
        for _, state in due:
            self._finish_refresh(state)

    def _precondition(self, layer: KroneckerLayer, state: dict, grad: Tensor, group: dict) -> Tensor:
        if self.config.inverse_method == "eigh":
            damping = float(group["damping"])
            if state.get("inverse_damping") != damping:
                # (A + γ_A I)⁻¹ = Q_A diag(1/(d_A + γ_A)) Q_Aᵀ, likewise G: once per refresh and
                # damping; the step is then G_γ⁻¹ ∇W̄ A_γ⁻¹ (2 products, where the rotation into
                # the eigenbasis and back of kfac_precondition_eigh, the reference, takes 4)
                gamma_A, gamma_G = tikhonov_damping(damping, state["pi"])
                state["A_inv"] = damped_inverse_from_eigh(state["d_A"], state["Q_A"], gamma_A)
                state["G_inv"] = damped_inverse_from_eigh(state["d_G"], state["Q_G"], gamma_G)
                state["inverse_damping"] = damping
        return kfac_precondition_inverse(grad, state["A_inv"], state["G_inv"])

    # -- the step ------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One step: statistics, refresh, preconditioning, KL clip, SGD; returns the closure's loss."""
        loss = evaluate_closure(closure)
        try:
            for group in self.param_groups:
                if group["role"] == "kronecker":
                    self._kronecker_step(group)
                else:
                    self._fallback_step(group)
        finally:
            for layer in self._layers:
                layer.clear()
        return loss

    def _kronecker_step(self, group: dict) -> None:
        cfg = self.config
        # 1. statistics: batch factors (averaged over the ranks), then the running averages
        active = []  # (layer, state, step, statistics_step)
        for layer in self._layers:
            W = layer.weight
            if W.grad is None:  # a layer is stepped when its weight has a gradient
                continue
            reject_sparse(W, type(self).__name__)
            state = self.state[W]
            step = state.get("step", 0)
            statistics_step = step % cfg.cov_update_freq == 0
            if statistics_step and (layer.activations is None or layer.output_gradients is None):
                raise RuntimeError(
                    f"{type(self).__name__}: no statistics were captured for layer {layer.name!r} "
                    "before this step; run the forward and backward pass with gradients enabled "
                    "(and call sample_fisher_gradients with fisher='sampled') before step()"
                )
            active.append((layer, state, step, statistics_step))
        batches = [
            (state, activation_factor(layer.activations), gradient_factor(layer.output_gradients))
            for layer, state, _, statistics_step in active
            if statistics_step
        ]
        self._sharing.all_reduce_mean_([M for _, A_batch, G_batch in batches for M in (A_batch, G_batch)])
        for state, A_batch, G_batch in batches:
            self._accumulate_factors(state, A_batch, G_batch)
        # 2. refresh the eigendecompositions / inverses that are due (divided between the ranks)
        due = [(layer, state) for layer, state, step, _ in active if step % cfg.inv_update_freq == 0]
        if due:
            self._refresh_all(due, group)
        # 3. EKFAC's statistics in the new eigenbasis (batch values averaged over the ranks)
        eigen_batches = [
            (state, self._eigenbasis_batch_statistics(layer, state, layer.activations, layer.output_gradients))
            for layer, state, _, statistics_step in active
            if statistics_step
        ]
        eigen_batches = [(state, batch) for state, batch in eigen_batches if batch is not None]
        self._sharing.all_reduce_mean_([batch for _, batch in eigen_batches])
        for state, batch in eigen_batches:
            self._accumulate_eigenbasis_statistics(state, batch)
        # 4. per layer: V = preconditioned ∇W̄
        directions = []
        for layer, state, step, _ in active:
            # ∇W̄ = [∇W, ∇b];  V = preconditioned ∇W̄
            b = layer.bias
            bias_grad = None
            if b is not None:
                bias_grad = b.grad if b.grad is not None else torch.zeros_like(b)
            grad = gradient_matrix(layer.weight.grad, bias_grad)
            directions.append((layer, grad, self._precondition(layer, state, grad, group)))
            state["step"] = step + 1
        if not directions:
            return
        # ν = min(1, sqrt(κ / (η² Σ <V, ∇W̄>)))
        nu = None
        if group["kl_clip"] is not None:
            v_dot_grad = sum((V * grad).sum() for _, grad, V in directions)
            nu = kl_clip_scale(v_dot_grad, float(group["lr"]), group["kl_clip"])
        # W̄ <- SGD step with momentum and weight decay on ν V
        for layer, _, V in directions:
            if nu is not None:
                V = V * nu
            V_W, V_b = split_gradient_matrix(V, layer.weight.shape, layer.has_bias)
            for p, d in ((layer.weight, V_W), (layer.bias, V_b)):
                if p is None or p.grad is None:
                    continue
                self._sgd(p, d, group)

    def _sgd(self, p: Tensor, direction: Tensor, group: dict) -> None:
        state = self.state[p]
        buf = sgd_update(
            p,
            direction,
            state.get("momentum_buffer"),
            lr=float(group["lr"]),
            momentum=group["momentum"],
            dampening=0.0,
            weight_decay=group["weight_decay"],
            nesterov=False,
            maximize=False,
        )
        if buf is not None:
            state["momentum_buffer"] = buf

    def _fallback_step(self, group: dict) -> None:
        for p in params_with_grad(group["params"], type(self).__name__):
            if self.config.fallback == "sgd":
                self._sgd(p, p.grad, group)
                continue
            state = self.state[p]
            if len(state) == 0:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            beta1, beta2 = group["betas"]
            adam_update(
                p,
                p.grad,
                state["exp_avg"],
                state["exp_avg_sq"],
                None,
                float(state["step"]),
                lr=float(group["lr"]),
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                decoupled_weight_decay=False,
                maximize=False,
            )
