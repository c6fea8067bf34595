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

__all__ = ["device", "quick_mode", "step_scale", "step_budget", "mode_summary", "seed_everything", "__version__"]


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


def step_scale() -> float:
    """The factor ``GD_STEP_SCALE`` (default 1) applies to full-mode step counts.

    ``GD_STEP_SCALE=0.01`` runs every lecture in full mode (full-size models, data, widths,
    sweeps) with its training loops cut to 1 % of their steps: the full-mode code paths,
    plotting included, run on a CPU in minutes, with numbers that mean nothing. Quick mode
    ignores it. Raises ``ValueError`` unless it is a number in (0, 1].
    """
    raw = os.environ.get("GD_STEP_SCALE", "").strip()
    if not raw:
        return 1.0
    try:
        scale = float(raw)
    except ValueError:
        scale = float("nan")
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"Invalid GD_STEP_SCALE: {raw!r}; expected a number in (0, 1]")
    return scale


def step_budget(quick_steps: int, full_steps: int, quick: bool | None = None, *, minimum: int = 1) -> int:
    """How many steps a loop runs: ``quick_steps`` in quick mode, else ``full_steps`` scaled by
    :func:`step_scale` (rounded up, at least ``minimum``: e.g. one evaluation interval, so that
    a shortened run still records what its plot needs).

    Every experiment's full-mode step counts go through here, so that ``GD_STEP_SCALE`` shortens
    them all and nothing else.
    """
    if quick_mode(quick):
        return int(quick_steps)
    import math

    return max(int(minimum), math.ceil(int(full_steps) * step_scale()))


def mode_summary(quick: bool | None = None) -> str:
    """One line naming the mode a lecture runs in (printed at its top)."""
    if quick_mode(quick):
        return "quick mode (GD_QUICK=1): a small faithful version, seconds on a CPU"
    scale = step_scale()
    if scale < 1.0:
        return (
            f"full mode with steps scaled by GD_STEP_SCALE={scale:g}: a check that the full-mode code runs; "
            "its numbers are not meaningful"
        )
    return "full mode: the original scale, meant for a GPU"


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, numpy and torch (CPU and every CUDA device) with ``seed``.

    Returns a fresh CPU ``torch.Generator`` seeded the same way, for code that
    prefers an explicit generator (data sampling in :func:`gd_lib.train.train`).
    """
    import random

    import numpy as np

    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"Invalid seed: {seed!r}; expected an integer in [0, 2**32)")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds the CUDA generators too
    return torch.Generator().manual_seed(seed)
