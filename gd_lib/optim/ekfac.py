r"""EKFAC: natural gradient in a Kronecker-factored eigenbasis (George et al. 2018).

KFAC's eigenbasis with the diagonal re-estimated in it. With :math:`A = Q_A D_A Q_A^\top`,
:math:`G = Q_G D_G Q_G^\top` the KFAC factors (same hooks, same running averages, see
:mod:`gd_lib.optim.kfac`) and :math:`\nabla\bar W_n = \sum_t \hat g_{n,t} \bar a_{n,t}^\top` the
per-example gradients:

.. math::
    (d_A, Q_A), (d_G, Q_G) &\leftarrow \mathrm{eigh}(A), \mathrm{eigh}(G),
        \quad s \leftarrow d_G d_A^\top
        &&\text{every ``inv_update_freq`` steps} \\
    s &\leftarrow \beta s + (1-\beta)\,\tfrac1N \textstyle\sum_n (Q_G^\top \nabla\bar W_n Q_A)^{\odot 2}
        &&\text{every ``cov_update_freq`` steps} \\
    V &= Q_G \left[ \frac{Q_G^\top \nabla\bar W Q_A}{s + \lambda} \right] Q_A^\top

then KL clipping (optional) and the same SGD step with momentum and weight decay as KFAC.
``vec(s)`` is the diagonal of the Fisher block in the basis :math:`Q_G \otimes Q_A`, the
best diagonal there in Frobenius norm; KFAC's own diagonal :math:`d_G d_A^\top` is one
candidate, so EKFAC's approximation of the block is never worse than KFAC's (Section 3 of the
paper). Map to the paper's Algorithm 1: :math:`U_A, U_G \to Q_A, Q_G`, :math:`s^* \to s`,
:math:`\epsilon \to \lambda`; its separate period for the scalings is ``cov_update_freq`` here.
At a basis refresh :math:`s` restarts from KFAC's eigenvalues :math:`d_G d_A^\top` (the old
:math:`s` belongs to the old basis), as in KFAC-Pytorch's EKFAC, and the same step's batch is
then averaged in.

The damping λ is added to :math:`s` (not split between factors): :math:`(Q_G\otimes
Q_A)(\mathrm{diag}(s) + \lambda I)(Q_G\otimes Q_A)^\top`. For convolutions the per-example
gradients are formed explicitly (memory :math:`N\,d_{out}\,d_{in}`); for Linear layers the
rotated outer products are squared without forming them.

References:
    George, Laurent, Bouthillier, Ballas & Vincent (2018), "Fast Approximate Natural Gradient
      Descent in a Kronecker-factored Eigenbasis", NeurIPS, arXiv:1806.03884.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._kfac_factors import KroneckerLayer, eigenbasis_second_moment, ekfac_precondition, running_average_
from .kfac import KFAC

__all__ = ["EKFAC"]


class EKFAC(KFAC):
    """KFAC's eigenbasis with per-coordinate second moments re-estimated in it; see the module docstring.

    Same arguments as :class:`KFAC` (``lr``, ``momentum``, ``weight_decay``, ``damping``,
    ``kl_clip``, ``stat_decay``, ``cov_update_freq``, ``inv_update_freq``, ``fisher``,
    ``loss_reduction``, ``fallback`` ...), except that ``damping`` λ is added to ``s`` whole,
    and ``pi_damping`` / ``inverse_method="cholesky"`` do not apply (ValueError).

    State of a layer, in ``state[weight]``: ``step``, ``A``, ``G``, ``Q_A``, ``d_A``, ``Q_G``,
    ``d_G``, ``s`` (shape of ∇W̄); plus ``momentum_buffer`` per parameter.

    ``process_group`` (data parallelism): as KFAC's, and the batch value of ``s`` is averaged
    over the ranks before it is mixed in (each rank saw only its shard of the batch).

    Examples:
        >>> import torch
        >>> from gd_lib.optim import EKFAC
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Linear(3, 2)
        >>> x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
        >>> opt = EKFAC(model, lr=0.1, cov_update_freq=1, inv_update_freq=1)  # hooks model's Linear layers
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
        **kwargs,
    ):
        super().__init__(
            model, lr=lr, momentum=momentum, weight_decay=weight_decay, damping=damping, kl_clip=kl_clip, **kwargs
        )

    def _check_config(self) -> None:
        if self.config.pi_damping:
            raise ValueError("Invalid pi_damping: True; EKFAC adds the damping to s, expected False")
        if self.config.inverse_method != "eigh":
            raise ValueError(
                f"Invalid inverse_method: {self.config.inverse_method!r}; EKFAC needs the eigenbasis, expected 'eigh'"
            )

    # The refresh is KFAC's (A = Q_A diag(d_A) Q_Aᵀ, G = Q_G diag(d_G) Q_Gᵀ by eigh, one unit per
    # factor, divided between ranks with a process group); then:
    def _finish_refresh(self, state: dict) -> None:
        # s <- d_G d_Aᵀ (KFAC's diagonal in the new basis)
        state["s"] = torch.outer(state["d_G"], state["d_A"])

    def _eigenbasis_batch_statistics(self, layer: KroneckerLayer, state: dict, a: Tensor, g: Tensor) -> Tensor:
        # mean_n (Q_Gᵀ ∇W̄_n Q_A)² over this rank's examples (KFAC averages it over the ranks)
        return eigenbasis_second_moment(a, g, state["Q_A"], state["Q_G"])

    def _accumulate_eigenbasis_statistics(self, state: dict, batch: Tensor) -> None:
        # s <- β s + (1 - β) mean_n (Q_Gᵀ ∇W̄_n Q_A)²
        running_average_(state["s"], batch, self.config.stat_decay)

    def _precondition(self, layer: KroneckerLayer, state: dict, grad: Tensor, group: dict) -> Tensor:
        # V = Q_G [(Q_Gᵀ ∇W̄ Q_A) / (s + λ)] Q_Aᵀ
        return ekfac_precondition(grad, state["Q_A"], state["Q_G"], state["s"], group["damping"])
