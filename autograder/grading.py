"""Grading a class: assemble each submission, run it sandboxed, decide each test cell.

Phase 1 (this module, parallel): for every student and notebook,

1. **assemble** the notebook to run from the instructor's source notebook
   (``solutions/<assignment>/<nb>.ipynb``): graded test cells (hidden tests
   included) and read-only cells come from the source, answer cells from the
   student, cells the student added stay where the student put them. Editing
   or deleting a test cell therefore has no effect.
2. **run** it in the sandbox (:mod:`autograder.sandbox`) in ``student`` mode,
   where :func:`autograder.checks.check` only records values;
3. **decide** each graded test cell here, in the grader's own process, by
   comparing the recorded values with those of the trusted reference run of
   the source notebook (cached per source notebook).

Results are written to ``course/.autograder/results/<assignment>/<student>/<nb>.json``
keyed by the submission's and the reference's hashes, so rerunning after an
interruption redoes only what is missing or changed.

Phase 2 (:mod:`autograder.nbgrader_plugin`): ``nbgrader autograde`` restores
the cells, and instead of executing the notebook in the student's kernel it
writes these verdicts as the cells' outputs; nbgrader's own ``SaveAutoGrades``
then records the scores in the gradebook.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from .checks import compare
from .sandbox import Limits, NotebookRun, isolation_mode, run_cells

RESULTS_VERSION = 1


@dataclass(frozen=True)
class Course:
    """Where things are (nbgrader's course directory mapped onto the repository)."""

    root: Path

    @classmethod
    def default(cls) -> "Course":
        return cls(Path(os.environ.get("GD_COURSE_ROOT", Path(__file__).resolve().parents[1])))

    @property
    def course_dir(self) -> Path:
        return self.root / "course"

    @property
    def source_dir(self) -> Path:
        return self.root / "solutions"

    @property
    def release_dir(self) -> Path:
        return self.root / "assignments"

    @property
    def submitted_dir(self) -> Path:
        return self.course_dir / "submitted"

    @property
    def autograded_dir(self) -> Path:
        return self.course_dir / "autograded"

    @property
    def feedback_dir(self) -> Path:
        return self.course_dir / "feedback"

    @property
    def gradebook(self) -> Path:
        return self.course_dir / "gradebook.db"

    @property
    def cache_dir(self) -> Path:
        return self.course_dir / ".autograder"

    def results_path(self, assignment: str, student: str, notebook: str) -> Path:
        return self.cache_dir / "results" / assignment / student / f"{notebook}.json"

    def source_notebooks(self, assignment: str) -> list[Path]:
        folder = self.source_dir / assignment
        notebooks = sorted(folder.glob("*.ipynb"))
        if not notebooks:
            raise FileNotFoundError(f"no source notebooks in {folder}")
        return notebooks

    def students(self, assignment: str) -> list[str]:
        if not self.submitted_dir.is_dir():
            return []
        return sorted(p.name for p in self.submitted_dir.iterdir() if (p / assignment).is_dir())

    def secret_paths(self) -> list[Path]:
        """Hidden from every sandbox: the instructor's notebooks and the whole nbgrader course
        folder (gradebook, every submission, autograded copies, feedback, caches) — of this
        course and of the repository the grader is installed from, if that is another one."""
        repo = Path(__file__).resolve().parents[1]
        paths = [self.source_dir, self.course_dir, repo / "solutions", repo / "course"]
        unique = []
        for p in paths:
            if p.exists() and p.resolve() not in {u.resolve() for u in unique}:
                unique.append(p)
        return unique


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- assembling the notebook to run ---------------------------------------------------------

def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


@dataclass(frozen=True)
class PlannedCell:
    index: int
    code: str
    role: str              # "solution", "test", "fixed", "extra"
    grade_id: str | None
    points: float = 0.0


def source_plan(source_nb) -> list[PlannedCell]:
    """The source notebook's code cells as the reference run executes them."""
    plan = []
    for cell in source_nb.cells:
        if cell.cell_type != "code":
            continue
        meta = _meta(cell)
        role = "test" if meta.get("grade") and not meta.get("solution") else (
            "solution" if meta.get("solution") else "fixed")
        plan.append(PlannedCell(len(plan), cell.source, role, meta.get("grade_id"), float(meta.get("points", 0) or 0)))
    return plan


MISSING_ANSWER = "raise NotImplementedError('this answer cell is missing from the submission')"


def merged_cells(source_nb, student_nb) -> list[tuple[object, str]]:
    """The notebook to grade, as (cell, role) pairs: the source's cells in the source's order
    (test and read-only cells as the instructor wrote them, hidden tests included), the
    student's text in the answer cells (with the source's metadata), and the cells the
    student added, each after the graded cell it followed. Roles: "solution", "test",
    "fixed" (other source cells, markdown included) and "extra"."""
    answers: dict[str, str] = {}
    extras: dict[str | None, list] = {}
    anchor = None
    source_ids = {_meta(c).get("grade_id") for c in source_nb.cells if _meta(c).get("grade_id")}
    for cell in student_nb.cells:
        gid = _meta(cell).get("grade_id")
        if gid in source_ids:
            if cell.cell_type == "code" and gid not in answers:
                answers[gid] = cell.source
            anchor = gid
        elif cell.cell_type == "code" and cell.source.strip():
            extra = nbformat.v4.new_code_cell(cell.source)
            extras.setdefault(anchor, []).append(extra)

    merged = [(cell, "extra") for cell in extras.get(None, [])]
    for cell in source_nb.cells:
        meta = _meta(cell)
        gid = meta.get("grade_id")
        copy = nbformat.from_dict(json.loads(json.dumps(cell)))
        if cell.cell_type == "code" and meta.get("solution"):
            copy.source = answers.get(gid, MISSING_ANSWER)
            merged.append((copy, "solution"))
        elif cell.cell_type == "code" and meta.get("grade"):
            merged.append((copy, "test"))
        else:
            merged.append((copy, "fixed"))
        merged.extend((extra, "extra") for extra in (extras.get(gid, []) if gid else []))
    return merged


def assemble(source_nb, student_nb) -> list[PlannedCell]:
    """The code cells of :func:`merged_cells`, numbered, as the sandbox runs them."""
    plan: list[PlannedCell] = []
    for cell, role in merged_cells(source_nb, student_nb):
        if cell.cell_type != "code":
            continue
        meta = _meta(cell)
        points = float(meta.get("points", 0) or 0) if role == "test" else 0.0
        plan.append(PlannedCell(len(plan), cell.source, role, meta.get("grade_id"), points))
    return plan


# --- reference run ------------------------------------------------------------------------

class GradingSetupError(RuntimeError):
    """The instructor's side is wrong (e.g. the source notebook fails its own tests)."""


_reference_lock = threading.Lock()


def reference_captures(course: Course, assignment: str, notebook: Path, limits: Limits) -> dict:
    """{"sha256":..., "cells": {grade_id: [capture, ...]}} from the trusted source run (cached)."""
    digest = sha256_file(notebook)
    cache = course.cache_dir / "reference" / assignment / f"{notebook.stem}.json"
    with _reference_lock:
        if cache.exists():
            cached = json.loads(cache.read_text())
            if cached.get("sha256") == digest and cached.get("version") == RESULTS_VERSION:
                return cached
        plan = source_plan(nbformat.read(notebook, as_version=4))
        with tempfile.TemporaryDirectory(prefix="gd_reference_") as tmp:
            # the source folder's data files, as nbgrader releases them beside the notebook
            work = Path(tmp) / "work"
            shutil.copytree(notebook.parent, work, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
            run = run_cells([(c.index, c.code) for c in plan], mode="reference", workdir=work,
                            limits=Limits(cell_timeout_s=max(limits.cell_timeout_s, 600),
                                          notebook_timeout_s=max(limits.notebook_timeout_s, 3600)),
                            sandbox=False)
        cells: dict[str, list] = {}
        for c in plan:
            result = run.cells[c.index]
            if result.status != "ok":
                raise GradingSetupError(f"{notebook.name}: the source notebook's cell {c.grade_id or c.index} "
                                        f"fails: {result.error}\n{run.output_tail[-3000:]}")
            if c.role == "test":
                names = [cap.get("name") for cap in result.captures]
                if not names:
                    raise GradingSetupError(f"{notebook.name}: graded cell {c.grade_id} calls no check()")
                if len(set(names)) != len(names):
                    raise GradingSetupError(f"{notebook.name}: graded cell {c.grade_id} repeats a check name")
                cells[c.grade_id] = result.captures
        record = {"version": RESULTS_VERSION, "sha256": digest, "cells": cells}
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(record))
        return record


# --- deciding -----------------------------------------------------------------------------

@dataclass
class CellVerdict:
    grade_id: str
    points: float
    passed: bool
    message: str


def decide(plan: list[PlannedCell], run: NotebookRun, reference: dict) -> dict[str, CellVerdict]:
    verdicts = {}
    for cell in plan:
        if cell.role != "test":
            continue
        result = run.cells[cell.index]
        expected = reference["cells"].get(cell.grade_id, [])
        got = {}
        for cap in result.captures:
            if isinstance(cap, dict) and isinstance(cap.get("name"), str):
                got.setdefault(cap["name"], cap.get("value"))
        problems = []
        for ref in expected:
            name = ref["name"]
            if name not in got:
                why = result.error or {"timeout": "the cell timed out", "died": "the notebook's process died",
                                       "not_run": run.fatal or "the cell did not run"}.get(result.status, "not reached")
                problems.append(f"check {name!r} did not run ({why})")
                continue
            problem = compare(got[name], ref["value"], ref["rtol"], ref["atol"])
            if problem:
                problems.append(f"check {name!r} failed: {problem}")
        if not problems and result.status != "ok":
            problems.append(f"the test cell did not finish: {result.error or result.status}")
        passed = not problems
        message = (f"passed ({len(expected)} check{'s' if len(expected) != 1 else ''})" if passed
                   else "; ".join(problems))
        verdicts[cell.grade_id] = CellVerdict(cell.grade_id, cell.points, passed, message)
    return verdicts


# --- grading one submission ---------------------------------------------------------------

@dataclass
class NotebookResult:
    assignment: str
    student: str
    notebook: str
    submission_sha256: str
    reference_sha256: str
    isolation: str
    seconds: float
    fatal: str | None
    cells: dict = field(default_factory=dict)      # grade_id -> CellVerdict as dict
    answer_errors: dict = field(default_factory=dict)  # grade_id of answer cell -> its error

    @property
    def score(self) -> float:
        return sum(c["points"] for c in self.cells.values() if c["passed"])

    @property
    def max_score(self) -> float:
        return sum(c["points"] for c in self.cells.values())


def load_result(path: Path) -> NotebookResult | None:
    try:
        data = json.loads(path.read_text())
        if data.pop("version", None) != RESULTS_VERSION:
            return None
        return NotebookResult(**data)
    except (OSError, ValueError, TypeError):
        return None


def grade_notebook(course: Course, assignment: str, student: str, source: Path, limits: Limits,
                   env: dict[str, str] | None = None, gpu: bool = False, regrade: bool = False) -> NotebookResult:
    submitted = course.submitted_dir / student / assignment / source.name
    out_path = course.results_path(assignment, student, source.stem)
    reference = reference_captures(course, assignment, source, limits)
    submission_sha = sha256_file(submitted) if submitted.exists() else "missing"
    if not regrade:
        cached = load_result(out_path)
        if cached and cached.submission_sha256 == submission_sha and cached.reference_sha256 == reference["sha256"]:
            return cached

    source_nb = nbformat.read(source, as_version=4)
    if submitted.exists():
        try:
            student_nb = nbformat.read(submitted, as_version=4)
        except Exception as err:  # not a notebook at all: every test fails, with the reason
            student_nb = None
            unreadable = f"the submitted file is not a readable notebook ({type(err).__name__}: {err})"
    else:
        student_nb, unreadable = None, "no submitted file"
    if student_nb is None:
        plan = source_plan(source_nb)
        verdicts = {c.grade_id: CellVerdict(c.grade_id, c.points, False, unreadable) for c in plan if c.role == "test"}
        result = NotebookResult(assignment, student, source.stem, submission_sha, reference["sha256"],
                                isolation_mode()[0], 0.0, unreadable, {k: asdict(v) for k, v in verdicts.items()})
    else:
        plan = assemble(source_nb, student_nb)
        sandboxes = course.cache_dir / "sandboxes"
        sandboxes.mkdir(parents=True, exist_ok=True)
        os.chmod(sandboxes, 0o711)
        work_parent = Path(tempfile.mkdtemp(prefix=f"{student}-", dir=sandboxes))
        try:
            work = work_parent / "work"
            # the assignment's data files (released beside the notebook), and nothing else
            release = course.release_dir / assignment
            if release.is_dir():
                shutil.copytree(release, work, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
            run = run_cells([(c.index, c.code) for c in plan], mode="student", workdir=work, limits=limits,
                            hide=[str(p) for p in course.secret_paths()], env=env, sandbox=True, gpu=gpu,
                            log_path=work_parent / "output.log")
        finally:
            shutil.rmtree(work_parent, ignore_errors=True)
        verdicts = decide(plan, run, reference)
        answer_errors = {c.grade_id: run.cells[c.index].error for c in plan
                         if c.role == "solution" and run.cells[c.index].error}
        result = NotebookResult(assignment, student, source.stem, submission_sha, reference["sha256"],
                                run.isolation, round(run.seconds, 3), run.fatal,
                                {k: asdict(v) for k, v in verdicts.items()}, answer_errors)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"version": RESULTS_VERSION, **asdict(result)}, indent=1))
    os.replace(tmp, out_path)  # atomic: an interrupted run never leaves half a result
    return result


