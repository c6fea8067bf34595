"""Start a small multi-process ``torch.distributed`` run on one machine, or join one made by ``torchrun``.

:func:`launch` is for lectures and tests: it starts ``world_size`` fresh Python processes
(``multiprocessing``'s "forkserver": forked from a server that imported torch once), connects
them over the loopback interface (``MASTER_ADDR=127.0.0.1``, a free port, the ``env://`` rendezvous that ``torchrun``
uses too), runs ``fn(*args)`` on every rank and returns what each rank returned. The
backend is gloo on CPU and nccl when each rank gets its own GPU. Every wait is bounded:
a rank that fails or hangs ends the run with an error instead of blocking forever.

:func:`init_from_env` is for scripts started by ``torchrun`` (one machine or several):
it reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``)
from the environment, initialises the default process group and picks the device.
See docs/distributed.md for the commands.
"""

from __future__ import annotations

import datetime
import os
import pickle
import queue as queue_module
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["launch", "init_from_env", "free_port", "default_backend"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_backend(use_cuda: bool | None = None) -> str:
    """nccl when every rank can have a GPU (``use_cuda``; default: CUDA available), else gloo."""
    if use_cuda is None:
        use_cuda = torch.cuda.is_available()
    return "nccl" if use_cuda and dist.is_nccl_available() else "gloo"


def init_from_env(backend: str | None = None, timeout_s: float = 300.0) -> tuple[int, int, torch.device]:
    """Join the run described by torchrun's environment variables; returns ``(rank, world_size, device)``.

    ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` are required (torchrun sets
    them); ``LOCAL_RANK`` picks the GPU ``cuda:LOCAL_RANK`` when CUDA is available (then the
    backend defaults to nccl), else the CPU and gloo. Idempotent: an already initialised
    default group is reused, and its backend picks the device (nccl: GPU, else CPU).
    """
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"init_from_env: {missing} not set; start the script with torchrun (or use gd_lib.distributed.launch)"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():  # the group's backend decides: nccl ranks get a GPU, gloo ranks the CPU
        use_cuda = torch.cuda.is_available() and dist.get_backend() == "nccl"
    else:
        use_cuda = torch.cuda.is_available() and (backend is None or backend == "nccl")
    if use_cuda:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            backend or default_backend(use_cuda), init_method="env://", timeout=datetime.timedelta(seconds=timeout_s)
        )
    return dist.get_rank(), dist.get_world_size(), device


def _worker(
    rank: int,
    world_size: int,
    port: int,
    backend: str,
    fn: Callable,
    args: tuple,
    results,
    timeout_s: float,
    threads: int,
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(threads)
    try:
        init_from_env(backend, timeout_s)
        value = fn(*args)
        # pickled here, by value: torch.multiprocessing's queue would pass a tensor as a handle to
        # shared memory that dies with this process, before the parent may have read it
        results.put((rank, True, pickle.dumps(value)))
    except BaseException:  # report every failure to the parent, which raises it
        results.put((rank, False, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _context(start_method: str | None, fn: Callable):
    """ "forkserver" where available: one server imports torch once and forks every rank from it
    (a fresh "spawn" re-imports torch per rank, seconds each; a plain "fork" of a process that has
    run OpenMP work can deadlock). The server preloads torch, this module and ``fn``'s module."""
    if start_method is None:
        start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload(["torch", "torch.distributed", __name__, getattr(fn, "__module__", __name__)])
    return ctx


def launch(
    fn: Callable[..., Any],
    world_size: int,
    *args,
    backend: str | None = None,
    timeout_s: float = 300.0,
    threads_per_process: int = 1,
    start_method: str | None = None,
) -> list[Any]:
    """Run ``fn(*args)`` on ``world_size`` new processes joined in one process group; results by rank.

    ``fn`` must be importable by name (a module-level function of an installed module:
    spawned processes import it afresh) and return something picklable (plain numbers,
    numpy arrays, CPU tensors). Inside ``fn`` the default group is initialised
    (``torch.distributed.group.WORLD``) and the environment is torchrun's
    (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), so the same ``fn`` runs under torchrun too.
    ``backend=None`` picks nccl when there is a GPU per rank, else gloo. ``start_method``:
    multiprocessing's, default "forkserver" (else "spawn"). Raises
    ``RuntimeError`` with the failing rank's traceback, or ``TimeoutError`` after
    ``timeout_s`` seconds (the processes this call started are then terminated).
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"Invalid world_size: {world_size!r}; expected an integer >= 1")
    if backend is None:
        backend = default_backend(torch.cuda.is_available() and torch.cuda.device_count() >= world_size)
    ctx = _context(start_method, fn)
    results = ctx.Queue()
    port = free_port()
    processes = [
        ctx.Process(
            target=_worker,
            args=(rank, world_size, port, backend, fn, args, results, timeout_s, threads_per_process),
            daemon=True,
        )
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    deadline = time.monotonic() + timeout_s
    values: dict[int, Any] = {}
    try:
        while len(values) < world_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"launch: {world_size - len(values)} of {world_size} ranks did not finish within {timeout_s} s"
                )
            try:
                rank, ok, value = results.get(timeout=min(remaining, 1.0))
            except queue_module.Empty:
                dead = [r for r, p in enumerate(processes) if r not in values and p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(
                        f"launch: rank {dead[0]} died with exit code {processes[dead[0]].exitcode}"
                    ) from None
                continue
            if not ok:
                raise RuntimeError(f"launch: rank {rank} failed:\n{value}")
            values[rank] = pickle.loads(value)
        for process in processes:
            process.join(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
    return [values[r] for r in range(world_size)]
