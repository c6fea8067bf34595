r"""Lecture 3, Curvature: the experiments behind the figures.

* :func:`curvature_matrices` — the exact Hessian, GGN, Fisher and empirical Fisher of a small
  tanh network with a cross-entropy loss (``gd_lib.curvature``), side by side.
* :func:`kronecker_approximations` — one layer's block of the GGN (= the Fisher, for
  cross-entropy) and its KFAC, EKFAC, Shampoo and SOAP approximations, with relative Frobenius
  errors.
* :func:`hessian_spectrum` — the Hessian's eigenvalues from Lanczos (Ritz values and the
  spectral-density weights of stochastic Lanczos quadrature) next to the exact ones.
* :func:`sharpness_during_training` — full-batch gradient descent's sharpness
  :math:`\lambda_{\max}(\nabla^2 L)` over training, which rises to about :math:`2/\eta` and
  hovers there: the edge of stability (Cohen et al. 2021).

**The block and its approximations.** A linear layer computes :math:`s = \bar W\bar a` with
:math:`\bar W = [W, b]`, :math:`\bar a = [a; 1]`. For cross-entropy with mean reduction over
:math:`N` examples the GGN is :math:`\frac1N\sum_n J_n^\top\Lambda_nJ_n` with
:math:`\Lambda_n = \mathrm{diag}(\pi_n) - \pi_n\pi_n^\top = S_nS_n^\top`,
:math:`S_n = \mathrm{diag}(\sqrt{\pi_n}) - \pi_n\sqrt{\pi_n}^\top`. Backpropagating column c of
:math:`S_n` to the layer's output gives :math:`\hat g_{n,c}`, and the layer's block is exactly

.. math::
    F = \frac1N\sum_{n,c} (\hat g_{n,c}\otimes\bar a_n)(\hat g_{n,c}\otimes\bar a_n)^\top
    \quad(\text{row-major vec}(\hat g\,\bar a^\top) = \hat g\otimes\bar a).

The approximations (all from the same :math:`\hat g_{n,c}`, :math:`\bar a_n`):

* **KFAC** (Martens & Grosse 2015): :math:`F \approx G\otimes A`, :math:`G = \frac1N\sum_{n,c}\hat g\hat g^\top`,
  :math:`A = \frac1N\sum_n\bar a\bar a^\top`;
* **EKFAC** (George et al. 2018): the same eigenbasis :math:`Q_G\otimes Q_A`, with the
  eigenvalues replaced by the exact second moments :math:`s = \frac1N\sum_{n,c}(Q_G^\top\hat g)^{2}
  \otimes(Q_A^\top\bar a)^{2}`, the Frobenius-optimal diagonal in that basis — so its error is
  never larger than KFAC's;
* **Shampoo** (Gupta et al. 2018; read as an approximation of F by Morwani et al. 2024):
  :math:`F \approx \hat F = L\otimes R/\mathrm{tr}(F)` with :math:`L = \frac1N\sum\Gamma\Gamma^\top`,
  :math:`R = \frac1N\sum\Gamma^\top\Gamma`, :math:`\Gamma_{n,c} = \hat g_{n,c}\bar a_n^\top`
  (the trace normalisation makes :math:`\mathrm{tr}` match). Shampoo preconditions with
  :math:`L^{-1/4}\otimes R^{-1/4} = (L\otimes R)^{-1/4} = \mathrm{tr}(F)^{-1/4}\hat F^{-1/4}`: this
  approximation to the power −1/4 (checked as ``"shampoo_is_fisher_to_the_minus_quarter"``);
* **SOAP** (Vyas et al. 2024): Adam run in Shampoo's eigenbasis, i.e. EKFAC's construction on
  Shampoo's factors: the basis :math:`Q_L\otimes Q_R`, and the exact second moments
  :math:`s = \frac1N\sum_{n,c}(Q_L^\top\hat g)^{2}\otimes(Q_R^\top\bar a)^{2}` in it — the
  Frobenius-optimal diagonal in that basis, so its error is never larger than Shampoo's.

References:
    Martens & Grosse (2015), ICML; George et al. (2018), NeurIPS; Gupta, Koren & Singer (2018), ICML;
    Morwani, Shapira, Vyas, Malach, Kakade & Janson (2024), "A New Perspective on Shampoo's
    Preconditioner", arXiv:2406.17748; Schraudolph (2002, GGN); Kunstner, Hennig & Balles (2019,
    the empirical Fisher); Ghorbani, Krishnan & Xiao (2019, Lanczos spectra); Cohen, Kaur, Li,
    Kolter & Talwalkar (2021), "Gradient descent on neural networks typically occurs at the edge
    of stability", ICLR.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

import gd_lib
import gd_lib.data
import gd_lib.models
import gd_lib.optim as optim
from gd_lib.curvature import (
    SharpnessTracker,
    fisher_matrix,
    ggn_matrix,
    hessian_matrix,
    hessian_operator,
    lanczos_tridiagonal,
)
from gd_lib.optim._kfac_factors import (
    activation_factor,
    append_ones,
    eigenbasis_second_moment,
    gradient_factor,
    psd_eigh,
)

__all__ = [
    "small_network",
    "curvature_matrices",
    "block_statistics",
    "kronecker_approximations",
    "hessian_spectrum",
    "sharpness_during_training",
]

_DT = torch.float64


def small_network(in_features: int = 5, width: int = 8, num_classes: int = 3, num_examples: int = 64, seed: int = 0):
    """A tanh MLP ``in_features → width → num_classes`` (float64) and a batch ``(X, y)`` whose labels
    come from a random teacher network of the same shape (so the problem is learnable, not trivial)."""
    gen = torch.Generator().manual_seed(seed)
    model = gd_lib.models.MLP(
        in_features, [width], num_classes, activation="tanh", init="xavier", generator=gen
    ).double()
    teacher = gd_lib.models.MLP(
        in_features, [width], num_classes, activation="tanh", init="xavier", sigma=3.0, generator=gen
    ).double()
    X = torch.randn(num_examples, in_features, generator=gen, dtype=_DT)
    with torch.no_grad():
        y = teacher(X).argmax(1)
    return model, X, y


def _block_slices(model: nn.Module) -> list[tuple[str, int, int]]:
    """``(name, start, stop)`` of every parameter in the flattened parameter vector."""
    out, start = [], 0
    for name, p in model.named_parameters():
        out.append((name, start, start + p.numel()))
        start += p.numel()
    return out


def curvature_matrices(quick: bool | None = None, seed: int = 0) -> dict:
    r"""The exact P×P curvature matrices of :func:`small_network` with cross-entropy (P = 75).

    Returns ``{"hessian", "ggn", "fisher", "empirical_fisher"}`` (numpy (P, P)), ``"blocks"``
    (``(name, start, stop)`` per parameter), ``"loss"``, and the relative Frobenius distances
    ``"ggn_minus_fisher"`` (0 up to round-off: for cross-entropy the GGN is the Fisher),
    ``"hessian_minus_ggn"`` and ``"empirical_minus_fisher"``.
    """
    gd_lib.quick_mode(quick)  # same size in both modes: the matrices are for looking at
    model, X, y = small_network(seed=seed)
    loss_fn = nn.CrossEntropyLoss()
    H = hessian_matrix(model, loss_fn, X, y)
    GGN = ggn_matrix(model, loss_fn, X, y)
    F = fisher_matrix(model, loss_fn, X, y, kind="true")
    EF = fisher_matrix(model, loss_fn, X, y, kind="empirical")

    def rel(A, B):
        return float((A - B).norm() / B.norm())

    with torch.no_grad():
        loss = float(loss_fn(model(X), y))
    return {
        "hessian": H.numpy(),
        "ggn": GGN.numpy(),
        "fisher": F.numpy(),
        "empirical_fisher": EF.numpy(),
        "blocks": _block_slices(model),
        "loss": loss,
        "ggn_minus_fisher": rel(GGN, F),
        "hessian_minus_ggn": rel(H, GGN),
        "empirical_minus_fisher": rel(EF, F),
    }


def block_statistics(model: nn.Module, layer: nn.Linear, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(a, g)``: the layer's inputs with a 1 appended, ``(N, 1, d_in + 1)``, and the backpropagated
    columns of :math:`S_n` (module docstring), ``(N, C, d_out)``, for a cross-entropy loss."""
    captured = {}

    def hook(_module, inputs, output):
        captured["input"] = inputs[0].detach()
        captured["output"] = output

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(X)
            s = captured["output"]
            probs = torch.softmax(logits.detach(), dim=1)
            # S_n = diag(√π_n) − π_n √π_nᵀ, so that S_n S_nᵀ = diag(π_n) − π_n π_nᵀ = Λ_n
            root = probs.sqrt()
            S = torch.diag_embed(root) - probs.unsqueeze(2) * root.unsqueeze(1)  # (N, C, C)
            columns = []
            for c in range(logits.shape[1]):
                # ĝ_{n,c} = (∂z_n/∂s_n)ᵀ S_n[:, c], for all n at once (examples do not interact)
                (g_c,) = torch.autograd.grad(logits, s, grad_outputs=S[:, :, c], retain_graph=True)
                columns.append(g_c)
    finally:
        handle.remove()
    g = torch.stack(columns, dim=1)  # (N, C, d_out)
    a = append_ones(captured["input"]).unsqueeze(1)  # (N, 1, d_in + 1)
    return a, g


