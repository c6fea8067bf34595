"""nbgrader preprocessor that replaces nbgrader's ``Execute`` during ``nbgrader autograde``.

nbgrader's autograde restores the locked cells from the gradebook, then
executes the notebook in the student's own kernel and scores each graded
cell by whether its output holds an error (or anything on stderr). Here the
notebook is not executed by nbgrader at all: :mod:`autograder.grading` has
already run it in a sandbox and decided every graded cell in the grader's
process. This preprocessor writes those verdicts as the cells' outputs (a
stdout line for a pass, an error naming what differed for a failure), and
nbgrader's ``SaveAutoGrades`` then records the scores as usual. A result
that is missing or out of date is computed on the spot.
"""
from __future__ import annotations

from pathlib import Path

from nbformat.v4 import new_output
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Float, Int

import nbformat

from .grading import Course, grade_notebook, merged_cells
from .sandbox import Limits


class ApplySandboxedResults(NbGraderPreprocessor):
    cell_timeout = Float(60.0, help="seconds per cell").tag(config=True)
    notebook_timeout = Float(600.0, help="seconds per notebook").tag(config=True)
    memory_gib = Float(4.0, help="memory limit per submission, GiB").tag(config=True)
    max_processes = Int(256, help="process/thread limit per submission").tag(config=True)

    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        course = Course.default()
        source = course.source_dir / info["assignment"] / f"{info['notebook']}.ipynb"
        limits = Limits(cell_timeout_s=self.cell_timeout, notebook_timeout_s=self.notebook_timeout,
                        memory_bytes=int(self.memory_gib * (1 << 30)), max_processes=self.max_processes)
        result = grade_notebook(course, info["assignment"], info["student"], Path(source), limits)
        # the notebook as it was graded: deleted or edited test cells come back as the source has them
        nb.cells = [cell for cell, _ in merged_cells(nbformat.read(source, as_version=4), nb)]
        header = []
        if result.fatal:
            header.append(f"[grader] {result.fatal}")
        for cell in nb.cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            gid = meta.get("grade_id")
            if cell.cell_type != "code":
                continue
            cell.outputs = []
            cell.execution_count = None
            if gid in result.cells:
                verdict = result.cells[gid]
                if verdict["passed"]:
                    cell.outputs.append(new_output("stream", name="stdout",
                                                   text=f"✔ {verdict['message']} [{verdict['points']:g} points]\n"))
                else:
                    cell.outputs.append(new_output("error", ename="TestFailed", evalue=verdict["message"],
                                                   traceback=[f"TestFailed: {verdict['message']}"]))
            elif gid in result.answer_errors:
                cell.outputs.append(new_output("stream", name="stdout",
                                               text=f"[grader] this cell raised {result.answer_errors[gid]}\n"))
        if header and nb.cells:
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.outputs.insert(0, new_output("stream", name="stdout", text="\n".join(header) + "\n"))
                    break
        return nb, resources
