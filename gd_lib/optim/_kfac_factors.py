r"""Kronecker factors of a layer's Fisher block: the maths KFAC and EKFAC share.

Notation (the code's symbols). A layer computes pre-activations :math:`s = \bar W \bar a`
with :math:`\bar W = [W, b] \in \mathbb{R}^{d_{out} \times (d_{in}+1)}` and
:math:`\bar a = [a; 1]` (the bias as an appended 1; without a bias :math:`\bar W = W`,
:math:`\bar a = a`). A convolution applies the same :math:`\bar W` at every output position
:math:`t \in T` to the patch :math:`\bar a_t` it sees (``F.unfold``); a Linear layer has one
position. With :math:`\hat g_{n,t} = \partial \ell_n / \partial s_{n,t}` the gradient of
example :math:`n`'s loss term w.r.t. the pre-activation, the per-example gradient and the
layer's Fisher block are

.. math::
    \nabla\bar W_n = \sum_{t} \hat g_{n,t}\, \bar a_{n,t}^\top, \qquad
    F = \frac1N \sum_n \mathrm{vec}(\nabla\bar W_n)\,\mathrm{vec}(\nabla\bar W_n)^\top .

``vec`` is row-major (torch's ``W.flatten()``), so :math:`\mathrm{vec}(g\,a^\top) = g \otimes a`
and KFAC's approximation reads :math:`F \approx G \otimes A` with

.. math::
    A = \frac{1}{N|T|} \sum_{n,t} \bar a_{n,t} \bar a_{n,t}^\top, \qquad
    G = \frac{1}{N} \sum_{n,t} \hat g_{n,t} \hat g_{n,t}^\top .

(Martens & Grosse 2015 write :math:`\bar A_{i-1,i-1} \otimes G_{i,i}` for column-major vec:
the same matrix with the factors swapped. For a Linear layer :math:`|T| = 1`. For a
convolution this is the KFC factorisation of Grosse & Martens 2016,
:math:`\Omega \otimes \Gamma` with :math:`\Omega = |T| A` and :math:`\Gamma = G/|T|`: the
product is the same, the :math:`|T|` is moved so that :math:`A` stays an average second
moment of the patches, the convention of curvlinops' KFAC-expand and of KFAC-Pytorch.)

Tensors flow through these functions as ``a: (N, T, d_in[+1])`` and ``g: (N, T, d_out)``
("examples, positions, features"). Linear layers whose input has extra leading dimensions
(sequences) treat every row as an example (KFAC-expand, Eschenhagen et al. 2023).

References:
    Martens & Grosse (2015), "Optimizing Neural Networks with Kronecker-factored Approximate
      Curvature", ICML (Sections 3, 6.3: the factors; factored Tikhonov damping and π).
    Grosse & Martens (2016), "A Kronecker-factored approximate Fisher matrix for convolution
      layers", ICML (KFC: patches, spatial sums, the |T| scaling).
    George, Laurent, Bouthillier, Ballas & Vincent (2018), "Fast Approximate Natural Gradient
      Descent in a Kronecker-factored Eigenbasis", NeurIPS (EKFAC: the eigenbasis second moment).
    Ba, Grosse & Martens (2017), "Distributed Second-Order Optimization using
      Kronecker-Factored Approximations", ICLR (KL clipping of the update).
    Eschenhagen, Immer, Turner, Schneider & Hennig (2023), "Kronecker-Factored Approximate
      Curvature for Modern Neural Network Architectures", NeurIPS (expand convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..linalg import symmetric_eigh

__all__ = [
    "KroneckerLayer",
    "find_kronecker_layers",
    "append_ones",
    "linear_inputs",
    "conv2d_patches",
    "output_gradients",
    "activation_factor",
    "gradient_factor",
    "running_average_",
    "gradient_matrix",
    "split_gradient_matrix",
    "per_example_gradients",
    "psd_eigh",
    "pi_correction",
    "tikhonov_damping",
    "kfac_precondition_eigh",
    "damped_inverse",
    "kfac_precondition_inverse",
    "eigenbasis_second_moment",
    "eigenbasis_second_moment_naive",
    "ekfac_precondition",
    "kl_clip_scale",
]


# ---------------------------------------------------------------------------
# Layers: which modules get Kronecker factors, and their captured statistics
# ---------------------------------------------------------------------------


@dataclass(eq=False)
class KroneckerLayer:
    """One Linear or Conv2d layer preconditioned by Kronecker factors.

    ``activations`` (ā, ``(N, T, d_in[+1])``), ``output_gradients`` (ĝ, ``(N, T, d_out)``)
    and ``output`` (the pre-activation tensor, kept only for the sampled Fisher) hold what
    the hooks captured during the last forward/backward; the optimizer clears them after
    each step. The factors themselves live in the optimizer's ``state[weight]``.
    """

    name: str
    module: nn.Module
    kind: str  # "linear" or "conv2d"
    weight: nn.Parameter
    bias: nn.Parameter | None
    activations: Tensor | None = field(default=None, repr=False)
    output_gradients: Tensor | None = field(default=None, repr=False)
    output: Tensor | None = field(default=None, repr=False)

    @property
    def has_bias(self) -> bool:
        return self.bias is not None

    def activations_from_input(self, x: Tensor) -> Tensor:
        """ā from the module's input ``x``: rows for Linear, patches for Conv2d."""
        if self.kind == "linear":
            return linear_inputs(x, self.has_bias)
        m = self.module
        return conv2d_patches(x, m.kernel_size, m.stride, _conv_padding(m), m.dilation, self.has_bias)

    def clear(self) -> None:
        self.activations = self.output_gradients = self.output = None


