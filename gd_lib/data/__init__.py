"""Offline data sets and synthetic problems of the course (no downloads, ever).

Everything is deterministic given its ``seed`` and builds in seconds on a CPU.

- :mod:`.functions2d`     Rosenbrock, Beale, Himmelblau and a narrow/wide two-basin landscape
- :mod:`.quadratics`      ill-conditioned quadratics with a chosen spectrum; least squares with a
  chosen condition number, noise and Lipschitz constant
- :mod:`.digits`          scikit-learn's bundled 8×8 digits (vectors or 1×8×8 images)
- :mod:`.zipf`            heavy-tailed (Zipf) class-imbalanced classification
- :mod:`.text`            a word/character corpus from the Python standard library's own text
- :mod:`.modular`         ``a ∘ b mod p`` token sequences (grokking)
- :mod:`.double_descent`  random-features and polynomial regression

Supervised sets come as a :class:`Split` (train and validation tensors plus ``info``).
"""

from .digits import load_digits
from .double_descent import (
    legendre_features,
    min_norm_least_squares,
    polynomial_regression,
    random_features_regression,
    random_relu_features,
)
from .functions2d import (
    BEALE,
    FUNCTIONS_2D,
    HIMMELBLAU,
    ROSENBROCK,
    TWO_BASINS,
    Function2D,
    beale_fn,
    function_2d,
    himmelblau_fn,
    rosenbrock_fn,
    two_basins_fn,
)
from .modular import modular_arithmetic
from .quadratics import LeastSquares, Quadratic, least_squares, quadratic, spectrum
from .split import Split, random_split
from .text import LMSampler, TextCorpus, consecutive_windows, random_windows, stdlib_corpus, tokenize
from .zipf import zipf_classification, zipf_probabilities

__all__ = [
    "Split",
    "random_split",
    "load_digits",
    "zipf_classification",
    "zipf_probabilities",
    "stdlib_corpus",
    "TextCorpus",
    "LMSampler",
    "tokenize",
    "random_windows",
    "consecutive_windows",
    "modular_arithmetic",
    "quadratic",
    "Quadratic",
    "spectrum",
    "least_squares",
    "LeastSquares",
    "Function2D",
    "FUNCTIONS_2D",
    "function_2d",
    "ROSENBROCK",
    "BEALE",
    "HIMMELBLAU",
    "TWO_BASINS",
    "rosenbrock_fn",
    "beale_fn",
    "himmelblau_fn",
    "two_basins_fn",
    "random_features_regression",
    "random_relu_features",
    "polynomial_regression",
    "legendre_features",
    "min_norm_least_squares",
]
