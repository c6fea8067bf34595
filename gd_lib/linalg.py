"""Matrix functions shared by Shampoo, KFAC, SOAP and Muon.

Exact references (``eigh``, ``svd``) live next to the iterative approximations
(coupled Newton, Newton–Schulz) that fast paths use, and tests check the
approximations against the references.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------
# Symmetric matrix functions: inverse p-th roots, eigenbases (curvature issue)
# ---------------------------------------------------------------------------
#
# Shampoo needs A^{-1/p} of its statistics L, R (p = 4 for matrices); SOAP needs the
# eigenbasis Q of L, R and refreshes it cheaply by one step of power iteration + QR.
# Every function accepts a batch (..., n, n) of symmetric matrices.
#
# References:
#   Higham (2008), "Functions of Matrices: Theory and Computation", SIAM, ch. 7
#     (the coupled Newton iteration for the inverse p-th root; Guo & Higham 2006).
#   Anil, Gupta, Koren, Regan & Singer (2020), "Scalable Second Order Optimization for
#     Deep Learning", arXiv:2002.09018 (coupled Newton in Shampoo, its scaling).
#   Shi et al. (2023), "A Distributed Data-Parallel PyTorch Implementation of the
#     Distributed Shampoo Optimizer", arXiv:2309.06497 (facebookresearch/optimizers:
#     eigenvalue shift, epsilon, tolerance of the Newton iteration).
#   Vyas et al. (2024), "SOAP: Improving and Stabilizing Shampoo using Adam",
#     arXiv:2409.11321 (the QR refresh of a warm-started eigenbasis).
from typing import NamedTuple

import torch


def _check_square(A: torch.Tensor, name: str = "A") -> None:
    if A.dim() < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"{name} must be a (batch of) square matrix, got shape {tuple(A.shape)}")


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to compute in for tensors of ``dtype``: float32 for half precision, else ``dtype``.

    LAPACK/cuSOLVER have no half-precision kernels, and second-moment statistics (Gram matrices,
    Kronecker factors) accumulated in float16/bfloat16 lose the small eigenvalues the
    preconditioners invert: the decompositions here and Shampoo's and SOAP's statistics use it.
    """
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def symmetric_eigh(A: torch.Tensor, *, descending: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Eigendecomposition :math:`A = Q\,\mathrm{diag}(\lambda)\,Q^\top` of symmetric ``A``.

    ``torch.linalg.eigh`` in ``A``'s precision (float32 for half types), retried in
    float64 if the solver fails (as distributed Shampoo's "protected eigh" does).
    ``descending=True`` orders :math:`\lambda_1 \ge \dots \ge \lambda_n` (SOAP's
    convention; eigh's own is ascending). Returns ``(eigenvalues, Q)`` in ``A``'s dtype;
    the columns of ``Q`` are the eigenvectors.

    A matrix with NaN or inf entries raises ``ValueError`` (saying "non-finite"), not
    the solver's opaque convergence error.
    """
    _check_square(A)
    work = A.to(working_dtype(A.dtype))
    try:
        eigenvalues, Q = torch.linalg.eigh(work)
    except RuntimeError:
        if not torch.isfinite(A).all():
            raise ValueError("symmetric_eigh: the matrix has non-finite (NaN or inf) entries") from None
        eigenvalues, Q = torch.linalg.eigh(work.double())
    if descending:
        eigenvalues, Q = eigenvalues.flip(-1), Q.flip(-1)
    return eigenvalues.to(A.dtype), Q.to(A.dtype)


def inverse_root_from_eigh(
    eigenvalues: torch.Tensor, Q: torch.Tensor, p: float, eps: float = 0.0, *, shift_negative: bool = True
) -> torch.Tensor:
    r""":math:`X = Q\,\mathrm{diag}\big((\tilde\lambda_i)^{-1/p}\big)\,Q^\top` from an eigendecomposition.

    The damped eigenvalues are

    .. math::
        \tilde\lambda_i = \lambda_i - \min(\lambda_{\min}, 0) + \varepsilon,

    i.e. if round-off made the PSD matrix slightly indefinite, every eigenvalue is first
    shifted up by :math:`|\lambda_{\min}|` (distributed Shampoo's perturbation), then
    :math:`\varepsilon` (``eps``) is added: :math:`X = (A + (\varepsilon - \min(\lambda_{\min},0))
    I)^{-1/p}`. With ``shift_negative=False`` only :math:`\varepsilon` is added, so the
    caller must pass a PSD matrix (negative :math:`\tilde\lambda` gives NaN).
    """
    if shift_negative:
        eigenvalues = eigenvalues - eigenvalues.amin(dim=-1, keepdim=True).clamp(max=0.0)
    damped = eigenvalues + eps
    # X <- Q diag(λ̃^{-1/p}) Qᵀ
    return (Q * damped.pow(-1.0 / p).unsqueeze(-2)) @ Q.transpose(-1, -2)


def inverse_root_eigh(
    A: torch.Tensor, p: float, eps: float = 0.0, *, shift_negative: bool = True, dtype: torch.dtype | None = None
) -> torch.Tensor:
    r"""Inverse p-th root :math:`X = A^{-1/p}` of a symmetric PSD matrix by eigendecomposition.

    The exact reference for :func:`inverse_root_newton`:

    .. math::
        A = Q\,\mathrm{diag}(\lambda)\,Q^\top, \qquad
        X = Q\,\mathrm{diag}\big((\lambda_i - \min(\lambda_{\min},0) + \varepsilon)^{-1/p}\big)\,Q^\top

    (see :func:`inverse_root_from_eigh` for the damping). ``dtype`` chooses the precision
    of the eigendecomposition (e.g. ``torch.float64`` for a reference); the result comes
    back in ``A``'s dtype. Shampoo calls this with ``p = 4`` on ``L`` and ``R``.
    """
    _check_square(A)
    if not p > 0:
        raise ValueError(f"Invalid p: {p!r}; expected a number > 0")
    work = A if dtype is None else A.to(dtype)
    eigenvalues, Q = symmetric_eigh(work)
    return inverse_root_from_eigh(eigenvalues, Q, p, eps, shift_negative=shift_negative).to(A.dtype)


class NewtonResult(NamedTuple):
    """Output of :func:`inverse_root_newton`: ``X`` ≈ A^{-1/p}, the coupled ``M`` (→ I),
    the number of iterations run, and the final error max|M - I| per matrix."""

    X: torch.Tensor
    M: torch.Tensor
    iterations: int
    error: torch.Tensor


def inverse_root_newton(
    A: torch.Tensor,
    p: int,
    eps: float = 0.0,
    *,
    max_iterations: int = 100,
    tolerance: float | None = 1e-6,
    max_error_ratio: float | None = 1.0,
) -> NewtonResult:
    r"""Inverse p-th root :math:`X \approx (A + \varepsilon I)^{-1/p}` by the coupled Newton iteration.

    Only matrix products, so it runs well on a GPU and in a batch. With
    :math:`\alpha = -1/p` and the scaling :math:`z = (p+1) / (2\,\|A\|_F)`:

    .. math::
        X_0 &= z^{1/p} I, \qquad M_0 = z\,A \\
        M' &= (1-\alpha) I + \alpha M_k \\
        X_{k+1} &= X_k M', \qquad M_{k+1} = (M')^{p} M_k

    The invariant :math:`M_k = X_k^{p} A` holds at every step, so :math:`M_k \to I` means
    :math:`X_k \to A^{-1/p}`. The scaling makes :math:`\|M_0\|_2 \le \|M_0\|_F = (p+1)/2 <
    p+1`, which guarantees convergence for SPD ``A`` (Higham 2008, Thm 7.12; Guo & Higham
    2006). The iteration stops once :math:`\max_{ij}|M - I|_{ij} \le` ``tolerance`` for every
    matrix of the batch or after ``max_iterations`` (distributed Shampoo's
    ``_matrix_inverse_root_newton``, defaults from its ``CoupledNewtonConfig``). A matrix
    whose error, once below 0.1, no longer shrinks (new error ≥ ``max_error_ratio`` × old; 1.0
    by default) keeps its previous iterate and stops: rounding has taken over, e.g. at
    max|M - I| ≈ 2.4e-7 in float32, which a tolerance below it never reaches. (Scalable
    Shampoo, Anil et al. 2020, and pytorch_optimizer's ``compute_power_schur_newton`` stop when
    the error grows by more than 1.2×, with tolerance 1e-3; a float32 plateau never grows, so
    their guard would run on to ``max_iterations`` there.)
    ``tolerance=None`` runs exactly ``max_iterations`` steps without reading the error back
    to the host (no device sync, no divergence check). Relative error of ``X`` is about
    ``tolerance / p``.
    """
    _check_square(A)
    if isinstance(p, bool) or not isinstance(p, int) or p < 1:
        raise ValueError(f"Invalid p: {p!r}; expected an integer >= 1")
    n = A.shape[-1]
    identity = torch.eye(n, dtype=A.dtype, device=A.device)
    alpha = -1.0 / p
    # A <- A + εI
    A_ridge = A + eps * identity if eps != 0 else A
    # z <- (p + 1) / (2 ||A||_F);  X <- z^{1/p} I;  M <- z A
    z = (p + 1) / (2 * torch.linalg.matrix_norm(A_ridge, ord="fro", keepdim=True))
    X = z.pow(-alpha) * identity
    M = z * A_ridge
    error = (M - identity).abs().amax(dim=(-2, -1))
    stopped = torch.zeros_like(error, dtype=torch.bool)  # matrices whose error grew: frozen
    iterations = 0
    while iterations < max_iterations:
        if tolerance is not None and not bool(((error > tolerance) & ~stopped).any()):
            break
        iterations += 1
        # M' <- (1 - α) I + α M
        M_prime = alpha * M + (1 - alpha) * identity
        # X <- X M';  M <- M'^p M
        X_new = X @ M_prime
        M_new = torch.linalg.matrix_power(M_prime, p) @ M
        error_new = (M_new - identity).abs().amax(dim=(-2, -1))
        if tolerance is None or max_error_ratio is None:
            X, M, error = X_new, M_new, error_new
            continue
        # once in the region of fast convergence (error < 0.1; the first iterations may grow
        # the error, e.g. 0.59 -> 0.88 -> 0.77 -> ... -> 1e-16 for a 4×4 matrix of condition 100),
        # a matrix whose error stopped shrinking keeps its last iterate and stops; others go on
        newly = (error_new >= max_error_ratio * error) & (error < 0.1) & ~stopped
        if not bool((newly | stopped).any()):
            X, M, error = X_new, M_new, error_new  # the usual case: no matrix frozen
            continue
        stopped = stopped | newly
        keep = stopped[..., None, None]
        X, M = torch.where(keep, X, X_new), torch.where(keep, M, M_new)
        error = torch.where(stopped, error, error_new)
    return NewtonResult(X, M, iterations, error)


def qr_power_iteration_refresh(A: torch.Tensor, Q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Refresh a warm-started eigenbasis ``Q`` of symmetric ``A``: one power-iteration step + QR.

    SOAP's ``get_orthogonal_matrix_QR`` (Vyas et al. 2024, Algorithm 4): estimate the
    eigenvalues in the old basis, sort the basis by them (descending), multiply by ``A``
    once and re-orthonormalise:

    .. math::
        \hat\lambda &= \mathrm{diag}(Q^\top A Q), \qquad
        \pi = \mathrm{argsort}(\hat\lambda, \text{descending}) \\
        Q_{\text{new}} R &= \mathrm{qr}\big(A\, Q_{:,\pi}\big)

    Repeated, this is orthogonal (subspace) iteration, which converges to the eigenvectors
    of ``A`` ordered by decreasing eigenvalue when those are distinct. Returns
    ``(Q_new, π)``; the caller permutes anything indexed by the old basis (SOAP's second
    moment) with ``π``. QR runs in float32 for half-precision inputs.
    """
    _check_square(A)
    _check_square(Q, "Q")
    work_dtype = working_dtype(A.dtype)
    A_w, Q_w = A.to(work_dtype), Q.to(work_dtype)
    AQ = A_w @ Q_w
    # λ̂ <- diag(Qᵀ A Q)
    estimated_eigenvalues = (Q_w * AQ).sum(dim=-2)
    order = torch.argsort(estimated_eigenvalues, dim=-1, descending=True)
    # A Q[:, π]  (= (A Q)[:, π])
    power_step = AQ.gather(-1, order.unsqueeze(-2).expand_as(AQ))
    # Q_new R <- qr(A Q[:, π])
    Q_new = torch.linalg.qr(power_step).Q
    return Q_new.to(Q.dtype), order


# ---------------------------------------------------------------------------
# Orthogonalization: polar factor by SVD, Newton–Schulz (geometry issue)
# ---------------------------------------------------------------------------
#
# The polar factor of G = U Σ Vᵀ (reduced SVD) is U Vᵀ: the nearest
# semi-orthogonal matrix to G, and the steepest-descent direction of G under
# the spectral norm. ``polar_factor`` computes it exactly; ``newton_schulz``
# approximates it with matrix products only, which is what Muon runs on a GPU.

#: Muon's quintic coefficients (a, b, c) for p(x) = a x + b x³ + c x⁵, tuned by
#: Keller Jordan to make p'(0) large while keeping p(x) in about [0.7, 1.2] after
#: 5 steps (KellerJordan/Muon, ``zeropower_via_newtonschulz5``).
MUON_QUINTIC_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)

#: The classic cubic Newton–Schulz iteration p(x) = 1.5 x − 0.5 x³ (c = 0). It
#: converges to the polar factor for singular values in (0, √3), quadratically
#: near 1, but slowly (×1.5 per step) for small singular values.
CUBIC_COEFFICIENTS: tuple[float, float, float] = (1.5, -0.5, 0.0)


def polar_factor(G: torch.Tensor) -> torch.Tensor:
    """Exact polar factor ``U Vᵀ`` of ``G = U Σ Vᵀ`` (reduced SVD), batched over leading dims.

    The reference that ``newton_schulz`` is tested against. Works for tall, wide
    and square matrices; for a rank-deficient ``G`` the columns of U and V
    belonging to zero singular values are whatever the SVD returns.
    """
    if G.ndim < 2:
        raise ValueError(f"polar_factor needs a matrix (ndim >= 2), got shape {tuple(G.shape)}")
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    return U @ Vh


def fast_bfloat16_matmul(device: torch.device | str) -> bool:
    """Whether bfloat16 matrix products run natively on ``device``, and so faster than float32.

    True on CUDA and on CPUs with AVX512-BF16 or AMX. On other CPUs (AVX2 only, e.g. the
    course's 2-core machines) oneDNN emulates bfloat16 products: a 256×1024 Newton–Schulz
    step measured about 55× slower than in float32 there.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    try:  # private helpers of torch.cpu (torch >= 2.3); without them, assume no native bfloat16
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def muon_newton_schulz_dtype(device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.dtype:
    """Muon's default Newton–Schulz dtype for a ``dtype`` tensor on ``device``.

    bfloat16 (the references') on CUDA, and on CPUs with native bfloat16 products except for
    float64 tensors, which stay float64 on a CPU (exact references in tests and assignments,
    as :func:`default_newton_schulz_dtype`); float32 on other CPUs.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16
    if dtype == torch.float64:
        return torch.float64
    return torch.bfloat16 if fast_bfloat16_matmul(device) else torch.float32


def default_newton_schulz_dtype(G: torch.Tensor) -> torch.dtype:
    """bfloat16 on CUDA (as Muon runs it); on CPU float64 stays float64, anything else float32."""
    if G.is_cuda:
        return torch.bfloat16
    return torch.float64 if G.dtype == torch.float64 else torch.float32


def newton_schulz_scalar_map(x, steps: int = 5, coefficients: tuple[float, float, float] = MUON_QUINTIC_COEFFICIENTS):
    """The map ``x -> p(p(...p(x)))`` (``steps`` times) that Newton–Schulz applies to each
    normalized singular value ``x = σ / (‖G‖_F + eps)``; ``x`` may be a float, array or tensor.

    ``newton_schulz(G) = U diag(p∘…∘p(σ/‖G‖_F)) Vᵀ``, so plotting this map over
    [0, 1] shows the band the coefficients promise.
    """
    a, b, c = coefficients
    for _ in range(steps):
        x = a * x + b * x**3 + c * x**5
    return x


def newton_schulz_iterations(
    X: torch.Tensor,
    steps: int = 5,
    coefficients: tuple[float, float, float] = MUON_QUINTIC_COEFFICIENTS,
    eps: float = 1e-7,
) -> torch.Tensor:
    """The Newton–Schulz loop of :func:`newton_schulz` on a wide ``X`` (rows ≤ cols), in ``X``'s dtype.

    ``X ← X / (‖X‖_F + eps)``, then ``steps`` times ``A = X Xᵀ``, ``B = b A + c A²``,
    ``X ← a X + B X``. Each scale-and-add is folded into the product (``addmm`` /
    ``baddbmm``: ``B = addmm(A, A, A, beta=b, alpha=c)``, ``X = addmm(X, B, X, beta=a)``), as
    ``torch.optim.Muon`` does: two kernels per step instead of five, and in bfloat16 one
    rounding per product. Batches (ndim > 2) are flattened to one ``(n, rows, cols)`` batch.
    Returns a new tensor of ``X``'s shape and dtype; Muon keeps it in the compute dtype.
    """
    a, b, c = coefficients
    shape = X.shape
    # X₀ = X / ‖X‖_F: spectral norm ≤ Frobenius norm, so every σ ≤ 1
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    if X.ndim == 2:
        product, product_add = torch.mm, torch.addmm
    else:
        X = X.reshape(-1, shape[-2], shape[-1])
        product, product_add = torch.bmm, torch.baddbmm
    for _ in range(steps):
        # A = X Xᵀ
        A = product(X, X.mT)
        if c != 0:
            # B = b A + c A²
            B = product_add(A, A, A, beta=b, alpha=c)
            # X <- a X + B X
            X = product_add(X, B, X, beta=a)
        else:
            # X <- a X + b A X   (cubic: B = b A)
            X = product_add(X, A, X, beta=a, alpha=b)
    return X.reshape(shape)


def newton_schulz(
    G: torch.Tensor,
    steps: int = 5,
    coefficients: tuple[float, float, float] = MUON_QUINTIC_COEFFICIENTS,
    *,
    dtype: torch.dtype | None = None,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Approximate the polar factor ``U Vᵀ`` of ``G`` by an odd-polynomial Newton–Schulz iteration.

    With ``X₀ = G / (‖G‖_F + eps)`` (so every singular value is at most 1) and
    ``p(x) = a x + b x³ + c x⁵``, each step is::

        A     = X Xᵀ
        B     = b A + c A²
        X_k+1 = a X_k + B X_k          # = p(X Xᵀ) X, i.e. σ -> p(σ) for every singular value

    so after ``steps`` steps ``X = U diag(p∘…∘p(σ/‖G‖_F)) Vᵀ`` with the same U, V
    as G. A tall G is transposed first so that A is the smaller Gram matrix. The loop is
    :func:`newton_schulz_iterations` (scale-and-add folded into ``addmm``).

    Args:
        G: a matrix, or a batch of matrices (leading dims are batch dims).
        steps: number of iterations (Muon uses 5).
        coefficients: (a, b, c); ``MUON_QUINTIC_COEFFICIENTS`` (default) or
            ``CUBIC_COEFFICIENTS`` (c = 0 skips the A² product).
        dtype: compute dtype; default bfloat16 on CUDA, float32 on CPU (float64
            inputs on CPU stay float64, for tests). :class:`gd_lib.optim.Muon` passes
            its own ``ns_dtype`` (bfloat16 by default, as the references).
        eps: added to the Frobenius norm, so that G = 0 maps to 0.

    Returns:
        A tensor of G's shape and dtype.

    With the Muon coefficients and 5 steps, the output's singular values lie in
    about [0.68, 1.21] for every σ ≥ 0.003 ‖G‖_F (see ``newton_schulz_scalar_map``);
    it is *not* U Vᵀ, and Muon does not need it to be. With the cubic coefficients
    and enough steps it converges to U Vᵀ (:func:`polar_factor`, the exact reference).

    References: Bernstein & Newhouse, "Old Optimizer, New Norm" (arXiv:2409.20325),
    App. on Newton–Schulz; Jordan et al., "Muon" (kellerjordan.github.io/posts/muon),
    whose ``zeropower_via_newtonschulz5`` this follows.
    """
    if G.ndim < 2:
        raise ValueError(f"newton_schulz needs a matrix (ndim >= 2), got shape {tuple(G.shape)}")
    if steps < 0:
        raise ValueError(f"Invalid steps: {steps!r}; expected an integer >= 0")
    X = G.to(dtype or default_newton_schulz_dtype(G))
    transposed = G.size(-2) > G.size(-1)
    if transposed:
        X = X.mT
    X = newton_schulz_iterations(X, steps, coefficients, eps)
    if transposed:
        X = X.mT
    return X.to(G.dtype)


def newton_schulz_flops(rows: int, cols: int, steps: int = 5, quintic: bool = True) -> int:
    """Floating-point operations of ``newton_schulz`` on one rows×cols matrix (multiply-add = 2).

    With m = min(rows, cols), n = max(rows, cols), each step costs
    A = X Xᵀ: 2 m² n;  A·A: 2 m³ (quintic only);  B·X: 2 m² n.
    The scalings and additions (O(m n)) are left out.
    """
    m, n = min(rows, cols), max(rows, cols)
    per_step = 4 * m * m * n + (2 * m**3 if quintic else 0)
    return steps * per_step