def _bar_order(layer: nn.Linear, start_weight: int, start_bias: int) -> torch.Tensor:
    """Indices into the flat parameter vector in the order of row-major vec([W, b])."""
    d_out, d_in = layer.weight.shape
    rows = []
    for i in range(d_out):
        rows.append(start_weight + i * d_in + torch.arange(d_in))
        rows.append(torch.tensor([start_bias + i]))
    return torch.cat(rows)


def _pinv_quarter(M: torch.Tensor, rtol: float = 1e-10) -> torch.Tensor:
    """M^{-1/4} of a symmetric PSD matrix on its range (eigenvalues below rtol·λ_max count as 0)."""
    lam, Q = torch.linalg.eigh(M)
    keep = lam > rtol * lam.max()
    powered = torch.where(keep, lam.clamp_min(rtol * lam.max()) ** -0.25, torch.zeros_like(lam))
    return (Q * powered) @ Q.T


def kronecker_approximations(quick: bool | None = None, layer_index: int = 0, seed: int = 0) -> dict:
    r"""One layer's exact GGN block and its KFAC, EKFAC, Shampoo and SOAP approximations (module docstring).

    The block is taken from ``gd_lib.curvature.ggn_matrix`` and reordered to row-major
    vec([W, b]); the per-pair formula :math:`\frac1N\sum_{n,c}(\hat g\otimes\bar a)(\hat g\otimes\bar a)^\top`
    is returned as ``"block_from_factors"`` for comparison. Returns numpy matrices ``"exact"``,
    ``"KFAC"``, ``"EKFAC"``, ``"Shampoo"``, ``"SOAP"``, the factors ``"A"``, ``"G"``, ``"L"``, ``"R"``,
    ``"errors": {name: ‖approx − exact‖_F / ‖exact‖_F}``, and two identities:
    ``"shampoo_is_fisher_to_the_minus_quarter"`` (relative distance between
    :math:`L^{-1/4}\otimes R^{-1/4}` and :math:`\mathrm{tr}(F)^{-1/4}\hat F^{-1/4}`) and
    ``"kfac_solve_by_factors_error"`` (relative distance between :math:`(G\otimes A)^{-1}\mathrm{vec}(V)`
    and :math:`\mathrm{vec}(G^{-1}VA^{-1})`, damped by δ = 1e-3 of the mean eigenvalues).
    """
    gd_lib.quick_mode(quick)
    model, X, y = small_network(seed=seed)
    layer = model.layers[layer_index]
    blocks = {name: (start, stop) for name, start, stop in _block_slices(model)}
    order = _bar_order(layer, blocks[f"layers.{layer_index}.weight"][0], blocks[f"layers.{layer_index}.bias"][0])
    GGN = ggn_matrix(model, nn.CrossEntropyLoss(), X, y)
    exact = GGN[order][:, order]

    a, g = block_statistics(model, layer, X)
    N, C = g.shape[0], g.shape[1]
    # the exact block from the factors' ingredients: (1/N) Σ_{n,c} (ĝ ⊗ ā)(ĝ ⊗ ā)ᵀ
    per_pair = torch.einsum("nci,nj->ncij", g, a[:, 0]).reshape(N * C, -1)
    from_factors = per_pair.T @ per_pair / N
    # KFAC: A = (1/N) Σ ā āᵀ,  G = (1/N) Σ_{n,c} ĝ ĝᵀ  (gradient_factor sums over the c "positions")
    A = activation_factor(a)
    G = gradient_factor(g)
    kfac = torch.kron(G, A)
    # EKFAC: KFAC's eigenbasis, second moments s = (1/N) Σ_{n,c} (Q_Gᵀĝ)² ⊗ (Q_Aᵀā)²
    d_A, Q_A = psd_eigh(A)
    d_G, Q_G = psd_eigh(G)
    a_pairs = a.expand(N, C, a.shape[2]).reshape(N * C, 1, -1)
    g_pairs = g.reshape(N * C, 1, -1)
    s = C * eigenbasis_second_moment(a_pairs, g_pairs, Q_A, Q_G)  # the helper averages over N·C
    Q = torch.kron(Q_G, Q_A)
    ekfac = (Q * s.reshape(-1)) @ Q.T
    # Shampoo: L = (1/N) Σ Γ Γᵀ, R = (1/N) Σ Γᵀ Γ with Γ = ĝ āᵀ;  F ≈ L ⊗ R / tr(F)
    a_norm2 = a[:, 0].square().sum(1)  # ‖ā_n‖²
    g_norm2 = g.square().sum(2)  # ‖ĝ_{n,c}‖²
    L = torch.einsum("nc,nci,ncj->ij", a_norm2.unsqueeze(1).expand(N, C), g, g) / N
    R = torch.einsum("nc,ni,nj->ij", g_norm2, a[:, 0], a[:, 0]) / N
    shampoo = torch.kron(L.contiguous(), R.contiguous()) / torch.trace(exact)
    # SOAP: Shampoo's eigenbasis Q_L ⊗ Q_R, second moments s = (1/N) Σ_{n,c} (Q_Lᵀĝ)² ⊗ (Q_Rᵀā)²
    d_L, Q_L = psd_eigh(L)
    d_R, Q_R = psd_eigh(R)
    s_soap = C * eigenbasis_second_moment(a_pairs, g_pairs, Q_R, Q_L)
    Q_soap = torch.kron(Q_L, Q_R)
    soap = (Q_soap * s_soap.reshape(-1)) @ Q_soap.T

    def rel(M):
        return float((M - exact).norm() / exact.norm())

    # Shampoo's preconditioner L^{-1/4} ⊗ R^{-1/4} against F̂^{-1/4}, F̂ = L ⊗ R / tr F (eigh of the block)
    # (pseudo-inverse roots, on the ranges: the output layer's L is singular, its ĝ sum to 0)
    preconditioner = torch.kron(_pinv_quarter(L), _pinv_quarter(R))
    scaled = torch.trace(exact) ** -0.25 * _pinv_quarter(shampoo)
    # KFAC's preconditioning by two small solves: (G ⊗ A)^{-1} vec(V) = vec(G^{-1} V A^{-1}) (damped by δ)
    delta = 1e-3 * float(torch.trace(G) / G.shape[0] + torch.trace(A) / A.shape[0])
    G_d = G + delta * torch.eye(G.shape[0], dtype=G.dtype)
    A_d = A + delta * torch.eye(A.shape[0], dtype=A.dtype)
    V = torch.randn(G.shape[0], A.shape[0], generator=torch.Generator().manual_seed(seed), dtype=G.dtype)
    by_kron = torch.linalg.solve(torch.kron(G_d, A_d), V.reshape(-1)).reshape(V.shape)
    by_factors = torch.linalg.solve(G_d, torch.linalg.solve(A_d, V.T).T)  # G^{-1} V A^{-1} (A symmetric)

    approximations = {"KFAC": kfac, "EKFAC": ekfac, "Shampoo": shampoo, "SOAP": soap}
    return {
        "exact": exact.numpy(),
        "block_from_factors": from_factors.numpy(),
        **{k: v.numpy() for k, v in approximations.items()},
        "A": A.numpy(),
        "G": G.numpy(),
        "L": L.numpy(),
        "R": R.numpy(),
        "errors": {k: rel(v) for k, v in approximations.items()},
        "shampoo_is_fisher_to_the_minus_quarter": float((preconditioner - scaled).norm() / scaled.norm()),
        "kfac_solve_by_factors_error": float((by_kron - by_factors).norm() / by_kron.norm()),
        "layer": f"layers.{layer_index}",
        "shape": tuple(layer.weight.shape),
    }


