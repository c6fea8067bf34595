"""Geometry of optimization: norms, dual maps, steepest descent, the modular norm.

- :mod:`gd_lib.geometry.norms`             norms on weights, their duals and dual maps
- :mod:`gd_lib.geometry.steepest_descent`  steepest descent; sign descent = Adam without EMA;
                                           spectral descent = Shampoo without accumulation
- :mod:`gd_lib.geometry.modular`           the modular norm of a network and its dualization

Newton–Schulz orthogonalization lives in :mod:`gd_lib.linalg` (shared with Muon and Shampoo).
"""

from __future__ import annotations

from . import modular
from .norms import (
    NORMS,
    L1ToLInfNorm,
    L1ToRMSNorm,
    L2Norm,
    LInfNorm,
    Norm,
    RMSToRMSNorm,
    SpectralNorm,
    dual_map,
    dual_norm,
    get_norm,
    inner,
    norm,
)
from .steepest_descent import (
    layerwise_sign_descent,
    layerwise_spectral_descent,
    layerwise_steepest_descent,
    shampoo_without_accumulation,
    steepest_descent,
    steepest_descent_objective,
)

__all__ = [
    "modular",
    "NORMS",
    "Norm",
    "L2Norm",
    "LInfNorm",
    "L1ToLInfNorm",
    "SpectralNorm",
    "RMSToRMSNorm",
    "L1ToRMSNorm",
    "dual_map",
    "dual_norm",
    "get_norm",
    "inner",
    "norm",
    "steepest_descent",
    "steepest_descent_objective",
    "layerwise_steepest_descent",
    "layerwise_sign_descent",
    "layerwise_spectral_descent",
    "shampoo_without_accumulation",
]
