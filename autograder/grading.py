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
from .course import RESULTS_VERSION, Course, GradingSetupError, NotebookResult, is_current, load_result, sha256_file
from .sandbox import Limits, NotebookRun, isolation_mode, run_cells
from .zygote import Zygote, preload_for

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

_reference_locks: dict[Path, threading.Lock] = {}
_reference_failures: dict[tuple[Path, str], str] = {}  # a failing source fails once, not once per student
_locks_lock = threading.Lock()


def reference_captures(course: Course, assignment: str, notebook: Path, limits: Limits,
                       zygote: Zygote | None = None) -> dict:
    """{"sha256":..., "cells": {grade_id: [capture, ...]}} from the trusted source run (cached;
    computed once however many threads ask for it at the same time)."""
    digest = sha256_file(notebook)
    cache = course.cache_dir / "reference" / assignment / f"{notebook.stem}.json"
    with _locks_lock:
        lock = _reference_locks.setdefault(cache, threading.Lock())
    with lock:
        if (cache, digest) in _reference_failures:
            raise GradingSetupError(_reference_failures[cache, digest])
        if cache.exists():
            cached = json.loads(cache.read_text())
            if cached.get("sha256") == digest and cached.get("version") == RESULTS_VERSION:
                return cached
        try:
            return _reference_run(notebook, digest, cache, limits, zygote)
        except GradingSetupError as err:
            _reference_failures[cache, digest] = str(err)
            raise


def _reference_run(notebook: Path, digest: str, cache: Path, limits: Limits, zygote: Zygote | None) -> dict:
    plan = source_plan(nbformat.read(notebook, as_version=4))
    with tempfile.TemporaryDirectory(prefix="gd_reference_") as tmp:
        # the source folder's data files, as nbgrader releases them beside the notebook
        work = Path(tmp) / "work"
        shutil.copytree(notebook.parent, work, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
        run = run_cells([(c.index, c.code) for c in plan], mode="reference", workdir=work,
                        limits=Limits(cell_timeout_s=max(limits.cell_timeout_s, 600),
                                      notebook_timeout_s=max(limits.notebook_timeout_s, 3600)),
                        sandbox=False, zygote=zygote)
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

def grade_notebook(course: Course, assignment: str, student: str, source: Path, limits: Limits,
                   env: dict[str, str] | None = None, gpu: bool = False, regrade: bool = False,
                   zygote: Zygote | None = None) -> NotebookResult:
    submitted = course.submitted_dir / student / assignment / source.name
    out_path = course.results_path(assignment, student, source.stem)
    reference_sha = sha256_file(source)  # what the reference record is keyed by
    submission_sha = sha256_file(submitted) if submitted.exists() else "missing"
    if not regrade:
        cached = load_result(out_path)
        if cached and cached.submission_sha256 == submission_sha and cached.reference_sha256 == reference_sha:
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
        result = NotebookResult(assignment, student, source.stem, submission_sha, reference_sha,
                                isolation_mode()[0], 0.0, unreadable, {k: asdict(v) for k, v in verdicts.items()})
    else:
        plan = assemble(source_nb, student_nb)
        sandboxes = course.cache_dir / "sandboxes"
        sandboxes.mkdir(parents=True, exist_ok=True)
        os.chmod(sandboxes, 0o711)
        # no student name in the path: the next runs are forked from a zygote that saw it
        work_parent = Path(tempfile.mkdtemp(prefix="run-", dir=sandboxes))
        try:
            work = work_parent / "work"
            # the assignment's data files (released beside the notebook), and nothing else
            release = course.release_dir / assignment
            if release.is_dir():
                shutil.copytree(release, work, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
            run = run_cells([(c.index, c.code) for c in plan], mode="student", workdir=work, limits=limits,
                            hide=[str(p) for p in course.secret_paths()], env=env, sandbox=True, gpu=gpu,
                            log_path=work_parent / "output.log", zygote=zygote)
        finally:
            shutil.rmtree(work_parent, ignore_errors=True)
        # the reference is needed only now: the first runs of a class overlap with it
        reference = reference_captures(course, assignment, source, limits, zygote)
        if reference["sha256"] != reference_sha:
            raise GradingSetupError(f"{source} changed while it was being graded")
        verdicts = decide(plan, run, reference)
        answer_errors = {c.grade_id: run.cells[c.index].error for c in plan
                         if c.role == "solution" and run.cells[c.index].error}
        result = NotebookResult(assignment, student, source.stem, submission_sha, reference_sha,
                                run.isolation, round(run.seconds, 3), run.fatal,
                                {k: asdict(v) for k, v in verdicts.items()}, answer_errors)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"version": RESULTS_VERSION, **asdict(result)}, indent=1))
    os.replace(tmp, out_path)  # atomic: an interrupted run never leaves half a result
    return result


