"""gd_lib — the reference library of the Guided Descent course.

Every optimizer and training tool the course teaches, written to be read next
to the paper it comes from. Sub-packages:

- :mod:`gd_lib.optim`       optimizers (``torch.optim.Optimizer`` subclasses)
- :mod:`gd_lib.geometry`    norms, dual maps, steepest descent, the modular norm
- :mod:`gd_lib.curvature`   Hessian / GGN / Fisher products and spectra
- :mod:`gd_lib.linalg`      matrix functions shared by Shampoo, KFAC, Muon
"""
from __future__ import annotations

import importlib.metadata
import os

import torch

try:  # the version is written once, in pyproject.toml; installing gd_lib (make setup) records it
    __version__ = importlib.metadata.version("guided-descent")
except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

__all__ = ["device", "quick_mode", "seed_everything", "__version__"]


def device() -> torch.device:
    """The one place the course chooses a device: CUDA when present, else CPU.

    Set ``GD_DEVICE`` (e.g. ``cpu`` or ``cuda:1``) to override.
    """
    forced = os.environ.get("GD_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def quick_mode(quick: bool | None = None) -> bool:
    """Whether experiments run in quick mode.

    An explicit ``quick`` argument wins; otherwise ``GD_QUICK=1`` in the
    environment turns quick mode on (it is on in ``make test``).
    """
    if quick is not None:
        return bool(quick)
    return os.environ.get("GD_QUICK", "0").strip().lower() not in ("", "0", "false", "no")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, numpy and torch (CPU and every CUDA device) with ``seed``.

    Returns a fresh CPU ``torch.Generator`` seeded the same way, for code that
    prefers an explicit generator (data sampling in :func:`gd_lib.train.train`).
    """
    import random

    import numpy as np

    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
        raise ValueError(f"Invalid seed: {seed!r}; expected an integer in [0, 2**32)")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds the CUDA generators too
    return torch.Generator().manual_seed(seed)