def hessian_spectrum(quick: bool | None = None, *, iterations: int | None = None, seed: int = 0) -> dict:
    r"""The Hessian's eigenvalues at initialization of a digits MLP (64 → 16 → 10, tanh, cross-entropy
    on 256 examples; P = 1210) by Lanczos (``gd_lib.curvature.lanczos_tridiagonal``) and exactly.

    Returns ``{"ritz_values", "ritz_weights"}`` (the eigenvalues θ_j of the tridiagonal T and the
    squared first components of its eigenvectors: the Gauss quadrature weights of the spectral
    density, summing to 1), ``"exact"`` (all P eigenvalues, ``eigvalsh`` of the dense Hessian),
    ``"iterations"``, ``"dim"``.
    """
    quick = gd_lib.quick_mode(quick)
    iterations = iterations or (40 if quick else 80)  # Lanczos steps: not a training loop, not scaled
    data = gd_lib.data.load_digits()
    X, y = data.X_train[:256].double(), data.y_train[:256]
    gen = torch.Generator().manual_seed(seed)
    model = gd_lib.models.MLP(64, [16], 10, activation="tanh", init="xavier", generator=gen).double()
    loss_fn = nn.CrossEntropyLoss()
    H = hessian_operator(model, loss_fn, X, y)
    alpha, beta, _ = lanczos_tridiagonal(H, H.dim, iterations, seed=seed)
    T = torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
    theta, S = torch.linalg.eigh(T)
    exact = torch.linalg.eigvalsh(hessian_matrix(model, loss_fn, X, y))
    return {
        "ritz_values": theta.numpy(),
        "ritz_weights": (S[0] ** 2).numpy(),
        "exact": exact.numpy(),
        "iterations": int(alpha.numel()),
        "dim": H.dim,
    }


