"""Curvature of a loss: Hessian, generalized Gauss–Newton (GGN) and Fisher.

- :mod:`~gd_lib.curvature.params`             flat parameter-space vectors
- :mod:`~gd_lib.curvature.likelihood`         cross-entropy / squared error as likelihoods
- :mod:`~gd_lib.curvature.products`           Hessian-, GGN-, Fisher-vector products on a graph
- :mod:`~gd_lib.curvature.operators`          the same for a model and a batch, as operators
- :mod:`~gd_lib.curvature.dense`              exact dense matrices for small models
- :mod:`~gd_lib.curvature.lanczos`            top-k eigenpairs (full reorthogonalization)
- :mod:`~gd_lib.curvature.hutchinson`         stochastic trace
- :mod:`~gd_lib.curvature.sharpness`          power iteration, sharpness, SharpnessTracker
- :mod:`~gd_lib.curvature.conjugate_gradient` matrix-free linear solves
- :mod:`~gd_lib.curvature.closure`            curvature from a training closure (for optimizers)
"""

from .closure import capture_outputs, evaluate_keeping_graph, keep_graph
from .conjugate_gradient import CGResult, conjugate_gradient
from .dense import fisher_matrix, ggn_matrix, hessian_matrix, hessian_of_loss, jacobian_matrix, jacobian_of_outputs
from .hutchinson import TraceEstimate, hutchinson_trace, rademacher
from .lanczos import LanczosResult, lanczos, lanczos_tridiagonal
from .likelihood import Likelihood, likelihood_of
from .operators import CurvatureOperator, fisher_operator, ggn_operator, hessian_operator, model_loss_and_outputs
from .params import flatten, num_parameters, trainable_parameters, unflatten
from .products import (
    fisher_vector_product_from_output_gradients,
    ggn_vector_product,
    hessian_vector_product,
    jacobian_vector_product,
    transposed_jacobian_vector_product,
    true_fisher_vector_product,
)
from .sharpness import PowerIterationResult, SharpnessTracker, power_iteration, sharpness

__all__ = [
    "capture_outputs",
    "evaluate_keeping_graph",
    "keep_graph",
    "CGResult",
    "conjugate_gradient",
    "fisher_matrix",
    "ggn_matrix",
    "hessian_matrix",
    "hessian_of_loss",
    "jacobian_matrix",
    "jacobian_of_outputs",
    "TraceEstimate",
    "hutchinson_trace",
    "rademacher",
    "LanczosResult",
    "lanczos",
    "lanczos_tridiagonal",
    "Likelihood",
    "likelihood_of",
    "CurvatureOperator",
    "fisher_operator",
    "ggn_operator",
    "hessian_operator",
    "model_loss_and_outputs",
    "flatten",
    "num_parameters",
    "trainable_parameters",
    "unflatten",
    "fisher_vector_product_from_output_gradients",
    "ggn_vector_product",
    "hessian_vector_product",
    "jacobian_vector_product",
    "transposed_jacobian_vector_product",
    "true_fisher_vector_product",
    "PowerIterationResult",
    "SharpnessTracker",
    "power_iteration",
    "sharpness",
]
