"""Weight averaging: EMA, Polyak, SWA, LAWA — an average of the iterates, evaluated in place.

Every averager watches a model's parameters (and, with ``include_buffers``,
its floating-point buffers such as BatchNorm statistics), is told about each
new iterate by ``averager.update(model)`` after each optimizer step, and keeps
its average apart from the model: training always continues from the raw
weights. To evaluate the average, swap it in and back::

    ema = EMA(model, decay=0.999)
    for step in range(steps):
        ...; optimizer.step(); ema.update(model)
    with averaged_weights(model, ema):      # or: with ema.swapped(model):
        evaluate(model)                     # the averaged weights
    # here the model holds its raw weights again, bit for bit

The update counter ``t`` counts calls to :meth:`WeightAverager.update`
(``t = 1`` after the first optimizer step); an averager with ``start`` ``s``
and ``every`` ``k`` takes the iterate ``w_t`` at the steps ``t ≥ s`` with
``(t − s) mod k = 0`` ("averaging steps").

The two primitives are lerps:

- EMA: ``m ← β m + (1 − β) w  =  lerp(m, w, 1 − β)``
- running mean of ``n`` items: ``m_{n+1} = m_n + (w − m_n)/(n + 1)  =  lerp(m_n, w, 1/(n + 1))``

References:
    B. Polyak, A. Juditsky. Acceleration of stochastic approximation by averaging. SIAM J.
    Control Optim. 1992 (Polyak–Ruppert averaging).
    P. Izmailov et al. Averaging weights leads to wider optima and better generalization. UAI 2018 (SWA).
    J. Kaddour. Stop wasting my time! Saving days of ImageNet and BERT training with latest weight
    averaging. 2022 (LAWA); N. Ajroldi et al., AlgoPerf submissions ``lawa`` (queue) and
    ``lawa_ema`` (mlcommons/algorithmic-efficiency), whose step rules are followed here.
    optax ``ema(decay, debias=True)`` (bias correction); timm ``ModelEmaV3`` (decay warmup
    ``1 − (1 + t/γ)^{−p}``, after K. Crowson).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator

import torch
from torch import nn

from gd_lib._checks import check_int, check_number

__all__ = [
    "ema_update_",
    "mean_update_",
    "WeightAverager",
    "EMA",
    "Polyak",
    "SWA",
    "LAWA",
    "LAWAEMA",
    "averaged_weights",
]


# --- the two lerps ---------------------------------------------------------------------------------


@torch.no_grad()
def ema_update_(average: torch.Tensor, new: torch.Tensor, decay: float) -> torch.Tensor:
    """``m ← β m + (1 − β) w``, i.e. ``m.lerp_(w, 1 − β)`` (β = ``decay``).

    Examples:
        >>> import torch
        >>> from gd_lib.averaging import ema_update_
        >>> ema_update_(torch.tensor([0.0]), torch.tensor([1.0]), decay=0.9)  # 0.9 * 0 + 0.1 * 1
        tensor([0.1000])
    """
    return average.lerp_(new, 1.0 - decay)


@torch.no_grad()
def mean_update_(average: torch.Tensor, new: torch.Tensor, count: int) -> torch.Tensor:
    """``m_{n+1} = m_n + (w − m_n)/(n + 1)``: the mean of ``n`` = ``count`` items, one more added.

    Examples:
        >>> import torch
        >>> from gd_lib.averaging import mean_update_
        >>> mean_update_(torch.tensor([2.0]), torch.tensor([4.0]), count=1)  # the mean of 2 and 4
        tensor([3.])
    """
    return average.lerp_(new, 1.0 / (count + 1))


# --- the common shell --------------------------------------------------------------------------------


class WeightAverager:
    """Base class: which tensors are averaged, the step rule, the swap and the state dict.

    Subclasses implement :meth:`_include` (fold an iterate into the average) and
    :meth:`averaged` (the current average).

    Args:
        model: the model whose weights are averaged (only names and shapes are taken here).
        start: ``s``, the first update step whose iterate is averaged (0 = from the first).
        every: ``k``, average the iterate every ``k`` steps from ``start``.
        include_buffers: also average floating-point buffers (integer buffers such as
            BatchNorm's ``num_batches_tracked`` take the latest value).
    """

    def __init__(self, model: nn.Module, *, start: int = 0, every: int = 1, include_buffers: bool = False):
        check_int("start", start, 0)
        check_int("every", every, 1)
        self.start, self.every, self.include_buffers = start, every, include_buffers
        self.names = list(self._tensors(model))
        self.step = 0  # calls to update()
        self.count = 0  # iterates folded into the average

    def _tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        tensors = {name: p for name, p in model.named_parameters()}
        if self.include_buffers:
            tensors.update({name: b for name, b in model.named_buffers()})
        return tensors

    def _snapshot(self, model: nn.Module) -> dict[str, torch.Tensor]:
        tensors = self._tensors(model)
        if list(tensors) != self.names:
            raise ValueError("the model's parameters differ from those the averager was built for")
        return {name: t.detach().clone() for name, t in tensors.items()}

    def is_averaging_step(self, step: int) -> bool:
        """Whether the iterate after update ``step`` is averaged: ``t ≥ s`` and ``(t − s) mod k = 0``."""
        return step >= self.start and (step - self.start) % self.every == 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Tell the averager about the model's new weights (call after each optimizer step)."""
        self.step += 1
        if self.is_averaging_step(self.step):
            self._include(self._snapshot(model))
            self.count += 1

    def _include(self, weights: dict[str, torch.Tensor]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def has_average(self) -> bool:
        return self.count > 0

    def averaged(self) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        """The averaged tensors by name."""
        raise NotImplementedError

    # --- using the average ---------------------------------------------------------------------------
    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's weights with the average (no way back: see :meth:`swapped`)."""
        if not self.has_average:
            raise RuntimeError(f"{type(self).__name__} has no average yet (step {self.step})")
        tensors = self._tensors(model)
        for name, value in self.averaged().items():
            tensors[name].copy_(value)

    @contextlib.contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Context in which ``model`` holds the averaged weights; the raw ones come back exactly."""
        tensors = self._tensors(model)
        saved = {name: t.detach().clone() for name, t in tensors.items()}
        try:
            self.copy_to(model)
            yield model
        finally:
            with torch.no_grad():
                for name, value in saved.items():
                    tensors[name].copy_(value)

    # --- checkpointing -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"step": self.step, "count": self.count, **self._extra_state()}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.count = int(state["step"]), int(state["count"])
        self._load_extra_state(state)

    def _extra_state(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load_extra_state(self, state: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def _clone(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.clone() for name, t in tensors.items()}


def _averageable(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


# --- EMA ---------------------------------------------------------------------------------------------------


class EMA(WeightAverager):
    """Exponential moving average of the weights, with optional bias correction or decay warmup.

    At the ``n``-th averaging step (``n = 1, 2, ...``) with iterate ``w_n``:

    .. math::

        β_n = \\min\\big(β,\\; 1 − (1 + (n − 1)/γ)^{−p}\\big) \\text{ with warmup, else } β, \\qquad
        m_n = β_n m_{n−1} + (1 − β_n) w_n = \\mathrm{lerp}(m_{n−1}, w_n, 1 − β_n),

    - default: ``m_1 = w_1`` (the first averaged iterate; as AlgoPerf's LAWA-EMA).
    - ``debias=True`` (optax ``ema(debias=True)``): ``m_0 = 0`` and the average is
      ``m̂_n = m_n / (1 − β^n)``, the bias correction of Adam's moments.
    - ``warmup_power=p`` (timm ``ModelEmaV3``, ``warmup_gamma`` = γ): the decay grows
      from 0, so early iterates are not frozen in; ``β_1 = 0`` copies ``w_1``.
      With ``p = γ = 1`` and ``β = 1``, ``β_n = 1 − 1/n`` and the EMA is the running mean (Polyak).

    ``decay = 0`` gives the raw weights.

    Examples:
        >>> import torch
        >>> from gd_lib.averaging import EMA
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> averager = EMA(model, decay=0.5)
        >>> for w in (1.0, 3.0):  # stand-ins for optimizer steps: the weight becomes w
        ...     _ = model.weight.data.fill_(w)
        ...     averager.update(model)
        >>> averager.averaged()["weight"]  # m_1 = 1, then 0.5 * 1 + 0.5 * 3
        tensor([[2.]])
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float = 0.999,
        *,
        debias: bool = False,
        warmup_power: float | None = None,
        warmup_gamma: float = 1.0,
        start: int = 0,
        every: int = 1,
        include_buffers: bool = False,
    ):
        check_number("decay", decay, 0.0, 1.0)
        if warmup_power is not None:
            check_number("warmup_power", warmup_power, 0.0, low_inclusive=False)
            check_number("warmup_gamma", warmup_gamma, 0.0, low_inclusive=False)
            if debias:
                raise ValueError("Invalid debias: True; bias correction and warmup_power exclude each other")
        elif decay == 1.0:
            raise ValueError("Invalid decay: 1.0; expected a number in [0, 1) without warmup_power")
        super().__init__(model, start=start, every=every, include_buffers=include_buffers)
        self.decay, self.debias = float(decay), debias
        self.warmup_power, self.warmup_gamma = warmup_power, float(warmup_gamma)
        self.ema: dict[str, torch.Tensor] | None = None

    def decay_at(self, n: int) -> float:
        """``β_n`` for the ``n``-th averaging step (``n ≥ 1``)."""
        if self.warmup_power is None:
            return self.decay
        return min(self.decay, 1.0 - (1.0 + (n - 1) / self.warmup_gamma) ** -self.warmup_power)

    def _include(self, weights: dict[str, torch.Tensor]) -> None:
        n = self.count + 1
        if self.ema is None:
            # m_0 = 0 with bias correction; otherwise the first iterate starts the average
            self.ema = {
                k: torch.zeros_like(w) if self.debias and _averageable(w) else w.clone() for k, w in weights.items()
            }
            if not self.debias:
                return
        beta = self.decay_at(n)
        for name, w in weights.items():
            if _averageable(w):
                # m ← β m + (1 − β) w
                ema_update_(self.ema[name], w, beta)
            else:
                self.ema[name].copy_(w)

    def averaged(self) -> dict[str, torch.Tensor]:
        if self.ema is None:
            raise RuntimeError("EMA has no average yet")
        if not self.debias:
            return self.ema
        # m̂ = m / (1 − β^n)
        correction = 1.0 - self.decay**self.count
        return {k: m / correction if _averageable(m) else m for k, m in self.ema.items()}

    def _extra_state(self) -> dict:
        return {"ema": None if self.ema is None else _clone(self.ema)}

    def _load_extra_state(self, state: dict) -> None:
        self.ema = None if state["ema"] is None else _clone(state["ema"])


class LAWAEMA(EMA):
    """LAWA's EMA variant (AlgoPerf ``lawa_ema``): from step ``start``, every ``interval`` steps,
    ``m ← β m + (1 − β) w`` with ``m`` started at the first such iterate. This is :class:`EMA`
    with ``start`` and ``every = interval``.

    Examples:
        >>> import torch
        >>> from gd_lib.averaging import LAWAEMA
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> averager = LAWAEMA(model, decay=0.5, interval=2)
        >>> for w in (1.0, 3.0, 5.0):  # stand-ins for optimizer steps: the weight becomes w
        ...     _ = model.weight.data.fill_(w)
        ...     averager.update(model)
        >>> averager.averaged()["weight"]  # steps 1 and 3 (every 2nd): 0.5 * 1 + 0.5 * 5
        tensor([[3.]])
    """

    def __init__(
        self, model: nn.Module, decay: float = 0.9, *, interval: int = 1, start: int = 0, include_buffers: bool = False
    ):
        super().__init__(model, decay, start=start, every=interval, include_buffers=include_buffers)


# --- equal-weight averages ----------------------------------------------------------------------------


class SWA(WeightAverager):
    """Stochastic weight averaging: the equal-weight mean of the iterates at the averaging steps.

    ``w̄ = (1/N) Σ_{n=1}^{N} w_{t_n}`` over the steps ``t_n ≥ start`` with
    ``(t_n − start) mod every = 0``, kept as a running mean
    ``w̄_n = lerp(w̄_{n−1}, w_{t_n}, 1/n)`` (as ``torch.optim.swa_utils.AveragedModel``).
    With BatchNorm, recompute the statistics of the averaged net
    (``torch.optim.swa_utils.update_bn``) rather than averaging them.

    Examples:
        >>> import torch
        >>> from gd_lib.averaging import SWA
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> averager = SWA(model, start=2)
        >>> for w in (1.0, 3.0, 5.0):  # stand-ins for optimizer steps: the weight becomes w
        ...     _ = model.weight.data.fill_(w)
        ...     averager.update(model)
        >>> averager.averaged()["weight"]  # the mean of steps 2 and 3
        tensor([[4.]])
    """

    def __init__(self, model: nn.Module, *, start: int = 0, every: int = 1, include_buffers: bool = False):
        super().__init__(model, start=start, every=every, include_buffers=include_buffers)
        self.mean: dict[str, torch.Tensor] | None = None

    def _include(self, weights: dict[str, torch.Tensor]) -> None:
        if self.mean is None:
            self.mean = _clone(weights)
            return
        for name, w in weights.items():
            if _averageable(w):
                # w̄_{n+1} = w̄_n + (w − w̄_n)/(n + 1)
                mean_update_(self.mean[name], w, self.count)
            else:
                self.mean[name].copy_(w)

    def averaged(self) -> dict[str, torch.Tensor]:
        if self.mean is None:
            raise RuntimeError(f"{type(self).__name__} has no average yet")
        return self.mean

    def _extra_state(self) -> dict:
        return {"mean": None if self.mean is None else _clone(self.mean)}

    def _load_extra_state(self, state: dict) -> None:
        self.mean = None if state["mean"] is None else _clone(state["mean"])


class Polyak(SWA):
    """Polyak–Ruppert averaging: the running arithmetic mean of every iterate from ``start``
    (``SWA`` with ``every = 1``): ``w̄_n = (1/n) Σ_{i ≤ n} w_i``.

    Examples:
        >>> import torch
        >>> from gd_lib.averaging import Polyak
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> averager = Polyak(model)
        >>> for w in (1.0, 3.0, 5.0):  # stand-ins for optimizer steps: the weight becomes w
        ...     _ = model.weight.data.fill_(w)
        ...     averager.update(model)
        >>> averager.averaged()["weight"]  # the mean of every iterate
        tensor([[3.]])
    """

    def __init__(self, model: nn.Module, *, start: int = 0, include_buffers: bool = False):
        super().__init__(model, start=start, every=1, include_buffers=include_buffers)


class LAWA(WeightAverager):
    """Latest weight averaging: the uniform mean of the last ``k`` checkpoints.

    From step ``start``, every ``interval`` steps, the iterate is pushed to a
    queue of length ``k`` (the oldest drops out); once the queue is full the
    average is ``w̄ = (1/k) Σ_{j=1}^{k} w^{(j)}`` over the queue, as in
    AlgoPerf's ``lawa`` submission (which keeps the raw weights before the
    queue fills: :attr:`has_average` is False until then).

    Examples:
        >>> import torch
        >>> from gd_lib.averaging import LAWA
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> averager = LAWA(model, k=2)
        >>> for w in (1.0, 3.0, 5.0):  # stand-ins for optimizer steps: the weight becomes w
        ...     _ = model.weight.data.fill_(w)
        ...     averager.update(model)
        >>> averager.averaged()["weight"]  # the mean of the last 2
        tensor([[4.]])
    """

    def __init__(
        self, model: nn.Module, k: int = 5, *, interval: int = 1, start: int = 0, include_buffers: bool = False
    ):
        check_int("k", k, 1)
        check_int("interval", interval, 1)
        super().__init__(model, start=start, every=interval, include_buffers=include_buffers)
        self.k = k
        self.queue: deque[dict[str, torch.Tensor]] = deque(maxlen=k)

    def _include(self, weights: dict[str, torch.Tensor]) -> None:
        self.queue.append(weights)

    @property
    def has_average(self) -> bool:
        return len(self.queue) == self.k

    def averaged(self) -> dict[str, torch.Tensor]:
        if not self.has_average:
            raise RuntimeError(f"LAWA needs {self.k} checkpoints, has {len(self.queue)}")
        out = {}
        for name in self.names:
            snapshots = [checkpoint[name] for checkpoint in self.queue]
            if _averageable(snapshots[-1]):
                # w̄ = (1/k) Σ_j w^(j)
                out[name] = torch.stack(snapshots).sum(0) / self.k
            else:
                out[name] = snapshots[-1].clone()
        return out

    def _extra_state(self) -> dict:
        return {"queue": [_clone(c) for c in self.queue]}

    def _load_extra_state(self, state: dict) -> None:
        self.queue = deque((_clone(c) for c in state["queue"]), maxlen=self.k)


def averaged_weights(model: nn.Module, averager: WeightAverager):
    """``with averaged_weights(model, averager):`` — evaluate with the average, then restore exactly.

    Examples:
        >>> import torch
        >>> from gd_lib.averaging import Polyak, averaged_weights
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> averager = Polyak(model)
        >>> for w in (1.0, 3.0):  # stand-ins for optimizer steps: the weight becomes w
        ...     _ = model.weight.data.fill_(w)
        ...     averager.update(model)
        >>> with averaged_weights(model, averager):
        ...     print(model.weight.item())  # evaluate the average here
        2.0
        >>> model.weight.item()  # the raw weights are back
        3.0
    """
    return averager.swapped(model)