def _conv_padding(conv: nn.Conv2d):
    return 0 if conv.padding == "valid" else conv.padding


def _conv2d_supported(conv: nn.Conv2d) -> bool:
    """KFC here covers ordinary convolutions: one group, zero padding given as numbers."""
    return (
        conv.groups == 1
        and conv.padding_mode == "zeros"
        and (not isinstance(conv.padding, str) or conv.padding == "valid")
    )


def find_kronecker_layers(model: nn.Module) -> list[KroneckerLayer]:
    """The model's ``nn.Linear`` and (ungrouped, zero-padded) ``nn.Conv2d`` layers with a trainable weight.

    A bias that does not require a gradient is left out of ā (and stays untouched). Other
    modules (norms, embeddings, grouped convolutions...) are not returned: their parameters
    go to the first-order fallback.
    """
    layers, seen = [], set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            kind = "linear"
        elif isinstance(module, nn.Conv2d) and _conv2d_supported(module):
            kind = "conv2d"
        else:
            continue
        if not module.weight.requires_grad:
            continue
        if id(module.weight) in seen:
            raise ValueError(
                f"layer {name!r} shares its weight with another layer; tied weights "
                "are not supported by Kronecker-factored preconditioning"
            )
        seen.add(id(module.weight))
        bias = module.bias if module.bias is not None and module.bias.requires_grad else None
        layers.append(KroneckerLayer(name, module, kind, module.weight, bias))
    return layers


# ---------------------------------------------------------------------------
# Activations ā and output gradients ĝ, as (examples, positions, features)
# ---------------------------------------------------------------------------


def append_ones(a: Tensor) -> Tensor:
    """ā = [a, 1] along the last dimension (the bias as an appended 1)."""
    return torch.cat([a, a.new_ones(a.shape[:-1] + (1,))], dim=-1)


def linear_inputs(x: Tensor, has_bias: bool) -> Tensor:
    """ā for ``nn.Linear``: every row of ``x`` (all leading dims) is an example; ``(rows, 1, d_in[+1])``."""
    a = x.reshape(-1, 1, x.shape[-1])
    return append_ones(a) if has_bias else a


def conv2d_patches(x: Tensor, kernel_size, stride, padding, dilation, has_bias: bool) -> Tensor:
    r"""ā_{n,t} for ``nn.Conv2d``: the patch each output position sees, ``(N, |T|, c_in·kh·kw[+1])``.

    ``F.unfold`` orders a patch as (channel, kernel row, kernel column), the order of
    ``weight.reshape(c_out, -1)``, so that :math:`s_{n,t} = \bar W \bar a_{n,t}` with
    :math:`\bar W = [W_{\text{flat}}, b]`.
    """
    patches = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)
    a = patches.transpose(1, 2)  # (N, c_in kh kw, T) -> (N, T, c_in kh kw)
    return append_ones(a) if has_bias else a


