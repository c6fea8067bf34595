r"""Lecture 7: what the NanoGPT speedrun taught — AdamW against Muon on a tiny GPT.

The NanoGPT speedrun (Jordan et al., github.com/KellerJordan/modded-nanogpt)
asks how fast a GPT-2-small-sized model can reach the validation loss that
Karpathy's llm.c baseline reaches at the end of its run (3.28 on FineWeb).
Here the same game at laptop scale: a :class:`gd_lib.models.TinyTransformer`
trained as a character-level language model on the standard library's
docstrings (:func:`gd_lib.data.stdlib_corpus`), and the **target is the
validation loss that the tuned AdamW baseline reaches at the end of its
budget**. The contenders:

- ``adamw``: AdamW (β = (0.9, 0.95), no weight decay), warmup + cosine, the
  learning rate tuned over a grid;
- ``muon``: Muon on the hidden weight matrices, Adam on embeddings, gains and
  the head (:func:`gd_lib.optim.muon_param_groups`), same schedule, the Muon
  learning rate tuned over a grid;
- ``muon + speedrun recipe``: the best Muon learning rate with two of the
  speedrun's optimizer tricks that apply at this size: a trapezoidal
  schedule (no warmup, constant, then a linear cooldown over the last 40% of
  the steps) instead of the cosine, and Muon's momentum warmed up linearly
  from 0.85 to 0.95 over the first third of the run.

Each run records the validation loss every ``eval_every`` steps, the training
wall-clock (evaluation excluded, the GPU synchronised), and from those the
steps, tokens and seconds to the target.

Quick mode: 40 files, width 32, 2 blocks, context 32, batch 16, 200 steps
(a CPU, seconds per run). Full mode: the whole corpus, width 128, 4 blocks,
context 64, batch 32, 1500 steps, three-point learning-rate grids for both
optimizers (7 runs; a GPU, about 2 minutes estimated; 1–3 s per step on the
course's shared 2-core CPU, so hours there). The earlier full mode (width 256,
context 128, batch 64, 2000 steps, 9 runs) took about 15 h on one CPU thread.

The thesis's practical engineering at scale, each as a small live demonstration
(:func:`mixed_precision`, :func:`gradient_clipping`, :func:`batch_size_scaling`):

- **mixed precision**: the same AdamW run in float32 and under bfloat16
  autocast (float32 master weights), whose validation curves agree
  (Micikevicius et al. 2018; Kalamkar et al. 2019), and the rounding that makes
  the float32 master copy necessary (bfloat16 has 8 significant bits, so an
  update below 2⁻⁹ of a weight is always lost);
- **gradient clipping**: SGD with momentum at a learning rate where the
  unclipped run diverges within a few steps and the run clipped to global norm
  1 trains (Pascanu et al. 2013; Zhang et al. 2020);
- **batch-size scaling**: steps to a target loss against the batch size B,
  each B with its own tuned learning rate, on a noisy quadratic (least squares
  with label noise): the steps fall like 1/B up to the critical batch size and
  then flatten, S(B) ≈ S_min (1 + B_noise / B) (McCandlish et al. 2018; Zhang
  et al. 2019).

References:
    K. Jordan et al. modded-nanogpt: the NanoGPT speedrun, github.com/KellerJordan/modded-nanogpt, 2024–.
    K. Jordan, Y. Jin, V. Boza, J. You, F. Cesista, L. Newhouse, J. Bernstein. Muon: an optimizer for
    hidden layers in neural networks, kellerjordan.github.io/posts/muon, 2024.
    A. Karpathy. llm.c, GPT-2 (124M) reproduction, github.com/karpathy/llm.c/discussions/481, 2024.
    P. Micikevicius et al. Mixed precision training. ICLR 2018.
    D. Kalamkar et al. A study of BFLOAT16 for deep learning training. arXiv:1905.12322, 2019.
    R. Pascanu, T. Mikolov, Y. Bengio. On the difficulty of training recurrent neural networks. ICML 2013.
    J. Zhang, T. He, S. Sra, A. Jadbabaie. Why gradient clipping accelerates training. ICLR 2020.
    S. McCandlish, J. Kaplan, D. Amodei. An empirical model of large-batch training. arXiv:1812.06162, 2018.
    G. Zhang et al. Which algorithmic choices matter at which batch sizes? Insights from a noisy
    quadratic model. NeurIPS 2019.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

import gd_lib
from gd_lib import schedules
from gd_lib.data import stdlib_corpus
from gd_lib.models import TinyTransformer
from gd_lib.optim import SGD, AdamW, Muon, muon_param_groups

__all__ = [
    "SPEEDRUN_FACTS",
    "RECORDS_SOURCE",
    "SpeedrunConfig",
    "speedrun_config",
    "train_run",
    "steps_to_target",
    "adamw_vs_muon",
    "mixed_precision",
    "bfloat16_rounding",
    "gradient_clipping",
    "batch_size_scaling",
    "fit_critical_batch",
]

#: Where the records come from: the "World record history" table of the speedrun's README.
RECORDS_SOURCE = (
    "github.com/KellerJordan/modded-nanogpt, README.md, section 'World record history' "
    "(read at commit e7a55f17e08556c2ec6d1fbc4e16a54621893089, whose last record is #60 of 2026-01-16)"
)

# The NanoGPT speedrun as its README describes it. The records are a selection of rows of the README's table
# (number, time on 8x H100, description, date), chosen for this course's topics: the Muon optimizer (#3, #4),
# momentum warmup (#9), mixed precision (#10, #57), distributing Muon's work (#6, lecture 12), the batch size (#21,
# #46). The token counts in the README's text: 10B for the llm.c baseline; 0.73B for record #18 (README at commit
# 0006a9cde0c019d45fc052c0b73f81e2f7814114: "3.4 minutes ... 0.73B tokens", 1390 steps).
SPEEDRUN_FACTS = {
    "target_val_loss": 3.28,
    "dataset": "FineWeb",
    "hardware": "8x NVIDIA H100",
    "baseline": "Karpathy's llm.c GPT-2 (124M) reproduction",
    "baseline_minutes": 45,
    "baseline_tokens": 10e9,
    "records": [
        {"number": 1, "minutes": 45.0, "date": "2024-05-28", "description": "llm.c baseline (AdamW)"},
        {"number": 2, "minutes": 31.4, "date": "2024-06-06", "description": "tuned learning rate & rotary embeddings"},
        {"number": 3, "minutes": 24.9, "date": "2024-10-04", "description": "introduced the Muon optimizer"},
        {"number": 4, "minutes": 22.3, "date": "2024-10-11", "description": "Muon improvements"},
        {"number": 6, "minutes": 13.1, "date": "2024-10-18", "description": "distributed the overhead of Muon"},
        {
            "number": 9,
            "minutes": 8.2,
            "date": "2024-11-06",
            "description": "value and embedding skip connections, momentum warmup, logit softcap",
        },
        {"number": 10, "minutes": 7.8, "date": "2024-11-08", "description": "bfloat16 activations"},
        {
            "number": 18,
            "minutes": 3.4,
            "date": "2025-01-04",
            "description": "lower logit softcap from 30 to 15",
            "tokens": 0.73e9,
        },
        {"number": 21, "minutes": 2.933, "date": "2025-01-26", "description": "reduced batch size"},
        {"number": 46, "minutes": 2.203, "date": "2025-11-29", "description": "batch size schedule"},
        {
            "number": 57,
            "minutes": 1.878,
            "date": "2026-01-04",
            "description": "bfloat16 attn/mlp weights, mixed precision Muon, interweave Adam/Muon",
        },
        {
            "number": 60,
            "minutes": 1.765,
            "date": "2026-01-16",
            "description": "fused Triton kernel for softcapped multi-token prediction cross entropy",
        },
    ],
    "source": RECORDS_SOURCE,
}


@dataclass(frozen=True)
class SpeedrunConfig:
    """Model, data and budget of the lecture's speedrun."""

    max_files: int | None
    width: int
    depth: int
    heads: int
    context: int
    batch_size: int
    steps: int
    eval_every: int
    val_windows: int
    adamw_lrs: tuple[float, ...]
    muon_lrs: tuple[float, ...]
    adam_lr_in_muon: float  # Adam's lr for the embeddings, gains and head inside Muon


