"""Running the course's notebooks headless: per-cell timeouts, figure checks, HTML export.

``make lectures`` and the lecture tests both go through :func:`execute_notebook`, so that a
lecture runs the same way in both:

* **Per-cell timeout.** Each lecture's cells get the timeout its notebook metadata names for the
  mode (``metadata.guided_descent.cell_timeout_s = {"quick": s, "short": s, "full": s}``; "short"
  is full mode with ``GD_STEP_SCALE`` below 1), else
  :data:`DEFAULT_CELL_TIMEOUT_S`: minutes, not an hour, so that a hung kernel (nbclient once sat
  idle on a finished cell for over five minutes) fails the lecture with the cell named instead
  of stalling the run.
* **Modes.** ``quick=True`` sets ``GD_QUICK=1``; ``step_scale`` sets ``GD_STEP_SCALE`` (full mode
  with the training loops cut short, :func:`gd_lib.step_budget`).
* **Figure checks.** With ``check_figures`` every figure the notebook renders (inline, through
  ``display`` or ``savefig``) is checked by :func:`gd_lib.plotting.figure_problems` inside the
  kernel, through an IPython startup file; :attr:`Execution.figures` lists them per cell.
* **HTML.** :func:`export_html` renders an executed notebook with nbconvert's lab template;
  :func:`html_problems` lists Markdown tables that did not render as tables and widget cells
  that have no static figure.

Command line: ``python -m gd_lib.notebooks [--quick] [--step-scale X] [--timeout S] --out DIR
NOTEBOOK...`` writes ``DIR/<name>.html`` and the executed ``DIR/<name>.ipynb`` and prints each
notebook's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_CELL_TIMEOUT_S",
    "METADATA_KEY",
    "Execution",
    "cell_timeout",
    "execute_notebook",
    "export_html",
    "html_problems",
    "main",
    "run_mode",
]

#: The notebook metadata key holding the course's per-notebook settings.
METADATA_KEY = "guided_descent"
#: Per-cell timeouts (seconds) when a notebook names none: a quick-mode lecture runs in about a
#: minute in all; a full-mode cell is meant to take at most a few minutes on a GPU.
DEFAULT_CELL_TIMEOUT_S = {"quick": 120, "short": 300, "full": 900}

# Runs in the kernel before the first cell (an IPython startup file): wraps
# FigureCanvasBase.print_figure, through which every rendered figure passes (the inline
# backend's display, IPython's PNG formatter, savefig), and appends one JSON line per figure.
_FIGURE_HOOK = r"""
def _gd_install_figure_hook():
    import json, os, weakref
    from matplotlib.backend_bases import FigureCanvasBase

    report = os.environ["GD_FIGURE_REPORT"]
    checked = weakref.WeakSet()
    original = FigureCanvasBase.print_figure

    def print_figure(self, *args, **kwargs):
        fig = self.figure
        if fig not in checked:
            checked.add(fig)
            from gd_lib.plotting import figure_problems
            try:
                problems = figure_problems(fig)
            except Exception as exc:  # the check itself must not break the lecture
                problems = [f"the figure check failed: {exc!r}"]
            titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
            suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
            with open(report, "a", encoding="utf-8") as f:
                f.write(json.dumps({"title": " ".join((suptitle or "; ".join(titles[:3])).split()),
                                    "axes": len(fig.axes), "problems": problems}) + "\n")
        return original(self, *args, **kwargs)

    FigureCanvasBase.print_figure = print_figure