def output_gradients(grad_s: Tensor, kind: str, scale: float = 1.0) -> Tensor:
    r"""ĝ from the gradient w.r.t. the layer's output, ``(N, T, d_out)``, times ``scale``.

    When the loss backpropagated is a mean over :math:`N` examples,
    :math:`\partial L/\partial s_n = \hat g_n / N`, so the caller passes ``scale = N`` to
    recover the per-example :math:`\hat g_n` (``scale = 1`` for a summed loss).
    """
    if kind == "linear":
        g = grad_s.reshape(-1, 1, grad_s.shape[-1])
    else:  # conv2d: (N, c_out, H', W') -> (N, T, c_out)
        g = grad_s.flatten(2).transpose(1, 2)
    return g * scale if scale != 1.0 else g


# ---------------------------------------------------------------------------
# Factors A, G and their running averages
# ---------------------------------------------------------------------------


def activation_factor(a: Tensor) -> Tensor:
    r""":math:`A = \frac{1}{N|T|}\sum_{n,t} \bar a_{n,t}\bar a_{n,t}^\top` from ``a: (N, T, d)``."""
    rows = a.reshape(-1, a.shape[-1])
    return rows.T @ rows / rows.shape[0]


def gradient_factor(g: Tensor) -> Tensor:
    r""":math:`G = \frac{1}{N}\sum_{n,t} \hat g_{n,t}\hat g_{n,t}^\top` from ``g: (N, T, d_out)``.

    Summed over positions, averaged over examples: this is where KFC's :math:`|T|` goes.
    """
    rows = g.reshape(-1, g.shape[-1])
    return rows.T @ rows / g.shape[0]


def running_average_(average: Tensor, new: Tensor, stat_decay: float) -> Tensor:
    r"""In place: :math:`\bar X \leftarrow \beta \bar X + (1-\beta) X_{\text{new}}` with β = ``stat_decay``."""
    return average.lerp_(new, 1.0 - stat_decay)


# ---------------------------------------------------------------------------
# Gradients as matrices ∇W̄ = [∇W, ∇b]
# ---------------------------------------------------------------------------


def gradient_matrix(weight_grad: Tensor, bias_grad: Tensor | None) -> Tensor:
    r""":math:`\nabla\bar W = [\nabla W, \nabla b]`, shape ``(d_out, d_in[+1])`` (conv kernels flattened)."""
    mat = weight_grad.reshape(weight_grad.shape[0], -1)
    if bias_grad is None:
        return mat
    return torch.cat([mat, bias_grad.reshape(-1, 1)], dim=1)


def split_gradient_matrix(V: Tensor, weight_shape: torch.Size, has_bias: bool) -> tuple[Tensor, Tensor | None]:
    """Undo :func:`gradient_matrix`: ``V`` back to the weight's shape and the bias's."""
    if has_bias:
        return V[:, :-1].reshape(weight_shape), V[:, -1].contiguous()
    return V.reshape(weight_shape), None


def per_example_gradients(a: Tensor, g: Tensor) -> Tensor:
    r""":math:`\nabla\bar W_n = \sum_t \hat g_{n,t}\bar a_{n,t}^\top`, shape ``(N, d_out, d_in[+1])``."""
    return torch.einsum("nti,ntj->nij", g, a)


# ---------------------------------------------------------------------------
# Damping and KFAC's preconditioned gradient
# ---------------------------------------------------------------------------


def psd_eigh(M: Tensor) -> tuple[Tensor, Tensor]:
    r""":math:`M = Q\,\mathrm{diag}(d)\,Q^\top` for a PSD factor, round-off negatives set to 0.

    Uses :func:`gd_lib.linalg.symmetric_eigh` (``torch.linalg.eigh`` with a float64 retry).
    Returns ``(d, Q)``.
    """
    d, Q = symmetric_eigh(M)
    return d.clamp_min(0.0), Q


def pi_correction(A: Tensor, G: Tensor) -> Tensor:
    r""":math:`\pi = \sqrt{\dfrac{\operatorname{tr}(A)/\dim A}{\operatorname{tr}(G)/\dim G}}`
    (Martens & Grosse 2015, eq. in Section 6.3), a 0-dim tensor.

    The trace norm ratio that splits the damping between the factors so that
    :math:`\|\pi\gamma I \otimes G\| ` and :math:`\|A \otimes \gamma I/\pi\|` match. Traces
    below the smallest normal number are clamped (a layer with zero gradients gets a large
    but finite π).
    """
    tiny = torch.finfo(A.dtype).tiny
    mean_A = (torch.diagonal(A).sum() / A.shape[0]).clamp_min(tiny)
    mean_G = (torch.diagonal(G).sum() / G.shape[0]).clamp_min(tiny)
    return torch.sqrt(mean_A / mean_G)


