"""Modular arithmetic ``a ∘ b mod p`` as token sequences: the grokking task.

Every pair ``(a, b)`` with ``a, b ∈ {0, ..., p − 1}`` (``b ≠ 0`` for division)
becomes the sequence ``[a, ∘, b, =]`` and the target ``c = a ∘ b mod p``:

- ``"+"``: ``c = (a + b) mod p``
- ``"-"``: ``c = (a − b) mod p``
- ``"*"``: ``c = (a · b) mod p``
- ``"/"``: ``c = a · b^{−1} mod p`` with ``b^{−1} = b^{p−2} mod p`` (Fermat; ``p`` prime),
  i.e. the ``c`` with ``c · b ≡ a (mod p)``.

Token ids: ``0..p−1`` the numbers, ``p`` the operation, ``p + 1`` the ``=`` sign
(``vocab_size = p + 2``). A random ``train_fraction`` of all pairs (fixed by
``seed``) is the training set, the rest validation. A transformer predicts
``c`` from its output at the last position (``=``);
:func:`gd_lib.train.cross_entropy` does that when the targets have one entry per sequence.

Reference: A. Power, Y. Burda, H. Edwards, I. Babuschkin, V. Misra. Grokking: generalization
beyond overfitting on small algorithmic datasets. 2022.
"""

from __future__ import annotations

import torch

from gd_lib._checks import check_int, check_number

from .split import Split, random_split

OPERATIONS = ("+", "-", "*", "/")


def is_prime(p: int) -> bool:
    return p >= 2 and all(p % d for d in range(2, int(p**0.5) + 1))


def modular_arithmetic(p: int = 97, op: str = "+", train_fraction: float = 0.5, *, seed: int = 0) -> Split:
    """All pairs of ``a ∘ b mod p`` as ``X = [a, ∘, b, =]`` (N × 4 int64), ``y = c`` (N).

    ``info``: ``p``, ``op``, ``vocab_size`` (``p + 2``), ``op_token`` (``p``), ``eq_token`` (``p + 1``).
    """
    check_int("p", p, 2)
    if op not in OPERATIONS:
        raise ValueError(f"Invalid op: {op!r}; expected one of {OPERATIONS}")
    if op == "/" and not is_prime(p):
        raise ValueError(f"Invalid p: {p}; division needs a prime p")
    check_number("train_fraction", train_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_int("seed", seed, 0)
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.flatten(), b.flatten()
    if op == "/":
        a, b = a[b != 0], b[b != 0]
    if op == "+":
        c = (a + b) % p
    elif op == "-":
        c = (a - b) % p
    elif op == "*":
        c = (a * b) % p
    else:
        # b^{-1} = b^{p-2} mod p (Fermat's little theorem), by repeated squaring in Python ints
        inverse = torch.tensor([pow(int(v), p - 2, p) for v in range(p)])
        c = (a * inverse[b]) % p
    X = torch.stack([a, torch.full_like(a, p), b, torch.full_like(a, p + 1)], dim=1)
    info = {"p": p, "op": op, "vocab_size": p + 2, "op_token": p, "eq_token": p + 1}
    return random_split(X, c, 1.0 - train_fraction, torch.Generator().manual_seed(seed), info)
