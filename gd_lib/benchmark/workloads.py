"""Mini workloads: AlgoPerf's structure at laptop scale.

Each workload fixes a model, a data set, a validation metric with a target,
a step budget and an evaluation interval; the training algorithm (the
submission) is the only thing that varies. As in AlgoPerf, every base
workload has a held-out *variant* (a changed activation, width, weight tying
or task) that a submission must also handle: a submission that reaches the
base target but not the variant's is scored as not reaching the base.

Budgets are in steps (``quick_steps`` for ``--quick``, ``steps`` otherwise);
targets were set so that a reasonably tuned AdamW reaches them inside the
quick budget on a CPU. All data come from :mod:`gd_lib.data` (offline).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from gd_lib.data import load_digits, modular_arithmetic, stdlib_corpus
from gd_lib.models import MLP, SmallCNN, TinyTransformer


@dataclass
class Problem:
    """One instantiated workload: a model, how to draw a training batch, the loss, the metric."""

    model: nn.Module
    train_batch: Callable[[int], tuple]
    loss: Callable[[nn.Module, tuple], torch.Tensor]
    evaluate: Callable[[nn.Module], float]


@dataclass(frozen=True)
class MiniWorkload:
    name: str
    direction: str  # "max" (accuracy) or "min" (loss)
    target: float
    metric: str
    quick_steps: int
    full_steps: int
    eval_every: int
    builder: Callable[..., Problem]
    base_workload: str | None = None
    description: str = ""

    def steps(self, quick: bool) -> int:
        """The step budget: ``quick_steps``, or ``full_steps`` scaled by ``GD_STEP_SCALE``
        (:func:`gd_lib.step_budget`; at least two evaluations)."""
        import gd_lib

        return gd_lib.step_budget(self.quick_steps, self.full_steps, quick, minimum=2 * self.eval_every)

    def target_reached(self, metric: float) -> bool:
        if metric != metric:  # NaN
            return False
        return metric >= self.target if self.direction == "max" else metric <= self.target

    def make(self, seed: int, device: torch.device, quick: bool) -> Problem:
        return self.builder(seed=seed, device=torch.device(device), quick=quick)


# --- classification on digits ----------------------------------------------------------------


@lru_cache(maxsize=4)
def _digits(images: bool):
    return load_digits(images=images, seed=0)


def _classification(model: nn.Module, images: bool, batch_size: int, seed: int, device: torch.device) -> Problem:
    split = _digits(images).to(device)
    gen = torch.Generator().manual_seed(seed)
    n = split.X_train.shape[0]
    model = model.to(device)

    def train_batch(step: int):
        idx = torch.randint(0, n, (batch_size,), generator=gen).to(device)
        return split.X_train[idx], split.y_train[idx]

    def loss(m, batch):
        x, y = batch
        return F.cross_entropy(m(x), y)

    def evaluate(m) -> float:
        return float((m(split.X_val).argmax(-1) == split.y_val).float().mean())

    return Problem(model, train_batch, loss, evaluate)


def _mlp_digits(activation: str):
    def build(seed, device, quick):
        torch.manual_seed(seed)
        return _classification(MLP(64, [128, 128], 10, activation=activation), False, 64, seed, device)

    return build


def _cnn_digits(channels: int):
    def build(seed, device, quick):
        torch.manual_seed(seed)
        return _classification(SmallCNN(channels=channels, hidden=64), True, 64, seed, device)

    return build


# --- language modelling on the standard library's text ---------------------------------------


@lru_cache(maxsize=2)
def _corpus(max_files: int):
    return stdlib_corpus("char", source="docstrings", max_files=max_files)


def _lm(tie_weights: bool, width: int):
    def build(seed, device, quick):
        torch.manual_seed(seed)
        corpus = _corpus(40 if quick else 400)
        context, batch_size = (32, 16) if quick else (128, 64)
        model = TinyTransformer(corpus.vocab_size, context, width=width, depth=2, heads=4, tie_weights=tie_weights).to(
            device
        )
        sampler = corpus.sampler(context, max_val_windows=64 if quick else 512)
        gen = torch.Generator().manual_seed(seed)
        x_val, y_val = (t.to(device) for t in sampler.validation)

        def train_batch(step):
            x, y = sampler(batch_size, gen)
            return x.to(device), y.to(device)

        def loss(m, batch):
            x, y = batch
            logits = m(x)
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

        def evaluate(m) -> float:
            logits = m(x_val)
            return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y_val.reshape(-1)))

        return Problem(model, train_batch, loss, evaluate)

    return build


# --- modular arithmetic with a transformer -----------------------------------------------------


def _modular(op: str, train_fraction: float, width: int):
    def build(seed, device, quick):
        torch.manual_seed(seed)
        p = 23 if quick else 97
        split = modular_arithmetic(p, op, train_fraction=train_fraction, seed=0).to(device)
        model = TinyTransformer(split.info["vocab_size"], 4, width=width, depth=1, heads=4).to(device)
        gen = torch.Generator().manual_seed(seed)
        n, batch_size = split.X_train.shape[0], 128

        def last_logits(m, x):
            return m(x)[:, -1, :]

        def train_batch(step):
            idx = torch.randint(0, n, (batch_size,), generator=gen).to(device)
            return split.X_train[idx], split.y_train[idx]

        def loss(m, batch):
            x, y = batch
            return F.cross_entropy(last_logits(m, x), y)

        def evaluate(m) -> float:
            return float((last_logits(m, split.X_val).argmax(-1) == split.y_val).float().mean())

        return Problem(model, train_batch, loss, evaluate)

    return build


WORKLOADS: dict[str, MiniWorkload] = {
    w.name: w
    for w in [
        MiniWorkload(
            "mlp_digits",
            "max",
            0.95,
            "validation accuracy",
            300,
            1500,
            25,
            _mlp_digits("relu"),
            description="MLP 64-128-128-10 (ReLU) on scikit-learn's digits",
        ),
        MiniWorkload(
            "mlp_digits_tanh",
            "max",
            0.94,
            "validation accuracy",
            300,
            1500,
            25,
            _mlp_digits("tanh"),
            base_workload="mlp_digits",
            description="variant: tanh activations",
        ),
        MiniWorkload(
            "cnn_digits",
            "max",
            0.95,
            "validation accuracy",
            300,
            1500,
            25,
            _cnn_digits(16),
            description="small CNN on 1x8x8 digit images",
        ),
        MiniWorkload(
            "cnn_digits_narrow",
            "max",
            0.93,
            "validation accuracy",
            300,
            1500,
            25,
            _cnn_digits(6),
            base_workload="cnn_digits",
            description="variant: 6 instead of 16 channels",
        ),
        MiniWorkload(
            "lm_stdlib",
            "min",
            2.6,
            "validation cross-entropy (nats/char)",
            300,
            3000,
            50,
            _lm(tie_weights=False, width=32),
            description="2-layer transformer, character LM on the standard library's docstrings",
        ),
        MiniWorkload(
            "lm_stdlib_tied",
            "min",
            2.7,
            "validation cross-entropy (nats/char)",
            300,
            3000,
            50,
            _lm(tie_weights=True, width=32),
            base_workload="lm_stdlib",
            description="variant: tied input/output embeddings",
        ),
        MiniWorkload(
            "modular_add",
            "max",
            0.85,
            "validation accuracy",
            400,
            3000,
            50,
            _modular("+", 0.8, 64),
            description="1-layer transformer on a + b mod p (p = 23 quick, 97 full), 80% train",
        ),
        MiniWorkload(
            "modular_add_wide",
            "max",
            0.75,
            "validation accuracy",
            400,
            3000,
            50,
            _modular("+", 0.8, 96),
            base_workload="modular_add",
            description="variant: width 96 instead of 64",
        ),
    ]
}


def get_workloads(names: Sequence[str] | None = None) -> list[MiniWorkload]:
    if names is None:
        return list(WORKLOADS.values())
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"Unknown workloads {unknown}; available: {', '.join(WORKLOADS)}")
    chosen = [WORKLOADS[n] for n in names]
    # a variant needs its base workload in the same run (the scoring rules couple them)
    for w in list(chosen):
        if w.base_workload and WORKLOADS[w.base_workload] not in chosen:
            chosen.insert(0, WORKLOADS[w.base_workload])
    return chosen
