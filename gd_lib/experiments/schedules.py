r"""Lecture 5: learning-rate schedules, weight averaging, Schedule-Free AdamW, switching Adam to SGD.

The task, shared by every experiment: a character-level neural language
model in the style of Bengio et al. (2003) on the standard library's
docstrings (:func:`gd_lib.data.stdlib_corpus`). The previous ``K = 6``
characters are embedded (16 numbers each), concatenated and fed to an MLP
``96 → 256 → vocab``; the loss is the cross-entropy of the next character
(nats). Minibatches of 64 windows, validation on a fixed set of windows from
the held-out end of the corpus. Text is noisy: the gradient noise sets a
floor under the loss at a constant learning rate, which is exactly what
schedules and averages are about.

- :func:`lr_schedules`: AdamW (``lr = 1e-2``) under constant, warmup + cosine,
  warmup–stable–decay, cyclic (triangular) and one-cycle schedules, same
  peak learning rate, same data order.
- :func:`weight_averaging`: the constant-lr run evaluated at its raw weights,
  at an EMA of them and at LAWA (the mean of the last 5 checkpoints, one every
  20 steps), during training.
- :func:`schedule_free_vs_cosine`: warmup + cosine AdamW tuned (over a small
  learning-rate grid) separately for each of three horizons, against one run of
  Schedule-Free AdamW evaluated at the same three steps.
- :func:`adam_to_sgd_switch`: Adam for ``k`` steps, then SGD with Nesterov
  momentum for the rest, for several switch-over points ``k`` (``k = 0`` is
  pure SGD, ``k = T`` pure Adam), as in Keskar & Socher (2017); and SWATS,
  which picks the switch and SGD's learning rate itself.

Quick mode: 40 files of the corpus, ``T = 400`` steps, 2048 validation
windows. Full mode: the whole corpus, a 512-wide MLP, ``T = 5000`` steps and
16384 validation windows (a GPU, or a few minutes of CPU per run).

References:
    Y. Bengio, R. Ducharme, P. Vincent, C. Jauvin. A neural probabilistic language model. JMLR 2003.
    I. Loshchilov, F. Hutter. SGDR: stochastic gradient descent with warm restarts. ICLR 2017.
    L. Smith. Cyclical learning rates for training neural networks. WACV 2017;
    L. Smith, N. Topin. Super-convergence. 2019 (one-cycle).
    S. Hu et al. MiniCPM, 2024; A. Hägele et al. Scaling laws and compute-optimal training beyond
    fixed training durations. NeurIPS 2024 (warmup–stable–decay).
    J. Kaddour. Stop wasting my time! (LAWA), 2022; B. Polyak, A. Juditsky 1992 (averaging).
    A. Defazio et al. The road less scheduled. NeurIPS 2024 (Schedule-Free).
    N. S. Keskar, R. Socher. Improving generalization performance by switching from Adam to SGD.
    arXiv:1712.07628, 2017 (SWATS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

import gd_lib
from gd_lib import averaging, schedules
from gd_lib.data import stdlib_corpus
from gd_lib.models import MLP
from gd_lib.optim import SGD, SWATS, Adam, AdamW, AdamWScheduleFree
from gd_lib.train import evaluate, train

__all__ = [
    "CONTEXT",
    "CharTask",
    "char_task",
    "make_model",
    "lr_schedules",
    "weight_averaging",
    "schedule_free_vs_cosine",
    "adam_to_sgd_switch",
]

CONTEXT = 6  # characters of context K
EMBEDDING = 16  # numbers per character
BATCH_SIZE = 64
ADAM_LR = 1e-2  # the peak learning rate of every AdamW run unless said otherwise


@dataclass
class CharTask:
    """Windows ``x = t[s : s+K]`` (token ids) and targets ``y = t[s+K]`` of the corpus."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    vocab_size: int
    hidden: int
    steps: int
    eval_every: int