def gpu_slots(gpus: int | None, per_gpu: int) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES values for the workers (None: no GPU)."""
    if not gpus:
        return [None]
    return [str(g) for g in range(gpus) for _ in range(per_gpu)]


def grade_class(course: Course, assignment: str, students: list[str] | None = None, workers: int = 2,
                limits: Limits = Limits(), gpus: int = 0, per_gpu: int = 1, regrade: bool = False,
                progress: bool = True, require_isolation: bool = False) -> list[NotebookResult]:
    """Phase 1 for a whole class, in parallel; returns one result per (student, notebook)."""
    if require_isolation and isolation_mode()[0] != "namespaces":
        raise GradingSetupError(f"full isolation is not available here: {isolation_mode()[1]}")
    sources = course.source_notebooks(assignment)
    students = course.students(assignment) if students is None else students
    for source in sources:  # the reference run happens once, before any student's
        reference_captures(course, assignment, source, limits)
    jobs = [(s, src) for s in students for src in sources]
    slots = gpu_slots(gpus, per_gpu)
    workers = max(1, len(slots) if gpus else workers)
    free = list(range(workers))
    lock = threading.Lock()

    def work(student, source):
        with lock:
            slot = free.pop()
        try:
            device = slots[slot % len(slots)]
            env = {} if device is None else {"CUDA_VISIBLE_DEVICES": device,
                                              "GD_GRADER_GPU_FRACTION": f"{0.95 / per_gpu:.3f}"}
            return grade_notebook(course, assignment, student, source, limits, env=env, gpu=device is not None,
                                  regrade=regrade)
        finally:
            with lock:
                free.append(slot)

    from tqdm.auto import tqdm

    results = []
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(jobs), desc=f"grading {assignment}", unit="nb", disable=not progress) as bar:
        futures = [pool.submit(work, s, src) for s, src in jobs]
        for fut in as_completed(futures):
            results.append(fut.result())
            bar.update(1)
    results.sort(key=lambda r: (r.student, r.notebook))
    elapsed = time.monotonic() - started
    if progress:
        print(f"graded {len(results)} notebooks of {len(students)} students in {elapsed:.1f} s "
              f"with {workers} workers (isolation: {isolation_mode()[0]})")
    return results
