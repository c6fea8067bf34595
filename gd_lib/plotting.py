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
:func:`plot_trajectory_grid`    the same as small multiples, one path per panel
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

**The course style.** :func:`use_course_style` (called once at the top of every
lecture) sets the figure style a lecture hall can read: large fonts, 150 dpi,
constrained layout, the Okabe–Ito colour-blind-safe palette (then the same
colours dashed, then dotted), grid lines. :func:`legend_outside` puts a legend
beside the axes, where it cannot cover data; the helpers here all do so.
:func:`figure_problems` lists what a figure lacks (axis labels, a legend where
several series share axes, the style's dpi and layout, a legend over data,
overlapping panels or colour bars); the lecture tests run it on every figure
every lecture shows.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from cycler import cycler

__all__ = [
    "COURSE_STYLE",
    "PALETTE",
    "use_course_style",
    "legend_outside",
    "figure_legend",
    "figure_problems",
    "plot_trajectories_2d",
    "plot_trajectory_grid",
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


# ---------------------------------------------------------------------------
# The course style
# ---------------------------------------------------------------------------

#: The Okabe–Ito palette (Okabe & Ito 2008, "Color Universal Design"), distinguishable under the
#: common colour-vision deficiencies; its yellow is left out (unreadable on white).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
_LINESTYLES = ("-", "--", ":")

#: rcParams of the course's figures: read from the back of a lecture hall (fonts of 13-15 pt on a
#: 7-inch figure), 150 dpi, constrained layout (no overlapping labels, colour bars or legends
#: outside the axes), the palette above cycled with line styles so that the 8th series and on
#: differ by dash as well as colour.
COURSE_STYLE = {
    "figure.dpi": 150,
    "savefig.dpi": 150,
    "figure.figsize": (7.0, 4.5),
    "figure.constrained_layout.use": True,
    "font.size": 13,
    "axes.titlesize": 14,
    "axes.labelsize": 13,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "legend.fontsize": 11,
    "legend.title_fontsize": 12,
    "figure.titlesize": 15,
    "lines.linewidth": 2.0,
    "lines.markersize": 5.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "image.cmap": "viridis",
    "axes.prop_cycle": cycler(color=[c for _ in _LINESTYLES for c in PALETTE],
                              linestyle=[ls for ls in _LINESTYLES for _ in PALETTE]),
}

#: The smallest dpi :func:`figure_problems` accepts (the issue's "dpi >= 150").
MIN_DPI = 150


def use_course_style() -> None:
    """Apply :data:`COURSE_STYLE` to matplotlib's rcParams (for every figure drawn afterwards).

    Every lecture calls it once, after importing pyplot (the inline backend does not override
    rcParams since matplotlib-inline 0.1.4). :func:`figure_problems` reports figures drawn without it.
    """
    matplotlib.rcParams.update(COURSE_STYLE)


def legend_outside(ax, *, title: str | None = None, ncol: int = 1, **kwargs):
    """The legend of ``ax`` to the right of the axes, top-aligned, where it cannot cover data.

    Constrained layout (the course style) makes room for it. Returns the legend (or ``None``
    when no artist of ``ax`` has a label)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    return ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                     title=title, ncol=ncol, **kwargs)


def figure_legend(fig, axes=None, *, loc: str = "outside right upper", title: str | None = None, **kwargs):
    """One legend for a whole figure (small multiples whose panels share their series), outside
    the panels: the labelled artists of ``axes`` (default: all of ``fig``'s), each label once."""
    seen = {}
    for ax in (fig.axes if axes is None else np.ravel(axes)):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if not seen:
        return None
    return fig.legend(list(seen.values()), list(seen), loc=loc, title=title, **kwargs)


def _is_colorbar(ax) -> bool:
    return getattr(ax, "_colorbar", None) is not None


def _axis_label_present(ax, which: str) -> bool:
    """``ax`` has an ``x``/``y``/``z`` label, or a panel sharing that axis has one, or the figure has
    a ``sup{x,y}label`` (small multiples label the outer panels only)."""
    if getattr(ax, f"get_{which}label")().strip():
        return True
    if which in ("x", "y"):
        siblings = getattr(ax, f"get_shared_{which}_axes")().get_siblings(ax)
        if any(getattr(s, f"get_{which}label")().strip() for s in siblings if s is not ax):
            return True
        sup = getattr(ax.figure, f"_sup{which}label", None)
        if sup is not None and sup.get_text().strip():
            return True
    return False


def _axis_shows_values(ax, which: str) -> bool:
    """Whether the ``which`` axis is drawn with tick labels (an axis without them needs no label)."""
    axis = getattr(ax, f"{which}axis")
    if not axis.get_visible() or not ax.axison:
        return False
    return any(t.get_visible() and t.get_text().strip() for t in axis.get_ticklabels())


def _series(ax) -> list:
    """The data series of ``ax``: lines of two or more distinct points and labelled scatters,
    without reference lines (horizontal or vertical, e.g. ``axhline``) and error-bar caps."""
    from matplotlib.container import ErrorbarContainer

    caps = {id(cap) for c in ax.containers if isinstance(c, ErrorbarContainer) for cap in c.lines[1]}
    out = []
    for line in ax.get_lines():
        if id(line) in caps:
            continue  # an error bar's caps belong to its series
        xy = np.asarray(line.get_xydata(), dtype=float)
        xy = xy[np.isfinite(xy).all(axis=1)] if xy.ndim == 2 else xy
        if len(xy) < 2 or not line.get_visible():
            continue
        if np.ptp(xy[:, 0]) == 0 or np.ptp(xy[:, 1]) == 0:
            continue  # a reference line
        out.append(line)
    from matplotlib.collections import PathCollection

    out += [c for c in ax.collections if isinstance(c, PathCollection) and not c.get_label().startswith("_")
            and len(c.get_offsets()) > 0]
    return out


def _legends(fig) -> list:
    legends = list(fig.legends)
    for ax in fig.axes:
        if ax.get_legend() is not None:
            legends.append(ax.get_legend())
    return legends


def _legend_covers(ax, legend, renderer) -> bool:
    """Whether a legend drawn inside ``ax`` covers a data point or a line segment of ``ax``."""
    box = legend.get_window_extent(renderer)
    axes_box = ax.get_window_extent(renderer)
    if not box.overlaps(axes_box):
        return False
    for artist in _series(ax):
        if hasattr(artist, "get_xydata"):
            xy = np.asarray(artist.get_xydata(), dtype=float)
        else:
            xy = np.asarray(artist.get_offsets(), dtype=float)
        xy = xy[np.isfinite(xy).all(axis=1)]
        if len(xy) == 0:
            continue
        pts = artist.get_transform().transform(xy)
        if len(pts) > 1 and hasattr(artist, "get_xydata") and artist.get_linestyle() not in ("None", "", " "):
            t = np.linspace(0.0, 1.0, 9)[:, None, None]
            pts = (pts[:-1][None] * (1 - t) + pts[1:][None] * t).reshape(-1, 2)
        inside_axes = ((pts[:, 0] >= axes_box.x0) & (pts[:, 0] <= axes_box.x1)
                       & (pts[:, 1] >= axes_box.y0) & (pts[:, 1] <= axes_box.y1))
        in_legend = ((pts[:, 0] > box.x0 + 1) & (pts[:, 0] < box.x1 - 1)
                     & (pts[:, 1] > box.y0 + 1) & (pts[:, 1] < box.y1 - 1))
        if (inside_axes & in_legend).any():
            return True
    return False


def _describe(ax, index: int) -> str:
    title = ax.get_title() or ax.get_title("left") or ax.get_ylabel()
    return f"axes {index}" + (f" ({title!r})" if title else "")


def figure_problems(fig) -> list[str]:
    """What keeps ``fig`` from the course's figure standard, as sentences (empty: none).

    Checked: the dpi is at least :data:`MIN_DPI` and the layout engine is constrained (both set
    by :func:`use_course_style`); every axis drawn with tick labels has a label (or shares it with
    a labelled panel, or the figure has a ``supxlabel``/``supylabel``), colour bars included;
    axes holding two or more data series have a legend naming them (the axes' own or a figure
    legend); no legend inside the axes covers a data point or line; no two panels or colour bars
    overlap. Draws the figure once (text extents need a renderer).
    """
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    problems = []
    if fig.dpi < MIN_DPI:
        problems.append(f"dpi {fig.dpi:g} < {MIN_DPI} (call plotting.use_course_style())")
    if not isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):
        problems.append("layout is not constrained (call plotting.use_course_style() or pass layout='constrained')")
    fig.draw_without_rendering()  # lays the figure out (a figure made without pyplot has no renderer)
    renderer = fig._get_renderer()
    legend_labels = {t.get_text() for legend in _legends(fig) for t in legend.get_texts()}
    visible = [ax for ax in fig.axes if ax.get_visible()]
    for i, ax in enumerate(visible):
        name = _describe(ax, i)
        if _is_colorbar(ax):
            cbar = ax._colorbar
            long_axis = "y" if cbar.orientation == "vertical" else "x"
            if not getattr(ax, f"get_{long_axis}label")().strip():
                problems.append(f"{name}: colour bar without a label")
            continue
        if not ax.axison:
            continue
        has_data = bool(ax.get_lines() or ax.collections or ax.images or ax.patches or ax.containers)
        if not has_data:
            continue
        for which in ("x", "y") + (("z",) if ax.name == "3d" else ()):
            if which == "z" or _axis_shows_values(ax, which):
                if not _axis_label_present(ax, which):
                    problems.append(f"{name}: the {which} axis has no label")
        series = _series(ax)
        if len(series) >= 2:
            unnamed = [s for s in series if s.get_label().startswith("_") or s.get_label() not in legend_labels]
            if unnamed:
                problems.append(f"{name}: {len(series)} series share the axes, {len(unnamed)} of them "
                                "not named in a legend")
        legend = ax.get_legend()
        if legend is not None and legend.get_visible() and _legend_covers(ax, legend, renderer):
            problems.append(f"{name}: the legend covers data (use plotting.legend_outside)")
    boxes = [(i, ax, ax.get_position()) for i, ax in enumerate(visible) if ax.axison or _is_colorbar(ax)]
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            (i, ax_i, p), (j, ax_j, q) = boxes[a], boxes[b]
            overlap_w = min(p.x1, q.x1) - max(p.x0, q.x0)
            overlap_h = min(p.y1, q.y1) - max(p.y0, q.y0)
            if overlap_w > 1e-3 and overlap_h > 1e-3:
                problems.append(f"{_describe(ax_i, i)} and {_describe(ax_j, j)} overlap")
    return problems


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
    ax.contour(X, Y, Z, levels=levels, colors="0.65", linewidths=0.6)  # grey: the paths carry the colour
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
    legend_outside(ax)
    return fig, ax


def plot_trajectory_grid(f: Callable, paths, xlim: tuple[float, float] = (-2.0, 2.0),
                         ylim: tuple[float, float] = (-1.0, 3.0), *, minimum=None, titles=None, ncols: int = 3,
                         levels: int | Sequence[float] = 25, log_levels: bool = True, resolution: int = 150,
                         panel_size: tuple[float, float] = (3.6, 3.0), xlabel: str = "x", ylabel: str = "y"):
    """Small multiples: one panel per optimizer path, all over the same grey contours of ``f``
    and on shared axes, so that no path hides another (nine paths on one panel do).

    ``paths``: ``{label: array (T, 2)}``; ``titles``: ``{label: panel title}`` (default the
    label), e.g. with the outcome of each run. Each path is drawn with a marker at its start;
    ``minimum`` is starred in every panel. Returns ``(fig, axes)`` (a 2-D array; unused panels
    are switched off)."""
    named = _named(paths)
    if not named:
        raise ValueError("paths must not be empty")
    nrows = -(-len(named) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
                             sharex=True, sharey=True, squeeze=False)
    xs = np.linspace(*xlim, resolution)
    ys = np.linspace(*ylim, resolution)
    X, Y = np.meshgrid(xs, ys)
    Z = _evaluate_grid(f, X, Y)
    if log_levels and isinstance(levels, int):
        lo = Z[np.isfinite(Z)].min()
        shift = 0.0 if lo > 0 else (1e-12 - lo)
        finite = (Z + shift)[np.isfinite(Z)]
        levels = np.geomspace(max(finite.min(), 1e-12), finite.max(), levels) - shift
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for k, (ax, (label, path)) in enumerate(zip(axes.flat, named)):
        path = _to_numpy(path)
        ax.contour(X, Y, Z, levels=levels, colors="0.7", linewidths=0.5)
        colour = colours[k % len(colours)]
        ax.plot(path[:, 0], path[:, 1], color=colour, linestyle="-", linewidth=1.3, marker="o", markersize=1.5)
        ax.plot([path[0, 0]], [path[0, 1]], marker="o", markersize=6, color=colour, linestyle="none")
        if minimum is not None:
            ax.plot([minimum[0]], [minimum[1]], marker="*", markersize=11, color="k", linestyle="none")
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_title((titles or {}).get(label, label), fontsize="medium")
        ax.grid(False)
    for ax in axes.flat[len(named):]:
        ax.set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel(xlabel)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    return fig, axes


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
    legend_outside(ax)
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
        legend_outside(ax)
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
        legend_outside(ax)
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
                     title: str | None = None, layer_labels: Mapping[str, str] | None = None):
    """The coordinate check of :func:`gd_lib.mup.coord_check`: one panel per
    step, width on a log axis, one line per layer (as in Yang et al. 2022,
    Figure 5). Flat lines mean the parametrization is width-stable.

    ``stat`` is one of ``activation_l1``, ``activation_rms``, ``update_l1``,
    ``update_rms``; ``steps`` defaults to every step (step 0 is skipped for
    the ``update_*`` stats, which are 0 there); ``layer_labels`` renames layers in the legend
    (e.g. ``{"layers.0": "input"}``).
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
            ax.plot(widths, values[:, li, t], marker="o", markersize=3,
                    label=(layer_labels or {}).get(all_layers[li], all_layers[li]))
        ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
        ax.set_title(f"t = {t}")
        ax.set_xlabel("width")
    axes[0].set_ylabel(stat)
    legend_outside(axes[-1])
    parametrization = result.get("parametrization")
    if title or parametrization:
        fig.suptitle(title or f"{str(parametrization).upper()}, {result.get('optimizer', '')}")
    return fig, axes


def plot_heatmaps(matrices, *, cmap: str = "viridis", vmin: float | None = None,
                  vmax: float | None = None, symmetric: bool = False, log: bool = False,
                  colorbar_label: str = "value", axes=None, xlabel: str = "column index",
                  ylabel: str = "row index"):
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
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(False)
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
    legend_outside(ax)
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
    legend_outside(ax)
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
    A control without a ``description`` is labelled with its argument's name (a slider without
    one shows as a bare bar in JupyterLab and on the course site).
    """
    import ipywidgets as widgets
    from IPython.display import display

    if not controls:
        raise ValueError("interactive_figure needs at least one control")
    for name, control in controls.items():
        if hasattr(control, "description") and not control.description:
            control.description = name

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


