r"""Grokking: a transformer memorizes modular arithmetic long before it generalizes.

Lecture 11. The task (:func:`gd_lib.data.modular_arithmetic`): all pairs
``a ∘ b mod p`` as sequences ``[a, ∘, b, =]``, a random ``train_fraction`` of
them for training and the rest for validation. A small transformer
(:class:`gd_lib.models.TinyTransformer`) trained with AdamW reaches 100%
training accuracy quickly, sits at chance on the validation pairs for a long
time, and then — with weight decay — its validation accuracy jumps to ~100%
(Power et al. 2022, Figure 1). Weight decay is what makes it happen in
reasonable time: the memorizing solution has a large norm, the generalizing
(Fourier) circuit a small one, and decay ``θ ← θ − η λ θ`` slowly trades one for
the other (Nanda et al. 2023; Liu et al. 2023).

The classic setting (full mode, :func:`grokking_config`): modular division with
``p = 97``, 50% of the pairs for training, a 2-layer transformer of width 128
with 4 heads (``≈ 4·10^5`` non-embedding parameters), AdamW with lr ``1e-3``,
``β = (0.9, 0.98)``, weight decay 1, batch 512. Quick mode shrinks ``p``, the
model and the number of steps so that a run groks in seconds on a CPU.

:func:`grokking_run` returns the accuracy curves and the two steps the lecture
compares: the first evaluation at which the training accuracy is 100%
(``memorized_step``) and the first at which the validation accuracy reaches
95% (``generalized_step``).

References:
    A. Power, Y. Burda, H. Edwards, I. Babuschkin, V. Misra. Grokking: generalization beyond
    overfitting on small algorithmic datasets. 2022.
    N. Nanda, L. Chan, T. Lieberum, J. Smith, J. Steinhardt. Progress measures for grokking via
    mechanistic interpretability. ICLR 2023.
    Z. Liu, E. Michaud, M. Tegmark. Omnigrok: grokking beyond algorithmic data. ICLR 2023.
"""
from __future__ import annotations

import functools
import math
import time

import numpy as np
import torch

import gd_lib
from gd_lib.data import modular_arithmetic
from gd_lib.models import TinyTransformer
from gd_lib.optim import AdamW
from gd_lib.train import train

__all__ = ["grokking_config", "grokking_run", "weight_decay_comparison", "first_step_reaching",
           "non_embedding_parameters", "step_flops"]

# The classic figure (Power et al. 2022; Nanda et al. 2023's optimizer settings).
FULL = dict(p=97, op="/", train_fraction=0.5, width=128, depth=2, heads=4, lr=1e-3, weight_decay=1.0,
            betas=(0.9, 0.98), batch_size=512, steps=20_000, eval_every=50)
# Quick mode: a smaller p and model, a larger lr; groks in ~1,000 full-batch steps on a CPU.
QUICK = dict(p=23, op="+", train_fraction=0.5, width=32, depth=1, heads=4, lr=3e-3, weight_decay=1.0,
             betas=(0.9, 0.98), batch_size=None, steps=2_000, eval_every=10)


def grokking_config(quick: bool | None = None, **overrides) -> dict:
    """The settings of a run: :data:`QUICK` or :data:`FULL`, updated with ``overrides``."""
    config = dict(QUICK if gd_lib.quick_mode(quick) else FULL)
    unknown = set(overrides) - set(config) - {"seed"}
    if unknown:
        raise ValueError(f"Invalid setting(s): {sorted(unknown)}; expected some of {sorted(config)}")
    config.setdefault("seed", 0)
    config.update(overrides)
    return config


def non_embedding_parameters(model: TinyTransformer) -> int:
    """Parameters of the transformer blocks and the final LayerNorm (not the embeddings or the head)."""
    return sum(p.numel() for name, p in model.named_parameters()
               if not name.startswith(("token_embedding", "position_embedding", "head")))


def step_flops(model: TinyTransformer, batch_size: int, context_length: int = 4) -> float:
    """≈ FLOPs of one training step: ``6 · parameters · tokens`` (forward 2, backward 4 per
    parameter and token; attention scores, a few percent at context 4, left out)."""
    params = sum(p.numel() for p in model.parameters())
    return 6.0 * params * batch_size * context_length


def first_step_reaching(steps, values, threshold: float):
    """The first entry of ``steps`` at which ``values >= threshold`` (None if never)."""
    hits = np.flatnonzero(np.asarray(values) >= threshold)
    return int(np.asarray(steps)[hits[0]]) if len(hits) else None


@torch.no_grad()
def _accuracy_and_loss(model, X, y, batch_size=8192):
    correct, loss = 0.0, 0.0
    for start in range(0, X.shape[0], batch_size):
        logits = model(X[start:start + batch_size])[:, -1]
        yb = y[start:start + batch_size]
        correct += (logits.argmax(-1) == yb).sum().item()
        loss += torch.nn.functional.cross_entropy(logits, yb, reduction="sum").item()
    return correct / X.shape[0], loss / X.shape[0]


