"""One small training loop for the lectures, assignments and benchmarks of the course.

::

    from gd_lib import data, models, train, schedules
    digits = data.load_digits()
    model = models.MLP(64, [128, 128], 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = train.train(model, opt, digits, steps=1000, batch_size=64,
                          schedule=schedules.warmup_cosine(1000, 50), eval_every=100)
    history.loss, history.lr, history["val_accuracy"]

Each step ``t = 1..steps``:

1. take a minibatch ``(x, y)``;
2. ``optimizer.step(closure)`` where ``closure`` zeroes the gradients, computes
   ``loss_fn(model(x), y)``, back-propagates and returns the loss — so that
   optimizers which re-evaluate the loss (L-BFGS, SAM) work unchanged, and the
   others call it once;
3. ``scheduler.step()`` (with ``schedule``: ``lr = base_lr · η(t)``, see
   :class:`gd_lib.schedules.ScheduleLR`), ``averager.update(model)`` (with ``averager``);
4. every ``eval_every`` steps and at the end: evaluate (and with an averager,
   evaluate the averaged weights too, as ``avg_<metric>``); stop early once
   ``target`` is reached, or when the loss is not finite.

``data`` is one of:

- a :class:`gd_lib.data.Split` (anything with ``X_train, y_train``; its
  ``validation`` is the default evaluation set);
- a pair of tensors ``(X, y)``;
- a callable ``data(batch_size, generator) → (x, y)`` (e.g. a text corpus's
  :class:`gd_lib.data.LMSampler`; a ``validation`` attribute, if present, is
  the default evaluation set).

Minibatches of tensors are drawn without replacement within an epoch (a fresh
permutation per epoch from a generator seeded by ``seed``); ``batch_size=None``
means the full batch.

The progress bar (tqdm) shows when ``progress`` is True, or, with
``progress=None``, when stderr is a terminal or the code runs in a Jupyter
notebook — never under pytest (``PYTEST_CURRENT_TEST`` is set) unless asked.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import gd_lib
from gd_lib._checks import check_int
from gd_lib.schedules import ScheduleLR

__all__ = [
    "train",
    "History",
    "Target",
    "evaluate",
    "cross_entropy",
    "mse",
    "default_loss",
    "seed_everything",
    "show_progress",
]

seed_everything = gd_lib.seed_everything


# --- losses ------------------------------------------------------------------------------------------------


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for classifiers and language models.

    ``output (B, C)`` with ``target (B,)``: plain cross-entropy; ``output (B, T, V)``
    with ``target (B, T)``: next-token loss averaged over all positions;
    ``output (B, T, V)`` with ``target (B,)``: the last position predicts the
    target (sequence classification, e.g. modular arithmetic).
    """
    if output.dim() == 3:
        if target.dim() == 1:
            output = output[:, -1]
        else:
            return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))
    return F.cross_entropy(output, target)


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean((output − target)²)``, with a trailing output dimension of 1 squeezed."""
    if output.dim() == target.dim() + 1 and output.shape[-1] == 1:
        output = output.squeeze(-1)
    return F.mse_loss(output, target)


def default_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`cross_entropy` for integer targets, :func:`mse` for floating-point ones."""
    return mse(output, target) if target.is_floating_point() else cross_entropy(output, target)


# --- evaluation ----------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_fn: Callable = default_loss, batch_size: int = 4096
) -> dict[str, float]:
    """``{"val_loss", "val_accuracy"}`` of ``model`` on ``(X, y)`` (accuracy for integer targets only).

    The model is put in eval mode and back in its previous mode.
    """
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    try:
        for start in range(0, X.shape[0], batch_size):
            xb, yb = X[start : start + batch_size], y[start : start + batch_size]
            out = model(xb)
            n = xb.shape[0]
            total_loss += loss_fn(out, yb).item() * n
            if not yb.is_floating_point():
                if out.dim() == 3 and yb.dim() == 1:
                    out = out[:, -1]
                correct += (out.argmax(-1) == yb).float().mean().item() * n
            count += n
    finally:
        model.train(was_training)
    metrics = {"val_loss": total_loss / count}
    if not y.is_floating_point():
        metrics["val_accuracy"] = correct / count
    return metrics


@dataclass(frozen=True)
class Target:
    """Stop when eval metric ``metric`` reaches ``value``: ``≥`` for ``mode="max"``, ``≤`` for ``"min"``.

    ``mode=None`` infers ``"min"`` for names containing ``loss`` or ``error``, else ``"max"``.
    """

    metric: str
    value: float
    mode: str | None = None

    def __post_init__(self):
        if self.mode is None:
            lower_is_better = "loss" in self.metric or "error" in self.metric
            object.__setattr__(self, "mode", "min" if lower_is_better else "max")
        if self.mode not in ("min", "max"):
            raise ValueError(f"Invalid mode: {self.mode!r}; expected 'min' or 'max'")

    def reached(self, metrics: dict[str, float]) -> bool:
        if self.metric not in metrics:
            raise KeyError(f"target metric {self.metric!r} is not among the eval metrics {sorted(metrics)}")
        value = metrics[self.metric]
        return value >= self.value if self.mode == "max" else value <= self.value


