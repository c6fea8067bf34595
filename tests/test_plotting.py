"""Tests of gd_lib.plotting: each helper draws the expected artists onto an
Agg figure (checked through the artists' data, not just that it ran) and the
figure saves as a PNG."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.contour import ContourSet  # noqa: E402
from mpl_toolkits.mplot3d.art3d import Poly3DCollection  # noqa: E402

from gd_lib import plotting  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def saves_png(fig, tmp_path, name="fig.png"):
    path = tmp_path / name
    fig.savefig(path, dpi=40)
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    return path


def contour_sets(ax):
    return [c for c in ax.collections if isinstance(c, ContourSet)]


def rosenbrock(xy):
    return (1 - xy[0]) ** 2 + 100 * (xy[1] - xy[0] ** 2) ** 2


def test_backend_is_agg():
    assert matplotlib.get_backend().lower() == "agg"


def test_plot_trajectories_2d(tmp_path):
    paths = {
        "gd": np.array([[-1.5, 2.0], [-1.0, 1.0], [0.0, 0.5]]),
        "adam": torch.tensor([[-1.5, 2.0], [-0.5, 0.5], [0.5, 0.3], [1.0, 1.0]]),
    }
    fig, ax = plotting.plot_trajectories_2d(rosenbrock, paths, resolution=40, minimum=(1, 1))
    assert len(contour_sets(ax)) == 1
    lines = ax.get_lines()
    assert len(lines) == 3  # two paths and the star at the minimum
    np.testing.assert_array_equal(lines[0].get_xydata(), paths["gd"])
    np.testing.assert_allclose(lines[1].get_xydata(), paths["adam"].numpy())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["gd", "adam", "minimum"]
    saves_png(fig, tmp_path)


def test_trajectories_contour_values_are_the_function():
    # the contour levels span the function's range on the grid (log-spaced)
    fig, ax = plotting.plot_trajectories_2d(
        rosenbrock, [np.zeros((1, 2))], xlim=(-2, 2), ylim=(-1, 3), resolution=41, levels=10
    )
    levels = contour_sets(ax)[0].levels
    xs, ys = np.meshgrid(np.linspace(-2, 2, 41), np.linspace(-1, 3, 41))
    Z = rosenbrock(np.stack([xs, ys]))
    assert levels[0] == pytest.approx(Z.min(), abs=1e-9)
    assert levels[-1] == pytest.approx(Z.max(), rel=1e-9)
    assert len(levels) == 10


def test_point_by_point_fallback():
    def only_points(xy):  # fails on a stacked grid, works on one point
        assert xy.shape == (2,)
        return float(xy[0] ** 2 + xy[1] ** 2)

    fig, ax = plotting.plot_trajectories_2d(only_points, [np.zeros((2, 2))], resolution=8, log_levels=False, levels=5)
    assert len(contour_sets(ax)) == 1


def test_plot_curves(tmp_path):
    histories = {
        "sgd": [1.0, 0.5, 0.25],
        "adam": ([0, 10, 20, 30], [1.0, 0.1, 0.01, 0.001]),
        "muon": {"step": [0, 5], "loss": [2.0, 1.0]},
    }
    fig, ax = plotting.plot_curves(histories)
    lines = ax.get_lines()
    assert len(lines) == 3
    np.testing.assert_array_equal(lines[0].get_xdata(), [0, 1, 2])
    np.testing.assert_array_equal(lines[1].get_xdata(), [0, 10, 20, 30])
    np.testing.assert_array_equal(lines[2].get_ydata(), [2.0, 1.0])
    assert ax.get_yscale() == "log"
    saves_png(fig, tmp_path)


def test_plot_landscape_1d(tmp_path):
    alphas = np.linspace(-0.5, 1.5, 9)
    fig, ax = plotting.plot_landscape_1d(alphas, {"train": alphas**2, "test": alphas**2 + 1}, mark_points=(0.0, 1.0))
    lines = ax.get_lines()
    assert len(lines) == 4  # two curves, two vertical markers
    np.testing.assert_array_equal(lines[1].get_ydata(), alphas**2 + 1)
    assert list(lines[2].get_xdata()) == [0.0, 0.0]
    saves_png(fig, tmp_path)


def test_plot_landscape_contour(tmp_path):
    a = np.linspace(-1, 1, 11)
    b = np.linspace(-1, 1, 7)
    Z = np.add.outer(b**2, a**2) + 0.1  # rows follow betas
    fig, ax = plotting.plot_landscape_contour(
        a, b, Z, levels=6, log=True, points={"init": (0.0, 0.0), "trained": (1.0, 0.0)}
    )
    cs = contour_sets(ax)
    assert len(cs) == 1
    # log=True contours log10 of the grid
    assert cs[0].zmin == pytest.approx(np.log10(Z.min()), rel=1e-12)
    assert cs[0].zmax == pytest.approx(np.log10(Z.max()), rel=1e-12)
    assert len(ax.get_lines()) == 2
    assert len(fig.axes) == 2  # the plot and its colour bar
    saves_png(fig, tmp_path)


def test_plot_landscape_surface(tmp_path):
    a = np.linspace(-1, 1, 9)
    Z = np.add.outer(a**2, a**2)
    fig, ax = plotting.plot_landscape_surface(a, a, Z)
    assert ax.name == "3d"
    surfaces = [c for c in ax.collections if isinstance(c, Poly3DCollection)]
    assert len(surfaces) == 1
    assert len(surfaces[0].get_facecolor()) == 8 * 8  # one coloured quad per grid cell
    fig.canvas.draw()
    assert len(surfaces[0].get_paths()) == 8 * 8
    saves_png(fig, tmp_path)


def fake_coord_check():
    widths = np.array([64, 128, 256])
    steps = np.arange(3)
    act = np.arange(3 * 2 * 3, dtype=float).reshape(3, 2, 3) + 1.0
    upd = act.copy()
    upd[:, :, 0] = 0.0
    return {
        "widths": widths,
        "steps": steps,
        "layers": ["fc1", "fc2"],
        "activation_l1": act,
        "update_l1": upd,
        "parametrization": "mup",
        "family": "adam",
    }


def test_plot_coord_check(tmp_path):
    result = fake_coord_check()
    fig, axes = plotting.plot_coord_check(result, "activation_l1")
    assert len(axes) == 3  # one panel per step
    for t, ax in enumerate(axes):
        lines = ax.get_lines()
        assert len(lines) == 2  # one line per layer
        np.testing.assert_array_equal(lines[1].get_xdata(), result["widths"])
        np.testing.assert_array_equal(lines[1].get_ydata(), result["activation_l1"][:, 1, t])
        assert ax.get_xscale() == "log"
    saves_png(fig, tmp_path)
    fig, axes = plotting.plot_coord_check(result, "update_l1", layers=["fc2"])
    assert len(axes) == 2  # step 0 (all zeros) is left out for updates
    assert all(len(ax.get_lines()) == 1 for ax in axes)


def test_plot_heatmaps_share_one_colour_scale(tmp_path):
    mats = {"A": np.arange(4.0).reshape(2, 2), "B": -np.eye(2), "C": np.full((3, 3), 7.0)}
    fig, axes = plotting.plot_heatmaps(mats)
    assert len(axes) == 3
    images = [ax.get_images()[0] for ax in axes]
    assert all(im.get_clim() == (-1.0, 7.0) for im in images)  # global min and max
    np.testing.assert_array_equal(images[1].get_array(), -np.eye(2))
    assert len(fig.axes) == 4  # three panels and one colour bar
    fig, axes = plotting.plot_heatmaps([np.array([[1.0, -3.0]])], symmetric=True)
    assert axes[0].get_images()[0].get_clim() == (-3.0, 3.0)
    saves_png(fig, tmp_path)


def test_plot_performance_profiles(tmp_path):
    taus = np.array([1.0, 1.5, 2.0, 4.0])
    rhos = {"adamw": [0.25, 0.5, 0.75, 1.0], "shampoo": [0.5, 0.5, 1.0, 1.0]}
    fig, ax = plotting.plot_performance_profiles(taus, rhos)
    lines = ax.get_lines()
    assert len(lines) == 2
    assert all(line.get_drawstyle() == "steps-post" for line in lines)
    np.testing.assert_array_equal(lines[1].get_ydata(), rhos["shampoo"])
    lo, hi = ax.get_ylim()
    assert lo <= 0.0 and hi >= 1.0
    saves_png(fig, tmp_path)


def test_plot_lr_sweep(tmp_path):
    lrs = 2.0 ** np.arange(-6, 0)
    loss = np.array(
        [[3.0, 2.0, 1.0, 0.5, 0.9, np.inf], [2.0, 1.0, 0.4, 0.8, 2.0, np.nan], [1.0, 0.3, 0.6, 1.5, 3.0, 9.0]]
    )
    fig, ax = plotting.plot_lr_sweep(lrs, loss, widths=[64, 256, 1024])
    lines = ax.get_lines()
    assert len(lines) == 3  # one per width
    assert [t.get_text() for t in ax.get_legend().get_texts()][:3] == ["width 64", "width 256", "width 1024"]
    stars = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(stars) == 1
    # the stars sit at each width's minimum
    np.testing.assert_array_equal(stars[0].get_offsets(), [[lrs[3], 0.5], [lrs[2], 0.4], [lrs[1], 0.3]])
    assert ax.get_xscale() == "log"
    saves_png(fig, tmp_path)
    fig, ax = plotting.plot_lr_sweep(lrs, {8: loss[0]}, mark_best=False)
    assert len(ax.get_lines()) == 1 and not ax.collections


def test_helpers_draw_on_a_given_axes():
    fig, ax = plt.subplots()
    out_fig, out_ax = plotting.plot_curves({"a": [1.0, 2.0]}, ax=ax, logy=False)
    assert out_fig is fig and out_ax is ax


# --- the course style and the figure check ---------------------------------------------------


@pytest.fixture
def course_style():
    with matplotlib.rc_context():
        plotting.use_course_style()
        yield


def test_course_style_sets_dpi_layout_fonts_and_palette(course_style):
    fig, ax = plt.subplots()
    assert fig.dpi >= 150
    assert type(fig.get_layout_engine()).__name__ == "ConstrainedLayoutEngine"
    assert matplotlib.rcParams["font.size"] >= 12
    lines = [ax.plot([0, 1], [0, i])[0] for i in range(len(plotting.PALETTE) + 1)]
    colours = [matplotlib.colors.to_hex(line.get_color()).upper() for line in lines]
    assert colours[: len(plotting.PALETTE)] == [c.upper() for c in plotting.PALETTE]
    # the series after the palette's end repeat a colour with another dash
    assert colours[-1] == colours[0] and lines[-1].get_linestyle() != lines[0].get_linestyle()


def labelled_axes():
    fig, ax = plt.subplots()
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    return fig, ax


def test_figure_problems_passes_a_good_figure(course_style):
    fig, ax = labelled_axes()
    ax.plot([0, 1, 2], [3, 2, 1], label="sgd")
    ax.plot([0, 1, 2], [3, 1, 0.5], label="adam")
    ax.axhline(1.0, color="k", linestyle=":")  # a reference line is not a series
    plotting.legend_outside(ax)
    assert plotting.figure_problems(fig) == []


def test_figure_problems_flags_the_style_missing():
    with matplotlib.rc_context({"figure.dpi": 100, "figure.constrained_layout.use": False}):
        fig, ax = labelled_axes()
        ax.plot([0, 1], [1, 0])
        problems = plotting.figure_problems(fig)
    assert any(p.startswith("dpi 100") for p in problems)
    assert any("not constrained" in p for p in problems)


def test_figure_problems_flags_missing_axis_labels(course_style):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    ax.set_xlabel("step")
    assert plotting.figure_problems(fig) == ["axes 0: the y axis has no label"]


def test_figure_problems_accepts_labels_shared_with_a_panel(course_style):
    fig, axes = plt.subplots(1, 2, sharey=True)
    for ax in axes:
        ax.plot([0, 1], [1, 0])
        ax.set_xlabel("step")
    axes[0].set_ylabel("loss")  # the right panel shares the left one's y axis
    assert plotting.figure_problems(fig) == []
    fig, axes = plt.subplots(1, 2)  # not shared: each needs its own
    for ax in axes:
        ax.plot([0, 1], [1, 0])
        ax.set_xlabel("step")
    axes[0].set_ylabel("loss")
    assert plotting.figure_problems(fig) == ["axes 1: the y axis has no label"]


def test_figure_problems_flags_series_without_a_legend(course_style):
    fig, ax = labelled_axes()
    ax.plot([0, 1, 2], [3, 2, 1], label="sgd")
    ax.plot([0, 1, 2], [3, 1, 0.5], label="adam")
    assert plotting.figure_problems(fig) == [
        "axes 0 ('loss'): 2 series share the axes, 2 of them not named in a legend"
    ]
    plotting.figure_legend(fig)  # a figure legend names them too
    assert plotting.figure_problems(fig) == []


def test_figure_problems_flags_a_legend_over_data(course_style):
    fig, ax = labelled_axes()
    x = np.linspace(0, 1, 50)
    ax.plot(x, x, label="up")
    ax.plot(x, 1 - x, label="down")
    ax.legend(loc="center")  # both lines cross the centre
    assert plotting.figure_problems(fig) == ["axes 0 ('loss'): the legend covers data (use plotting.legend_outside)"]
    ax.legend(loc="upper center")  # between the two lines' upper ends: nothing under it
    ax.set_ylim(0, 1.6)
    assert plotting.figure_problems(fig) == []


def test_figure_problems_flags_overlapping_panels_and_unlabelled_colour_bars(course_style):
    fig = plt.figure()
    a = fig.add_axes([0.1, 0.1, 0.6, 0.6])
    b = fig.add_axes([0.4, 0.4, 0.5, 0.5])
    for ax in (a, b):
        ax.plot([0, 1], [0, 1])
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    image = a.imshow(np.eye(3))
    fig.colorbar(image, ax=b)
    problems = plotting.figure_problems(fig)
    assert any("overlap" in p for p in problems)
    assert any("colour bar without a label" in p for p in problems)


def test_every_helper_draws_a_figure_that_passes_the_check(course_style):
    a = np.linspace(-1, 1, 9)
    plane = np.add.outer(a**2, a**2) + 0.1
    figures = [
        plotting.plot_trajectories_2d(
            rosenbrock,
            {"gd": np.array([[-1.5, 2.0], [0.0, 0.5]]), "adam": np.array([[-1.5, 2.0], [0.5, 0.3]])},
            resolution=30,
            minimum=(1, 1),
        )[0],
        plotting.plot_curves({"sgd": [1.0, 0.5, 0.25], "adam": [1.0, 0.1, 0.01]})[0],
        plotting.plot_landscape_1d(a, {"train": a**2, "test": a**2 + 1}, mark_points=(0.0,))[0],
        plotting.plot_landscape_contour(a, a, plane, points={"init": (0.0, 0.0), "end": (0.5, 0.5)})[0],
        plotting.plot_landscape_surface(a, a, plane)[0],
        plotting.plot_coord_check(fake_coord_check(), "activation_l1")[0],
        plotting.plot_heatmaps({"A": np.eye(3), "B": -np.eye(3)}, colorbar_label="entry")[0],
        plotting.plot_performance_profiles([1.0, 2.0, 4.0], {"a": [0.5, 1.0, 1.0], "b": [0.0, 0.5, 1.0]})[0],
        plotting.plot_lr_sweep(2.0 ** np.arange(-4, 0), {64: [3.0, 1.0, 2.0, 4.0], 256: [2.0, 0.5, 3.0, 5.0]})[0],
        plotting.plot_norm_ball_step(np.stack([np.cos(a * np.pi), np.sin(a * np.pi)], 1), [1.0, 0.0], [-1.0, 0.0])[0],
    ]
    for fig in figures:
        assert plotting.figure_problems(fig) == [], fig.axes[0].get_title()


def test_plot_trajectory_grid_draws_one_path_per_panel(course_style):
    paths = {f"opt{k}": np.array([[-1.5, 2.0], [0.1 * k, 0.5], [1.0, 1.0]]) for k in range(5)}
    fig, axes = plotting.plot_trajectory_grid(
        rosenbrock, paths, resolution=30, minimum=(1, 1), ncols=3, titles={"opt0": "first"}
    )
    assert axes.shape == (2, 3)
    used = [ax for ax in axes.flat if ax.axison]
    assert len(used) == 5 and not axes.flat[5].axison
    for k, ax in enumerate(used):
        np.testing.assert_array_equal(ax.get_lines()[0].get_xydata(), paths[f"opt{k}"])
        assert len(contour_sets(ax)) == 1
    assert used[0].get_title() == "first" and used[1].get_title() == "opt1"
    assert plotting.figure_problems(fig) == []


def test_figure_problems_counts_error_bars_with_their_series(course_style):
    fig, ax = labelled_axes()
    for k, label in enumerate(("a", "b")):
        ax.bar(
            np.arange(3) + 0.4 * k,
            [1.0, 2.0, 1.5],
            width=0.4,
            yerr=[[0.1, 0.2, 0.1], [0.3, 0.1, 0.2]],
            capsize=3,
            label=label,
        )
    plotting.legend_outside(ax)
    assert plotting.figure_problems(fig) == []
    fig, ax = labelled_axes()
    ax.errorbar([0, 1, 2], [1, 2, 3], yerr=0.1, capsize=3)
    ax.errorbar([0, 1, 2], [3, 2, 1], yerr=0.1, capsize=3)
    assert plotting.figure_problems(fig) == [
        "axes 0 ('loss'): 2 series share the axes, 2 of them not named in a legend"
    ]