def _windows(tokens: torch.Tensor, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    n = tokens.numel() - CONTEXT
    starts = torch.arange(n if limit is None else min(n, limit))
    return tokens[starts[:, None] + torch.arange(CONTEXT)], tokens[starts + CONTEXT]


def char_task(quick: bool | None = None) -> CharTask:
    """The lecture's data, model width and step budget for quick or full mode."""
    quick = gd_lib.quick_mode(quick)
    corpus = stdlib_corpus("char", source="docstrings", max_files=40 if quick else None)
    X_train, y_train = _windows(corpus.train_tokens)
    X_val, y_val = _windows(corpus.val_tokens, 2048 if quick else 16384)
    steps = gd_lib.step_budget(400, 5000, quick)
    eval_every = 50 if quick else 250
    if not quick and steps != 5000:
        # GD_STEP_SCALE < 1 (a check that the code runs): a multiple of 80 steps, evaluated at T/4, T/2,
        # 3T/4 and T only (the horizons of the experiments), since evaluating 16384 windows dominates
        steps = 80 * math.ceil(steps / 80)
        eval_every = steps // 4
    return CharTask(
        X_train,
        y_train,
        X_val,
        y_val,
        corpus.vocab_size,
        hidden=256 if quick else 512,
        steps=steps,
        eval_every=eval_every,
    )


def make_model(task: CharTask, seed: int = 0) -> nn.Module:
    """``Embedding(vocab, 16) → flatten → MLP(96 → hidden → vocab)``, initialised from ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Embedding(task.vocab_size, EMBEDDING), nn.Flatten(), MLP(EMBEDDING * CONTEXT, [task.hidden], task.vocab_size)
    )


def _fit(
    task: CharTask,
    model: nn.Module,
    optimizer,
    steps: int,
    *,
    schedule=None,
    averager=None,
    eval_fn=None,
    seed: int = 0,
):
    """:func:`gd_lib.train.train` on the task's training windows, evaluated on its validation windows."""
    device = gd_lib.device()
    X_val, y_val = task.X_val.to(device), task.y_val.to(device)
    eval_fn = eval_fn or (lambda m: evaluate(m, X_val, y_val))
    return train(
        model,
        optimizer,
        (task.X_train, task.y_train),
        steps=steps,
        batch_size=BATCH_SIZE,
        schedule=schedule,
        averager=averager,
        eval_every=task.eval_every,
        eval_fn=eval_fn,
        device=device,
        seed=seed,
        progress=False,
    )


def _adamw(model: nn.Module, lr: float = ADAM_LR) -> AdamW:
    return AdamW(model.parameters(), lr=lr, weight_decay=0.0)


def schedule_zoo(total_steps: int) -> dict[str, schedules.Schedule]:
    """The five schedules of the lecture, as multipliers of the peak learning rate."""
    warmup = max(1, total_steps // 20)
    return {
        "constant": schedules.Constant(1.0),
        "warmup + cosine": schedules.warmup_cosine(total_steps, warmup),
        "WSD": schedules.WarmupStableDecay(total_steps, decay_steps=total_steps // 5, warmup_steps=warmup),
        "cyclic": schedules.Cyclic(step_size_up=total_steps // 8, low=0.05, high=1.0),
        "one-cycle": schedules.OneCycle(total_steps, pct_start=0.3),
    }


def lr_schedules(quick: bool | None = None) -> dict:
    """AdamW under the five schedules of :func:`schedule_zoo`, same peak lr ``1e-2``.

    Returns ``{"steps": T, "peak_lr", "multiplier": {name: η(t) for t = 0..T-1},
    "eval_step": [...], "val_loss": {name: [...]}, "final_val_loss": {name: float}}``.
    """
    task = char_task(quick)
    zoo = schedule_zoo(task.steps)
    out = {"steps": task.steps, "peak_lr": ADAM_LR, "multiplier": {}, "val_loss": {}, "final_val_loss": {}}
    for name, schedule in zoo.items():
        model = make_model(task)
        history = _fit(task, model, _adamw(model), task.steps, schedule=schedule)
        out["multiplier"][name] = schedule.values(range(task.steps))
        out["val_loss"][name] = history["val_loss"]
        out["final_val_loss"][name] = history.final("val_loss")
        out["eval_step"] = history.eval_step
    return out


def weight_averaging(
    quick: bool | None = None, *, ema_decay: float = 0.99, lawa_k: int = 5, lawa_interval: int = 20
) -> dict:
    """The constant-lr AdamW run, evaluated at its raw weights, at an EMA and at LAWA.

    Two runs with the same seed (the raw trajectories are identical; each carries
    one averager). Returns ``{"eval_step", "raw", "ema", "lawa"}`` (validation
    losses at each evaluation; NaN before LAWA's queue is full) plus the settings.
    """
    task = char_task(quick)
    out = {"ema_decay": ema_decay, "lawa_k": lawa_k, "lawa_interval": lawa_interval}
    for name, make in [
        ("ema", lambda m: averaging.EMA(m, ema_decay)),
        ("lawa", lambda m: averaging.LAWA(m, lawa_k, interval=lawa_interval)),
    ]:
        model = make_model(task)
        history = _fit(task, model, _adamw(model), task.steps, averager=make(model))
        out["raw"] = history["val_loss"]
        out[name] = history["avg_val_loss"]
        out["eval_step"] = history.eval_step
    return out


def schedule_free_vs_cosine(quick: bool | None = None) -> dict:
    """Cosine AdamW tuned per horizon against one Schedule-Free AdamW run.

    Horizons ``T/4, T/2, T``. For each horizon and each learning rate of the grid,
    one warmup + cosine run of exactly that length (warmup 5%). Schedule-Free AdamW
    (warmup 5% of ``T``) runs once per learning rate for ``T`` steps and is evaluated,
    at its averaged weights ``x`` (``.eval()``), at every evaluation step.

    Returns ``{"horizons", "lrs", "cosine": loss[lr, horizon], "cosine_best": [per horizon],
    "sf_eval_step", "sf_val_loss": [lr, eval], "sf_at_horizons": [lr, horizon],
    "sf_best_lr_index": the lr with the best loss at T, "gap": SF (that lr) − cosine_best, per horizon}``.
    """
    quick = gd_lib.quick_mode(quick)
    task = char_task(quick)
    T = task.steps
    horizons = [T // 4, T // 2, T]
    lrs = [1e-2, 3e-2] if quick else [3e-3, 1e-2, 3e-2, 1e-1]
    cosine = np.zeros((len(lrs), len(horizons)))
    for i, lr in enumerate(lrs):
        for j, horizon in enumerate(horizons):
            model = make_model(task)
            history = _fit(
                task,
                model,
                _adamw(model, lr),
                horizon,
                schedule=schedules.warmup_cosine(horizon, max(1, horizon // 20)),
            )
            cosine[i, j] = history.final("val_loss")
    sf_curves, sf_at = [], np.zeros((len(lrs), len(horizons)))
    eval_step = None
    for i, lr in enumerate(lrs):
        model = make_model(task)
        optimizer = AdamWScheduleFree(model.parameters(), lr=lr, warmup_steps=max(1, T // 20))
        optimizer.train()
        device = gd_lib.device()
        X_val, y_val = task.X_val.to(device), task.y_val.to(device)

        def eval_at_average(m, optimizer=optimizer, X_val=X_val, y_val=y_val):
            # Schedule-Free is evaluated at x, the average: swap it in, evaluate, swap back
            optimizer.eval()
            try:
                return evaluate(m, X_val, y_val)
            finally:
                optimizer.train()

        history = _fit(task, model, optimizer, T, eval_fn=eval_at_average)
        eval_step = history.eval_step
        sf_curves.append(history["val_loss"])
        sf_at[i] = [history["val_loss"][list(eval_step).index(h)] for h in horizons]
    best = int(np.argmin(sf_at[:, -1]))
    cosine_best = cosine.min(axis=0)
    return {
        "horizons": horizons,
        "lrs": lrs,
        "cosine": cosine,
        "cosine_best": cosine_best,
        "sf_eval_step": eval_step,
        "sf_val_loss": np.array(sf_curves),
        "sf_at_horizons": sf_at,
        "sf_best_lr_index": best,
        "gap": sf_at[best] - cosine_best,
    }


def adam_to_sgd_switch(
    quick: bool | None = None, *, adam_lr: float = ADAM_LR, sgd_lr: float = 0.03, momentum: float = 0.9
) -> dict:
    """Test loss and error against the step ``k`` at which training switches from Adam to SGD.

    For each ``k`` in ``0, T/4, T/2, 3T/4, T``: Adam (constant ``adam_lr``) for ``k``
    steps, then SGD with Nesterov momentum (constant ``sgd_lr``) for ``T − k``
    steps, continuing from Adam's weights (each phase is one
    :func:`gd_lib.train.train` call; the second draws its minibatches from
    another seed). Also one SWATS run (``lr = adam_lr``), which switches each
    tensor by itself.

    Returns ``{"steps": T, "switch_steps": [k...], "val_loss": [...], "val_error":
    [...], "curves": {k: (eval_step, val_loss)}, "swats": {"val_loss", "val_error",
    "eval_step", "curve", "switch_steps": per tensor (0: never switched),
    "sgd_lr_estimates": per tensor, the bias-corrected Λ = λ/(1 − β2^k) at the end}}``.
    """
    task = char_task(quick)
    T = task.steps
    switch_steps = [0, T // 4, T // 2, 3 * T // 4, T]
    out = {
        "steps": T,
        "switch_steps": switch_steps,
        "adam_lr": adam_lr,
        "sgd_lr": sgd_lr,
        "val_loss": [],
        "val_error": [],
        "curves": {},
    }
    for k in switch_steps:
        model = make_model(task)
        steps, losses, last = [], [], None
        if k > 0:
            last = _fit(task, model, Adam(model.parameters(), lr=adam_lr), k, seed=0)
            steps.append(last.eval_step)
            losses.append(last["val_loss"])
        if k < T:
            sgd = SGD(model.parameters(), lr=sgd_lr, momentum=momentum, nesterov=True)
            last = _fit(task, model, sgd, T - k, seed=1)
            steps.append(last.eval_step + k)
            losses.append(last["val_loss"])
        out["curves"][k] = (np.concatenate(steps), np.concatenate(losses))
        out["val_loss"].append(last.final("val_loss"))
        out["val_error"].append(1.0 - last.final("val_accuracy"))
    model = make_model(task)
    swats = SWATS(model.parameters(), lr=adam_lr)
    history = _fit(task, model, swats, T)
    beta2 = swats.param_groups[0]["betas"][1]
    states = [swats.state[p] for p in model.parameters()]
    out["swats"] = {
        "val_loss": history.final("val_loss"),
        "val_error": 1.0 - history.final("val_accuracy"),
        "eval_step": history.eval_step,
        "curve": history["val_loss"],
        "switch_steps": [int(s["switch_step"]) for s in states],
        "sgd_lr_estimates": [s["lambda"] / (1 - beta2 ** s["step"]) for s in states],
    }
    return out