def _eval_every(steps: int, evaluations: int) -> int:
    """Evaluate ``evaluations`` times per run; a run shortened by ``GD_STEP_SCALE`` (a check that the full-mode
    code runs, whose numbers mean nothing) evaluates 3 times, so that evaluation does not dominate it."""
    if gd_lib.step_scale() < 1.0:
        evaluations = 3
    return max(1, math.ceil(steps / evaluations))


def speedrun_config(quick: bool | None = None) -> SpeedrunConfig:
    """Quick: a CPU-sized model, 200 steps. Full: a GPU-sized one (width 128, 4 blocks, context 64,
    batch 32), 1500 steps through :func:`gd_lib.step_budget` (so ``GD_STEP_SCALE`` shortens it),
    evaluated 30 times per run."""
    if gd_lib.quick_mode(quick):
        return SpeedrunConfig(
            max_files=40,
            width=32,
            depth=2,
            heads=4,
            context=32,
            batch_size=16,
            steps=200,
            eval_every=10,
            val_windows=64,
            adamw_lrs=(1e-3, 3e-3, 1e-2),
            muon_lrs=(0.03,),
            adam_lr_in_muon=3e-3,
        )
    steps = gd_lib.step_budget(200, 1500, quick=False)
    return SpeedrunConfig(
        max_files=None,
        width=128,
        depth=4,
        heads=4,
        context=64,
        batch_size=32,
        steps=steps,
        eval_every=_eval_every(steps, 30),
        val_windows=256,
        adamw_lrs=(1e-3, 3e-3, 1e-2),
        muon_lrs=(0.01, 0.03, 0.1),
        adam_lr_in_muon=3e-3,
    )


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_run(
    optimizer_name: str,
    lr: float,
    cfg: SpeedrunConfig,
    *,
    recipe: bool = False,
    seed: int = 0,
    corpus=None,
    precision: str = "float32",
    clip_norm: float | None = None,
    schedule: str | None = None,
) -> dict:
    """Train one tiny GPT; returns ``{"eval_step", "val_loss", "train_time" (s, at each eval),
    "train_loss", "grad_norm" (every step; the global gradient norm before clipping),
    "tokens_per_step", "optimizer", "lr", "recipe", "precision", "clip_norm"}``.

    ``optimizer_name``: ``"adamw"``, ``"muon"`` or ``"sgd"`` (momentum 0.9). ``recipe=True``
    (Muon only) uses the trapezoidal schedule and the momentum warmup of the module docstring
    instead of warmup + cosine; ``schedule="constant"`` trains at the constant ``lr`` (the
    clipping demonstration). ``precision="bfloat16"`` runs forward and backward under
    ``torch.autocast`` in bfloat16; weights, gradients and optimizer state stay float32 (the
    master copy), and the run also reports ``lost_update_fraction``: ``{step: share}``, the share
    of the nonzero weight updates of the middle and of the last step that would round away if
    the weights were stored in bfloat16.
    ``clip_norm`` rescales the gradient to that global norm when it is larger
    (``torch.nn.utils.clip_grad_norm_``). Every run sees the same initial weights and
    minibatches (``seed``). A run stops at the first non-finite validation loss.
    """
    if optimizer_name not in ("adamw", "muon", "sgd"):
        raise ValueError(f"Invalid optimizer_name: {optimizer_name!r}; expected 'adamw', 'muon' or 'sgd'")
    if recipe and optimizer_name != "muon":
        raise ValueError("the speedrun recipe is for Muon (it warms up Muon's momentum)")
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"Invalid precision: {precision!r}; expected 'float32' or 'bfloat16'")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"Invalid clip_norm: {clip_norm!r}; expected a positive number or None")
    if schedule not in (None, "constant"):
        raise ValueError(f"Invalid schedule: {schedule!r}; expected None or 'constant'")
    device = gd_lib.device()
    corpus = corpus or stdlib_corpus("char", source="docstrings", max_files=cfg.max_files)
    sampler = corpus.sampler(cfg.context, max_val_windows=cfg.val_windows)
    x_val, y_val = (t.to(device) for t in sampler.validation)
    torch.manual_seed(seed)
    model = TinyTransformer(corpus.vocab_size, cfg.context, width=cfg.width, depth=cfg.depth, heads=cfg.heads).to(
        device
    )
    if optimizer_name == "adamw":
        optimizer = AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    elif optimizer_name == "sgd":
        optimizer = SGD(model.parameters(), lr=lr, momentum=0.9)
    else:
        optimizer = Muon(muon_param_groups(model), lr=lr, adam_lr=cfg.adam_lr_in_muon, adam_betas=(0.9, 0.95))
    if schedule == "constant":
        lr_schedule = schedules.Constant()
    elif recipe:
        # trapezoid: constant, then a linear cooldown over the last 40% of the steps
        lr_schedule = schedules.WarmupStableDecay(cfg.steps, decay_steps=int(0.4 * cfg.steps))
    else:
        lr_schedule = schedules.warmup_cosine(cfg.steps, max(1, cfg.steps // 20))
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    generator = torch.Generator().manual_seed(seed)
    autocast = precision == "bfloat16"
    max_norm = float("inf") if clip_norm is None else float(clip_norm)

    def forward_loss(x, y):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(x)
        return _cross_entropy(logits.float(), y)

    eval_steps, val_losses, train_times, train_losses, grad_norms = [], [], [], [], []
    lost_fraction = {}
    probe_steps = {cfg.steps // 2, cfg.steps - 1} if autocast else set()
    elapsed = 0.0
    for step in range(cfg.steps):
        # lr_t = base_lr · s(t); with the recipe, Muon's momentum 0.85 -> 0.95 over the first third
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * lr_schedule(step)
            if recipe and group.get("use_muon"):
                group["momentum"] = 0.85 + 0.10 * min(1.0, step / (cfg.steps / 3))
        x, y = (t.to(device) for t in sampler(cfg.batch_size, generator))
        _synchronize(device)
        start = time.perf_counter()
        loss = forward_loss(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # the global norm before clipping (clip_grad_norm_ returns it; max_norm = inf only measures)
        grad_norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm).detach())
        probe = step in probe_steps
        before = [p.detach().clone() for p in model.parameters()] if probe else None
        optimizer.step()
        _synchronize(device)
        elapsed += time.perf_counter() - start
        train_losses.append(loss.detach())
        if probe:
            lost_fraction[step + 1] = _lost_update_fraction(before, list(model.parameters()))
        if (step + 1) % cfg.eval_every == 0:
            model.eval()
            with torch.no_grad():
                val = forward_loss(x_val, y_val).item()
            model.train()
            eval_steps.append(step + 1)
            val_losses.append(val)
            train_times.append(elapsed)
            if not math.isfinite(val):
                break
    return {
        "optimizer": optimizer_name,
        "lr": lr,
        "recipe": recipe,
        "precision": precision,
        "clip_norm": clip_norm,
        "eval_step": np.array(eval_steps),
        "val_loss": np.array(val_losses),
        "train_time": np.array(train_times),
        "train_loss": torch.stack(train_losses).float().cpu().numpy(),
        "grad_norm": torch.stack(grad_norms).float().cpu().numpy(),
        "lost_update_fraction": lost_fraction if autocast else None,
        "tokens_per_step": cfg.batch_size * cfg.context,
    }


def _lost_update_fraction(before, after) -> float:
    """Share of the nonzero updates ``after - before`` that vanish when both are rounded to bfloat16."""
    changed = lost = 0
    for b, a in zip(before, after):
        moved = a.detach() != b
        same_in_bf16 = a.detach().bfloat16() == b.bfloat16()
        changed += int(moved.sum())
        lost += int((moved & same_in_bf16).sum())
    return lost / max(changed, 1)


def steps_to_target(run: dict, target: float) -> tuple[float, float, float]:
    """``(steps, tokens, seconds)`` at the first evaluation with ``val_loss <= target``; ``inf`` if none."""
    hits = np.flatnonzero(np.asarray(run["val_loss"]) <= target)
    if hits.size == 0:
        return math.inf, math.inf, math.inf
    i = int(hits[0])
    steps = int(run["eval_step"][i])
    return float(steps), float(steps * run["tokens_per_step"]), float(run["train_time"][i])


def adamw_vs_muon(quick: bool | None = None) -> dict:
    """The lecture's race: AdamW and Muon over their learning-rate grids, then Muon with the recipe.

    The target is the best final validation loss of the AdamW grid. Returns
    ``{"config", "target", "runs": [train_run results, each with "to_target":
    (steps, tokens, seconds)], "best": {"adamw": run, "muon": run, "muon + speedrun recipe": run},
    "summary": {name: {"lr", "final_val_loss", "steps", "tokens", "seconds", "seconds_per_step"}}}``.
    """
    cfg = speedrun_config(quick)
    corpus = stdlib_corpus("char", source="docstrings", max_files=cfg.max_files)
    runs = [train_run("adamw", lr, cfg, corpus=corpus) for lr in cfg.adamw_lrs]
    runs += [train_run("muon", lr, cfg, corpus=corpus) for lr in cfg.muon_lrs]

    def final(run):
        return run["val_loss"][-1] if len(run["val_loss"]) == cfg.steps // cfg.eval_every else math.inf

    best_adamw = min((r for r in runs if r["optimizer"] == "adamw"), key=final)
    best_muon = min((r for r in runs if r["optimizer"] == "muon"), key=final)
    recipe = train_run("muon", best_muon["lr"], cfg, recipe=True, corpus=corpus)
    runs.append(recipe)
    target = float(final(best_adamw))
    for run in runs:
        run["to_target"] = steps_to_target(run, target)
    best = {"adamw": best_adamw, "muon": best_muon, "muon + speedrun recipe": recipe}
    summary = {}
    for name, run in best.items():
        steps, tokens, seconds = run["to_target"]
        summary[name] = {
            "lr": run["lr"],
            "final_val_loss": float(run["val_loss"][-1]),
            "steps": steps,
            "tokens": tokens,
            "seconds": seconds,
            "seconds_per_step": float(run["train_time"][-1] / run["eval_step"][-1]),
        }
    return {
        "config": cfg,
        "target": target,
        "runs": runs,
        "best": best,
        "summary": summary,
        "vocab_size": corpus.vocab_size,
        "num_characters": corpus.info["num_characters"],
    }


def mixed_precision(quick: bool | None = None, lr: float = 3e-3, corpus=None) -> dict:
    """AdamW at ``lr`` in float32 and under bfloat16 autocast (float32 master weights), same data and init.

    The lecture's model with warmup + cosine over 60 steps in quick mode (600 in full mode,
    through :func:`gd_lib.step_budget`), evaluated 10 times. Returns ``{"float32": run,
    "bfloat16": run, "max_abs_diff": largest |difference| of the two validation curves,
    "final_diff": bfloat16's final validation loss minus float32's, "lost_update_fraction":
    the bfloat16 run's (middle and last step)}``.
    """
    base = speedrun_config(quick)
    steps = gd_lib.step_budget(60, 600, quick, minimum=2)
    cfg = dataclasses.replace(base, steps=steps, eval_every=_eval_every(steps, 10))
    corpus = corpus or stdlib_corpus("char", source="docstrings", max_files=cfg.max_files)
    full = train_run("adamw", lr, cfg, corpus=corpus)
    half = train_run("adamw", lr, cfg, corpus=corpus, precision="bfloat16")
    n = min(len(full["val_loss"]), len(half["val_loss"]))
    diff = np.abs(full["val_loss"][:n] - half["val_loss"][:n])
    return {
        "config": cfg,
        "float32": full,
        "bfloat16": half,
        "max_abs_diff": float(diff.max()) if n else math.inf,
        "final_diff": float(half["val_loss"][-1] - full["val_loss"][-1]),
        "lost_update_fraction": half["lost_update_fraction"],
    }


def bfloat16_rounding(additions: int = 1000, increment: float = 1e-3) -> dict:
    """Why the master weights stay float32: bfloat16 keeps 8 significant bits.

    Returns the machine epsilons (spacing of the numbers just above 1) of bfloat16, float16 and
    float32; whether ``1 + 2⁻⁸`` and ``1 + 2⁻⁷`` differ from 1 in bfloat16 (round to nearest:
    the first is a tie and rounds to the even 1); and ``accumulated``: 1 plus ``additions``
    increments of ``increment`` summed in each dtype (exactly 2 for the defaults; bfloat16
    stays at 1, every increment being below half its spacing at 1).
    """
    one = torch.ones((), dtype=torch.bfloat16)
    accumulated = {}
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        w = torch.ones((), dtype=dtype)
        for _ in range(additions):
            w = w + torch.tensor(increment, dtype=dtype)
        accumulated[str(dtype).removeprefix("torch.")] = float(w)
    return {
        "eps": {
            str(d).removeprefix("torch."): torch.finfo(d).eps for d in (torch.bfloat16, torch.float16, torch.float32)
        },
        "one_plus_2^-8_is_one": bool(one + 2.0**-8 == one),
        "one_plus_2^-7_is_one": bool(one + 2.0**-7 == one),
        "accumulated": accumulated,
        "exact": 1.0 + additions * increment,
    }


def gradient_clipping(
    quick: bool | None = None, lr: float = 1.0, clip_norm: float = 1.0, stable_lr: float = 0.3, corpus=None
) -> dict:
    """SGD (momentum 0.9, constant lr) on the lecture's model: ``lr`` without and with clipping to
    global norm ``clip_norm``, and ``stable_lr`` without clipping (a learning rate that trains unclipped).

    Quick mode: 100 steps (full: 300 through :func:`gd_lib.step_budget`), evaluated 10 times.
    Returns ``{"config", "runs": {"lr, unclipped": run, "lr, clipped": run, "stable lr, unclipped": run},
    "diverged": {name: whether the run's training loss became non-finite or exceeded 3x its initial value}}``.
    """
    base = speedrun_config(quick)
    steps = gd_lib.step_budget(100, 300, quick, minimum=2)
    cfg = dataclasses.replace(base, steps=steps, eval_every=_eval_every(steps, 10))
    corpus = corpus or stdlib_corpus("char", source="docstrings", max_files=cfg.max_files)
    runs = {
        f"lr {lr:g}, unclipped": train_run("sgd", lr, cfg, corpus=corpus, schedule="constant"),
        f"lr {lr:g}, clipped to norm {clip_norm:g}": train_run(
            "sgd", lr, cfg, corpus=corpus, schedule="constant", clip_norm=clip_norm
        ),
        f"lr {stable_lr:g}, unclipped": train_run("sgd", stable_lr, cfg, corpus=corpus, schedule="constant"),
    }

    def diverged(run):
        loss = run["train_loss"]
        return bool(not np.isfinite(loss).all() or loss.max() > 3 * loss[0])

    return {
        "config": cfg,
        "lr": lr,
        "clip_norm": clip_norm,
        "stable_lr": stable_lr,
        "runs": runs,
        "diverged": {name: diverged(run) for name, run in runs.items()},
    }


def batch_size_scaling(
    quick: bool | None = None,
    *,
    dim: int = 32,
    noise: float = 1.0,
    target: float = 0.01,
    batch_sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    seed: int = 0,
) -> dict:
    """Steps to a target loss against the batch size, each batch size with its best learning rate.

    The noisy quadratic: least squares ``L(w) = ½ E (xᵀw − y)²`` with ``x ~ N(0, H)``,
    ``H = diag(1, 1/2, ..., 1/dim)``, ``y = xᵀw* + noise·ξ``, trained by minibatch SGD from
    ``w = 0``. The excess loss ``½ (w − w*)ᵀ H (w − w*)`` is computed exactly at every step; a
    run's steps to target are the first step with excess ≤ ``target``. For each batch size B
    every learning rate of a log grid (from 0.005 to 0.95·2/h_max; 24 quick, 32 full) runs on ``seeds``
    seeds at once (5 quick, 9 full); a learning rate's steps are the median over the seeds, and S(B) is the
    best learning rate's. Every loop stops at :func:`gd_lib.step_budget` (8000 steps).

    Returns ``batch_sizes``, ``steps`` (S(B), ``inf`` where no learning rate reached the target),
    ``best_lr``, ``lrs``, ``examples`` (B·S(B)), ``fit`` (:func:`fit_critical_batch`, or ``None``
    with fewer than 3 finite points) and ``theory``: the critical batch size of the noise-floor
    argument, σ² tr H / (4 ε h_max).
    """
    quick = gd_lib.quick_mode(quick)
    seeds, n_lr = (5, 24) if quick else (9, 32)
    max_steps = gd_lib.step_budget(8000, 8000, quick)
    generator = torch.Generator().manual_seed(seed)
    h = 1.0 / torch.arange(1, dim + 1, dtype=torch.float64)
    w_star = torch.randn(dim, generator=generator, dtype=torch.float64)
    lrs = torch.logspace(math.log10(0.005), math.log10(0.95 * 2.0 / float(h.max())), n_lr, dtype=torch.float64)
    steps, best_lr = [], []
    for batch in batch_sizes:
        w = torch.zeros(seeds, dim, n_lr, dtype=torch.float64)
        hit = torch.full((seeds, n_lr), math.inf, dtype=torch.float64)
        found = math.inf, math.nan
        for t in range(1, max_steps + 1):
            x = torch.randn(seeds, batch, dim, generator=generator, dtype=torch.float64) * h.sqrt()
            y = x @ w_star + noise * torch.randn(seeds, batch, generator=generator, dtype=torch.float64)
            residual = x @ w - y[..., None]  # (seeds, B, lrs)
            w = w - lrs * (x.transpose(1, 2) @ residual) / batch  # SGD on every (seed, lr) at once
            excess = 0.5 * (h[None, :, None] * (w - w_star[None, :, None]) ** 2).sum(1)
            hit[(excess <= target) & torch.isinf(hit)] = t
            median = hit.median(0).values  # odd number of seeds: finite once most seeds arrived
            if torch.isfinite(median).any():
                # medians only grow from here: the first learning rate to get one is the best (ties: smallest lr)
                i = int(torch.argmin(median))
                found = float(median[i]), float(lrs[i])
                break
        steps.append(found[0])
        best_lr.append(found[1])
    steps_arr = np.array(steps)
    batches = np.array(batch_sizes, dtype=float)
    finite = np.isfinite(steps_arr)
    fit = fit_critical_batch(batches[finite], steps_arr[finite]) if finite.sum() >= 3 else None
    return {
        "batch_sizes": batches,
        "steps": steps_arr,
        "best_lr": np.array(best_lr),
        "lrs": lrs.numpy(),
        "examples": batches * steps_arr,
        "fit": fit,
        "seeds": seeds,
        "max_steps": max_steps,
        "settings": dict(dim=dim, noise=noise, target=target),
        "theory": noise**2 * float(h.sum()) / (4 * target * float(h.max())),
    }


def fit_critical_batch(batch_sizes, steps) -> dict:
    """Fit McCandlish et al.'s ``S(B) = S_min (1 + B_noise / B)`` to measured steps, minimising relative error.

    ``S = a + c/B`` is linear in ``(a, c)``; dividing each row by the measured ``S`` makes the
    residuals relative. Returns ``s_min = a``, ``b_noise = c / a`` and ``max_rel_error`` of the fit.
    """
    batch_sizes = np.asarray(batch_sizes, dtype=float)
    steps = np.asarray(steps, dtype=float)
    if batch_sizes.shape != steps.shape or batch_sizes.size < 2 or not np.isfinite(steps).all():
        raise ValueError("expected two equally long arrays of at least 2 finite values")
    design = np.stack([1.0 / steps, 1.0 / (batch_sizes * steps)], axis=1)
    (a, c), *_ = np.linalg.lstsq(design, np.ones_like(steps), rcond=None)
    model = a + c / batch_sizes
    return {"s_min": float(a), "b_noise": float(c / a), "max_rel_error": float(np.max(np.abs(model / steps - 1)))}
