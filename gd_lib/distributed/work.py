r"""Dividing an optimizer's expensive per-parameter work across data-parallel ranks.

Under data parallelism (DDP) every rank holds the full model and, after DDP's gradient
all-reduce, the same gradient. An optimizer such as Muon, Shampoo, SOAP or KFAC then
repeats the same expensive matrix work (Newton–Schulz, inverse roots, eigendecompositions,
factor inversions) on every rank. The recipe of distributed Shampoo (Shi et al. 2023),
of the NanoGPT speedrun's distributed Muon (Jordan et al. 2024) and of distributed KFAC
(Osawa et al. 2019; Pauloski et al. 2020) is to

1. cut that work into *units* (a parameter, a block of a parameter, a Kronecker factor),
2. give each unit one *owner* rank by a deterministic rule every rank evaluates alike,
3. let each rank compute only the units it owns,
4. share the results with a collective, so that every rank ends with all of them.

Every rank then applies the same update and the replicas stay identical.
:func:`assign_work` is step 2 (size-balanced greedy assignment); :class:`WorkSharing`
carries the process group and does steps 3–4 (``all_gather`` of one padded flat buffer
per dtype); :class:`WorkLog` counts what each rank computed and for how long (CPU
seconds of the calling thread), for the tests, the lecture and the benchmark.

Without a process group (``process_group=None``) there is one rank that owns every unit
and sharing is a no-op: the optimizers run exactly their single-process code.

References:
    Shi et al. (2023), "A Distributed Data-Parallel PyTorch Implementation of the
    Distributed Shampoo Optimizer for Training Neural Networks At-Scale",
    arXiv:2309.06497 (``DistributedShampoo``'s ``distributed_config``: blocks assigned to
    ranks, search directions all-gathered).
    Jordan et al. (2024), github.com/KellerJordan/Muon (``Muon``: parameters dealt to ranks
    round-robin, updates shared with ``all_gather``).
    Osawa et al. (2019), "Large-Scale Distributed Second-Order Optimization Using
    Kronecker-Factored Approximate Curvature", CVPR; Pauloski et al. (2020), "Convolutional
    Neural Network Training with Distributed K-FAC", SC20 (factors all-reduced,
    inversions assigned to ranks and broadcast).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["WorkLog", "WorkSharing", "assign_work"]


class WorkLog:
    """What one rank computed: a count per kind of expensive work, and its CPU seconds.

    ``counts["newton_schulz"] == 3`` means this rank ran Newton–Schulz three times.
    ``seconds[kind]`` is the CPU time of the calling thread (``time.thread_time``) spent
    in that work: it does not grow while the process waits for a core, so it measures
    the work even on a loaded machine. On CUDA the kernels run asynchronously and these
    seconds only measure the launch; time whole steps with synchronisation there.
    """

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.seconds: Counter = Counter()

    @contextmanager
    def record(self, kind: str, units: int = 1) -> Iterator[None]:
        """``with log.record("eigh"):`` counts ``units`` computations of ``kind`` and times them."""
        start = time.thread_time()
        try:
            yield
        finally:
            self.seconds[kind] += time.thread_time() - start
            self.counts[kind] += units

    @property
    def total(self) -> int:
        """All computations counted, of every kind."""
        return sum(self.counts.values())

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))

    def reset(self) -> None:
        self.counts.clear()
        self.seconds.clear()

    def as_dict(self) -> dict:
        """Plain numbers: ``{"counts": {...}, "seconds": {...}}``."""
        return {"counts": dict(self.counts), "seconds": {k: float(v) for k, v in self.seconds.items()}}

    def __repr__(self) -> str:
        return f"WorkLog(counts={dict(self.counts)}, seconds={self.total_seconds:.3g})"


def assign_work(costs: Sequence[float], world_size: int) -> list[int]:
    """The owner rank of each unit of work: greedy size-balanced (longest job first).

    Units are taken by decreasing cost (ties by index) and each goes to the rank with the
    least work so far (ties to the lowest rank): the classic LPT rule, within 4/3 of the
    best possible maximum load. Deterministic, so every rank computes the same owners
    without communicating. With equal costs this is round-robin.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"Invalid world_size: {world_size!r}; expected an integer >= 1")
    owners = [0] * len(costs)
    load = [0.0] * world_size
    for i in sorted(range(len(costs)), key=lambda i: (-float(costs[i]), i)):
        rank = min(range(world_size), key=lambda r: (load[r], r))
        owners[i] = rank
        load[rank] += float(costs[i])
    return owners


def _reject_dtensors(tensors: Sequence[Tensor]) -> None:
    for t in tensors:
        if type(t).__name__ == "DTensor" or hasattr(t, "_local_tensor"):
            raise NotImplementedError(
                "sharded (FSDP/DTensor) parameters are not supported by the work-sharing optimizers: "
                "they need each parameter's full matrix on its owner rank; use DDP (replicated "
                "parameters), see docs/distributed.md"
            )


