r"""Cross-entropy and squared error read as negative log-likelihoods.

The Fisher needs the model's *predictive distribution*; the loss only names it. With
outputs :math:`z_n = f_\theta(x_n)` (``outputs``, shape ``(N, C)``) the two losses are

.. math::
    L(\theta) = \frac{1}{M} \sum_{n=1}^{N} \ell(z_n, y_n), \qquad
    \ell(z, y) = -\log p(y \mid z) + \text{const},

=====================  ==============================================  ==========================
``kind``               :math:`p(y \mid z)`                                :math:`M` (``mean`` / ``sum``)
=====================  ==============================================  ==========================
``"cross_entropy"``    :math:`\mathrm{Categorical}(\mathrm{softmax}(z))`   :math:`N` / 1
``"mse"``              :math:`\mathcal N(z, \tfrac12 I)`                    :math:`N C` / 1
=====================  ==============================================  ==========================

so that ``F.cross_entropy(z, y)`` and ``F.mse_loss(z, y)`` (``reduction="mean"``) are exactly
:math:`L`: the variance :math:`\tfrac12` makes :math:`-\log p = \|y - z\|^2 + \text{const}`, and
``mse_loss`` averages over all :math:`NC` entries.

What the curvature code needs from a likelihood (per example, :math:`s = \nabla_z \ell`):

* :meth:`Likelihood.output_gradient` :math:`\nabla_z \ell(z, y)`: :math:`\mathrm{softmax}(z) - e_y`,
  or :math:`2(z - y)`;
* :meth:`Likelihood.sample` :math:`\hat y \sim p(\cdot \mid z)`;
* :meth:`Likelihood.fisher_product` :math:`\Lambda(z)\,u` with
  :math:`\Lambda(z) = \mathbb E_{\hat y \sim p(\cdot|z)}[s s^\top]`: :math:`\mathrm{diag}(\pi) - \pi\pi^\top`
  (:math:`\pi = \mathrm{softmax}(z)`), or :math:`2 I`.

For both, :math:`\Lambda(z) = \nabla_z^2 \ell(z, y)`: the Fisher of these losses *is* their
generalized Gauss–Newton matrix (Martens 2014, section 9.2; Schraudolph 2002).

References:
    Martens (2014/2020), "New insights and perspectives on the natural gradient method", JMLR 21,
      arXiv:1412.1193, sections 9.1–9.2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Likelihood", "likelihood_of"]

_KINDS = ("cross_entropy", "mse")
_REDUCTIONS = ("mean", "sum")


@dataclass(frozen=True)
class Likelihood:
    """The predictive distribution behind a loss: ``kind`` and the loss's ``reduction``."""

    kind: str
    reduction: str = "mean"

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"Invalid loss kind: {self.kind!r}; expected one of {_KINDS}")
        if self.reduction not in _REDUCTIONS:
            raise ValueError(f"Invalid reduction: {self.reduction!r}; expected one of {_REDUCTIONS}")

    def check_outputs(self, outputs: Tensor) -> None:
        if self.kind == "cross_entropy" and outputs.dim() != 2:
            raise ValueError(f"cross_entropy curvature expects outputs of shape (N, C), got {tuple(outputs.shape)}")
        if outputs.dim() < 1:
            raise ValueError("outputs must have a batch dimension")

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """:math:`L` itself: ``F.cross_entropy`` or ``F.mse_loss`` with this reduction."""
        if self.kind == "cross_entropy":
            return F.cross_entropy(outputs, targets, reduction=self.reduction)
        return F.mse_loss(outputs, targets, reduction=self.reduction)

    def normalizer(self, outputs: Tensor) -> int:
        """:math:`M`: N (cross-entropy) or N·C (squared error) for ``mean``, 1 for ``sum``."""
        if self.reduction == "sum":
            return 1
        return outputs.shape[0] if self.kind == "cross_entropy" else outputs.numel()

    def output_gradient(self, outputs: Tensor, targets: Tensor) -> Tensor:
        r"""Per example :math:`\nabla_z \ell(z_n, y_n)`, shaped like ``outputs`` (no :math:`1/M`)."""
        if self.kind == "cross_entropy":
            return torch.softmax(outputs, dim=1) - F.one_hot(targets, outputs.shape[1]).to(outputs.dtype)
        return 2.0 * (outputs - targets)

    def sample(self, outputs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        r"""Targets :math:`\hat y_n \sim p(\cdot \mid z_n)` (class indices, or Gaussian vectors)."""
        outputs = outputs.detach()
        if self.kind == "cross_entropy":
            probs = torch.softmax(outputs, dim=1)
            return torch.multinomial(probs, 1, generator=generator).squeeze(1)
        noise = torch.randn(outputs.shape, generator=generator, dtype=outputs.dtype, device=outputs.device)
        return outputs + noise * 0.5**0.5  # standard deviation sqrt(1/2)

    def fisher_product(self, outputs: Tensor, u: Tensor) -> Tensor:
        r"""Per example :math:`\Lambda(z_n)\,u_n`, the expected outer product of output gradients.

        cross-entropy: :math:`\pi \odot u - \pi\,(\pi^\top u)`, :math:`\pi = \mathrm{softmax}(z)`;
        squared error: :math:`2u`.
        """
        if self.kind == "cross_entropy":
            probs = torch.softmax(outputs.detach(), dim=1)
            return probs * u - probs * (probs * u).sum(dim=1, keepdim=True)
        return 2.0 * u

    def expected_outer_product(self, outputs: Tensor) -> Tensor:
        r""":math:`\Lambda(z_n)` as dense ``(N, C, C)`` matrices (for the exact small matrices)."""
        z = outputs.detach().reshape(outputs.shape[0], -1)
        if self.kind == "cross_entropy":
            probs = torch.softmax(z, dim=1)
            return torch.diag_embed(probs) - probs[:, :, None] * probs[:, None, :]
        eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
        return 2.0 * eye.expand(z.shape[0], -1, -1).clone()


def likelihood_of(loss) -> Likelihood:
    """The :class:`Likelihood` of a loss: ``"cross_entropy"``, ``"mse"``, ``nn.CrossEntropyLoss()``,
    ``nn.MSELoss()`` (reduction ``mean`` or ``sum``), or a :class:`Likelihood`.

    Other losses have no predictive distribution here: ``ValueError``. Class weights and label
    smoothing change the likelihood, so they are refused rather than silently ignored.
    """
    if isinstance(loss, Likelihood):
        return loss
    if isinstance(loss, str):
        return Likelihood(loss)
    if isinstance(loss, nn.CrossEntropyLoss):
        if loss.weight is not None or loss.label_smoothing != 0.0:
            raise ValueError(
                "Invalid loss: CrossEntropyLoss with weight or label_smoothing has no "
                "plain categorical likelihood; expected weight=None, label_smoothing=0"
            )
        return Likelihood("cross_entropy", loss.reduction)
    if isinstance(loss, nn.MSELoss):
        return Likelihood("mse", loss.reduction)
    raise ValueError(f"Invalid loss: {loss!r}; expected 'cross_entropy', 'mse', nn.CrossEntropyLoss or nn.MSELoss")