def _run(config_items: tuple, stop_at: float | None, device: str) -> dict:
    config = dict(config_items)
    data = modular_arithmetic(config["p"], config["op"], config["train_fraction"], seed=config["seed"])
    data = data.to(device)
    torch.manual_seed(config["seed"])
    model = TinyTransformer(data.info["vocab_size"], 4, width=config["width"], depth=config["depth"],
                            heads=config["heads"]).to(device)
    optimizer = AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"],
                      betas=tuple(config["betas"]))
    weight_norms = []

    def eval_fn(m):
        train_acc, train_loss = _accuracy_and_loss(m, *data.train)
        val_acc, val_loss = _accuracy_and_loss(m, *data.validation)
        norm = math.sqrt(sum(float((p.detach() ** 2).sum()) for p in m.parameters()))
        weight_norms.append(norm)
        return {"train_accuracy": train_acc, "train_loss": train_loss, "val_accuracy": val_acc,
                "val_loss": val_loss, "weight_norm": norm}

    start = time.perf_counter()
    history = train(model, optimizer, data, steps=config["steps"], batch_size=config["batch_size"],
                    eval_every=config["eval_every"], eval_fn=eval_fn, seed=config["seed"], device=device,
                    target=("val_accuracy", stop_at) if stop_at is not None else None, progress=False)
    elapsed = time.perf_counter() - start
    steps = history.eval_step
    result = {name: history[name] for name in ("train_accuracy", "train_loss", "val_accuracy", "val_loss",
                                                "weight_norm")}
    result.update(
        eval_step=steps, config=config, steps_taken=history.steps_taken,
        memorized_step=first_step_reaching(steps, result["train_accuracy"], 1.0),
        generalized_step=first_step_reaching(steps, result["val_accuracy"], 0.95),
        generalized_99_step=first_step_reaching(steps, result["val_accuracy"], 0.99),
        seconds=elapsed, train_seconds=history.train_time,
        seconds_per_step=history.train_time / max(history.steps_taken, 1),
        non_embedding_parameters=non_embedding_parameters(model),
        parameters=sum(p.numel() for p in model.parameters()),
        num_train=int(data.X_train.shape[0]), num_val=int(data.X_val.shape[0]),
        chance_accuracy=1.0 / config["p"], device=str(device))
    batch = result["num_train"] if config["batch_size"] is None else min(config["batch_size"],
                                                                         result["num_train"])
    result["flops_per_step"] = step_flops(model, batch)
    if result["memorized_step"] and result["generalized_step"]:
        result["delay_ratio"] = result["generalized_step"] / result["memorized_step"]
    else:
        result["delay_ratio"] = None
    return result


@functools.lru_cache(maxsize=32)
def _cached_run(config_items: tuple, stop_at: float | None, device: str) -> dict:
    return _run(config_items, stop_at, device)


def grokking_run(quick: bool | None = None, *, stop_at: float | None = 0.99, device=None,
                 **overrides) -> dict:
    """Train a transformer on modular arithmetic and record accuracy, loss and weight norm.

    Settings: :func:`grokking_config` (``p``, ``op``, ``train_fraction``, ``width``, ``depth``,
    ``heads``, ``lr``, ``weight_decay``, ``betas``, ``batch_size`` (None: full batch),
    ``steps``, ``eval_every``, ``seed``). Training stops at the first evaluation with
    validation accuracy ``≥ stop_at`` (None: run all ``steps``). Results are cached per
    settings, so a widget that asks again for the same run gets it at once.

    Returns a dict: ``eval_step`` and, per evaluation, ``train_accuracy``, ``train_loss``,
    ``val_accuracy``, ``val_loss``, ``weight_norm``; ``memorized_step`` (first evaluation with
    100% training accuracy), ``generalized_step`` (first with ≥ 95% validation accuracy),
    ``generalized_99_step``, ``delay_ratio`` (their quotient), ``seconds``,
    ``seconds_per_step``, ``flops_per_step``, ``non_embedding_parameters``, ``config``.
    The arrays are shared with the cache: copy them before changing them.
    """
    config = grokking_config(quick, **overrides)
    device = str(gd_lib.device() if device is None else device)
    config["betas"] = tuple(config["betas"])
    return _cached_run(tuple(sorted(config.items())), stop_at, device)


def weight_decay_comparison(quick: bool | None = None, weight_decays=(0.0, 1.0), **overrides) -> dict:
    """The same run with each weight decay, all for the same number of steps (no early stop).

    Returns ``{weight_decay: grokking_run(...)}``.
    """
    return {float(wd): grokking_run(quick, stop_at=None, **{**overrides, "weight_decay": float(wd)})
            for wd in weight_decays}
