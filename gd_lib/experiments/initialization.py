r"""Initialization: symmetry breaking, and keeping the signal alive through depth.

Lecture 9.

**Symmetry.** If every weight of a layer starts equal (``init="constant"``),
every hidden unit of the layer computes the same function, receives the same
gradient, and so stays identical to the others forever: the network behaves
as if each layer had one unit (:func:`symmetry_experiment`).

**Scale.** In a ReLU net with ``h_ℓ = ReLU(W_ℓ h_{ℓ−1})`` and i.i.d. weights of
variance ``Var[W]``, the second moment of the activations obeys (He et al.
2015, eq. 10)

.. math::  E[h_ℓ^2] = \tfrac12\, n_{ℓ−1} \mathrm{Var}[W_ℓ]\; E[h_{ℓ−1}^2],

so it stays constant when ``½ n Var[W] = 1`` (Kaiming: ``Var[W] = 2/n``); with
Xavier's ``Var[W] = 2/(n_in + n_out) = 1/n`` each layer halves it, a factor
``2^{-L}`` after ``L`` layers; with a fixed ``N(0, σ²)`` it changes by
``½ n σ²`` per layer. Gradients flowing back obey the same recursion (eq. 14).
:func:`activation_statistics` measures both, layer by layer.

**Training.** He et al. (Figure 3) train a 22-layer and a 30-layer ReLU net:
at 22 layers both inits converge (Kaiming sooner), at 30 layers the Xavier net
does not learn at all. :func:`training_curves` repeats this with deep ReLU
MLPs on the digits.

**Stability.** A good init is not enough: heavy ball with step ``η`` and momentum
``μ`` is stable on a quadratic only while the curvature ``λ < 2(1+μ)/η`` (lecture 1).
A 30-layer net's top Hessian eigenvalue (its *sharpness*) rises during training
(progressive sharpening, Cohen et al. 2021); at a constant ``η = 0.01``, ``μ = 0.9``
it overshoots ``2(1+μ)/η = 380`` and the loss jumps back up (a catapult).
:func:`sharpness_during_training` measures this; :func:`training_curves` therefore
uses ``η = 0.003`` with a short warm-up and a cosine decay, which keeps the limit
above the sharpness.

References:
    K. He, X. Zhang, S. Ren, J. Sun. Delving deep into rectifiers: surpassing human-level
    performance on ImageNet classification. ICCV 2015.
    X. Glorot, Y. Bengio. Understanding the difficulty of training deep feedforward neural
    networks. AISTATS 2010.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import gd_lib
from gd_lib.curvature import sharpness
from gd_lib.data import load_digits
from gd_lib.models import MLP, DeepReLUNet
from gd_lib.optim import SGD
from gd_lib.schedules import ScheduleLR, warmup_cosine
from gd_lib.train import cross_entropy, train

__all__ = [
    "symmetry_experiment",
    "unit_spread",
    "activation_statistics",
    "predicted_second_moment",
    "training_curves",
    "sharpness_during_training",
    "relapse",
]


def unit_spread(layer: torch.nn.Linear) -> float:
    """``max_i ‖W_i − W_0‖_∞`` (and the same for the biases): 0 exactly when every unit
    (row) of the layer has the same incoming weights."""
    W = layer.weight.detach()
    spread = float((W - W[:1]).abs().max())
    if layer.bias is not None:
        b = layer.bias.detach()
        spread = max(spread, float((b - b[:1]).abs().max()))
    return spread


def symmetry_experiment(
    quick: bool | None = None,
    *,
    width: int = 32,
    depth: int = 2,
    steps: int | None = None,
    lr: float = 0.5,
    seed: int = 0,
) -> dict:
    """Train an MLP on the digits from all-equal weights and from a random init.

    Full-batch gradient descent in float64 on 512 training images. Returns, for ``"constant"`` and ``"kaiming"``:
    ``spread`` (``steps+1 × depth``: :func:`unit_spread` of each hidden layer after each step),
    ``loss`` (per step), ``final_accuracy`` (training), and ``steps``.
    """
    quick = gd_lib.quick_mode(quick)
    steps = gd_lib.step_budget(50, 500, quick) if steps is None else steps
    data = load_digits(dtype=torch.float64)
    X, y = data.X_train[:512], data.y_train[:512]
    results = {"steps": steps}
    for init in ("constant", "kaiming"):
        generator = torch.Generator().manual_seed(seed)
        model = MLP(64, [width] * depth, 10, init=init, generator=generator).double()
        optimizer = SGD(model.parameters(), lr=lr)
        hidden = model.layers[:-1]  # the layers whose rows are the hidden units
        spread, losses = [[unit_spread(layer) for layer in hidden]], []
        for _ in range(steps):
            optimizer.zero_grad()
            loss = cross_entropy(model(X), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            spread.append([unit_spread(layer) for layer in hidden])
        with torch.no_grad():
            accuracy = float((model(X).argmax(-1) == y).double().mean())
        results[init] = {"spread": np.asarray(spread), "loss": np.asarray(losses), "final_accuracy": accuracy}
    return results


def predicted_second_moment(
    init: str, depth: int, width: int, in_features: int = 64, sigma: float | None = None
) -> np.ndarray:
    r"""He et al.'s recursion ``E[h_ℓ²] = ½ n_{ℓ−1} Var[W_ℓ] E[h_{ℓ−1}²]``, relative to ``E[h_1²]``.

    Layer 1 gets the input; layers ``2..depth`` have ``n_{ℓ−1} = n_ℓ = width``, so the
    factor per layer is ``½ n Var[W]``: 1 for Kaiming, ½ for Xavier, ``½ n σ²`` for normal(σ).
    Returns ``depth`` numbers, the first equal to 1.
    """
    if init == "kaiming":
        var = (1.0 if sigma is None else sigma) ** 2 * 2.0 / width
    elif init == "xavier":
        var = (1.0 if sigma is None else sigma) ** 2 * 2.0 / (width + width)
    elif init == "normal":
        var = (0.01 if sigma is None else sigma) ** 2
    else:
        raise ValueError(f"Invalid init: {init!r}; expected 'kaiming', 'xavier' or 'normal'")
    factor = 0.5 * width * var
    return factor ** np.arange(depth, dtype=float)


def activation_statistics(
    depth: int = 30,
    init: str = "kaiming",
    sigma: float | None = None,
    *,
    width: int | None = None,
    quick: bool | None = None,
    seeds: int | None = None,
    batch_size: int = 256,
) -> dict:
    r"""Second moment of the activations and of the back-propagated gradients, per layer.

    A :class:`gd_lib.models.DeepReLUNet` (``depth`` hidden layers of ``width``, biases zero)
    on a batch of digits; the loss is the cross-entropy. For each hidden layer ℓ:
    ``activation[ℓ] = E[h_ℓ²]`` and ``gradient[ℓ] = E[(∂L/∂h_ℓ)²]`` (means over units and
    examples), averaged over ``seeds`` independently initialized nets — He et al.'s
    recursion is about the expectation over the weights.

    Returns ``{"layer" (1..depth), "activation", "gradient", "activation_ratio"
    (``activation / activation[0]``), "predicted_ratio", "init", "sigma", "width"}``.
    """
    quick = gd_lib.quick_mode(quick)
    width = (256 if quick else 1024) if width is None else width
    seeds = (8 if quick else 16) if seeds is None else seeds
    data = load_digits()
    X, y = data.X_train[:batch_size], data.y_train[:batch_size]
    activations, gradients = [], []
    for seed in range(seeds):
        generator = torch.Generator().manual_seed(seed)
        model = DeepReLUNet(64, width, depth, 10, init=init, sigma=sigma, generator=generator)
        out, hidden = model.forward_with_hidden(X)
        for h in hidden:
            h.retain_grad()
        cross_entropy(out, y).backward()
        activations.append([float((h.detach() ** 2).mean()) for h in hidden])
        gradients.append([float((h.grad**2).mean()) for h in hidden])
    activation = np.mean(activations, axis=0)
    gradient = np.mean(gradients, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = activation / activation[0]
    return {
        "layer": np.arange(1, depth + 1),
        "activation": activation,
        "gradient": gradient,
        "activation_ratio": ratio,
        "predicted_ratio": predicted_second_moment(init, depth, width, sigma=sigma),
        "init": init,
        "sigma": sigma,
        "width": width,
    }


def _schedule(kind: str | None, steps: int):
    if kind is None or kind == "constant":
        return None
    if kind == "cosine":
        # a linear warm-up over 5% of the steps, then a cosine decay to 0
        return warmup_cosine(steps, max(1, steps // 20)) if steps >= 2 else None
    raise ValueError(f"Invalid schedule: {kind!r}; expected 'cosine', 'constant' or None")


def relapse(loss) -> float:
    """How far a loss curve climbs back above its best value so far: ``max_t (ℓ_t − min_{s≤t} ℓ_s)``.

    0 for a curve that never rises; pass a smoothed curve (minibatch losses are noisy).
    """
    loss = np.asarray(loss, dtype=float)
    if loss.size == 0:
        raise ValueError("Invalid loss: an empty curve")
    return float(np.max(loss - np.minimum.accumulate(loss)))


def training_curves(
    quick: bool | None = None,
    *,
    depths=(22, 30),
    inits=("kaiming", "xavier"),
    width: int | None = None,
    steps: int | None = None,
    lr: float = 0.003,
    momentum: float = 0.9,
    schedule: str | None = "cosine",
    batch_size: int = 64,
    seed: int = 0,
) -> dict:
    """Train deep ReLU MLPs on the digits with SGD + momentum from each init (He et al. Fig. 3).

    ``schedule="cosine"`` (default): a linear warm-up over 5% of the steps, then a cosine decay
    of ``lr`` to 0; ``None``/``"constant"``: ``lr`` throughout (the setting whose 30-layer
    Kaiming run relapsed, see :func:`sharpness_during_training`).

    Returns ``{(depth, init): {"step", "loss" (per step), "smoothed_loss" (running mean over
    ~5% of the steps), "final_loss" (mean of the last 10% of the steps), "relapse"
    (:func:`relapse` of the smoothed loss), "val_accuracy"}}``.
    """
    quick = gd_lib.quick_mode(quick)
    width = (64 if quick else 256) if width is None else width
    steps = gd_lib.step_budget(400, 3000, quick, minimum=20) if steps is None else steps
    data = load_digits()
    results = {}
    for depth in depths:
        for init in inits:
            generator = torch.Generator().manual_seed(seed)
            model = DeepReLUNet(64, width, depth, 10, init=init, generator=generator)
            optimizer = SGD(model.parameters(), lr=lr, momentum=momentum)
            history = train(
                model,
                optimizer,
                data,
                steps=steps,
                batch_size=batch_size,
                seed=seed,
                schedule=_schedule(schedule, steps),
                progress=False,
            )
            window = max(1, steps // 20)
            smoothed = np.convolve(history.loss, np.ones(window) / window, mode="valid")
            tail = max(1, steps // 10)
            results[(depth, init)] = {
                "step": history.step,
                "loss": history.loss,
                "smoothed_loss": smoothed,
                "final_loss": float(np.mean(history.loss[-tail:])),
                "relapse": relapse(smoothed),
                "val_accuracy": history.final("val_accuracy"),
            }
    return results


def sharpness_during_training(
    quick: bool | None = None,
    *,
    depth: int = 30,
    width: int | None = None,
    lr: float = 0.01,
    momentum: float = 0.9,
    schedule: str | None = None,
    steps: int | None = None,
    every: int | None = None,
    batch_size: int = 64,
    eval_examples: int = 256,
    lanczos_iterations: int = 10,
    seed: int = 0,
) -> dict:
    r"""Train a Kaiming ``DeepReLUNet`` as :func:`training_curves` does and measure, every ``every``
    steps, the sharpness ``λ_max`` of the training loss (``lanczos_iterations`` Lanczos steps on the
    first ``eval_examples`` training examples), the training loss on those examples, and heavy
    ball's stability limit ``2(1 + μ)/η_t`` at the current step size (lecture 1: on a quadratic
    of curvature λ, heavy ball diverges iff ``λ > 2(1 + μ)/η``).

    Defaults: the constant ``η = 0.01`` that relapsed. Returns ``{"step", "sharpness",
    "loss", "limit", "minibatch_loss" (per step), "lr", "momentum", "schedule"}``.
    """
    quick = gd_lib.quick_mode(quick)
    width = (64 if quick else 256) if width is None else width
    steps = gd_lib.step_budget(300, 3000, quick, minimum=20) if steps is None else steps
    every = max(1, steps // 15) if every is None else every
    device = gd_lib.device()
    data = load_digits()
    X, y = data.X_train.to(device), data.y_train.to(device)
    X_eval, y_eval = X[:eval_examples], y[:eval_examples]
    model = DeepReLUNet(64, width, depth, 10, init="kaiming", generator=torch.Generator().manual_seed(seed)).to(device)
    optimizer = SGD(model.parameters(), lr=lr, momentum=momentum)
    plan = _schedule(schedule, steps)
    scheduler = ScheduleLR(optimizer, plan) if plan is not None else None
    batches = torch.Generator().manual_seed(seed)
    record = {"step": [], "sharpness": [], "loss": [], "limit": []}
    minibatch_loss = []
    for t in range(steps + 1):
        if t % every == 0 or t == steps:
            step_size = optimizer.param_groups[0]["lr"]
            record["step"].append(t)
            record["sharpness"].append(
                sharpness(model, nn.CrossEntropyLoss(), X_eval, y_eval, num_iterations=lanczos_iterations)
            )
            with torch.no_grad():
                record["loss"].append(float(cross_entropy(model(X_eval), y_eval)))
            record["limit"].append(2 * (1 + momentum) / step_size if step_size > 0 else float("inf"))
        if t == steps:
            break
        index = torch.randint(0, X.shape[0], (batch_size,), generator=batches).to(device)
        loss = cross_entropy(model(X[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        minibatch_loss.append(loss.item())
    out = {k: np.asarray(v) for k, v in record.items()}
    out.update(minibatch_loss=np.asarray(minibatch_loss), lr=lr, momentum=momentum, schedule=schedule)
    return out