_gd_install_figure_hook()
del _gd_install_figure_hook
"""


@dataclass
class Execution:
    """One headless run of a notebook."""

    path: Path
    nb: object  #: the executed notebook (``nbformat.NotebookNode``)
    seconds: float  #: wall time of the execution (kernel start included)
    timeout: int  #: the per-cell timeout it ran under
    error: str | None = None  #: why it stopped early (error, timeout, dead kernel), or None
    figures: list[dict] = field(default_factory=list)  #: per rendered figure: cell, title, problems

    @property
    def figure_problems(self) -> list[str]:
        return [
            f"cell {f['cell']}{' (' + f['title'] + ')' if f['title'] else ''}: {p}"
            for f in self.figures
            for p in f["problems"]
        ]


def run_mode(quick: bool, step_scale: float | None = None) -> str:
    """``"quick"``, ``"short"`` (full mode, steps scaled below 1) or ``"full"``."""
    if quick:
        return "quick"
    return "short" if step_scale is not None and step_scale < 1.0 else "full"


def cell_timeout(nb, mode: str) -> int:
    """The per-cell timeout (seconds) of notebook ``nb`` in ``mode`` (see :func:`run_mode`)."""
    if mode not in DEFAULT_CELL_TIMEOUT_S:
        raise ValueError(f"Invalid mode: {mode!r}; expected one of {sorted(DEFAULT_CELL_TIMEOUT_S)}")
    settings = nb.metadata.get(METADATA_KEY, {}).get("cell_timeout_s", {})
    return int(settings.get(mode, DEFAULT_CELL_TIMEOUT_S[mode]))


def execute_notebook(
    path,
    *,
    quick: bool,
    step_scale: float | None = None,
    timeout: int | None = None,
    check_figures: bool = True,
    workdir=None,
    env: dict | None = None,
) -> Execution:
    """Execute the notebook at ``path`` top to bottom in a fresh ``python3`` kernel.

    ``workdir`` is the kernel's working directory (default: a temporary one, so that nothing a
    notebook writes lands in the source tree); ``env`` adds environment variables. A failing
    cell does not raise: :attr:`Execution.error` says what happened and the notebook keeps the
    outputs up to that cell.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    timeout = int(timeout) if timeout else cell_timeout(nb, run_mode(quick, step_scale))
    kernel_env = dict(os.environ)
    kernel_env.update(env or {})
    kernel_env["GD_QUICK"] = "1" if quick else "0"
    if step_scale is not None:
        kernel_env["GD_STEP_SCALE"] = repr(float(step_scale))
    # figures render as image/png outputs (a caller's MPLBACKEND=Agg would show none)
    kernel_env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    # the kernel is this interpreter's environment's python3
    kernel_env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), kernel_env.get("PATH", "")])
    with tempfile.TemporaryDirectory(prefix="gd-notebook-") as tmp:
        tmp = Path(tmp)
        report = tmp / "figures.jsonl"
        if check_figures:
            startup = tmp / "ipython" / "profile_default" / "startup"
            startup.mkdir(parents=True)
            (startup / "00-gd-figure-check.py").write_text(_FIGURE_HOOK)
            kernel_env["IPYTHONDIR"] = str(tmp / "ipython")
            kernel_env["GD_FIGURE_REPORT"] = str(report)
        cwd = Path(workdir) if workdir is not None else tmp / "work"
        cwd.mkdir(parents=True, exist_ok=True)
        # the kernel writes a cell's figure lines before its execute_reply, so the lines that are
        # new when a cell's reply arrives are that cell's figures
        cell_of_line: list[int] = []

        def attribute_figures(cell, cell_index, execute_reply):
            if report.exists():
                count = len(report.read_text(encoding="utf-8").splitlines())
                cell_of_line.extend([cell_index] * (count - len(cell_of_line)))

        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(cwd)}},
            on_cell_executed=attribute_figures,
        )
        error = None
        start = time.perf_counter()
        try:
            client.execute(env=kernel_env)
        except CellTimeoutError as exc:
            error = f"a cell ran past the {timeout} s per-cell timeout: {str(exc).strip().splitlines()[0]}"
        except CellExecutionError as exc:
            error = f"{exc.ename}: {exc.evalue}"
        except DeadKernelError as exc:
            error = f"the kernel died: {exc}"
        seconds = time.perf_counter() - start
        figures = []
        if report.exists():
            for k, line in enumerate(report.read_text(encoding="utf-8").splitlines()):
                entry = json.loads(line)
                entry["cell"] = cell_of_line[k] if k < len(cell_of_line) else None
                figures.append(entry)
    return Execution(path=path, nb=nb, seconds=seconds, timeout=timeout, error=error, figures=figures)


