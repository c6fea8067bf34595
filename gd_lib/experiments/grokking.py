r"""Grokking: a network memorizes modular arithmetic long before it generalizes.

Lecture 11. The task (:func:`gd_lib.data.modular_arithmetic`): all pairs
``a ∘ b mod p`` as sequences ``[a, ∘, b, =]``, a random ``train_fraction`` of
them for training and the rest for validation. Trained with AdamW, the network
reaches 100% training accuracy quickly, sits at chance on the validation pairs
for a long time, and then — with weight decay — its validation accuracy jumps
to ~100% (Power et al. 2022, Figure 1). Weight decay is what makes it happen
in reasonable time: the memorizing solution has a large norm, the generalizing
(Fourier) circuit a small one, and decay ``θ ← θ − η λ θ`` slowly trades one for
the other (Nanda et al. 2023; Liu et al. 2023).

Two settings (:func:`grokking_config`) of the same task (division mod 97, half of
the pairs for training) and optimizer (AdamW, ``β = (0.9, 0.98)``):

- ``setting="mlp"``, the lecture's run in both modes: one hidden layer of width 128 on
  the one-hot codes of ``a`` and ``b`` (:class:`ModularMLP`; the MLPs of Liu et al. 2022
  and Gromov 2023 grok the same way), full batch, lr ``0.1``, weight decay ``0.1``;
  1,000 steps in quick mode, 2,000 in full mode. It memorizes in ~30 steps, stays at
  chance until ~200 and generalizes by ~500–750 (seeds 0–2), while its weight norm
  falls by a third;
- ``setting="classic"``, Power et al.'s hyperparameters: a 2-block transformer of width
  128 with 4 heads (:class:`gd_lib.models.TinyTransformer`, ``≈ 4·10^5`` non-embedding
  parameters), lr ``1e-3`` after a 10-step linear warm-up, weight decay 1, batch 512, a
  budget of ``10^5`` steps, stopping at 99% validation accuracy. Full mode only: a step
  costs ~0.1–0.4 s on a CPU core. With this library's pre-LayerNorm transformer and its
  GPT-2 init (std 0.02) the run does *not* show a long plateau: measured on a CPU, 52%
  training and 4% validation accuracy at step 250, 100% and 99.4% at step 500.
  Grokking needs the weights to start (or get) large relative to the generalizing
  solution (Liu et al. 2023, "Omnigrok"; Kumar et al. 2024); the MLP gets there through
  its large learning rate (its norm more than doubles while it memorizes).

:func:`grokking_run` returns the accuracy curves, the weight norm and the steps
the lecture compares (:func:`grokking_phases`): the first evaluation at which
the training accuracy is 100% (``memorized_step``), the first at which the
validation accuracy leaves chance (``onset_step``, ≥ 10%) and the first at which
it reaches 95% (``generalized_step``).

References:
    A. Power, Y. Burda, H. Edwards, I. Babuschkin, V. Misra. Grokking: generalization beyond
    overfitting on small algorithmic datasets. 2022.
    N. Nanda, L. Chan, T. Lieberum, J. Smith, J. Steinhardt. Progress measures for grokking via
    mechanistic interpretability. ICLR 2023.
    Z. Liu, O. Kitouni, N. Nolte, E. Michaud, M. Tegmark, M. Williams. Towards understanding
    grokking: an effective theory of representation learning. NeurIPS 2022.
    Z. Liu, E. Michaud, M. Tegmark. Omnigrok: grokking beyond algorithmic data. ICLR 2023.
    A. Gromov. Grokking modular arithmetic. 2023.
    T. Kumar, B. Bordelon, S. Gershman, C. Pehlevan. Grokking as the transition from lazy to rich
    training dynamics. ICLR 2024.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np
import torch
from torch import nn

import gd_lib
from gd_lib.data import modular_arithmetic
from gd_lib.models import TinyTransformer
from gd_lib.optim import AdamW
from gd_lib.schedules import LinearWarmup
from gd_lib.train import train

__all__ = [
    "ModularMLP",
    "grokking_config",
    "grokking_run",
    "grokking_phases",
    "weight_decay_comparison",
    "first_step_reaching",
    "non_embedding_parameters",
    "step_flops",
    "make_model",
    "FULL",
    "QUICK",
    "CLASSIC",
]

# The lecture's run: one hidden layer of width 128 on one-hot inputs, full batch; memorizes in ~30 steps
# and generalizes after ~500 (measured in tests/test_experiments_grokking.py). Full mode: a longer budget.
QUICK = dict(
    model="mlp",
    p=97,
    op="/",
    train_fraction=0.5,
    width=128,
    depth=1,
    heads=4,
    lr=0.1,
    weight_decay=0.1,
    betas=(0.9, 0.98),
    batch_size=None,
    steps=1_000,
    warmup_steps=0,
    eval_every=10,
)
FULL = dict(QUICK, steps=2_000)
# Power et al. 2022's setting (AdamW, lr 1e-3 after a 10-step warm-up, wd 1, batch 512, a budget of
# 1e5 steps; Nanda et al. 2023's betas), on this library's transformer.
CLASSIC = dict(
    model="transformer",
    p=97,
    op="/",
    train_fraction=0.5,
    width=128,
    depth=2,
    heads=4,
    lr=1e-3,
    weight_decay=1.0,
    betas=(0.9, 0.98),
    batch_size=512,
    steps=100_000,
    warmup_steps=10,
    eval_every=100,
)
SETTINGS = {"mlp": (QUICK, FULL), "classic": (CLASSIC, CLASSIC)}
MODELS = ("mlp", "transformer")


class ModularMLP(nn.Module):
    r"""One hidden layer on the one-hot codes of the two operands of ``[a, ∘, b, =]``.

    .. math::  h = \mathrm{ReLU}(W_1 [e_a; e_b] + b_1), \qquad \text{logits} = W_2 h + b_2,

    with ``e_a, e_b ∈ {0, 1}^p`` one-hot, ``W_1`` of shape ``width × 2p`` and ``W_2`` of shape
    ``p × width``: ``gd_lib.models.MLP(2p, [width], p)`` applied to ``[e_a; e_b]``, with torch's
    default init (``U(±1/√fan_in)``). ``W_1 [e_a; e_b]`` is the sum of two columns of ``W_1``;
    ``W_1`` is stored transposed, one row per input symbol (``input_weight``, ``2p × width``),
    so that the sum is a cheap row lookup.
    """

    def __init__(self, p: int, width: int = 128):
        super().__init__()
        for name, value in (("p", p), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Invalid {name}: {value!r}; expected an integer >= 1")
        self.p, self.width = p, width
        bound = 1.0 / math.sqrt(2 * p)  # nn.Linear(2p, width)'s default init
        self.input_weight = nn.Parameter(torch.empty(2 * p, width).uniform_(-bound, bound))  # W_1ᵀ
        self.input_bias = nn.Parameter(torch.empty(width).uniform_(-bound, bound))  # b_1
        self.out = nn.Linear(width, p)  # W_2, b_2

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        a, b = tokens[:, 0], tokens[:, 2]
        # W_1 [e_a; e_b] + b_1 = (row a of W_1ᵀ) + (row p + b of W_1ᵀ) + b_1
        pre = (
            nn.functional.embedding(a, self.input_weight)
            + nn.functional.embedding(self.p + b, self.input_weight)
            + self.input_bias
        )
        return self.out(torch.relu(pre))


def grokking_config(quick: bool | None = None, setting: str = "mlp", **overrides) -> dict:
    """The settings of a run: ``setting`` ``"mlp"`` (:data:`QUICK` or :data:`FULL`) or
    ``"classic"`` (:data:`CLASSIC`, the same in both modes), updated with ``overrides``.

    Full mode's ``steps`` go through :func:`gd_lib.step_budget` (``GD_STEP_SCALE`` shortens
    them); an explicit ``steps=`` override is taken as it is.
    """
    if setting not in SETTINGS:
        raise ValueError(f"Invalid setting: {setting!r}; expected one of {sorted(SETTINGS)}")
    quick = gd_lib.quick_mode(quick)
    quick_base, full_base = SETTINGS[setting]
    config = dict(quick_base if quick else full_base)
    unknown = set(overrides) - set(config) - {"seed"}
    if unknown:
        raise ValueError(f"Invalid setting(s): {sorted(unknown)}; expected some of {sorted(config)}")
    config["steps"] = gd_lib.step_budget(
        quick_base["steps"], full_base["steps"], quick, minimum=full_base["eval_every"]
    )
    config.setdefault("seed", 0)
    config.update(overrides)
    if config["model"] not in MODELS:
        raise ValueError(f"Invalid model: {config['model']!r}; expected one of {MODELS}")
    return config


def make_model(config: dict) -> nn.Module:
    """The network of a run: :class:`ModularMLP` or :class:`gd_lib.models.TinyTransformer`."""
    vocab = config["p"] + 2
    if config["model"] == "mlp":
        return ModularMLP(config["p"], config["width"])
    return TinyTransformer(vocab, 4, width=config["width"], depth=config["depth"], heads=config["heads"])


def non_embedding_parameters(model: nn.Module) -> int:
    """Parameters outside the embeddings and the output head: a transformer's blocks and final
    LayerNorm; a :class:`ModularMLP` has none of either kind, so all of its parameters count."""
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if not name.startswith(("token_embedding", "position_embedding", "head"))
    )


def step_flops(model: nn.Module, batch_size: int, context_length: int = 4) -> float:
    """≈ FLOPs of one training step: ``6 · parameters · tokens`` (forward 2, backward 4 per
    parameter and token; attention scores, a few percent at context 4, left out). A
    :class:`ModularMLP` reads one "token" (the pair) per example, and its first layer touches
    two columns of ``W_1`` per example, not all ``2p``."""
    if isinstance(model, ModularMLP):
        per_example = 3 * model.width + model.out.weight.numel() + model.out.out_features
        return 6.0 * per_example * batch_size
    params = sum(p.numel() for p in model.parameters())
    return 6.0 * params * batch_size * context_length


def first_step_reaching(steps, values, threshold: float):
    """The first entry of ``steps`` at which ``values >= threshold`` (None if never)."""
    hits = np.flatnonzero(np.asarray(values) >= threshold)
    return int(np.asarray(steps)[hits[0]]) if len(hits) else None


def grokking_phases(
    eval_step, train_accuracy, val_accuracy, weight_norm, *, onset: float = 0.1, generalized: float = 0.95
) -> dict:
    """The steps and norms that describe a grokking curve.

    ``memorized_step``: first evaluation with 100% training accuracy; ``onset_step``: first with
    validation accuracy ≥ ``onset`` (it leaves chance); ``generalized_step``: first with ≥
    ``generalized``; ``val_at_memorized``; ``plateau_ratio = onset / memorized`` and
    ``rise_ratio = generalized / onset`` (on the log-step axis of the grokking figure, the
    plateau and the jump are ``log`` of these); ``stays`` (every evaluation from
    ``generalized_step`` on has validation accuracy ≥ 0.9); ``peak_norm`` (the largest weight
    norm up to the onset) and ``norm_at_generalized``. Entries that do not exist are None.
    """
    steps = np.asarray(eval_step)
    train_accuracy, val_accuracy = np.asarray(train_accuracy), np.asarray(val_accuracy)
    weight_norm = np.asarray(weight_norm)
    out = {
        "memorized_step": first_step_reaching(steps, train_accuracy, 1.0),
        "onset_step": first_step_reaching(steps, val_accuracy, onset),
        "generalized_step": first_step_reaching(steps, val_accuracy, generalized),
    }
    m, o, g = out["memorized_step"], out["onset_step"], out["generalized_step"]
    out["val_at_memorized"] = None if m is None else float(val_accuracy[steps == m][0])
    out["plateau_ratio"] = None if m is None or o is None else o / m
    out["rise_ratio"] = None if o is None or g is None else g / o
    out["stays"] = None if g is None else bool(np.all(val_accuracy[steps >= g] >= 0.9))
    out["peak_norm"] = float(weight_norm[steps <= (o if o is not None else steps[-1])].max())
    out["norm_at_generalized"] = None if g is None else float(weight_norm[steps == g][0])
    return out


@torch.no_grad()
def _accuracy_and_loss(model, X, y, batch_size=8192):
    correct, loss = 0.0, 0.0
    for start in range(0, X.shape[0], batch_size):
        logits = model(X[start : start + batch_size])
        logits = logits[:, -1] if logits.dim() == 3 else logits  # a transformer predicts at "="
        yb = y[start : start + batch_size]
        correct += (logits.argmax(-1) == yb).sum().item()
        loss += torch.nn.functional.cross_entropy(logits, yb, reduction="sum").item()
    return correct / X.shape[0], loss / X.shape[0]


def _last_position_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the prediction at "=" (a transformer's last position; an MLP's only output)."""
    return torch.nn.functional.cross_entropy(output[:, -1] if output.dim() == 3 else output, target)


