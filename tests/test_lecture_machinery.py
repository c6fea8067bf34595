"""The machinery every lecture runs on: the full-mode step scale (gd_lib.step_budget), the
headless runner with its per-cell timeout and figure check (gd_lib.notebooks), and the checks on
the exported HTML. Each check is shown to fail on a notebook built to fail it."""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import gd_lib
from gd_lib import notebooks

# --- the step scale -------------------------------------------------------------------------


def test_step_budget_quick_ignores_the_scale(monkeypatch):
    monkeypatch.setenv("GD_STEP_SCALE", "0.01")
    assert gd_lib.step_budget(30, 5000, quick=True) == 30


def test_step_budget_scales_full_mode_and_rounds_up(monkeypatch):
    monkeypatch.delenv("GD_STEP_SCALE", raising=False)
    assert gd_lib.step_budget(30, 5000, quick=False) == 5000
    monkeypatch.setenv("GD_STEP_SCALE", "0.01")
    assert gd_lib.step_budget(30, 5000, quick=False) == 50
    assert gd_lib.step_budget(30, 150, quick=False) == 2  # ceil(1.5)
    assert gd_lib.step_budget(30, 150, quick=False, minimum=20) == 20


@pytest.mark.parametrize("bad", ["0", "-1", "1.5", "abc", "nan"])
def test_step_scale_rejects_bad_values(monkeypatch, bad):
    monkeypatch.setenv("GD_STEP_SCALE", bad)
    with pytest.raises(ValueError, match="GD_STEP_SCALE"):
        gd_lib.step_scale()


def test_mode_summary_names_the_mode(monkeypatch):
    monkeypatch.delenv("GD_STEP_SCALE", raising=False)
    assert gd_lib.mode_summary(True).startswith("quick mode")
    assert gd_lib.mode_summary(False).startswith("full mode:")
    monkeypatch.setenv("GD_STEP_SCALE", "0.05")
    assert "not meaningful" in gd_lib.mode_summary(False)


# --- per-cell timeouts ----------------------------------------------------------------------


def test_cell_timeout_reads_the_notebook_metadata():
    nb = new_notebook()
    assert notebooks.cell_timeout(nb, "quick") == notebooks.DEFAULT_CELL_TIMEOUT_S["quick"]
    nb.metadata[notebooks.METADATA_KEY] = {"cell_timeout_s": {"quick": 7, "full": 99}}
    assert notebooks.cell_timeout(nb, "quick") == 7
    assert notebooks.cell_timeout(nb, "full") == 99
    assert notebooks.cell_timeout(nb, "short") == notebooks.DEFAULT_CELL_TIMEOUT_S["short"]
    with pytest.raises(ValueError, match="mode"):
        notebooks.cell_timeout(nb, "fast")
    assert notebooks.run_mode(True, 0.01) == "quick"
    assert notebooks.run_mode(False, 0.01) == "short"
    assert notebooks.run_mode(False, None) == "full"


def write(tmp_path, cells, metadata=None, name="nb.ipynb"):
    nb = new_notebook(cells=cells)
    nb.metadata.update(metadata or {})
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_a_cell_past_its_timeout_stops_the_notebook(tmp_path):
    path = write(
        tmp_path,
        [new_code_cell("import time; time.sleep(30)"), new_code_cell("print('after')")],
        {notebooks.METADATA_KEY: {"cell_timeout_s": {"quick": 3}}},
    )
    run = notebooks.execute_notebook(path, quick=True, check_figures=False)
    assert run.error is not None and "3 s per-cell timeout" in run.error
    assert run.seconds < 25  # stopped by the timeout, long before the sleep ends
    assert run.nb.cells[1].get("outputs", []) == []


@pytest.mark.slow
def test_the_kernel_sees_the_mode_and_the_step_scale(tmp_path):
    path = write(tmp_path, [new_code_cell("import gd_lib\nprint(gd_lib.quick_mode(), gd_lib.step_budget(3, 1000))")])
    run = notebooks.execute_notebook(path, quick=False, step_scale=0.02, check_figures=False)
    assert run.error is None
    assert run.nb.cells[0].outputs[0].text.strip() == "False 20"
    run = notebooks.execute_notebook(path, quick=True, check_figures=False)
    assert run.nb.cells[0].outputs[0].text.strip() == "True 3"


@pytest.mark.slow
def test_the_figure_check_sees_every_rendered_figure(tmp_path):
    bad = "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2, 3]); ax.plot([3, 2, 1])"
    good = (
        "from gd_lib import plotting\nplotting.use_course_style()\n"
        "fig, ax = plotting.plot_curves({'a': [1.0, 2.0], 'b': [2.0, 1.0]})"
    )
    widget = (
        "from ipywidgets import IntSlider\nfrom gd_lib import plotting\n"
        "def draw(n=2):\n    fig, ax = plt.subplots()\n    ax.plot(range(n))\n    return fig\n"
        "plotting.interactive_figure(draw, n=IntSlider(value=3, min=2, max=5))"
    )
    path = write(
        tmp_path,
        [
            new_code_cell(bad),
            new_code_cell(good),
            new_code_cell(widget),
            new_code_cell("1 / 0"),
            new_code_cell("print('not reached')"),
        ],
    )
    run = notebooks.execute_notebook(path, quick=True)
    assert run.error is not None and run.error.startswith("ZeroDivisionError")
    assert [f["cell"] for f in run.figures] == [0, 1, 2]
    first, second, third = (f["problems"] for f in run.figures)
    assert any("x axis has no label" in p for p in first)
    assert any("2 series share the axes" in p for p in first)
    assert any(p.startswith("dpi") for p in first)  # drawn before the course style was applied
    assert second == []
    assert any("y axis has no label" in p for p in third)
    html = notebooks.export_html(run.nb)
    assert notebooks.html_problems(html, run.nb) == []  # the widget cell shows its static figure


# --- the HTML checks ------------------------------------------------------------------------

TABLE_OK = "| norm | dual |\n|---|---|\n| $\\ell_2$ | $\\lVert g\\rVert_2$ |\n"
# an unescaped | inside maths splits the row into too many cells: mistune drops the table
TABLE_BROKEN = "| norm | dual |\n|---|---|\n| $\\ell_\\infty$ | $\\sum_i |g_i|$ |\n"


def test_html_check_passes_a_rendered_table():
    nb = new_notebook(cells=[new_markdown_cell("Intro\n\n" + TABLE_OK)])
    assert notebooks.html_problems(notebooks.export_html(nb), nb) == []


def test_html_check_finds_a_table_printed_as_pipes():
    nb = new_notebook(cells=[new_markdown_cell("Intro\n\n" + TABLE_BROKEN)])
    problems = notebooks.html_problems(notebooks.export_html(nb), nb)
    assert any("1 Markdown table(s) in the source, 0 rendered" in p for p in problems), problems


def test_html_check_finds_a_widget_without_a_static_figure():
    # what an executed `interact` cell holds: only a widget view, which a static page cannot draw
    cell = new_code_cell("from ipywidgets import interact\ninteract(lambda n: n, n=(1, 3))")
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={
                "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0},
                "text/plain": "interactive(children=(IntSlider(value=2, max=3, min=1),))",
            },
        )
    ]
    nb = new_notebook(cells=[cell])
    problems = notebooks.html_problems(notebooks.export_html(nb), nb)
    assert problems == ["cell 0: a widget cell with no static figure in the page"]