def tikhonov_damping(damping: float, pi: Tensor | float = 1.0) -> tuple[Tensor | float, Tensor | float]:
    r"""Factored Tikhonov damping :math:`(\gamma_A, \gamma_G) = (\pi\sqrt\lambda,\ \sqrt\lambda/\pi)`.

    KFAC inverts :math:`(A + \gamma_A I) \otimes (G + \gamma_G I)` instead of
    :math:`A \otimes G + \lambda I` (Martens & Grosse 2015, Section 6.3); :math:`\pi = 1`
    is the plain split :math:`(A + \sqrt\lambda I)\otimes(G + \sqrt\lambda I)`.
    """
    root = math.sqrt(damping)
    return pi * root, root / pi


def kfac_precondition_eigh(
    grad: Tensor, Q_A: Tensor, d_A: Tensor, Q_G: Tensor, d_G: Tensor, gamma_A, gamma_G
) -> Tensor:
    r"""KFAC's direction from eigendecompositions :math:`A = Q_A D_A Q_A^\top`, :math:`G = Q_G D_G Q_G^\top`:

    .. math::
        V = (G + \gamma_G I)^{-1}\,\nabla\bar W\,(A + \gamma_A I)^{-1}
          = Q_G \left[ \frac{Q_G^\top \nabla\bar W Q_A}{(d_G + \gamma_G)(d_A + \gamma_A)^\top} \right] Q_A^\top

    (division elementwise), i.e. :math:`\mathrm{vec}(V) = ((G+\gamma_G I)\otimes(A+\gamma_A I))^{-1}
    \mathrm{vec}(\nabla\bar W)` for row-major vec. The damping enters at step time, so a change
    of λ needs no new decomposition.
    """
    # rotate into the Kronecker eigenbasis
    rotated = Q_G.T @ grad @ Q_A
    # divide by the damped eigenvalues of (G + γ_G I) ⊗ (A + γ_A I)
    rotated = rotated / torch.outer(d_G + gamma_G, d_A + gamma_A)
    # rotate back
    return Q_G @ rotated @ Q_A.T


def damped_inverse_from_eigh(d: Tensor, Q: Tensor, gamma) -> Tensor:
    r""":math:`(M + \gamma I)^{-1} = Q\,\mathrm{diag}\big(1/(d + \gamma)\big)\,Q^\top`
    from :math:`M = Q\,\mathrm{diag}(d)\,Q^\top`.

    Built once per refresh (and again only when the damping changes), it turns
    :func:`kfac_precondition_eigh`'s four products per step into two
    (:func:`kfac_precondition_inverse`), as ASDL's K-FAC does.
    """
    return (Q / (d + gamma)) @ Q.T


def damped_inverse(M: Tensor, gamma) -> Tensor:
    r""":math:`(M + \gamma I)^{-1}` of a PSD factor by Cholesky (``torch.linalg.cholesky`` + ``cholesky_inverse``)."""
    eye = torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
    L = torch.linalg.cholesky(M + gamma * eye)
    return torch.cholesky_inverse(L)


def kfac_precondition_inverse(grad: Tensor, A_inv: Tensor, G_inv: Tensor) -> Tensor:
    r""":math:`V = G_{\gamma}^{-1}\,\nabla\bar W\,A_{\gamma}^{-1}` with stored damped inverses
    :math:`A_\gamma^{-1} = (A + \gamma_A I)^{-1}`, :math:`G_\gamma^{-1} = (G + \gamma_G I)^{-1}`."""
    return G_inv @ grad @ A_inv


# ---------------------------------------------------------------------------
# EKFAC: second moments in the Kronecker eigenbasis
# ---------------------------------------------------------------------------


def eigenbasis_second_moment_naive(a: Tensor, g: Tensor, Q_A: Tensor, Q_G: Tensor) -> Tensor:
    r""":math:`s = \frac1N \sum_n \big(Q_G^\top \nabla\bar W_n Q_A\big)^{\odot 2}` from per-example gradients.

    The readable reference: form every :math:`\nabla\bar W_n` (:func:`per_example_gradients`),
    rotate it, square elementwise, average. Memory :math:`N\,d_{out}\,d_{in}`.
    """
    per_example = per_example_gradients(a, g)  # (N, d_out, d_in)
    rotated = Q_G.T @ per_example @ Q_A  # Q_Gᵀ ∇W̄_n Q_A
    return rotated.square().mean(dim=0)


