"""Matplotlib helpers shared by the lectures.

Each helper draws one kind of figure the course shows again and again, takes
plain numbers (numpy arrays, lists, dicts of them), draws onto ``ax`` when
given one (else a new figure), and returns ``(fig, ax)`` (``(fig, axes)``
for multi-panel figures) so that a notebook can adjust and save it. None
calls ``plt.show()``; all work under the non-interactive ``Agg`` backend.

=============================  ================================================
helper                          figure
=============================  ================================================
:func:`plot_trajectories_2d`    contours of ``f(x, y)`` with optimizer paths
:func:`plot_curves`             loss against step, log y, one line per run
:func:`plot_landscape_1d`       loss along a line (``gd_lib.landscape``)
:func:`plot_landscape_contour`  loss on a plane, contour lines
:func:`plot_landscape_surface`  loss on a plane, 3-D surface
:func:`plot_coord_check`        μP coordinate check (``gd_lib.mup.coord_check``)
:func:`plot_heatmaps`           matrices side by side on one colour scale
:func:`plot_performance_profiles`  Dolan–Moré ``ρ(τ)`` curves per submission
:func:`plot_lr_sweep`           loss against learning rate, one line per width
:func:`interactive_figure`      a figure redrawn by ipywidgets controls (static headless)
=============================  ================================================
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

__all__ = [
    "plot_trajectories_2d",
    "plot_curves",
    "plot_landscape_1d",
    "plot_landscape_contour",
    "plot_landscape_surface",
    "plot_coord_check",
    "plot_heatmaps",
    "plot_performance_profiles",
    "plot_lr_sweep",
    "interactive_figure",
    "plot_norm_ball_step",
]


def _fig_ax(ax=None, **subplot_kw):
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(subplot_kw=subplot_kw or None)
    return fig, ax


def _named(items) -> list[tuple[str, object]]:
    """``{label: value}`` or a sequence of values (labelled 0, 1, ...) as pairs."""
    if isinstance(items, Mapping):
        return [(str(k), v) for k, v in items.items()]
    return [(str(i), v) for i, v in enumerate(items)]


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=float)


def _evaluate_grid(f: Callable, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """``f`` on a meshgrid. ``f`` takes a point ``xy`` (``xy[0]``, ``xy[1]``)
    as a torch tensor or numpy array; it is first called once on the stacked
    grid ``(2, H, W)`` (which works for any elementwise formula), and point by
    point if that fails."""
    import torch

    stacked = np.stack([X, Y])
    for make in (lambda a: torch.as_tensor(a, dtype=torch.float64), lambda a: a):
        try:
            Z = _to_numpy(f(make(stacked)))
            if Z.shape == X.shape:
                return Z
        except Exception:  # noqa: BLE001 - fall back to the point-by-point loop
            pass
    Z = np.empty_like(X, dtype=float)
    for idx in np.ndindex(X.shape):
        Z[idx] = float(f(torch.tensor([X[idx], Y[idx]], dtype=torch.float64)))
    return Z


def plot_trajectories_2d(f: Callable, paths, xlim: tuple[float, float] = (-2.0, 2.0),
                         ylim: tuple[float, float] = (-1.0, 3.0), *, levels: int | Sequence[float] = 30,
                         log_levels: bool = True, resolution: int = 200, minimum=None, ax=None,
                         markersize: float = 3.0):
    """Contours of ``f`` over ``xlim × ylim`` and one line (with point
    markers) per optimizer path.

    ``paths``: ``{label: array (T, 2)}`` or a list of arrays (torch tensors
    accepted). ``log_levels`` spaces the contour levels geometrically
    between the grid's minimum and maximum (right for Rosenbrock-like
    functions); ``minimum`` (``(x, y)``) is marked with a star.
    """
    fig, ax = _fig_ax(ax)
    xs = np.linspace(*xlim, resolution)
    ys = np.linspace(*ylim, resolution)
    X, Y = np.meshgrid(xs, ys)
    Z = _evaluate_grid(f, X, Y)
    if log_levels and isinstance(levels, int):
        lo = Z[np.isfinite(Z)].min()
        shift = 0.0 if lo > 0 else (1e-12 - lo)
        Zp = Z + shift
        finite = Zp[np.isfinite(Zp)]
        levels = np.geomspace(max(finite.min(), 1e-12), finite.max(), levels) - shift
    ax.contour(X, Y, Z, levels=levels, cmap="viridis", linewidths=0.7)
    for label, path in _named(paths):
        path = _to_numpy(path)
        ax.plot(path[:, 0], path[:, 1], marker="o", markersize=markersize, linewidth=1.2, label=label)
    if minimum is not None:
        ax.plot([minimum[0]], [minimum[1]], marker="*", markersize=12, color="k",
                linestyle="none", label="minimum")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(loc="best", fontsize="small")
    return fig, ax


def plot_curves(histories, *, xlabel: str = "step", ylabel: str = "loss", logy: bool = True,
                logx: bool = False, title: str | None = None, ax=None):
    """One line per run: ``histories`` is ``{label: values}`` or
    ``{label: (steps, values)}`` (or a list of either). Log y by default."""
    fig, ax = _fig_ax(ax)
    for label, h in _named(histories):
        if isinstance(h, Mapping):
            x, y = _to_numpy(h.get("step", np.arange(len(h["loss"])))), _to_numpy(h["loss"])
        elif isinstance(h, tuple) and len(h) == 2:
            x, y = _to_numpy(h[0]), _to_numpy(h[1])
        else:
            y = _to_numpy(h)
            x = np.arange(len(y))
        ax.plot(x, y, label=label)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    return fig, ax


def plot_landscape_1d(alphas, losses, *, xlabel: str = "α", ylabel: str = "loss",
                      logy: bool = False, mark_points: Sequence[float] = (), ax=None):
    """Loss along a line: ``losses`` is one array or ``{label: array}``
    (e.g. train and test). ``mark_points`` draws dotted vertical lines (e.g.
    at ``α = 0`` and ``α = 1``, the two end points)."""
    fig, ax = _fig_ax(ax)
    alphas = _to_numpy(alphas)
    curves = _named(losses) if isinstance(losses, Mapping) else [("loss", losses)]
    for label, y in curves:
        ax.plot(alphas, _to_numpy(y), label=label)
    for a in mark_points:
        ax.axvline(a, color="gray", linestyle=":", linewidth=1)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if isinstance(losses, Mapping):
        ax.legend(loc="best", fontsize="small")
    return fig, ax


def plot_landscape_contour(alphas, betas, losses, *, levels: int | Sequence[float] = 30,
                           log: bool = False, filled: bool = False, points=None, ax=None,
                           colorbar: bool = True):
    """Contours of ``losses[j, i] = ℓ(alphas[i], betas[j])`` (the layout of
    :func:`gd_lib.landscape.loss_plane`). ``log`` contours ``log10`` of the
    loss; ``points`` (``{label: (α, β)}``) are marked, e.g. init and trained."""
    fig, ax = _fig_ax(ax)
    Z = _to_numpy(losses)
    if log:
        Z = np.log10(np.maximum(Z, np.finfo(float).tiny))
    draw = ax.contourf if filled else ax.contour
    cs = draw(_to_numpy(alphas), _to_numpy(betas), Z, levels=levels, cmap="viridis")
    if colorbar:
        fig.colorbar(cs, ax=ax, label="log10 loss" if log else "loss")
    if points:
        for label, (a, b) in _named(points):
            ax.plot([a], [b], marker="o", linestyle="none", label=label)
        ax.legend(loc="best", fontsize="small")
    ax.set_xlabel("α")
    ax.set_ylabel("β")
    return fig, ax


def plot_landscape_surface(alphas, betas, losses, *, log: bool = False, cmap: str = "viridis",
                           elev: float = 35.0, azim: float = -60.0, ax=None):
    """The same grid as :func:`plot_landscape_contour` as a 3-D surface."""
    fig, ax = _fig_ax(ax, projection="3d")
    A, B = np.meshgrid(_to_numpy(alphas), _to_numpy(betas))
    Z = _to_numpy(losses)
    if log:
        Z = np.log10(np.maximum(Z, np.finfo(float).tiny))
    ax.plot_surface(A, B, Z, cmap=cmap, linewidth=0, antialiased=True)
    ax.view_init(elev=elev, azim=azim)
    ax.set_xlabel("α")
    ax.set_ylabel("β")
    ax.set_zlabel("log10 loss" if log else "loss")
    return fig, ax


def plot_coord_check(result: Mapping, stat: str = "activation_l1", *, steps: Sequence[int] | None = None,
                     layers: Sequence[str] | None = None, logy: bool = True, axes=None,
                     title: str | None = None):
    """The coordinate check of :func:`gd_lib.mup.coord_check`: one panel per
    step, width on a log axis, one line per layer (as in Yang et al. 2022,
    Figure 5). Flat lines mean the parametrization is width-stable.

    ``stat`` is one of ``activation_l1``, ``activation_rms``, ``update_l1``,
    ``update_rms``; ``steps`` defaults to every step (step 0 is skipped for
    the ``update_*`` stats, which are 0 there).
    """
    values = np.asarray(result[stat], dtype=float)
    widths = np.asarray(result["widths"], dtype=float)
    all_layers = list(result["layers"])
    if steps is None:
        steps = list(result["steps"])
        if stat.startswith("update"):
            steps = [t for t in steps if t > 0]
    layer_index = [all_layers.index(name) for name in (layers or all_layers)]
    if axes is None:
        fig, axes = plt.subplots(1, len(steps), figsize=(3.0 * len(steps), 3.0), sharey=True,
                                 squeeze=False)
        axes = axes[0]
    else:
        axes = np.atleast_1d(axes)
        fig = axes[0].figure
    for ax, t in zip(axes, steps):
        for li in layer_index:
            ax.plot(widths, values[:, li, t], marker="o", markersize=3, label=all_layers[li])
        ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
        ax.set_title(f"t = {t}")
        ax.set_xlabel("width")
    axes[0].set_ylabel(stat)
    axes[-1].legend(loc="best", fontsize="x-small")
    parametrization = result.get("parametrization")
    if title or parametrization:
        fig.suptitle(title or f"{str(parametrization).upper()}, {result.get('optimizer', '')}")
    return fig, axes


def plot_heatmaps(matrices, *, cmap: str = "viridis", vmin: float | None = None,
                  vmax: float | None = None, symmetric: bool = False, log: bool = False,
                  colorbar_label: str | None = None, axes=None):
    """Matrices side by side on one shared colour scale with one colour bar.

    ``matrices``: ``{title: 2-D array}`` or a list. The scale spans all the
    matrices (``symmetric`` centres it on 0, e.g. for a Hessian; ``log``
    uses a log colour scale, e.g. for preconditioner magnitudes)."""
    named = [(t, _to_numpy(m)) for t, m in _named(matrices)]
    if not named:
        raise ValueError("matrices must not be empty")
    finite = np.concatenate([m[np.isfinite(m)].ravel() for _, m in named])
    lo = finite.min() if vmin is None else vmin
    hi = finite.max() if vmax is None else vmax
    if symmetric:
        bound = max(abs(lo), abs(hi))
        lo, hi = -bound, bound
    norm = (matplotlib.colors.LogNorm(vmin=max(lo, np.finfo(float).tiny), vmax=hi) if log
            else matplotlib.colors.Normalize(vmin=lo, vmax=hi))
    if axes is None:
        fig, axes = plt.subplots(1, len(named), figsize=(3.2 * len(named), 3.2), squeeze=False)
        axes = axes[0]
    else:
        axes = np.atleast_1d(axes)
        fig = axes[0].figure
    image = None
    for ax, (title, m) in zip(axes, named):
        image = ax.imshow(m, cmap=cmap, norm=norm, interpolation="nearest")
        ax.set_title(title)
    fig.colorbar(image, ax=list(axes), label=colorbar_label)
    return fig, axes


def plot_performance_profiles(taus, rhos, *, logx: bool = True, xlabel: str = "τ (time / best time)",
                              ax=None, title: str | None = None):
    """Performance profiles (Dolan & Moré 2002; the AlgoPerf score is the
    area under them): ``rhos = {submission: ρ(τ) for each τ in taus}``, the
    fraction of workloads a submission solves within ``τ`` times the best.
    Drawn as step functions on ``[0, 1]``."""
    fig, ax = _fig_ax(ax)
    taus = _to_numpy(taus)
    for label, rho in _named(rhos):
        ax.step(taus, _to_numpy(rho), where="post", label=label)
    if logx:
        ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("ρ(τ): fraction of workloads")
    if title:
        ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    return fig, ax


def plot_lr_sweep(lrs, losses, *, widths: Sequence | None = None, mark_best: bool = True,
                  logy: bool = True, ylim: tuple[float, float] | None = None, ax=None,
                  title: str | None = None):
    """Loss against learning rate (log x), one line per width.

    ``losses``: ``{width: array over lrs}`` or a 2-D array ``[width, lr]``
    with ``widths`` (the layout of :func:`gd_lib.mup.lr_sweep`; pass its
    ``result["lrs"], result["loss"], widths=result["widths"]``). Non-finite
    losses (diverged runs) are left out. ``mark_best`` adds one scatter of the
    minimum of every line."""
    fig, ax = _fig_ax(ax)
    lrs = _to_numpy(lrs)
    if isinstance(losses, Mapping):
        curves = [(str(w), _to_numpy(v)) for w, v in losses.items()]
    else:
        grid = _to_numpy(losses)
        names = widths if widths is not None else range(len(grid))
        curves = [(str(w), row) for w, row in zip(names, grid)]
    best_x, best_y = [], []
    for label, y in curves:
        y = np.where(np.isfinite(y), y, np.nan)
        ax.plot(lrs, y, marker="o", markersize=3, label=f"width {label}")
        if mark_best and np.isfinite(y).any():
            i = int(np.nanargmin(y))
            best_x.append(lrs[i])
            best_y.append(y[i])
    if mark_best and best_x:
        ax.scatter(best_x, best_y, marker="*", s=120, color="k", zorder=3, label="best lr")
    ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    if title:
        ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    return fig, ax


def interactive_figure(draw: Callable[..., "matplotlib.figure.Figure"], **controls):
    """A figure with ipywidgets controls that redraw it in place; a plain static figure headless.

    ``draw(**values)`` returns a matplotlib figure for the controls' current
    values; ``controls`` are ipywidgets 8 value widgets (``IntSlider``,
    ``FloatLogSlider``, ``Dropdown``, ...) named by ``draw``'s arguments. The
    controls are displayed, then the figure for their initial values as an
    ordinary output (``image/png``, so it shows in an executed notebook, in
    nbconvert's HTML and without a widget manager); every change of a control
    calls ``draw`` again and replaces that output (``DisplayHandle.update``).
    Unlike ``ipywidgets.interact``, whose plot lives inside an ``Output``
    widget, the static figure needs no JavaScript. Returns the ``HBox`` of
    controls. Outside IPython ``display`` only prints reprs, and changes only call ``draw``.
    """
    import ipywidgets as widgets
    from IPython.display import display

    if not controls:
        raise ValueError("interactive_figure needs at least one control")

    def current_figure():
        fig = draw(**{name: control.value for name, control in controls.items()})
        plt.close(fig)  # the inline backend would otherwise show it a second time
        return fig

    box = widgets.HBox(list(controls.values()))
    display(box)
    handle = display(current_figure(), display_id=True)

    def redraw(change=None):
        fig = current_figure()
        if handle is not None:
            handle.update(fig)

    for control in controls.values():
        control.observe(redraw, names="value")
    return box


def plot_norm_ball_step(boundary, gradient, step, *, title: str | None = None, ax=None):
    """A unit ball (``boundary``: points (N, 2) on it) with a gradient ``g`` and a step ``Δ``
    drawn as arrows from the origin (lecture 2: steepest descent under a norm)."""
    fig, ax = _fig_ax(ax)
    boundary, gradient, step = _to_numpy(boundary), _to_numpy(gradient), _to_numpy(step)
    ax.plot(boundary[:, 0], boundary[:, 1], color="gray", label="‖·‖ = 1")
    for vector, color, label in ((gradient, "tab:blue", "gradient g"), (step, "tab:red", "step Δ*")):
        ax.annotate("", xy=vector, xytext=(0, 0), arrowprops=dict(arrowstyle="->", color=color, lw=2))
        ax.plot([vector[0]], [vector[1]], "o", color=color, label=label)
    bound = 1.1 * max(np.abs(boundary).max(), np.abs(gradient).max(), np.abs(step).max())
    ax.set_xlim(-bound, bound)
    ax.set_ylim(-bound, bound)
    ax.set_aspect("equal")
    ax.axhline(0, color="k", linewidth=0.5)
    ax.axvline(0, color="k", linewidth=0.5)
    if title:
        ax.set_title(title)
    ax.legend(loc="lower left", fontsize="x-small")
    return fig, ax