# --- history -------------------------------------------------------------------------------------------------


@dataclass
class History:
    """What :func:`train` records.

    Attributes:
        step: ``1..n`` (numpy int array), one entry per optimizer step taken.
        loss: the minibatch loss at each step, at the weights before the step.
        lr: the learning rate of param group 0 used by each step.
        eval_step: the steps after which an evaluation ran.
        metrics: ``{name: array}`` aligned with ``eval_step`` (NaN where a metric was not available).
        target_step: the first eval step at which the target was reached (None if never).
        diverged: True if training stopped because the loss was not finite.
        train_time, eval_time: wall-clock seconds spent training and evaluating.
    """

    step: np.ndarray
    loss: np.ndarray
    lr: np.ndarray
    eval_step: np.ndarray
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    target_step: int | None = None
    diverged: bool = False
    train_time: float = 0.0
    eval_time: float = 0.0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.metrics[name]

    def final(self, name: str) -> float:
        """The last recorded value of eval metric ``name``."""
        return float(self.metrics[name][-1])

    @property
    def steps_taken(self) -> int:
        return int(self.step[-1]) if len(self.step) else 0


# --- data and progress -----------------------------------------------------------------------------------------


class _TensorBatches:
    """Minibatches of ``(X, y)`` without replacement within an epoch, one permutation per epoch."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, batch_size: int | None, generator: torch.Generator):
        self.X, self.y, self.generator = X, y, generator
        self.n = X.shape[0]
        self.batch_size = self.n if batch_size is None else min(batch_size, self.n)
        self.order, self.position = None, self.n

    def __call__(self):
        if self.batch_size == self.n:
            return self.X, self.y
        if self.position + self.batch_size > self.n:
            self.order = torch.randperm(self.n, generator=self.generator).to(self.X.device)
            self.position = 0
        index = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return self.X[index], self.y[index]


def _to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    return batch


def _batches_and_validation(data, batch_size, generator, device):
    """``(next_batch, validation)`` for the three kinds of ``data``."""
    if hasattr(data, "X_train") and hasattr(data, "y_train"):
        X, y = data.X_train.to(device), data.y_train.to(device)
        validation = getattr(data, "validation", None)
        return _TensorBatches(X, y, batch_size, generator), _to(validation, device)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        X, y = data[0].to(device), data[1].to(device)
        return _TensorBatches(X, y, batch_size, generator), None
    if callable(data):
        if batch_size is None:
            raise ValueError("Invalid batch_size: None; a sampler needs a batch size")
        return (lambda: _to(data(batch_size, generator), device)), _to(getattr(data, "validation", None), device)
    raise ValueError(
        f"Invalid data: {type(data).__name__}; expected a Split, a pair (X, y) of tensors, or a "
        "callable (batch_size, generator) -> batch"
    )


def _in_notebook() -> bool:
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:  # pragma: no cover
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def show_progress(progress: bool | None = None) -> bool:
    """Whether to show a progress bar: ``progress`` if given; else not under pytest, yes in a
    Jupyter notebook, yes when stderr is a terminal."""
    if progress is not None:
        return bool(progress)
    if "PYTEST_CURRENT_TEST" in os.environ:
        return False
    if _in_notebook():
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _progress_bar(total: int):
    if _in_notebook():
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    try:
        width = os.get_terminal_size(sys.stderr.fileno()).columns
    except (AttributeError, OSError, ValueError):
        width = None
    if width == 0:  # a terminal that reports no size (e.g. `script` without a tty): tqdm would draw nothing
        return tqdm(total=total, file=sys.stderr, ncols=100, nrows=24, leave=True)
    return tqdm(total=total, file=sys.stderr, dynamic_ncols=True, leave=True)


# --- the loop ------------------------------------------------------------------------------------------------------


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data,
    *,
    steps: int = 1000,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int | None = 64,
    schedule=None,
    averager=None,
    eval_every: int | None = None,
    eval_fn: Callable[[nn.Module], dict | float] | None = None,
    target: Target | tuple | None = None,
    device: torch.device | str | None = None,
    seed: int | None = 0,
    progress: bool | None = None,
) -> History:
    """Train ``model`` with ``optimizer`` on ``data`` for ``steps`` steps (see the module docstring).

    Args:
        model, optimizer: the model (moved to ``device``) and an optimizer over its parameters.
        data: a :class:`gd_lib.data.Split`, a pair ``(X, y)``, or a sampler ``(batch_size, generator) → batch``.
        steps: the number of optimizer steps.
        loss_fn: ``loss_fn(model(x), y)``; default :func:`default_loss`.
        batch_size: minibatch size; None for the full batch.
        schedule: a :mod:`gd_lib.schedules` schedule (a multiplier of each group's lr), or None.
        averager: a :mod:`gd_lib.averaging` averager, updated after each step, or None.
        eval_every: evaluate every this many steps (and at the end); None: only at the end.
        eval_fn: ``eval_fn(model) → {name: value}`` (or a number, recorded as ``"eval"``);
            default :func:`evaluate` on ``data``'s validation set, if it has one.
        target: a :class:`Target` or ``(metric, value)``: stop at the first evaluation reaching it.
        device: default :func:`gd_lib.device`.
        seed: seeds Python, numpy and torch, and the minibatch generator; None leaves them alone.
        progress: show a tqdm bar (None: automatic, see :func:`show_progress`).

    Returns:
        a :class:`History`.
    """
    check_int("steps", steps, 1)
    if batch_size is not None:
        check_int("batch_size", batch_size, 1)
    if eval_every is not None:
        check_int("eval_every", eval_every, 1)
    if isinstance(target, (tuple, list)):
        target = Target(*target)
    device = gd_lib.device() if device is None else torch.device(device)
    loss_fn = default_loss if loss_fn is None else loss_fn
    generator = (
        gd_lib.seed_everything(seed)
        if seed is not None
        else torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()).item()))
    )

    model.to(device)
    model.train()
    next_batch, validation = _batches_and_validation(data, batch_size, generator, device)
    if eval_fn is None and validation is not None:
        X_val, y_val = validation
        eval_fn = lambda m: evaluate(m, X_val, y_val, loss_fn)  # noqa: E731
    scheduler = ScheduleLR(optimizer, schedule) if schedule is not None else None

    losses, lrs, eval_steps = [], [], []
    metrics: dict[str, list[float]] = {}
    target_step, diverged = None, False
    train_time = eval_time = 0.0

    def run_eval(step: int) -> dict[str, float]:
        results = _as_metrics(eval_fn(model))
        if averager is not None:
            if averager.has_average:
                with averager.swapped(model):
                    averaged = _as_metrics(eval_fn(model))
            else:
                averaged = {name: math.nan for name in results}
            results.update({f"avg_{name}": value for name, value in averaged.items()})
        for name in list(metrics) + [k for k in results if k not in metrics]:
            metrics.setdefault(name, [math.nan] * len(eval_steps)).append(results.get(name, math.nan))
        eval_steps.append(step)
        return results

    bar = _progress_bar(steps) if show_progress(progress) else None
    smoothed = None
    try:
        for step in range(1, steps + 1):
            t0 = time.perf_counter()
            x, y = next_batch()
            calls = []

            def closure(x=x, y=y, calls=calls):
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                calls.append(loss.detach())
                return loss

            lrs.append(float(optimizer.param_groups[0]["lr"]))
            optimizer.step(closure)
            if not calls:
                raise RuntimeError(
                    f"{type(optimizer).__name__}.step(closure) did not call the closure; "
                    "train() needs optimizers that accept a closure"
                )
            loss_value = calls[0].item()  # the loss at the weights before the step
            losses.append(loss_value)
            if scheduler is not None:
                scheduler.step()
            if averager is not None:
                averager.update(model)
            train_time += time.perf_counter() - t0

            if not math.isfinite(loss_value):
                diverged = True
            last = step == steps or diverged
            results = None
            if eval_fn is not None and (last or (eval_every is not None and step % eval_every == 0)):
                t1 = time.perf_counter()
                results = run_eval(step)
                eval_time += time.perf_counter() - t1
                if target is not None and target_step is None and target.reached(results):
                    target_step = step
            if bar is not None:
                smoothed = loss_value if smoothed is None else 0.9 * smoothed + 0.1 * loss_value
                bar.update(1)
                if step % 10 == 0 or last or results:
                    postfix = {"loss": f"{smoothed:.4g}", "lr": f"{lrs[-1]:.3g}"}
                    if eval_steps:
                        postfix.update({k: f"{v[-1]:.4g}" for k, v in list(metrics.items())[:2]})
                    bar.set_postfix(postfix, refresh=False)
            if diverged or target_step is not None:
                break
    finally:
        if bar is not None:
            bar.close()

    n = len(losses)
    return History(
        step=np.arange(1, n + 1),
        loss=np.asarray(losses, dtype=np.float64),
        lr=np.asarray(lrs, dtype=np.float64),
        eval_step=np.asarray(eval_steps, dtype=np.int64),
        metrics={k: np.asarray(v, dtype=np.float64) for k, v in metrics.items()},
        target_step=target_step,
        diverged=diverged,
        train_time=train_time,
        eval_time=eval_time,
    )


def _as_metrics(result) -> dict[str, float]:
    if isinstance(result, dict):
        return {k: float(v) for k, v in result.items()}
    return {"eval": float(result)}