def plot_norm_ball_step(boundary, gradient, step, *, title: str | None = None, ax=None, legend: bool = True):
    """A unit ball (``boundary``: points (N, 2) on it) with a gradient ``g`` and a step ``Δ``
    drawn as arrows from the origin (lecture 2: steepest descent under a norm). ``legend=False``
    leaves the legend to the caller (e.g. one :func:`figure_legend` for several panels)."""
    fig, ax = _fig_ax(ax)
    boundary, gradient, step = _to_numpy(boundary), _to_numpy(gradient), _to_numpy(step)
    ax.plot(boundary[:, 0], boundary[:, 1], color="gray", label="‖·‖ = 1")
    for vector, color, label in ((gradient, PALETTE[0], "gradient g"), (step, PALETTE[3], "step Δ*")):
        ax.annotate("", xy=vector, xytext=(0, 0), arrowprops=dict(arrowstyle="->", color=color, lw=2))
        ax.plot([vector[0]], [vector[1]], "o", color=color, label=label)
    bound = 1.1 * max(np.abs(boundary).max(), np.abs(gradient).max(), np.abs(step).max())
    ax.set_xlim(-bound, bound)
    ax.set_ylim(-bound, bound)
    ax.set_aspect("equal")
    ax.axhline(0, color="k", linewidth=0.5)
    ax.axvline(0, color="k", linewidth=0.5)
    ax.set_xlabel("coordinate 1")
    ax.set_ylabel("coordinate 2")
    if title:
        ax.set_title(title)
    if legend:
        legend_outside(ax)
    return fig, ax
