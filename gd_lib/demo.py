"""``make demo``: race gd_lib's optimizers on the Rosenbrock function.

    python -m gd_lib.demo --out out/demo [--steps 2000]

Every optimizer of :data:`RACE` that exists in :mod:`gd_lib.optim` starts at (-1.5, 2)
on f(x, y) = (1 - x)² + 100 (y - x²)², whose minimum 0 lies at the end of a long curved
valley at (1, 1). The demo prints a table (optimizer, learning rate, steps, final loss,
steps until the loss first drops below 1e-3) and saves the paths over the contours of
log f to ``<out>/rosenbrock_race.png``. CPU only, a few seconds.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

START = (-1.5, 2.0)
TARGET = 1e-3


def rosenbrock(xy: torch.Tensor) -> torch.Tensor:
    """f(x, y) = (1 - x)² + 100 (y - x²)²; minimum 0 at (1, 1). Works on (..., 2) tensors."""
    x, y = xy[..., 0], xy[..., 1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def rosenbrock_value_and_grad(x: float, y: float) -> tuple[float, tuple[float, float]]:
    """f(x, y) and ∇f = (-2(1 - x) - 400 x (y - x²), 200 (y - x²)) in Python floats.

    Written out for speed: on two numbers, float arithmetic beats a dozen tiny tensor ops
    or autograd by far, and the race takes thousands of steps per optimizer.
    """
    r = y - x * x
    return (1 - x) ** 2 + 100 * r * r, (-2 * (1 - x) - 400 * x * r, 200 * r)


@dataclass(frozen=True)
class Entrant:
    """One optimizer in the race: the class name in gd_lib.optim, its lr and other settings.

    The learning rates come from a coarse sweep on this problem (1e-4 · 3^k, 2000 steps,
    picking one of the best), not tuned to a decimal.
    """

    label: str
    class_name: str
    lr: float
    kwargs: dict = field(default_factory=dict)


RACE = [
    Entrant("SGD", "SGD", 1e-3),
    Entrant("SGD momentum", "SGD", 1e-3, {"momentum": 0.9}),
    Entrant("SGD Nesterov", "SGD", 1e-3, {"momentum": 0.9, "nesterov": True}),
    Entrant("Adagrad", "Adagrad", 0.7),
    Entrant("RMSprop", "RMSprop", 3e-3),
    Entrant("Adam", "Adam", 0.07),
    Entrant("AdamW", "AdamW", 0.07),
    Entrant("NAdam", "NAdam", 0.02),
    # Entries for optimizers of other issues; each runs once its class exists in gd_lib.optim.
    Entrant("Lion", "Lion", 3e-3),
    Entrant("Signum", "Signum", 3e-3),
    Entrant("Prodigy", "Prodigy", 1.0),
]


@dataclass
class RaceResult:
    label: str
    lr: float
    steps: int
    final_loss: float
    steps_to_target: int | None  # first step after which f < TARGET, or None
    path: np.ndarray  # (steps + 1, 2): the start and every iterate


def available_entrants(race: list[Entrant] = RACE) -> list[tuple[Entrant, type]]:
    """The entrants whose class exists in gd_lib.optim, with the class."""
    import gd_lib.optim as optim

    found = []
    for entrant in race:
        cls = getattr(optim, entrant.class_name, None)
        if cls is not None:
            found.append((entrant, cls))
    return found


def run_entrant(entrant: Entrant, cls: type, steps: int) -> RaceResult:
    """``steps`` optimizer steps from START in float64; records the path and the losses."""
    xy = torch.nn.Parameter(torch.tensor(START, dtype=torch.float64))
    opt = cls([xy], lr=entrant.lr, **entrant.kwargs)
    path = [xy.detach().clone()]
    losses = []  # f at the iterates 0, 1, ..., as the closure sees them

    def closure():
        value, grad = rosenbrock_value_and_grad(*xy.tolist())
        xy.grad = torch.tensor(grad, dtype=torch.float64)
        return torch.tensor(value, dtype=torch.float64)

    for _ in range(steps):
        losses.append(float(opt.step(closure)))
        path.append(xy.detach().clone())
        if not math.isfinite(losses[-1]):
            break
    losses.append(rosenbrock_value_and_grad(*xy.tolist())[0])
    # first t ≥ 1 with f(iterate t) < TARGET
    steps_to_target = next((t for t, f in enumerate(losses) if t > 0 and f < TARGET), None)
    return RaceResult(entrant.label, entrant.lr, len(path) - 1, losses[-1], steps_to_target, torch.stack(path).numpy())


def race(steps: int = 2000) -> list[RaceResult]:
    return [run_entrant(entrant, cls, steps) for entrant, cls in available_entrants()]


def format_table(results: list[RaceResult]) -> str:
    rows = [("optimizer", "lr", "steps", "final loss", f"steps to loss < {TARGET:g}")]
    for r in results:
        rows.append(
            (
                r.label,
                f"{r.lr:g}",
                str(r.steps),
                f"{r.final_loss:.3e}",
                "—" if r.steps_to_target is None else str(r.steps_to_target),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def plot_race(results: list[RaceResult], path: Path) -> Path:
    """Contours of log10 f with every optimizer's path; saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.linspace(-2.0, 2.0, 300)
    ys = np.linspace(-1.0, 3.0, 300)
    grid = torch.from_numpy(np.stack(np.meshgrid(xs, ys), axis=-1))
    levels = np.log10(rosenbrock(grid).numpy() + 1e-3)
    fig, ax = plt.subplots(figsize=(10, 7))
    ax.contourf(xs, ys, levels, levels=30, cmap="Greys")
    ax.contour(xs, ys, levels, levels=15, colors="white", linewidths=0.4)
    colors = plt.get_cmap("tab10")
    for i, r in enumerate(results):  # ten colours, then the same colours dashed
        ax.plot(
            r.path[:, 0],
            r.path[:, 1],
            "-" if i < 10 else "--",
            lw=1.3,
            color=colors(i % 10),
            label=f"{r.label} (lr {r.lr:g}): {r.final_loss:.1e}",
        )
    ax.plot(*START, "o", color="black", ms=7, label="start (-1.5, 2)")
    ax.plot(1.0, 1.0, "*", color="gold", mec="black", ms=14, label="minimum (1, 1)")
    ax.set(
        xlim=(-2, 2),
        ylim=(-1, 3),
        xlabel="x",
        ylabel="y",
        title=f"Rosenbrock race, {results[0].steps if results else 0} steps (contours: log10 f)",
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="final loss")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    parser.add_argument("--steps", type=int, default=2000, help="steps per optimizer")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    results = race(args.steps)
    print(f"Rosenbrock race from {START}, {args.steps} steps, float64 on the CPU\n")
    print(format_table(results))
    png = plot_race(results, args.out / "rosenbrock_race.png")
    print(f"\npaths plotted in {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
