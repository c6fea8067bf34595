r"""Why Adam beats SGD on language but not on vision: heavy-tailed class imbalance.

Lecture 8 (Kunstner et al. 2024). Word frequencies follow Zipf's law: the
``r``-th most frequent word has frequency ``∝ r^{−α}``, ``α ≈ 1``. A next-token
predictor is a classifier over the vocabulary whose classes are wildly
imbalanced. Group the classes by frequency into ten *deciles*, each holding
~10% of the training examples (the first decile: a handful of very frequent
classes; the last: thousands of rare ones), and follow the training loss of
each group:

- under (S)GD the frequent groups' loss falls and the rare groups' barely
  moves: the gradient of a class's output weights is proportional to how often
  the class occurs, and the step size is capped by the frequent classes'
  curvature;
- under Adam every group's loss falls: the per-coordinate normalization gives
  every class's weights a step of similar size.

On balanced classes the effect disappears: with each optimizer at its own tuned
learning rate, the groups no longer fan out under SGD, and on the digits tuned SGD
and Adam end close together.

Three experiments, all returning per-group loss curves:

- :func:`zipf_linear_comparison`: a linear softmax model on
  :func:`gd_lib.data.zipf_classification` data (features with a common offset,
  as the non-negative features a network's last layer sees);
- :func:`language_model_comparison`: a one-block :class:`gd_lib.models.TinyTransformer`
  on the standard-library corpus;
- :func:`balanced_comparison`: the same linear model on the digits.

Learning rates are tuned on a grid for each optimizer and each task (best final training
loss): a control with balanced classes gets its own tuning, never the heavy-tailed task's. The linear
models carry a small L2 penalty (``λ = 10⁻³``, the same objective for both optimizers), so each
problem has one minimizer with a positive loss and "how close does each optimizer get in the
same number of steps" is a fair question.

Reference: F. Kunstner, R. Yadav, A. Milligan, M. Schmidt, A. Bietti. Heavy-tailed class
imbalance and why Adam outperforms gradient descent on language models. NeurIPS 2024.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import gd_lib
from gd_lib.data import load_digits, stdlib_corpus, zipf_classification
from gd_lib.models import TinyTransformer
from gd_lib.optim import SGD, Adam

__all__ = [
    "token_frequencies",
    "fit_zipf_exponent",
    "frequency_groups",
    "group_losses",
    "compare_optimizers",
    "loss_decrease",
    "zipf_linear_comparison",
    "language_model_comparison",
    "balanced_comparison",
]


def token_frequencies(quick: bool | None = None) -> dict:
    """Token counts of the standard-library corpus by rank (every token type), and the fitted Zipf exponent.

    Returns ``{"ranks", "counts", "exponent", "num_tokens", "num_types"}``.
    """
    quick = gd_lib.quick_mode(quick)
    corpus = stdlib_corpus("word", max_files=40 if quick else None)
    _, counts = corpus.frequency_table()
    counts = counts.numpy()
    ranks = np.arange(1, len(counts) + 1)
    return {
        "ranks": ranks,
        "counts": counts,
        "exponent": fit_zipf_exponent(counts),
        "num_tokens": int(counts.sum()),
        "num_types": len(counts),
    }


def fit_zipf_exponent(counts, max_rank: int = 1000) -> float:
    """``α`` of ``count(r) ∝ r^{−α}``: least squares on ``log count`` against ``log r`` for ranks ``1..max_rank``."""
    counts = np.asarray(counts, dtype=float)[:max_rank]
    ranks = np.arange(1, len(counts) + 1)
    slope, _ = np.polyfit(np.log(ranks), np.log(counts), 1)
    return float(-slope)


def frequency_groups(counts, num_groups: int = 10) -> np.ndarray:
    """Assign each class to one of ``num_groups`` frequency groups holding ~equal shares of the data.

    Classes sorted by count (most frequent first); class ``k`` goes to group
    ``⌊G · (examples in more frequent classes) / (all examples)⌋``. Group 0 has the most
    frequent classes, group ``G − 1`` the rarest. Returns an int array, one entry per class.
    """
    counts = np.asarray(counts, dtype=float)
    order = np.argsort(-counts, kind="stable")
    before = np.cumsum(counts[order]) - counts[order]
    groups = np.empty(len(counts), dtype=np.int64)
    groups[order] = np.minimum((num_groups * before / counts.sum()).astype(np.int64), num_groups - 1)
    return groups


def group_losses(
    per_example_loss: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, num_groups: int
) -> np.ndarray:
    """The mean loss of the examples in each group (NaN for an empty group)."""
    g = groups[labels]
    totals = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, g, per_example_loss.double())
    sizes = torch.bincount(g, minlength=num_groups).double()
    return (totals / sizes).numpy()


def compare_optimizers(
    make_model,
    batches,
    eval_batch,
    groups: np.ndarray,
    *,
    lrs: dict,
    steps: int,
    weight_decay: float = 0.0,
    num_evals: int = 10,
    seed: int = 0,
    device=None,
) -> dict:
    """Train a fresh ``make_model()`` with each optimizer and lr; keep each optimizer's best lr.

    ``batches(step) → (x, y)`` gives the minibatch of each step (the same for every run);
    ``eval_batch = (x, y)`` is where the per-group losses are measured; ``lrs`` is
    ``{"SGD": [...], "Adam": [...]}``. The best lr minimizes the final mean loss on ``eval_batch``.
    ``weight_decay`` is an L2 penalty ``(λ/2)‖θ‖²`` added to the objective (coupled, the same
    objective for both optimizers); the reported losses are the cross-entropy alone. The models
    train on ``device`` (default :func:`gd_lib.device`).

    Returns ``{"eval_step", "groups", "group_share" (share of eval targets per group),
    name: {"lr", "group_loss" (evals × G), "loss" (evals), "tuning": {lr: final loss}}}``.
    """
    if not lrs or any(len(grid) == 0 for grid in lrs.values()):
        raise ValueError(f"Invalid lrs: {lrs!r}; expected a non-empty grid for each optimizer")
    unknown = set(lrs) - {"SGD", "Adam"}
    if unknown:
        raise ValueError(f"Invalid lrs: unknown optimizer(s) {sorted(unknown)}; expected 'SGD' and/or 'Adam'")
    device = gd_lib.device() if device is None else torch.device(device)
    num_groups = int(groups.max()) + 1
    groups_t = torch.as_tensor(groups)
    X_eval, y_eval = eval_batch
    X_eval_d = X_eval.to(device)
    eval_steps = np.unique(np.linspace(0, steps, num_evals + 1).astype(int))
    optimizers = {"SGD": SGD, "Adam": Adam}

    def evaluate(model):
        with torch.no_grad():
            logits = model(X_eval_d)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), y_eval.reshape(-1).to(device), reduction="none"
            ).cpu()
        return group_losses(loss, y_eval.reshape(-1), groups_t, num_groups), float(loss.mean())

    out = {
        "eval_step": eval_steps,
        "groups": groups,
        "group_share": np.bincount(groups[y_eval.reshape(-1).numpy()], minlength=num_groups) / y_eval.numel(),
    }
    for name, lr_grid in lrs.items():
        best = None
        tuning = {}
        for lr in lr_grid:
            torch.manual_seed(seed)
            model = make_model().to(device)
            optimizer = optimizers[name](model.parameters(), lr=lr, weight_decay=weight_decay)
            curve, totals = [], []
            for step in range(steps + 1):
                if step in eval_steps:
                    g, total = evaluate(model)
                    curve.append(g)
                    totals.append(total)
                if step == steps:
                    break
                x, y = (t.to(device) for t in batches(step))
                logits = model(x)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            final = totals[-1] if np.isfinite(totals[-1]) else np.inf
            tuning[lr] = final
            if best is None or final < best["loss"][-1]:
                best = {"lr": lr, "group_loss": np.asarray(curve), "loss": np.asarray(totals)}
        best["tuning"] = tuning
        out[name] = best
    return out


def loss_decrease(result: dict, group: int = -1) -> dict:
    """How much each optimizer lowered one group's loss (default the rarest): ``{name: first − last}``."""
    return {
        name: float(result[name]["group_loss"][0, group] - result[name]["group_loss"][-1, group])
        for name in ("SGD", "Adam")
        if name in result
    }