def eigenbasis_second_moment(a: Tensor, g: Tensor, Q_A: Tensor, Q_G: Tensor) -> Tensor:
    r"""EKFAC's :math:`s = \frac1N \sum_n (Q_G^\top \nabla\bar W_n Q_A)^{\odot 2}` (George et al. 2018, Alg. 1).

    Row-major :math:`\mathrm{vec}(Q_G^\top X Q_A) = (Q_G \otimes Q_A)^\top \mathrm{vec}(X)`, so
    :math:`\mathrm{vec}(s)_k = u_k^\top F u_k` for the columns :math:`u_k` of
    :math:`Q_G \otimes Q_A`: the diagonal of the Fisher block in KFAC's eigenbasis, which is the
    minimiser of :math:`\|F - (Q_G\otimes Q_A)\,\mathrm{diag}(s)\,(Q_G\otimes Q_A)^\top\|_F`.

    With one position per example (Linear layers) :math:`Q_G^\top \hat g_n \bar a_n^\top Q_A` is
    the outer product of the rotated vectors, so

    .. math::
        s = \frac1N \big((\hat g Q_G)^{\odot 2}\big)^\top (\bar a Q_A)^{\odot 2}

    without forming per-example matrices; with several positions (convolutions) this falls back
    to :func:`eigenbasis_second_moment_naive`.
    """
    if a.shape[1] != 1:
        return eigenbasis_second_moment_naive(a, g, Q_A, Q_G)
    # rotate each example's ĝ_n and ā_n into the eigenbases
    g_rot = g[:, 0, :] @ Q_G  # (N, d_out)
    a_rot = a[:, 0, :] @ Q_A  # (N, d_in)
    # s = (1/N) Σ_n (Q_Gᵀ ĝ_n)² (Q_Aᵀ ā_n)²ᵀ
    return g_rot.square().T @ a_rot.square() / a.shape[0]


def ekfac_precondition(grad: Tensor, Q_A: Tensor, Q_G: Tensor, s: Tensor, damping) -> Tensor:
    r"""EKFAC's direction :math:`V = Q_G \left[ \dfrac{Q_G^\top \nabla\bar W Q_A}{s + \lambda} \right] Q_A^\top`.

    The inverse of :math:`(Q_G\otimes Q_A)(\mathrm{diag}(s) + \lambda I)(Q_G\otimes Q_A)^\top`
    applied to :math:`\mathrm{vec}(\nabla\bar W)`. With :math:`s = d_G d_A^\top` this is KFAC
    with the exact damping :math:`(G\otimes A + \lambda I)^{-1}`.
    """
    rotated = Q_G.T @ grad @ Q_A
    return Q_G @ (rotated / (s + damping)) @ Q_A.T


# ---------------------------------------------------------------------------
# KL clipping (Ba, Grosse & Martens 2017)
# ---------------------------------------------------------------------------


def kl_clip_scale(v_dot_grad: Tensor, lr: float, kl_clip: float) -> Tensor:
    r"""The KL clip factor
    :math:`\nu = \min\!\left(1, \sqrt{\kappa \big/ \eta^2 \sum_\ell \langle V_\ell, \nabla\bar W_\ell\rangle}\right)`.

    :math:`\eta^2 \sum_\ell \langle V_\ell, \nabla \bar W_\ell\rangle = \eta^2\,\nabla^\top \hat F^{-1}\nabla`
    is the second-order estimate of the KL divergence a step :math:`-\eta V` causes (up to the
    factor ½ that Ba et al. fold into κ); the update is shrunk so that it stays below
    κ (``kl_clip``). A non-finite sum raises ``FloatingPointError``: the scale is shared by all
    layers, so a NaN in one would otherwise spread to every other.
    """
    if not bool(torch.isfinite(v_dot_grad)):
        raise FloatingPointError(
            "KFAC KL clipping: the sum <V, grad> over layers is not finite (NaN or inf in a gradient or a factor)"
        )
    if float(v_dot_grad) <= 0.0:
        return torch.ones((), dtype=v_dot_grad.dtype, device=v_dot_grad.device)
    return torch.sqrt(kl_clip / (lr**2 * v_dot_grad)).clamp(max=1.0)