def _run(config_items: tuple, device: str) -> dict:
    config = dict(config_items)
    data = modular_arithmetic(config["p"], config["op"], config["train_fraction"], seed=config["seed"])
    data = data.to(device)
    torch.manual_seed(config["seed"])
    model = make_model(config).to(device)
    optimizer = AdamW(
        model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"], betas=tuple(config["betas"])
    )
    # Power et al.: the learning rate rises linearly over the first updates
    schedule = LinearWarmup(config["warmup_steps"]) if config["warmup_steps"] else None

    def eval_fn(m):
        train_acc, train_loss = _accuracy_and_loss(m, *data.train)
        val_acc, val_loss = _accuracy_and_loss(m, *data.validation)
        norm = math.sqrt(sum(float((p.detach() ** 2).sum()) for p in m.parameters()))
        return {
            "train_accuracy": train_acc,
            "train_loss": train_loss,
            "val_accuracy": val_acc,
            "val_loss": val_loss,
            "weight_norm": norm,
        }

    stop_at = config["stop_at"]
    start = time.perf_counter()
    history = train(
        model,
        optimizer,
        data,
        steps=config["steps"],
        batch_size=config["batch_size"],
        loss_fn=_last_position_loss,
        schedule=schedule,
        eval_every=config["eval_every"],
        eval_fn=eval_fn,
        seed=config["seed"],
        device=device,
        target=("val_accuracy", stop_at) if stop_at is not None else None,
        progress=None if config["steps"] > 5000 else False,
    )
    elapsed = time.perf_counter() - start
    steps = history.eval_step
    result = {
        name: history[name] for name in ("train_accuracy", "train_loss", "val_accuracy", "val_loss", "weight_norm")
    }
    result.update(grokking_phases(steps, result["train_accuracy"], result["val_accuracy"], result["weight_norm"]))
    result.update(
        eval_step=steps,
        config=config,
        steps_taken=history.steps_taken,
        generalized_99_step=first_step_reaching(steps, result["val_accuracy"], 0.99),
        seconds=elapsed,
        train_seconds=history.train_time,
        seconds_per_step=history.train_time / max(history.steps_taken, 1),
        non_embedding_parameters=non_embedding_parameters(model),
        parameters=sum(p.numel() for p in model.parameters()),
        num_train=int(data.X_train.shape[0]),
        num_val=int(data.X_val.shape[0]),
        chance_accuracy=1.0 / config["p"],
        device=str(device),
    )
    batch = result["num_train"] if config["batch_size"] is None else min(config["batch_size"], result["num_train"])
    result["flops_per_step"] = step_flops(model, batch)
    if result["memorized_step"] and result["generalized_step"]:
        result["delay_ratio"] = result["generalized_step"] / result["memorized_step"]
    else:
        result["delay_ratio"] = None
    return result


