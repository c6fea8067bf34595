"""Learning-rate schedules: pure functions ``step ↦ multiplier``, usable as torch LR schedulers.

A schedule ``η(t)`` here is a *multiplier*: the learning rate of a parameter
group at step ``t = 0, 1, 2, ...`` is ``base_lr · η(t)``. Every schedule is a
small frozen dataclass that validates its arguments (``ValueError`` naming
the argument) and is called like a function::

    >>> s = with_warmup(Cosine(total_steps=900, final=0.1), warmup_steps=100)
    >>> s(0), s(100), s(1000)
    (0.0, 1.0, 0.1)

and the same object drives any optimizer through :class:`ScheduleLR`, a
``torch.optim.lr_scheduler.LRScheduler`` (one schedule, or one per param group,
each multiplying that group's initial lr)::

    scheduler = ScheduleLR(optimizer, s)
    for batch in data:
        loss(batch).backward(); optimizer.step(); scheduler.step()

Multiply by a number for an absolute schedule: ``3e-4 * Cosine(1000)``.

Composition: :func:`join` runs schedules one after
the other at given boundaries, each restarted at its boundary (as optax's
``join_schedules``); :func:`with_warmup` puts a linear warmup in front of any
schedule.

References:
    I. Loshchilov, F. Hutter. SGDR: Stochastic gradient descent with warm restarts. ICLR 2017 (cosine).
    P. Goyal et al. Accurate, large minibatch SGD: training ImageNet in 1 hour. 2017 (linear warmup).
    A. Vaswani et al. Attention is all you need. NeurIPS 2017, eq. 3 (inverse square root).
    L. Smith. Cyclical learning rates for training neural networks. WACV 2017.
    L. Smith, N. Topin. Super-convergence: very fast training of neural networks using large
    learning rates. 2019 (one-cycle).
    S. Hu et al. MiniCPM: unveiling the potential of small language models with scalable
    training strategies. 2024 (warmup-stable-decay).
    A. Hägele et al. Scaling laws and compute-optimal training beyond fixed training
    durations. NeurIPS 2024 (WSD with the 1-sqrt cooldown).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler

from gd_lib._checks import check_in_range, check_nonnegative, check_positive
from gd_lib._checks import check_int as _check_int

__all__ = [
    "Schedule",
    "Constant",
    "LinearWarmup",
    "Cosine",
    "WarmupStableDecay",
    "StepDecay",
    "MultiStep",
    "Exponential",
    "InverseSqrt",
    "Cyclic",
    "OneCycle",
    "Join",
    "Scaled",
    "join",
    "with_warmup",
    "warmup_cosine",
    "ScheduleLR",
    "DECAY_SHAPES",
]


def _check_step(step) -> int:
    try:
        step = operator.index(step)
    except TypeError:
        raise ValueError(f"Invalid step: {step!r}; expected an integer >= 0") from None
    if step < 0:
        raise ValueError(f"Invalid step: {step!r}; expected an integer >= 0")
    return step


class Schedule:
    """A pure function ``step ↦ value``; subclasses define :meth:`_evaluate` (``step`` already checked)."""

    def _evaluate(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, step) -> float:
        return float(self._evaluate(_check_step(step)))

    def values(self, steps) -> np.ndarray:
        """The schedule at each of ``steps`` (an int ``n`` means ``range(n)``), as a numpy array."""
        if isinstance(steps, (int, np.integer)):
            steps = range(steps)
        return np.array([self(t) for t in steps], dtype=np.float64)

    def __mul__(self, factor: float) -> Scaled:
        return Scaled(self, factor)

    __rmul__ = __mul__


# --- basic shapes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Constant(Schedule):
    """``η(t) = value``.

    Examples:
        >>> from gd_lib.schedules import Constant
        >>> Constant(0.5)(10)
        0.5
    """

    value: float = 1.0

    def __post_init__(self):
        check_nonnegative("value", self.value)

    def _evaluate(self, step: int) -> float:
        return self.value


@dataclass(frozen=True)
class LinearWarmup(Schedule):
    """``η(t) = start + (end − start) · min(t, w) / w`` with ``w`` = ``warmup_steps``.

    Rises linearly from ``start`` at ``t = 0`` to ``end`` at ``t = w``, then stays at
    ``end`` (torch's ``LinearLR(start_factor=start, end_factor=end, total_iters=w)``).

    Examples:
        >>> from gd_lib.schedules import LinearWarmup
        >>> LinearWarmup(warmup_steps=4).values(6).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """

    warmup_steps: int
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self):
        _check_int("warmup_steps", self.warmup_steps, 1)
        check_nonnegative("start", self.start)
        check_nonnegative("end", self.end)

    def _evaluate(self, step: int) -> float:
        return self.start + (self.end - self.start) * min(step, self.warmup_steps) / self.warmup_steps


@dataclass(frozen=True)
class Cosine(Schedule):
    """``η(t) = final + (initial − final) · ½ (1 + cos(π · min(t, T) / T))`` with ``T`` = ``total_steps``.

    Half a cosine from ``initial`` at ``t = 0`` to ``final`` at ``t = T``, then
    ``final`` (torch's ``CosineAnnealingLR`` with ``eta_min = final · base_lr``, up to ``T``).

    Examples:
        >>> from gd_lib.schedules import Cosine
        >>> s = Cosine(total_steps=4, final=0.1)
        >>> [round(s(t), 4) for t in range(6)]  # 0.1 + 0.9 * (1 + cos(pi t / 4)) / 2, then 0.1
        [1.0, 0.8682, 0.55, 0.2318, 0.1, 0.1]
    """

    total_steps: int
    initial: float = 1.0
    final: float = 0.0

    def __post_init__(self):
        _check_int("total_steps", self.total_steps, 1)
        check_nonnegative("initial", self.initial)
        check_nonnegative("final", self.final)

    def _evaluate(self, step: int) -> float:
        progress = min(step, self.total_steps) / self.total_steps
        return self.final + (self.initial - self.final) * 0.5 * (1.0 + math.cos(math.pi * progress))


# s ∈ [0, 1] is the fraction of the decay phase done; each shape goes from 1 to 0.
DECAY_SHAPES: dict[str, Callable[[float], float]] = {
    "linear": lambda s: 1.0 - s,
    "cosine": lambda s: 0.5 * (1.0 + math.cos(math.pi * s)),
    "1-sqrt": lambda s: 1.0 - math.sqrt(s),
}


@dataclass(frozen=True)
class WarmupStableDecay(Schedule):
    """Warmup–stable–decay (WSD, "trapezoidal"): up linearly, flat, then a cooldown.

    With ``T`` = ``total_steps``, ``w`` = ``warmup_steps``, ``D`` = ``decay_steps``
    and ``s = (t − (T − D)) / D`` the fraction of the cooldown done:

    .. math::

        η(t) = \\begin{cases}
            t / w & t < w \\\\
            1 & w ≤ t < T − D \\\\
            final + (1 − final)\\, g(s) & T − D ≤ t < T \\\\
            final & t ≥ T
        \\end{cases}

    where ``g`` is ``shape``: ``"linear"`` ``1 − s``, ``"cosine"`` ``½(1 + cos πs)``,
    ``"1-sqrt"`` ``1 − √s`` (Hägele et al., 2024).

    Examples:
        >>> from gd_lib.schedules import WarmupStableDecay
        >>> s = WarmupStableDecay(total_steps=10, decay_steps=4, warmup_steps=2)
        >>> s.values(11).tolist()  # up over 2 steps, flat, down linearly over the last 4
        [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    """

    total_steps: int
    decay_steps: int
    warmup_steps: int = 0
    shape: str = "linear"
    final: float = 0.0

    def __post_init__(self):
        _check_int("total_steps", self.total_steps, 1)
        _check_int("decay_steps", self.decay_steps, 1)
        _check_int("warmup_steps", self.warmup_steps, 0)
        if self.warmup_steps + self.decay_steps > self.total_steps:
            raise ValueError(
                f"Invalid decay_steps: {self.decay_steps!r}; expected warmup_steps + "
                f"decay_steps <= total_steps = {self.total_steps}"
            )
        if self.shape not in DECAY_SHAPES:
            raise ValueError(f"Invalid shape: {self.shape!r}; expected one of {sorted(DECAY_SHAPES)}")
        check_nonnegative("final", self.final)

    def _evaluate(self, step: int) -> float:
        decay_start = self.total_steps - self.decay_steps
        if step < self.warmup_steps:
            return step / self.warmup_steps
        if step < decay_start:
            return 1.0
        s = min(step - decay_start, self.decay_steps) / self.decay_steps
        return self.final + (1.0 - self.final) * DECAY_SHAPES[self.shape](s)


@dataclass(frozen=True)
class StepDecay(Schedule):
    """``η(t) = γ^⌊t / step_size⌋`` (torch's ``StepLR``).

    Examples:
        >>> from gd_lib.schedules import StepDecay
        >>> StepDecay(step_size=2, gamma=0.5).values(5).tolist()
        [1.0, 1.0, 0.5, 0.5, 0.25]
    """

    step_size: int
    gamma: float = 0.1

    def __post_init__(self):
        _check_int("step_size", self.step_size, 1)
        check_nonnegative("gamma", self.gamma)

    def _evaluate(self, step: int) -> float:
        return self.gamma ** (step // self.step_size)


@dataclass(frozen=True)
class MultiStep(Schedule):
    """``η(t) = γ^{#\\{m ∈ milestones : m ≤ t\\}}`` (torch's ``MultiStepLR``).

    Examples:
        >>> from gd_lib.schedules import MultiStep
        >>> MultiStep(milestones=(2, 5), gamma=0.5).values(6).tolist()
        [1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    """

    milestones: tuple[int, ...]
    gamma: float = 0.1

    def __post_init__(self):
        object.__setattr__(self, "milestones", tuple(self.milestones))
        for i, m in enumerate(self.milestones):
            _check_int(f"milestones[{i}]", m, 1)
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"Invalid milestones: {self.milestones!r}; expected increasing integers")
        check_nonnegative("gamma", self.gamma)

    def _evaluate(self, step: int) -> float:
        return self.gamma ** sum(1 for m in self.milestones if m <= step)


@dataclass(frozen=True)
class Exponential(Schedule):
    """``η(t) = γ^t`` (torch's ``ExponentialLR``).

    Examples:
        >>> from gd_lib.schedules import Exponential
        >>> Exponential(gamma=0.5).values(4).tolist()
        [1.0, 0.5, 0.25, 0.125]
    """

    gamma: float

    def __post_init__(self):
        check_in_range("gamma", self.gamma, 0.0, 1.0, high_inclusive=True, low_inclusive=False)

    def _evaluate(self, step: int) -> float:
        return self.gamma**step


@dataclass(frozen=True)
class InverseSqrt(Schedule):
    """``η(t) = min(t / w, √(w / t))``: linear warmup to 1 at ``t = w``, then ``∝ 1/√t``.

    Vaswani et al. (2017), eq. 3, ``lrate = d^{-1/2} min(t^{-1/2}, t w^{-3/2})``,
    divided by its peak ``(d w)^{-1/2}``; ``w`` = ``warmup_steps``.

    Examples:
        >>> from gd_lib.schedules import InverseSqrt
        >>> s = InverseSqrt(warmup_steps=4)
        >>> s(2), s(4), s(16)  # half way up, the peak, then sqrt(4 / 16)
        (0.5, 1.0, 0.5)
    """

    warmup_steps: int

    def __post_init__(self):
        _check_int("warmup_steps", self.warmup_steps, 1)

    def _evaluate(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps
        return math.sqrt(self.warmup_steps / step)


@dataclass(frozen=True)
class Cyclic(Schedule):
    """Cyclical learning rate (Smith, 2017), as torch's ``CyclicLR``.

    With ``u`` = ``step_size_up``, ``d`` = ``step_size_down`` (default ``u``),
    ``C = u + d`` the cycle length, ``c = ⌊1 + t / C⌋`` the cycle number (from 1),
    ``x = 1 + t/C − c ∈ [0, 1)`` the position in the cycle and ``r = u / C``:

    .. math::

        h(x) = x / r \\text{ if } x ≤ r \\text{ else } (x − 1)/(r − 1), \\qquad
        η(t) = low + (high − low)\\, h(x)\\, σ,

    with ``σ = 1`` (``"triangular"``), ``σ = 2^{−(c−1)}`` (``"triangular2"``: the
    amplitude halves every cycle) or ``σ = γ^t`` (``"exp_range"``).

    Examples:
        >>> from gd_lib.schedules import Cyclic
        >>> Cyclic(step_size_up=2, low=0.0, high=1.0).values(6).tolist()
        [0.0, 0.5, 1.0, 0.5, 0.0, 0.5]
    """

    step_size_up: int
    low: float = 0.1
    high: float = 1.0
    step_size_down: int | None = None
    mode: str = "triangular"
    gamma: float = 1.0

    def __post_init__(self):
        _check_int("step_size_up", self.step_size_up, 1)
        if self.step_size_down is not None:
            _check_int("step_size_down", self.step_size_down, 1)
        check_nonnegative("low", self.low)
        check_nonnegative("high", self.high)
        if self.mode not in ("triangular", "triangular2", "exp_range"):
            raise ValueError(f"Invalid mode: {self.mode!r}; expected 'triangular', 'triangular2' or 'exp_range'")
        check_in_range("gamma", self.gamma, 0.0, 1.0, high_inclusive=True, low_inclusive=False)

    def _evaluate(self, step: int) -> float:
        down = self.step_size_up if self.step_size_down is None else self.step_size_down
        cycle_length = self.step_size_up + down
        ratio = self.step_size_up / cycle_length
        cycle = math.floor(1 + step / cycle_length)
        x = 1.0 + step / cycle_length - cycle
        height = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        scale = {"triangular": 1.0, "triangular2": 1.0 / 2.0 ** (cycle - 1), "exp_range": self.gamma**step}[self.mode]
        return self.low + (self.high - self.low) * height * scale


@dataclass(frozen=True)
class OneCycle(Schedule):
    """One-cycle policy (Smith & Topin, 2019), as torch's ``OneCycleLR``, relative to the peak.

    With ``T`` = ``total_steps``, ``η_0 = 1/div_factor`` the start and
    ``η_min = η_0 / final_div_factor`` the end, the phases (ending at steps
    ``e_1 = pct_start·T − 1`` and ``e_2 = T − 1``) anneal ``η_0 → 1 → η_min``;
    ``three_phase`` uses ``η_0 → 1`` (to ``pct_start·T − 1``), ``1 → η_0`` (to
    ``2·pct_start·T − 2``), ``η_0 → η_min`` (to ``T − 1``). Within a phase from
    ``a`` to ``b`` at fraction ``p`` of it:

    - ``anneal="cos"``:    ``b + (a − b) · ½ (1 + cos πp)``
    - ``anneal="linear"``: ``a + (b − a) · p``

    After ``T − 1`` the value stays at ``η_min`` (torch raises instead).

    Examples:
        >>> from gd_lib.schedules import OneCycle
        >>> s = OneCycle(total_steps=10, anneal="linear")
        >>> s(0), s(2), s(9)  # 1 / div_factor, the peak at pct_start * 10 - 1, then 1 / (25 * 1e4)
        (0.04, 1.0, 4e-06)
    """

    total_steps: int
    pct_start: float = 0.3
    anneal: str = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False

    def __post_init__(self):
        _check_int("total_steps", self.total_steps, 2)
        check_in_range("pct_start", self.pct_start, 0.0, 1.0, low_inclusive=False)
        if self.anneal not in ("cos", "linear"):
            raise ValueError(f"Invalid anneal: {self.anneal!r}; expected 'cos' or 'linear'")
        check_positive("div_factor", self.div_factor)
        check_positive("final_div_factor", self.final_div_factor)
        first_end = self.pct_start * self.total_steps - 1
        if first_end <= 0 or (self.three_phase and 2 * first_end >= self.total_steps - 1):
            raise ValueError(
                f"Invalid pct_start: {self.pct_start!r}; every phase needs at least "
                f"one step with total_steps={self.total_steps}"
            )

    def _phases(self) -> list[tuple[float, float, float]]:
        """``[(end_step, start_value, end_value)]`` for each phase."""
        initial = 1.0 / self.div_factor
        minimum = initial / self.final_div_factor
        T, pct = self.total_steps, self.pct_start
        if self.three_phase:
            return [
                (float(pct * T) - 1, initial, 1.0),
                (float(2 * pct * T) - 2, 1.0, initial),
                (T - 1, initial, minimum),
            ]
        return [(float(pct * T) - 1, initial, 1.0), (T - 1, 1.0, minimum)]

    def _evaluate(self, step: int) -> float:
        phases = self._phases()
        if step >= self.total_steps - 1:
            return phases[-1][2]
        start_step = 0.0
        for end_step, a, b in phases:
            if step <= end_step:
                p = (step - start_step) / (end_step - start_step)
                if self.anneal == "cos":
                    return b + (a - b) * 0.5 * (1.0 + math.cos(math.pi * p))
                return a + (b - a) * p
            start_step = end_step
        return phases[-1][2]  # pragma: no cover - the last phase ends at T − 1


# --- composition -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Join(Schedule):
    """Schedules ``s_0, ..., s_n`` one after the other at ``boundaries`` ``b_1 < ... < b_n``.

    ``η(t) = s_i(t − b_i)`` for ``b_i ≤ t < b_{i+1}`` (with ``b_0 = 0``,
    ``b_{n+1} = ∞``): each schedule restarts its own clock at its boundary, as
    optax's ``join_schedules``.

    Examples:
        >>> from gd_lib.schedules import Constant, Exponential, Join
        >>> s = Join((Constant(1.0), Exponential(0.5)), boundaries=(2,))
        >>> s.values(5).tolist()  # the exponential's clock starts at step 2
        [1.0, 1.0, 1.0, 0.5, 0.25]
    """

    schedules: tuple[Schedule, ...]
    boundaries: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "schedules", tuple(self.schedules))
        object.__setattr__(self, "boundaries", tuple(self.boundaries))
        if not self.schedules or not all(callable(s) for s in self.schedules):
            raise ValueError(f"Invalid schedules: {self.schedules!r}; expected one or more schedules")
        if len(self.boundaries) != len(self.schedules) - 1:
            raise ValueError(
                f"Invalid boundaries: {self.boundaries!r}; expected "
                f"{len(self.schedules) - 1} boundaries for {len(self.schedules)} schedules"
            )
        for i, b in enumerate(self.boundaries):
            _check_int(f"boundaries[{i}]", b, 1)
        if any(b >= c for b, c in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"Invalid boundaries: {self.boundaries!r}; expected strictly increasing")

    def _evaluate(self, step: int) -> float:
        start = 0
        for schedule, boundary in zip(self.schedules, self.boundaries):
            if step < boundary:
                return schedule(step - start)
            start = boundary
        return self.schedules[-1](step - start)


def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Join:
    """:class:`Join` of ``schedules`` at ``boundaries`` (each restarted at its boundary).

    Examples:
        >>> from gd_lib.schedules import Constant, join
        >>> join([Constant(1.0), Constant(0.1)], boundaries=[3]).values(5).tolist()
        [1.0, 1.0, 1.0, 0.1, 0.1]
    """
    return Join(tuple(schedules), tuple(boundaries))


@dataclass(frozen=True)
class Scaled(Schedule):
    """``η(t) = factor · s(t)``; ``3e-4 * schedule`` builds one.

    Examples:
        >>> from gd_lib.schedules import Exponential
        >>> s = 0.5 * Exponential(0.5)  # a Scaled schedule
        >>> s.values(3).tolist()
        [0.5, 0.25, 0.125]
    """

    schedule: Schedule
    factor: float

    def __post_init__(self):
        check_nonnegative("factor", self.factor)

    def _evaluate(self, step: int) -> float:
        return self.factor * self.schedule(step)


def with_warmup(schedule: Schedule, warmup_steps: int, start: float = 0.0) -> Join:
    """A linear warmup from ``start`` to ``schedule(0)`` over ``warmup_steps``, then ``schedule``.

    ``η(t) = start + (s(0) − start)·t/w`` for ``t < w``, ``s(t − w)`` after: the
    schedule's clock starts when the warmup ends.

    Examples:
        >>> from gd_lib.schedules import Exponential, with_warmup
        >>> s = with_warmup(Exponential(0.5), warmup_steps=2)
        >>> s.values(5).tolist()  # up to Exponential(0.5)(0) = 1, then its own clock
        [0.0, 0.5, 1.0, 0.5, 0.25]
    """
    _check_int("warmup_steps", warmup_steps, 1)
    return Join((LinearWarmup(warmup_steps, start, schedule(0)), schedule), (warmup_steps,))


def warmup_cosine(total_steps: int, warmup_steps: int, final: float = 0.0) -> Join:
    """Linear warmup to 1 over ``warmup_steps`` then a cosine to ``final`` at ``total_steps``.

    The AlgoPerf baseline schedule: ``with_warmup(Cosine(total_steps − warmup_steps, 1, final), warmup_steps)``.

    Examples:
        >>> from gd_lib.schedules import warmup_cosine
        >>> s = warmup_cosine(total_steps=6, warmup_steps=2)
        >>> s(1), s(2), s(4), s(6)  # up to 1, then a cosine over the last 4 steps to 0
        (0.5, 1.0, 0.5, 0.0)
    """
    _check_int("total_steps", total_steps, 2)
    _check_int("warmup_steps", warmup_steps, 1)
    if warmup_steps >= total_steps:
        raise ValueError(f"Invalid warmup_steps: {warmup_steps!r}; expected < total_steps = {total_steps}")
    return with_warmup(Cosine(total_steps - warmup_steps, 1.0, final), warmup_steps)


# --- as a torch LR scheduler -------------------------------------------------------------------


class ScheduleLR(LRScheduler):
    """``lr_g(t) = base_lr_g · η_g(t)`` for every param group ``g``, as a torch ``LRScheduler``.

    ``schedule`` is one schedule for all groups or a list with one per group;
    ``base_lr_g`` is the group's lr when the scheduler is created (torch's
    ``initial_lr``). Call ``scheduler.step()`` after ``optimizer.step()``, as for
    any torch scheduler; after ``t`` calls the lr is ``base_lr · η(t)``.

    Examples:
        >>> import torch
        >>> from gd_lib.schedules import Exponential, ScheduleLR
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> scheduler = ScheduleLR(opt, Exponential(0.5))
        >>> for _ in range(2):
        ...     opt.step()
        ...     scheduler.step()
        >>> opt.param_groups[0]["lr"]  # 0.1 * 0.5 ** 2
        0.025
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule | Sequence[Schedule], last_epoch: int = -1):
        groups = len(optimizer.param_groups)
        if callable(schedule):
            schedules = [schedule] * groups
        else:
            schedules = list(schedule)
            if len(schedules) != groups or not all(callable(s) for s in schedules):
                raise ValueError(
                    f"Invalid schedule: expected one schedule or a list of {groups} "
                    f"(one per param group), got {schedule!r}"
                )
        self.schedules = schedules
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base_lr * schedule(self.last_epoch) for base_lr, schedule in zip(self.base_lrs, self.schedules)]

    _get_closed_form_lr = get_lr