def sharpness_during_training(
    quick: bool | None = None,
    *,
    lrs: Sequence[float] = (1.0, 0.5),
    steps: int | None = None,
    every: int | None = None,
    seed: int = 0,
) -> dict:
    r"""Full-batch GD (``gd_lib.optim.SGD``) on a tanh MLP (64 → 32 → 32 → 32 → 10, Xavier init
    scaled by σ = 0.3) with the square loss :math:`\frac1{2N}\sum_n\|f(x_n) - e_{y_n}\|^2` on 128
    digits; the sharpness :math:`\lambda_{\max}(\nabla^2L)` (``gd_lib.curvature.SharpnessTracker``,
    20 Lanczos steps) every ``every`` steps, for each lr.

    The small init starts the sharpness well below 2/η; training sharpens it ("progressive
    sharpening") until it reaches 2/η, where GD would diverge on a quadratic; it then hovers
    there while the loss keeps decreasing, non-monotonically (Cohen et al. 2021).

    Returns ``{lr: {"steps", "sharpness", "loss" (per step), "two_over_lr"}}`` plus ``"lrs"``.
    """
    quick = gd_lib.quick_mode(quick)
    every = every or (20 if quick else 10)
    steps = steps or gd_lib.step_budget(600, 3000, quick, minimum=3 * every)
    data = gd_lib.data.load_digits()
    X = data.X_train[:128].double()
    Y = torch.nn.functional.one_hot(data.y_train[:128], 10).double()

    def loss_fn(output, target):
        return 0.5 * (output - target).square().sum(1).mean()

    out = {"lrs": [float(lr) for lr in lrs]}
    for lr in lrs:
        gen = torch.Generator().manual_seed(seed)
        model = gd_lib.models.MLP(
            64, [32, 32, 32], 10, activation="tanh", init="xavier", sigma=0.3, generator=gen
        ).double()
        tracker = SharpnessTracker(model, loss_fn, X, Y, every=every, num_iterations=20, seed=seed)
        opt = optim.SGD(model.parameters(), lr=lr)
        losses = []
        for step in range(steps + 1):
            tracker(step)
            if step == steps:
                break
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(X), Y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                break
        out[float(lr)] = {
            "steps": np.asarray(tracker.steps),
            "sharpness": np.asarray(tracker.values),
            "loss": np.asarray(losses),
            "two_over_lr": 2.0 / lr,
        }
    return out
