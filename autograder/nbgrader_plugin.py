"""nbgrader preprocessors that replace nbgrader's ``Execute`` during ``nbgrader autograde``.

nbgrader's autograde restores the locked cells from the gradebook, then
executes the notebook in the student's own kernel and scores each graded
cell by whether its output holds an error (or anything on stderr). Here the
notebook is not executed by nbgrader at all: :mod:`autograder.grading` has
already read the submission safely, run it in a sandbox and decided every
graded cell in the grader's process.

- :class:`UseAssembledNotebook` (first of nbgrader's sanitizing steps) replaces
  whatever nbgrader read by the notebook the grader assembled from the source
  notebook and the student's answers (:func:`autograder.grading.assembled_notebook`):
  the grade cells, their ids and points are the instructor's, so a submission's
  malformed or forged metadata never reaches nbgrader's gradebook step.
- :class:`ApplySandboxedResults` writes the verdicts as the cells' outputs (a
  stdout line for a pass, an error naming what differed for a failure), and
  nbgrader's ``SaveAutoGrades`` then records the scores as usual.

A result that is missing or out of date (the formgrader's *Autograde* button) is
computed on the spot, in the same sandbox as ``make autograde``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_output
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool, Float, Int

from .course import Course, is_current, load_result
from .sandbox import Limits


class _GradingOptions(NbGraderPreprocessor):
    cell_timeout = Float(60.0, help="seconds per cell").tag(config=True)
    notebook_timeout = Float(600.0, help="seconds per notebook").tag(config=True)
    memory_gib = Float(4.0, help="memory limit per submission, GiB").tag(config=True)
    max_processes = Int(256, help="process/thread limit per submission").tag(config=True)
    work_gib = Float(1.0, help="writable space per submission (tmpfs), GiB").tag(config=True)
    allow_reduced_isolation = Bool(False, help="grade without the sandbox where it cannot be built").tag(config=True)

    def _result(self, resources):
        info = resources["nbgrader"]
        course = Course.default()
        assignment, student, notebook = info["assignment"], info["student"], info["notebook"]
        source = course.source_dir / assignment / f"{notebook}.ipynb"
        if is_current(course, assignment, student, source):
            return course, source, load_result(course.results_path(assignment, student, notebook))
        from .grading import close_session, grade_notebook, open_session

        limits = Limits(
            cell_timeout_s=self.cell_timeout,
            notebook_timeout_s=self.notebook_timeout,
            memory_bytes=int(self.memory_gib * (1 << 30)),
            max_processes=self.max_processes,
            work_bytes=int(self.work_gib * (1 << 30)),
        )
        session = open_session(course, assignment, allow_reduced=self.allow_reduced_isolation)
        try:
            return course, source, grade_notebook(course, assignment, student, Path(source), limits, session)
        finally:
            close_session(session)


class UseAssembledNotebook(_GradingOptions):
    """Replace the notebook nbgrader read by the grader's assembled one (see the module docstring)."""

    def preprocess(self, nb, resources):
        course, source, _ = self._result(resources)
        info = resources["nbgrader"]
        assembled = course.intake_dir / info["student"] / info["assignment"] / source.name
        nb.cells = nbformat.read(assembled, as_version=4).cells
        return nb, resources


WIDTH = 96


def _wrap(text: str, indent: str = "", first: str = "") -> list[str]:
    return textwrap.wrap(
        text,
        width=WIDTH,
        initial_indent=first or indent,
        subsequent_indent=indent + "    ",
        break_long_words=True,
        break_on_hyphens=False,
    ) or [first or indent]


def verdict_lines(verdict: dict) -> list[str]:
    """The feedback of one graded cell, as wrapped lines a student can act on."""
    points, score = verdict["points"], verdict["points"] if verdict["passed"] else verdict.get("score", 0.0)
    checks = verdict.get("checks") or []
    if verdict["passed"]:
        return [f"✔ passed: all {len(checks)} check{'s' if len(checks) != 1 else ''} [{points:g} of {points:g} points]"]
    lines = _wrap(f"{verdict['message']} [{round(score, 2):g} of {points:g} points]", first="✘ ")
    for check in checks:
        if check["passed"]:
            lines.append(f"  ✔ {check['name']}")
            continue
        lines += _wrap(check["message"], indent="    ", first=f"  ✘ {check['name']}: ")
        if check.get("mistake"):
            lines += _wrap(
                f"This is what a classic mistake gives: {check['mistake']}.", indent="      ", first="      → "
            )
    return lines


class ApplySandboxedResults(_GradingOptions):
    def preprocess(self, nb, resources):
        _, _, result = self._result(resources)
        header = []
        if result.fatal:
            header += _wrap(result.fatal, first="[grader] ")
        for cell in nb.cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            gid = meta.get("grade_id")
            if cell.cell_type != "code":
                continue
            cell.outputs = []
            cell.execution_count = None
            if gid in result.cells:
                verdict = result.cells[gid]
                lines = verdict_lines(verdict)
                score = verdict["points"] if verdict["passed"] else verdict.get("score", 0.0)
                if verdict["passed"]:
                    cell.outputs.append(new_output("stream", name="stdout", text="\n".join(lines) + "\n"))
                elif score > 0:  # nbgrader takes a number a grade cell outputs as its partial credit
                    cell.outputs.append(new_output("stream", name="stdout", text="\n".join(lines) + "\n"))
                    cell.outputs.append(
                        new_output("execute_result", data={"text/plain": f"{score:g}"}, execution_count=None)
                    )
                else:
                    cell.outputs.append(new_output("error", ename="TestFailed", evalue=lines[0], traceback=lines))
            elif gid in result.answer_errors:
                text = _wrap(f"this cell raised {result.answer_errors[gid]}", first="[grader] ")
                cell.outputs.append(new_output("stream", name="stdout", text="\n".join(text) + "\n"))
        if header and nb.cells:
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.outputs.insert(0, new_output("stream", name="stdout", text="\n".join(header) + "\n"))
                    break
        return nb, resources
