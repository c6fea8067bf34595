"""Matrix functions shared by Shampoo, KFAC, SOAP and Muon.

Exact references (``eigh``, ``svd``) live next to the iterative approximations
(coupled Newton, Newton–Schulz) that fast paths use, and tests check the
approximations against the references.
"""
from __future__ import annotations

import torch

# ---------------------------------------------------------------------------
# Symmetric matrix functions: inverse p-th roots, eigenbases (curvature issue)
# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# Orthogonalization: polar factor by SVD, Newton–Schulz (geometry issue)
# ---------------------------------------------------------------------------
