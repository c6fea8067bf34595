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
(a CPU, seconds per run). Full mode: the whole corpus, width 256, 4 blocks,
context 128, batch 64, 2000 steps, larger learning-rate grids (a GPU).

References:
    K. Jordan et al. modded-nanogpt: the NanoGPT speedrun, github.com/KellerJordan/modded-nanogpt, 2024–.
    K. Jordan, Y. Jin, V. Boza, J. You, F. Cesista, L. Newhouse, J. Bernstein. Muon: an optimizer for
    hidden layers in neural networks, kellerjordan.github.io/posts/muon, 2024.
    A. Karpathy. llm.c, GPT-2 (124M) reproduction, github.com/karpathy/llm.c/discussions/481, 2024.
"""
from __future__ import annotations

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
from gd_lib.optim import AdamW, Muon, muon_param_groups

__all__ = ["SPEEDRUN_FACTS", "SpeedrunConfig", "speedrun_config", "train_run", "steps_to_target",
           "adamw_vs_muon"]

# The NanoGPT speedrun as its README describes it (github.com/KellerJordan/modded-nanogpt, README.md;
# the record figures are those of two README versions, the record keeps falling).
SPEEDRUN_FACTS = {
    "target_val_loss": 3.28, "dataset": "FineWeb", "hardware": "8x NVIDIA H100",
    "baseline": "Karpathy's llm.c GPT-2 (124M) reproduction", "baseline_minutes": 45, "baseline_tokens": 10e9,
    "records": [{"seconds": 90, "tokens": 400e6}, {"seconds": 40, "tokens": 330e6}],
    "source": "github.com/KellerJordan/modded-nanogpt, README.md",
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


def speedrun_config(quick: bool | None = None) -> SpeedrunConfig:
    if gd_lib.quick_mode(quick):
        return SpeedrunConfig(max_files=40, width=32, depth=2, heads=4, context=32, batch_size=16, steps=200,
                              eval_every=10, val_windows=64, adamw_lrs=(1e-3, 3e-3, 1e-2), muon_lrs=(0.03,),
                              adam_lr_in_muon=3e-3)
    return SpeedrunConfig(max_files=None, width=256, depth=4, heads=4, context=128, batch_size=64, steps=2000,
                          eval_every=50, val_windows=512, adamw_lrs=(1e-3, 2e-3, 4e-3, 8e-3),
                          muon_lrs=(0.01, 0.02, 0.04, 0.08), adam_lr_in_muon=3e-3)


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_run(optimizer_name: str, lr: float, cfg: SpeedrunConfig, *, recipe: bool = False,
              seed: int = 0, corpus=None) -> dict:
    """Train one tiny GPT; returns ``{"eval_step", "val_loss", "train_time" (s, at each eval),
    "tokens_per_step", "optimizer", "lr", "recipe"}``.

    ``optimizer_name``: ``"adamw"`` or ``"muon"``. ``recipe=True`` (Muon only) uses the
    trapezoidal schedule and the momentum warmup of the module docstring instead of
    warmup + cosine. Every run sees the same initial weights and minibatches (``seed``).
    """
    if optimizer_name not in ("adamw", "muon"):
        raise ValueError(f"Invalid optimizer_name: {optimizer_name!r}; expected 'adamw' or 'muon'")
    if recipe and optimizer_name != "muon":
        raise ValueError("the speedrun recipe is for Muon (it warms up Muon's momentum)")
    device = gd_lib.device()
    corpus = corpus or stdlib_corpus("char", source="docstrings", max_files=cfg.max_files)
    sampler = corpus.sampler(cfg.context, max_val_windows=cfg.val_windows)
    x_val, y_val = (t.to(device) for t in sampler.validation)
    torch.manual_seed(seed)
    model = TinyTransformer(corpus.vocab_size, cfg.context, width=cfg.width, depth=cfg.depth,
                            heads=cfg.heads).to(device)
    if optimizer_name == "adamw":
        optimizer = AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    else:
        optimizer = Muon(muon_param_groups(model), lr=lr, adam_lr=cfg.adam_lr_in_muon, adam_betas=(0.9, 0.95))
    if recipe:
        # trapezoid: constant, then a linear cooldown over the last 40% of the steps
        schedule = schedules.WarmupStableDecay(cfg.steps, decay_steps=int(0.4 * cfg.steps))
    else:
        schedule = schedules.warmup_cosine(cfg.steps, max(1, cfg.steps // 20))
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    generator = torch.Generator().manual_seed(seed)

    eval_steps, val_losses, train_times = [], [], []
    elapsed = 0.0
    for step in range(cfg.steps):
        # lr_t = base_lr · s(t); with the recipe, Muon's momentum 0.85 -> 0.95 over the first third
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * schedule(step)
            if recipe and group.get("use_muon"):
                group["momentum"] = 0.85 + 0.10 * min(1.0, step / (cfg.steps / 3))
        x, y = (t.to(device) for t in sampler(cfg.batch_size, generator))
        _synchronize(device)
        start = time.perf_counter()
        loss = _cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _synchronize(device)
        elapsed += time.perf_counter() - start
        if (step + 1) % cfg.eval_every == 0:
            model.eval()
            with torch.no_grad():
                val = _cross_entropy(model(x_val), y_val).item()
            model.train()
            eval_steps.append(step + 1)
            val_losses.append(val)
            train_times.append(elapsed)
            if not math.isfinite(val):
                break
    return {"optimizer": optimizer_name, "lr": lr, "recipe": recipe, "eval_step": np.array(eval_steps),
            "val_loss": np.array(val_losses), "train_time": np.array(train_times),
            "tokens_per_step": cfg.batch_size * cfg.context}


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
        summary[name] = {"lr": run["lr"], "final_val_loss": float(run["val_loss"][-1]), "steps": steps,
                         "tokens": tokens, "seconds": seconds,
                         "seconds_per_step": float(run["train_time"][-1] / run["eval_step"][-1])}
    return {"config": cfg, "target": target, "runs": runs, "best": best, "summary": summary,
            "vocab_size": corpus.vocab_size, "num_characters": corpus.info["num_characters"]}