@functools.lru_cache(maxsize=32)
def _cached_run(config_items: tuple, device: str) -> dict:
    return _run(config_items, device)


def grokking_run(
    quick: bool | None = None, *, setting: str = "mlp", stop_at: float | None | str = "auto", device=None, **overrides
) -> dict:
    """Train the network of :func:`grokking_config` on modular arithmetic; record accuracy, loss
    and weight norm at every evaluation.

    Settings: :func:`grokking_config` (``setting`` ("mlp" or "classic") and, to override it,
    ``model`` ("mlp" or "transformer"), ``p``, ``op``,
    ``train_fraction``, ``width``, ``depth`` and ``heads`` (transformer only), ``lr``,
    ``weight_decay``, ``betas``, ``batch_size`` (None: full batch), ``steps``, ``warmup_steps``,
    ``eval_every``, ``seed``). ``stop_at``: stop at the first evaluation with validation accuracy
    ``≥ stop_at``; None runs all ``steps`` (which shows that the accuracy *stays*); ``"auto"``:
    None for the MLP, 0.99 for the classic setting (a 10^5-step budget is rarely used up). Results are
    cached per settings, so a widget that asks again for the same run gets it at once.

    Returns a dict: ``eval_step`` and, per evaluation, ``train_accuracy``, ``train_loss``,
    ``val_accuracy``, ``val_loss``, ``weight_norm``; the entries of :func:`grokking_phases`
    (``memorized_step``, ``onset_step``, ``generalized_step``, ...); ``generalized_99_step``,
    ``delay_ratio`` (generalized / memorized; None when either is missing), ``steps_taken``,
    ``seconds``, ``seconds_per_step``, ``flops_per_step``, ``parameters``,
    ``non_embedding_parameters``, ``config``. The arrays are shared with the cache: copy them
    before changing them.
    """
    quick = gd_lib.quick_mode(quick)
    config = grokking_config(quick, setting, **overrides)
    if stop_at == "auto":
        stop_at = 0.99 if setting == "classic" else None
    config["stop_at"] = stop_at
    device = str(gd_lib.device() if device is None else device)
    config["betas"] = tuple(config["betas"])
    return _cached_run(tuple(sorted(config.items())), device)


def weight_decay_comparison(quick: bool | None = None, weight_decays=(0.0, None), **overrides) -> dict:
    """The MLP run with each weight decay (None: its own), all for the same number of steps (no
    early stop). Returns ``{weight_decay: grokking_run(...)}``."""
    default = grokking_config(quick)["weight_decay"]
    out = {}
    for wd in weight_decays:
        wd = default if wd is None else float(wd)
        out[wd] = grokking_run(quick, stop_at=None, **{**overrides, "weight_decay": wd})
    return out
