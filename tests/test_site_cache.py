"""``make site`` executes a lecture only when its outputs could have changed.

A scratch course with one small lecture (a widget-driven figure, mathematics, a printed number)
is built five times. The lecture appends a line to a log file each time a kernel really runs it,
so the count of executions is observed from outside the site builder:

1. first build: the lecture runs once;
2. a rebuild with no change runs nothing (and says so);
3. an edit of the lecture's text re-renders the page and runs nothing;
4. an edit of a code cell runs it again;
5. a change of the course library (``gd_lib``) runs it again: the outputs depend on it.

After the first build the page shows the lecture's output and figure, the widget's controls drawn
statically at their values, the math for MathJax, and no widget-manager script or state.
"""

from __future__ import annotations

import json
import os
import re

import nbformat
import pytest

from site_support import build_site, load_build_module

pytestmark = pytest.mark.slow

MARKDOWN = (
    "# Lecture 1 — A tiny lecture\n\nGradient descent is stable for $\\eta < 2/L$:\n\n"
    "$$x_{t+1} = x_t - \\eta\\, g_t$$\n"
)
PLOT = """import os
import ipywidgets
import matplotlib.pyplot as plt
from gd_lib.plotting import interactive_figure

with open(os.environ["SITE_TEST_EXECUTIONS"], "a") as log:   # counts the real executions
    log.write("ran\\n")


def draw(slope):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, slope])
    return fig


interactive_figure(draw, slope=ipywidgets.FloatSlider(value=0.25, min=0.0, max=2.0, step=0.05, description="slope"));
"""


def _lecture(markdown: str = MARKDOWN, extra_code: str = "print(6 * 7)") -> str:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [
        nbformat.v4.new_markdown_cell(markdown),
        nbformat.v4.new_code_cell(PLOT),
        nbformat.v4.new_code_cell(extra_code),
    ]
    return nbformat.writes(notebook)


@pytest.fixture()
def course(tmp_path):
    """A course folder as site/build.py reads one: a lecture, a released assignment, the README, gd_lib."""
    root = tmp_path / "course"
    (root / "lectures").mkdir(parents=True)
    (root / "lectures" / "01_tiny.ipynb").write_text(_lecture())
    released = nbformat.v4.new_notebook()
    released.cells = [
        nbformat.v4.new_markdown_cell("# Assignment 1 — Tiny\n\nWrite `f`."),
        nbformat.v4.new_code_cell("def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"),
    ]
    (root / "assignments" / "01_tiny").mkdir(parents=True)
    (root / "assignments" / "01_tiny" / "tiny.ipynb").write_text(nbformat.writes(released))
    build = load_build_module()
    (root / "README.md").write_text(
        "# Tiny\n\n" + "".join(f"## {heading}\n\nAbout {page}.\n\n" for page, heading in build.INSTRUCTOR_SECTIONS)
    )
    # the library the outputs depend on (the kernel imports the installed gd_lib; this copy is hashed)
    (root / "gd_lib").mkdir()
    (root / "gd_lib" / "__init__.py").write_text("VERSION = 1\n")
    return root


def test_a_rebuild_executes_only_what_changed(course, tmp_path):
    executions = tmp_path / "executions.log"
    env = dict(os.environ, SITE_TEST_EXECUTIONS=str(executions))
    out, work = tmp_path / "site", tmp_path / "build"
    lecture = course / "lectures" / "01_tiny.ipynb"

    def build():
        result = build_site(course, out, work, "--mode", "quick", "--repository", "https://github.com/o/tiny", env=env)
        report = json.loads((out / "_course_build.json").read_text())
        runs = len(executions.read_text().splitlines()) if executions.exists() else 0
        return runs, report, result.stdout

    runs, report, stdout = build()
    assert runs == 1 and report["executed"] == ["01_tiny.ipynb"] and report["mode"] == "quick"
    check_lecture_page(out)

    runs, report, stdout = build()
    assert runs == 1 and report["executed"] == []
    assert "executed 0 notebook(s)" in stdout

    lecture.write_text(_lecture(markdown=MARKDOWN + "\nA sentence added to the text.\n"))
    runs, report, _ = build()
    assert runs == 1 and report["executed"] == []
    assert "A sentence added to the text." in (out / "lectures" / "01_tiny.html").read_text()

    lecture.write_text(_lecture(extra_code="print(6 * 9)"))
    runs, report, _ = build()
    assert runs == 2 and report["executed"] == ["01_tiny.ipynb"]
    assert "54" in (out / "lectures" / "01_tiny.html").read_text()

    (course / "gd_lib" / "__init__.py").write_text("VERSION = 2\n")
    runs, report, _ = build()
    assert runs == 3 and report["executed"] == ["01_tiny.ipynb"]


def check_lecture_page(site):
    """The executed lecture's page: its output, the figure, the slider drawn static, the math."""
    page = (site / "lectures" / "01_tiny.html").read_text()
    assert "42" in page and "A tiny lecture" in page
    # the figure, as an image file of the site
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', page)
    assert len(images) == 1 and (site / "lectures" / images[0]).is_file()
    # the slider, drawn disabled at its value, before the figure
    widget = page[page.index('class="gd-static-widget"') :]
    assert re.search(r'<input type="range" disabled min="0.0" max="2.0" step="0.05" value="0.25">', widget)
    assert "slope" in widget[: widget.index("<img")]
    # no widget manager: no view or state script, and nothing loaded from a CDN
    assert "application/vnd.jupyter.widget-view+json" not in page
    assert "application/vnd.jupyter.widget-state+json" not in page
    assert "cdn.jsdelivr" not in page and "unpkg" not in page
    # the mathematics, left for MathJax (served by the site) to typeset
    assert r"\(\eta &lt; 2/L\)" in page or r"\(\eta < 2/L\)" in page
    assert "_static/mathjax/tex-chtml-full.js" in page
    # the assignment is shown, not executed
    assert "YOUR CODE HERE" in (site / "assignments" / "01_tiny" / "tiny.html").read_text()