class WorkSharing:
    """A process group's view of the work: who owns what, and how results are shared.

    ``WorkSharing(None)`` is the single process: rank 0 of 1, owner of every unit, and
    :meth:`share` does nothing. ``WorkSharing(group)`` uses ``torch.distributed`` on
    ``group`` (``dist.group.WORLD`` for all processes); the group's backend must support
    ``all_gather`` and ``all_reduce`` for the tensors' device (gloo: CPU, nccl: CUDA).
    """

    def __init__(self, process_group=None) -> None:
        self.process_group = process_group
        if process_group is None:
            self.rank, self.world_size = 0, 1
        else:
            if not dist.is_available() or not dist.is_initialized():
                raise RuntimeError(
                    "a process_group was given but torch.distributed is not initialized; "
                    "call torch.distributed.init_process_group first (or use "
                    "gd_lib.distributed.launch)"
                )
            self.rank = dist.get_rank(process_group)
            self.world_size = dist.get_world_size(process_group)
        self.log = WorkLog()

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def owners(self, costs: Sequence[float]) -> list[int]:
        """:func:`assign_work` for this group's size."""
        return assign_work(costs, self.world_size)

    def check_replicated(self, tensors: Sequence[Tensor]) -> None:
        """Raise NotImplementedError for sharded (DTensor/FSDP) parameters when distributed."""
        if self.distributed:
            _reject_dtensors(tensors)

    def all_reduce_mean_(self, tensors: Sequence[Tensor]) -> None:
        """In place: every tensor becomes its mean over the ranks (one flat all-reduce per dtype)."""
        if not self.distributed or not tensors:
            return
        for same_dtype in _by_dtype_and_device(tensors):
            flat = torch.cat([t.reshape(-1) for t in same_dtype])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.process_group)
            flat.div_(self.world_size)
            _unflatten_into(flat, same_dtype)

    def compute_shared(
        self,
        units: Sequence,
        costs: Sequence[float],
        compute: Callable[[object], Sequence[Tensor]],
        allocate: Callable[[object], Sequence[Tensor]],
        kind: str | Callable[[object], str],
    ) -> list[list[Tensor]]:
        """Steps 2–4 for a list of units: the owner computes, the others allocate, then all share.

        ``owners = self.owners(costs)``; this rank runs ``compute(unit)`` for the units it owns
        and ``allocate(unit)`` (tensors of the same shapes, dtypes and order, any values: e.g.
        ``torch.empty``, or a check that raises as the owner would, so that no rank waits for a
        rank that failed) for the others; then :meth:`share` gives every rank the owners'
        values. Returns ``results[i]``, the tensors of unit ``i``, identical on every rank.

        ``kind`` names the work in :attr:`log`: a string times all of this rank's units in one
        record (a CPU-time read is a system call, and under load each one can cost the thread
        its core); a function of the unit gives each unit its own record and kind.
        """
        owners = self.owners(costs)
        results: list[list[Tensor] | None] = [None] * len(units)
        mine = [i for i, owner in enumerate(owners) if owner == self.rank]
        if isinstance(kind, str):
            if mine:
                with self.log.record(kind, units=len(mine)):
                    for i in mine:
                        results[i] = list(compute(units[i]))
        else:
            for i in mine:
                with self.log.record(kind(units[i])):
                    results[i] = list(compute(units[i]))
        for i, owner in enumerate(owners):
            if owner != self.rank:
                results[i] = list(allocate(units[i]))
        self.share(results, owners)
        return results

    def share(self, results: Sequence[list[Tensor]], owners: Sequence[int]) -> None:
        """Give every rank the owners' results, in place, every tensor contiguous.

        ``results[i]`` is the list of tensors unit ``i`` produces; every rank passes
        tensors of the same shapes, dtypes and order, the owner ``owners[i]`` with the
        computed values and the others with any values (e.g. ``torch.empty``). After the
        call every rank holds the owner's values. One ``all_gather`` per dtype of a flat
        buffer padded to the longest rank's share (the transport of distributed Shampoo).

        Every tensor in ``results`` is replaced by a contiguous one first, with one rank as
        with many: LAPACK returns eigenvectors column-major, a receiving rank's buffer is
        row-major, and a matrix product rounds differently on the two layouts (BLAS picks
        another kernel). One layout everywhere keeps the ranks, and the single process,
        bitwise identical.
        """
        if len(results) != len(owners):
            raise ValueError(f"{len(results)} results but {len(owners)} owners")
        for tensors in results:
            for k, t in enumerate(tensors):
                tensors[k] = t.contiguous()
        if not self.distributed:
            return
        slots = [(owner, t) for owner, tensors in zip(owners, results) for t in tensors]
        keys = []
        for _, t in slots:
            key = (t.dtype, t.device)
            if key not in keys:
                keys.append(key)
        for key in keys:
            per_rank: list[list[Tensor]] = [[] for _ in range(self.world_size)]
            for owner, t in slots:
                if (t.dtype, t.device) == key:
                    per_rank[owner].append(t)
            sizes = [sum(t.numel() for t in ts) for ts in per_rank]
            longest = max(sizes)
            if longest == 0:
                continue
            dtype, device = key
            send = torch.zeros(longest, dtype=dtype, device=device)
            if sizes[self.rank]:
                send[: sizes[self.rank]] = torch.cat([t.reshape(-1) for t in per_rank[self.rank]])
            received = [torch.empty(longest, dtype=dtype, device=device) for _ in range(self.world_size)]
            dist.all_gather(received, send, group=self.process_group)
            for rank, ts in enumerate(per_rank):
                if rank != self.rank and ts:
                    _unflatten_into(received[rank], ts)


def _by_dtype_and_device(tensors: Sequence[Tensor]) -> list[list[Tensor]]:
    groups: dict = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    return list(groups.values())


def _unflatten_into(flat: Tensor, tensors: Sequence[Tensor]) -> None:
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view(t.shape))
        offset += n
