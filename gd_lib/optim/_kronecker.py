r"""Kronecker-factored preconditioning on tensors: the helpers Shampoo and SOAP share.

Both optimizers keep, for a parameter of shape ``(d_1, ..., d_k)``, one ``d_j × d_j`` statistic
per mode (:func:`gram_matrices`: :math:`G_{(j)} G_{(j)}^\top`) and apply a matrix on every mode
(:func:`mode_products`: Shampoo's :math:`P_L G P_R`, SOAP's rotation :math:`Q_L^\top G Q_R` and
back). The functions work on a stacked batch ``(n, d_1, ..., d_k)`` (Shampoo's blocks of one
shape; SOAP passes ``n = 1``).

Merging small dimensions: both references multiply adjacent dimensions while the product stays
≤ a limit (:func:`merge_small_dims`). They write it differently (distributed Shampoo's
``merge_small_dims`` drops size-1 dimensions and merges neighbours; the SOAP reference's
``merge_dims`` keeps a running product, size-1 dimensions inside it) but give the same shape
(``tests/test_soap.py`` checks the SOAP reference's loop against this function on every shape of
up to four dimensions from a grid of sizes). Where they differ is *when* the shape changes, and
each optimizer keeps its reference's rule, because the reference tests compare trajectories:

- Shampoo (:func:`gd_lib.optim.shampoo.preconditioner_shape`) always drops size-1
  dimensions, and merges any parameter when ``merge_dims=True``: a ``(1, d)`` parameter gets
  one ``d × d`` factor, never a useless ``1 × 1`` one.
- SOAP (:func:`gd_lib.optim.soap.preconditioned_shape`) changes the shape only with
  ``merge_dims=True`` and only for parameters of two or more dimensions; otherwise the shape
  stays as it is, size-1 dimensions included (a ``(1, d)`` parameter keeps a ``1 × 1`` factor,
  as in the reference).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["gram_matrices", "mode_products", "merge_small_dims"]


# --- the maths, on stacked tensors (n, d_1, ..., d_k) -------------------------------


def mode_products(X: Tensor, matrices: Sequence[Tensor | None], *, transpose: bool = False) -> Tensor:
    r"""Multiply every mode of a batch of tensors by a matrix: :math:`X \times_1 A_1 \cdots \times_k A_k`.

    ``X`` has shape ``(n, d_1, ..., d_k)`` and ``matrices[j]`` shape ``(n, d_j, d_j)`` (or
    None: identity on that mode). Mode product :math:`(X \times_j A)_{\dots i \dots} =
    \sum_l A_{il} X_{\dots l \dots}`; for a matrix, :math:`X \times_1 A \times_2 B = A X
    B^\top`. ``transpose=True`` uses :math:`A_j^\top`. Shampoo: :math:`P_L G P_R`
    (symmetric factors); SOAP: :math:`Q_L^\top G Q_R` (transpose) and back :math:`Q_L X Q_R^\top`.
    """
    n = X.shape[0]
    for j, A in enumerate(matrices):
        if A is None:
            continue
        mode = j + 1
        # bring mode j last, multiply by Aᵀ from the right (= A on that mode), move it back
        Xj = X.movedim(mode, -1)
        moved_shape = Xj.shape
        At = A if transpose else A.transpose(-1, -2)
        Xj = torch.bmm(Xj.reshape(n, -1, moved_shape[-1]), At)
        X = Xj.reshape(moved_shape).movedim(-1, mode)
    return X


def gram_matrices(G: Tensor, modes: Sequence[bool] | None = None) -> list[Tensor | None]:
    r"""Per-mode Gram matrices :math:`G_{(j)} G_{(j)}^\top` of a batch ``G`` of shape ``(n, d_1..d_k)``.

    :math:`G_{(j)}` is the mode-j unfolding (``d_j`` rows); for a matrix these are
    :math:`G G^\top` and :math:`G^\top G`. ``modes[j] = False`` skips mode j (None there),
    so that an unpreconditioned huge mode (a vocabulary) never forms its d x d Gram matrix.
    """
    n = G.shape[0]
    out: list[Tensor | None] = []
    for j in range(G.dim() - 1):
        if modes is not None and not modes[j]:
            out.append(None)
            continue
        unfolded = G.movedim(j + 1, 1).reshape(n, G.shape[j + 1], -1)
        out.append(torch.bmm(unfolded, unfolded.transpose(1, 2)))
    return out


# --- merging small dimensions ----------------------------------------------------------


def merge_small_dims(shape: Sequence[int], max_dim: int) -> tuple[int, ...]:
    """Drop size-1 dimensions, then multiply adjacent ones while the product stays ≤ ``max_dim``.

    ``(3, 3, 64) -> (576,)`` for ``max_dim=1024``; ``(64, 32, 3, 3) -> (6144, 3)`` for 10000; a
    shape of ones becomes ``(1,)``. Distributed Shampoo's ``merge_small_dims`` and the SOAP
    reference's ``merge_dims`` (see the module docstring for where they differ).
    """
    squeezed = [d for d in shape if d != 1] or [1]
    merged = [squeezed[0]]
    for d in squeezed[1:]:
        if merged[-1] * d <= max_dim:
            merged[-1] *= d
        else:
            merged.append(d)
    return tuple(merged)
