"""Data-parallel training of the curvature-aware optimizers with ``torch.distributed``.

- :mod:`gd_lib.distributed.work`: how an optimizer divides its expensive per-parameter work
  (Newton–Schulz, inverse roots, eigenbases, factor inversions) across ranks and shares the
  results (:func:`assign_work`, :class:`WorkSharing`, :class:`WorkLog`).
- :mod:`gd_lib.distributed.launch`: start a small multi-process run on one machine
  (:func:`launch`), or join one started by ``torchrun`` (:func:`init_from_env`).
"""

from .launch import default_backend, free_port, init_from_env, launch
from .work import WorkLog, WorkSharing, assign_work

__all__ = ["WorkLog", "WorkSharing", "assign_work", "launch", "init_from_env", "free_port", "default_backend"]