def gpu_slots(gpus: int | None, per_gpu: int) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES values for the workers (None: no GPU): ``per_gpu`` slots on each
    of the first ``gpus`` devices this process sees (its own CUDA_VISIBLE_DEVICES, if set)."""
    if not gpus:
        return [None]
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    names = visible if "CUDA_VISIBLE_DEVICES" in os.environ else [str(g) for g in range(gpus)]
    return [names[g] for g in range(min(gpus, len(names))) for _ in range(per_gpu)] or [None]


def grade_class(course: Course, assignment: str, students: list[str] | None = None, workers: int = 2,
                limits: Limits = Limits(), gpus: int = 0, per_gpu: int = 1, regrade: bool = False,
                progress: bool = True, require_isolation: bool = False, zygote: Zygote | None = None,
                on_student_done=None) -> list[NotebookResult]:
    """Phase 1 for a whole class, in parallel; returns one result per (student, notebook).

    The runs are forked by one zygote (``zygote``, or one started here that preloads
    what the source notebooks import). ``on_student_done(student, results)`` is called
    in this thread as soon as all of a student's notebooks are graded (phase 2 uses it
    to record each student while the others are still running)."""
    if require_isolation and isolation_mode()[0] != "namespaces":
        raise GradingSetupError(f"full isolation is not available here: {isolation_mode()[1]}")
    sources = course.source_notebooks(assignment)
    students = course.students(assignment) if students is None else students
    if zygote is None:
        stale = regrade or not all(is_current(course, assignment, s, src) for s in students for src in sources)
        with Zygote(preload=preload_for(sources), start=stale) as own:
            return grade_class(course, assignment, students, workers, limits, gpus, per_gpu, regrade, progress,
                               require_isolation, own, on_student_done)
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
                                  regrade=regrade, zygote=zygote)
        finally:
            with lock:
                free.append(slot)

    from tqdm.auto import tqdm

    results = []
    pending = {s: len(sources) for s in students}
    done: dict[str, list[NotebookResult]] = {}
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(jobs), desc=f"grading {assignment}", unit="nb", disable=not progress) as bar:
        # the reference runs first, beside the first students (their verdicts wait for it)
        references = {pool.submit(reference_captures, course, assignment, src, limits, zygote) for src in sources}
        futures = [pool.submit(work, s, src) for s, src in jobs]
        try:
            for fut in as_completed([*references, *futures]):
                result = fut.result()
                if fut in references:
                    continue
                results.append(result)
                bar.update(1)
                done.setdefault(result.student, []).append(result)
                pending[result.student] -= 1
                if pending[result.student] == 0 and on_student_done is not None:
                    on_student_done(result.student, done[result.student])
        except BaseException:  # e.g. the source notebook fails: the runs not started yet never start
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    results.sort(key=lambda r: (r.student, r.notebook))
    elapsed = time.monotonic() - started
    if progress:
        mode, why = isolation_mode()
        print(f"graded {len(results)} notebooks of {len(students)} students in {elapsed:.1f} s "
              f"with {workers} workers (isolation: {mode}; {why.split('; ')[-1]})")
    return results