def export_html(nb) -> str:
    """The executed notebook as one HTML page (nbconvert's lab template, images embedded)."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    return body


# A GitHub-flavoured Markdown table's delimiter row: | --- | :---: | ---: |
_TABLE_DELIMITER = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?\s*$")
# A widget whose figure lives in a widget view (empty in a static page) or in interactive_figure
_WIDGET_CALL = re.compile(r"\b(interactive_figure|interact|interactive|interact_manual)\s*\(")


def html_problems(html: str, nb) -> list[str]:
    """What the exported page of ``nb`` fails to show, as sentences (empty: none).

    Every Markdown table of a cell's source renders as an HTML ``<table>`` (not as raw pipes),
    no rendered Markdown shows a table's delimiter row as text, and every code cell that
    builds a widget (``interactive_figure``, ``interact``, ...) shows a static figure (an
    ``<img>`` or ``<svg>`` in its output), so that a reader of the page sees what the widget draws.
    """
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    problems = []
    markdown_divs = soup.select("div.jp-MarkdownCell")
    markdown_cells = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"]
    if len(markdown_divs) != len(markdown_cells):
        problems.append(f"{len(markdown_cells)} Markdown cells but {len(markdown_divs)} rendered")
    for (index, cell), div in zip(markdown_cells, markdown_divs):
        lines = cell.source.splitlines()
        # a delimiter row under a header row, outside code fences and display maths
        tables = sum(
            1 for k, line in enumerate(lines) if k > 0 and _TABLE_DELIMITER.match(line) and "|" in lines[k - 1]
        )
        rendered = len(div.find_all("table"))
        if rendered < tables:
            problems.append(f"cell {index}: {tables} Markdown table(s) in the source, {rendered} rendered")
        for text in div.find_all(string=_TABLE_DELIMITER_TEXT):
            problems.append(f"cell {index}: raw table syntax in the page: {text.strip()[:60]!r}")
    code_divs = soup.select("div.jp-CodeCell")
    code_cells = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    if len(code_divs) != len(code_cells):
        problems.append(f"{len(code_cells)} code cells but {len(code_divs)} rendered")
    for (index, cell), div in zip(code_cells, code_divs):
        if not _WIDGET_CALL.search(cell.source):
            continue
        outputs = div.select(".jp-OutputArea")
        if not any(out.find(["img", "svg"]) for out in outputs):
            problems.append(f"cell {index}: a widget cell with no static figure in the page")
    return problems


_TABLE_DELIMITER_TEXT = re.compile(r"\|\s*:?-{3,}:?\s*\|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gd_lib.notebooks",
        description=(
            "Execute notebooks headless (per-cell timeout from each notebook's metadata) and write each "
            "as HTML and as an executed notebook."
        ),
    )
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("out/lectures"), help="output folder (default out/lectures)")
    parser.add_argument("--quick", action="store_true", help="quick mode (GD_QUICK=1); default full mode")
    parser.add_argument(
        "--step-scale",
        type=float,
        default=None,
        help="full mode with training loops cut to this fraction (GD_STEP_SCALE)",
    )
    parser.add_argument(
        "--timeout",
        type=int,
        default=None,
        help="per-cell timeout in seconds (default: each notebook's own, see gd_lib.notebooks)",
    )
    args = parser.parse_args(argv)
    if args.step_scale is not None and not 0.0 < args.step_scale <= 1.0:
        parser.error(f"--step-scale must be in (0, 1], got {args.step_scale}")
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    mode = "quick" if args.quick else ("full" if args.step_scale is None else f"full, steps x {args.step_scale:g}")
    for path in args.notebooks:
        print(f"{path.name}: executing ({mode} mode) ...", flush=True)
        run = execute_notebook(
            path, quick=args.quick, step_scale=args.step_scale, timeout=args.timeout, workdir=args.out
        )
        import nbformat

        nbformat.write(run.nb, args.out / path.name)
        html = export_html(run.nb)
        (args.out / path.with_suffix(".html").name).write_text(html, encoding="utf-8")
        status = "ok" if run.error is None else f"FAILED: {run.error}"
        print(
            f"{path.name}: {run.seconds:.1f} s (per-cell timeout {run.timeout} s), {len(run.figures)} figures, "
            f"{status}",
            flush=True,
        )
        for problem in run.figure_problems:
            print(f"  figure: {problem}")
        for problem in html_problems(html, run.nb):
            print(f"  html: {problem}")
        if run.error is not None:
            failed.append(path.name)
    print(f"wrote {args.out}/: {len(args.notebooks) - len(failed)} of {len(args.notebooks)} notebooks ran through")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