def _minibatches(X, y, batch_size, seed):
    generator = torch.Generator().manual_seed(seed)
    cache = {}

    def batches(step):
        if step not in cache:
            index = torch.randint(0, X.shape[0], (batch_size,), generator=generator)
            cache[step] = (X[index], y[index])
        return cache[step]

    return batches


def zipf_linear_comparison(
    quick: bool | None = None,
    *,
    exponent: float = 1.0,
    num_classes: int | None = None,
    num_samples: int | None = None,
    offset: float = 2.0,
    steps: int | None = None,
    batch_size: int = 128,
    lrs: dict | None = None,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> dict:
    """A linear softmax model on Zipf-distributed classes, SGD vs Adam (per-group training loss).

    Features ``x = μ_y + ε + offset · 1`` (:func:`gd_lib.data.zipf_classification`, 32 dims,
    plus a common offset: a network's last layer sees features with a large common mean,
    which gives the frequent classes a large curvature and caps SGD's step). ``exponent=0``
    is the control: the same task with balanced classes. See :func:`compare_optimizers`.
    """
    quick = gd_lib.quick_mode(quick)
    num_classes = (500 if quick else 2000) if num_classes is None else num_classes
    num_samples = (5000 if quick else 50_000) if num_samples is None else num_samples
    steps = gd_lib.step_budget(300, 2000, quick, minimum=10) if steps is None else steps
    lrs = lrs or {"SGD": [0.3, 1.0, 3.0], "Adam": [0.01, 0.03, 0.1]}
    data = zipf_classification(num_classes, num_samples, exponent, dim=32, seed=seed, val_fraction=0.2)
    X, y = data.X_train + offset, data.y_train
    groups = frequency_groups(np.bincount(y.numpy(), minlength=num_classes))
    out = compare_optimizers(
        lambda: nn.Linear(32, num_classes),
        _minibatches(X, y, batch_size, seed),
        (X, y),
        groups,
        lrs=lrs,
        steps=steps,
        weight_decay=weight_decay,
        seed=seed,
    )
    out["num_classes"] = num_classes
    return out


def balanced_comparison(
    quick: bool | None = None,
    *,
    steps: int | None = None,
    batch_size: int = 128,
    lrs: dict | None = None,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> dict:
    """The same comparison on the digits (10 balanced classes, each its own group), linear model."""
    quick = gd_lib.quick_mode(quick)
    steps = gd_lib.step_budget(300, 2000, quick, minimum=10) if steps is None else steps
    lrs = lrs or {"SGD": [0.3, 1.0, 3.0], "Adam": [0.01, 0.03, 0.1]}
    data = load_digits()
    X, y = data.train
    groups = frequency_groups(np.bincount(y.numpy(), minlength=10))
    return compare_optimizers(
        lambda: nn.Linear(64, 10),
        _minibatches(X, y, batch_size, seed),
        (X, y),
        groups,
        lrs=lrs,
        steps=steps,
        weight_decay=weight_decay,
        seed=seed,
    )


def language_model_comparison(
    quick: bool | None = None,
    *,
    steps: int | None = None,
    lrs: dict | None = None,
    context_length: int = 16,
    batch_size: int = 32,
    seed: int = 0,
) -> dict:
    """A one-block transformer language model on the standard-library corpus, SGD vs Adam.

    Groups: the vocabulary's frequency deciles on the training tokens; the per-group loss is
    measured on fixed training windows. Quick mode: 40 files, width 32, 1,000 steps, one lr per
    optimizer (the best of the full-mode grid); full mode: the whole corpus, width 128, 3,000 steps,
    a grid. (At 300 quick steps neither optimizer has touched the rarest decile yet.)
    """
    quick = gd_lib.quick_mode(quick)
    corpus = stdlib_corpus("word", min_count=5 if quick else 3, max_files=40 if quick else None)
    steps = gd_lib.step_budget(1000, 3000, quick, minimum=10) if steps is None else steps
    width = 32 if quick else 128
    lrs = lrs or (
        {"SGD": [1.0], "Adam": [0.01]} if quick else {"SGD": [0.1, 0.3, 1.0, 3.0], "Adam": [1e-3, 3e-3, 1e-2]}
    )
    V = corpus.vocab_size
    groups = frequency_groups(np.bincount(corpus.train_tokens.numpy(), minlength=V))
    generator = torch.Generator().manual_seed(seed)
    eval_batch = corpus.get_batch("train", 128 if quick else 512, context_length, generator)
    cache = {}

    def batches(step):
        if step not in cache:
            cache[step] = corpus.get_batch("train", batch_size, context_length, generator)
        return cache[step]

    out = compare_optimizers(
        lambda: TinyTransformer(V, context_length, width=width, depth=1, heads=4),
        batches,
        eval_batch,
        groups,
        lrs=lrs,
        steps=steps,
        seed=seed,
    )
    out["vocab_size"] = V
    return out
