"""A heavy-tailed, class-imbalanced classification task: Zipf-distributed classes.

Class ``k ∈ {1, ..., K}`` (label ``k − 1``) has probability

.. math::  p_k = k^{−s} / \\sum_{j=1}^{K} j^{−s},

so a few classes are frequent and most are rare, as words are in text
(Zipf's law) — the setting in which Adam's advantage over SGD on language
models has been traced to heavy-tailed class imbalance (Kunstner et al., 2024).
Features are ``x = μ_y + σ ε`` with class means ``μ_k ~ N(0, (separation²/d) I)``
and ``ε ~ N(0, I_d)``.

Reference: F. Kunstner, R. Yadav, A. Milligan, M. Schmidt, A. Bietti. Heavy-tailed class
imbalance and why Adam outperforms gradient descent on language models. NeurIPS 2024.
"""

from __future__ import annotations

import torch

from gd_lib._checks import check_int, check_number

from .split import Split, random_split


def zipf_probabilities(num_classes: int, exponent: float) -> torch.Tensor:
    """``p_k ∝ k^{−s}`` for ``k = 1..K`` (float64, sums to 1)."""
    k = torch.arange(1, num_classes + 1, dtype=torch.float64)
    weights = k**-exponent
    return weights / weights.sum()


def zipf_classification(
    num_classes: int = 50,
    num_samples: int = 20_000,
    exponent: float = 1.0,
    *,
    dim: int = 32,
    noise: float = 1.0,
    separation: float = 3.0,
    val_fraction: float = 0.2,
    seed: int = 0,
    dtype=torch.float32,
) -> Split:
    """Samples ``(x, y)`` with ``P(y = k − 1) ∝ k^{−s}`` and ``x = μ_y + noise · ε``.

    ``info``: ``class_probs`` (the ``p_k``), ``means`` (``K × d``), ``exponent``, ``num_classes``.
    """
    check_int("num_classes", num_classes, 2)
    check_int("num_samples", num_samples, 2)
    check_number("exponent", exponent, 0.0)
    check_int("dim", dim, 1)
    check_number("noise", noise, 0.0)
    check_number("separation", separation, 0.0)
    check_number("val_fraction", val_fraction, 0.0, 1.0, high_inclusive=False)
    check_int("seed", seed, 0)
    gen = torch.Generator().manual_seed(seed)
    probs = zipf_probabilities(num_classes, exponent)
    means = separation / dim**0.5 * torch.randn(num_classes, dim, generator=gen, dtype=torch.float64)
    # y ~ Categorical(p), x = μ_y + σ ε
    y = torch.multinomial(probs, num_samples, replacement=True, generator=gen)
    X = means[y] + noise * torch.randn(num_samples, dim, generator=gen, dtype=torch.float64)
    info = {"class_probs": probs, "means": means.to(dtype), "exponent": exponent, "num_classes": num_classes}
    return random_split(X.to(dtype), y, val_fraction, gen, info)
