"""Grading a class: read each submission safely, run it sandboxed, decide each test cell.

Phase 1 (this module, parallel): for every student and notebook,

1. **intake** (:mod:`autograder.intake`): the submitted file is read without
   following links, bounded, validated; a file that cannot be read costs that
   student the notebook's points, with the reason, and nothing else.
2. **assemble** the notebook to run from the instructor's source notebook
   (``solutions/<assignment>/<nb>.ipynb``): graded test cells (hidden tests
   included) and read-only cells come from the source, answer cells from the
   student, cells the student added stay where the student put them. Editing
   or deleting a test cell therefore has no effect. The test cells go to the
   student's process without their expected values (:mod:`autograder.transform`).
   The assembled notebook (well-formed, with the source's grade cells, ids and
   points) is what nbgrader records in phase 2: nbgrader never reads the raw
   submission.
3. **run** it in the sandbox (:mod:`autograder.sandbox`) in ``student`` mode, forked
   from the students' zygote, which never loaded the library code the assignment
   asks for (:mod:`autograder.forbidden`);
4. **decide** each graded test cell here, in the grader's own process, by
   comparing the recorded values with those of the trusted reference run of
   the source notebook (the reference zygote, the whole library; cached per
   source notebook).

Results are written to ``course/.autograder/results/<assignment>/<student>/<nb>.json``
keyed by the submission's and the reference's hashes, so rerunning after an
interruption redoes only what is missing or changed. Whatever one submission
does, the others are graded: an error while grading one notebook is recorded as
that notebook's result (``failed``) and counted, never raised.

Phase 2 (:mod:`autograder.nbgrader_plugin`): ``nbgrader autograde`` reads the
assembled notebooks, writes these verdicts as the cells' outputs and records the
scores in the gradebook.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from . import forbidden as forbidden_module
from . import intake
from .checks import compare
from .course import RESULTS_VERSION, Course, GradingSetupError, NotebookResult, grading_digest, load_result, sha256_file
from .sandbox import Limits, NotebookRun, require_isolation, run_cells
from .transform import TestCellError, student_version
from .zygote import Zygote, preload_for

# --- assembling the notebook to run ---------------------------------------------------------


def _meta(cell) -> dict:
    meta = cell.get("metadata", {}) if isinstance(cell, dict) else {}
    nbg = meta.get("nbgrader", {}) if isinstance(meta, dict) else {}
    return nbg if isinstance(nbg, dict) else {}


def _grade_id(cell) -> str | None:
    gid = _meta(cell).get("grade_id")
    return gid if isinstance(gid, str) else None


@dataclass(frozen=True)
class PlannedCell:
    index: int
    code: str
    role: str  # "solution", "test", "fixed", "extra"
    grade_id: str | None
    points: float = 0.0


def _role(cell) -> str:
    meta = _meta(cell)
    if meta.get("solution"):
        return "solution"
    return "test" if meta.get("grade") else "fixed"


def source_plan(source_nb) -> list[PlannedCell]:
    """The source notebook's code cells as the reference run executes them."""
    plan = []
    for cell in source_nb.cells:
        if cell.cell_type != "code":
            continue
        plan.append(
            PlannedCell(len(plan), cell.source, _role(cell), _grade_id(cell), float(_meta(cell).get("points", 0) or 0))
        )
    return plan


MISSING_ANSWER = "raise NotImplementedError('this answer cell is missing from the submission')"


def merged_cells(source_nb, student_nb) -> list[tuple[object, str]]:
    """The notebook to grade, as (cell, role) pairs: the source's cells in the source's order
    (test and read-only cells as the instructor wrote them, hidden tests included), the
    student's text in the answer cells (with the source's metadata and cell type), and the code
    cells the student added, each after the graded cell it followed. Roles: "solution", "test",
    "fixed" (other source cells, markdown included) and "extra". ``student_nb`` may be ``None``
    (nothing readable was submitted): every answer is then missing.

    Only the grade ids of the student's cells are read (to find the answers): their other
    metadata (points, kinds, duplicates, ids unknown to the source) is ignored."""
    source_types = {_grade_id(c): c.cell_type for c in source_nb.cells if _grade_id(c) and _meta(c).get("solution")}
    source_ids = {_grade_id(c) for c in source_nb.cells if _grade_id(c)}
    answers: dict[str, str] = {}
    extras: dict[str | None, list] = {}
    anchor = None
    for cell in student_nb.cells if student_nb is not None else []:
        gid = _grade_id(cell)
        if gid in source_ids:
            if gid in source_types and cell.cell_type == source_types[gid] and gid not in answers:
                answers[gid] = cell.source
            anchor = gid
        elif cell.cell_type == "code" and cell.source.strip():
            extras.setdefault(anchor, []).append(nbformat.v4.new_code_cell(cell.source))

    merged = [(cell, "extra") for cell in extras.get(None, [])]
    for cell in source_nb.cells:
        gid = _grade_id(cell)
        copy = nbformat.from_dict(json.loads(json.dumps(cell)))
        role = _role(cell)
        if role == "solution":
            copy.source = answers.get(gid, MISSING_ANSWER if cell.cell_type == "code" else "")
            if cell.cell_type == "code":
                copy.outputs, copy.execution_count = [], None
        merged.append((copy, role))
        merged.extend((extra, "extra") for extra in (extras.get(gid, []) if gid else []))
    return merged


def assemble(source_nb, student_nb) -> list[PlannedCell]:
    """The code cells of :func:`merged_cells`, numbered, as the student's process runs them: test
    cells without their expected values (:func:`autograder.transform.student_version`)."""
    plan: list[PlannedCell] = []
    for cell, role in merged_cells(source_nb, student_nb):
        if cell.cell_type != "code":
            continue
        meta = _meta(cell)
        points = float(meta.get("points", 0) or 0) if role == "test" else 0.0
        code = cell.source
        if role in ("test", "fixed"):  # the instructor's cells: their reference code stays out
            try:
                code = student_version(cell.source)
            except TestCellError:
                if role == "test":
                    raise
        plan.append(PlannedCell(len(plan), code, role, _grade_id(cell), points))
    return plan


def assembled_notebook(source_nb, student_nb):
    """The notebook nbgrader records in phase 2 (the source's structure and metadata, the student's
    answers and added cells, no outputs)."""
    nb = nbformat.from_dict(json.loads(json.dumps(source_nb)))
    nb.cells = []
    for cell, _ in merged_cells(source_nb, student_nb):
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        nb.cells.append(cell)
    return nb


# --- reference run ------------------------------------------------------------------------

_reference_locks: dict[Path, threading.Lock] = {}
_reference_failures: dict[tuple[Path, str], str] = {}  # a failing source fails once, not once per student
_locks_lock = threading.Lock()


def reference_captures(
    course: Course, assignment: str, notebook: Path, limits: Limits, zygote: Zygote | None = None
) -> dict:
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
    source_nb = nbformat.read(notebook, as_version=4)
    plan = source_plan(source_nb)
    for c in plan:
        if c.role == "test":
            try:
                student_version(c.code)
            except TestCellError as err:
                raise GradingSetupError(f"{notebook.name}: graded cell {c.grade_id}: {err}") from None
    with tempfile.TemporaryDirectory(prefix="gd_reference_") as tmp:
        # the source folder's data files, as nbgrader releases them beside the notebook
        work = Path(tmp) / "work"
        shutil.copytree(notebook.parent, work, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
        run = run_cells(
            [(c.index, c.code) for c in plan],
            mode="reference",
            workdir=work,
            isolation="trusted",
            limits=Limits(
                cell_timeout_s=max(limits.cell_timeout_s, 600), notebook_timeout_s=max(limits.notebook_timeout_s, 3600)
            ),
            zygote=zygote,
        )
    cells: dict[str, list] = {}
    for c in plan:
        result = run.cells[c.index]
        if result.status != "ok":
            raise GradingSetupError(
                f"{notebook.name}: the source notebook's cell {c.grade_id or c.index} "
                f"fails: {result.error}\n{run.output_tail[-3000:]}"
            )
        if c.role == "test":
            names = [cap.get("name") for cap in result.captures]
            if not names:
                raise GradingSetupError(f"{notebook.name}: graded cell {c.grade_id} calls no check()")
            if len(set(names)) != len(names):
                raise GradingSetupError(f"{notebook.name}: graded cell {c.grade_id} repeats a check name")
            cells[c.grade_id] = result.captures
    record = {"version": RESULTS_VERSION, "sha256": digest, "cells": cells}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = cache.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(record))
    os.replace(tmp_path, cache)
    return record


# --- classic mistakes: what each one records, run the way a student's notebook runs --------------


def solution_text(code: str) -> str:
    """An answer cell of the source with its solution markers removed: what a correct student writes."""
    return "\n".join(
        line for line in code.split("\n") if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")
    )


def load_mistakes(source: Path) -> dict:
    """The assignment's catalogue of classic mistakes (``mistakes.json`` beside the source notebook)."""
    path = source.parent / "mistakes.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise GradingSetupError(f"{path}: not valid JSON ({err})") from None
    return data if isinstance(data, dict) else {}


def _question_tests(source_nb, answer_id: str) -> set[str]:
    """The graded test cells between answer cell ``answer_id`` and the next answer cell."""
    tests, inside = set(), False
    for cell in source_nb.cells:
        role, gid = _role(cell), _grade_id(cell)
        if role == "solution":
            inside = gid == answer_id
        elif inside and role == "test" and cell.cell_type == "code":
            tests.add(gid)
    return tests


_mistake_locks: dict[Path, threading.Lock] = {}


def mistake_captures(course: Course, assignment: str, source: Path, limits: Limits, session: Session) -> dict:
    """{test cell: {check: [{"mistake", "says", "value"}]}}: the values each classic mistake of the
    catalogue records, from the source's solution with the mistake's substitutions, run in the
    students' sandbox on the same inputs as every submission (only the cells its question needs).
    Cached beside the reference record."""
    catalogue = load_mistakes(source)
    if not catalogue:
        return {}
    import hashlib

    digest = hashlib.sha256(source.read_bytes() + json.dumps(catalogue, sort_keys=True).encode()).hexdigest()
    cache = course.cache_dir / "reference" / assignment / f"{source.stem}.mistakes.json"
    with _locks_lock:
        lock = _mistake_locks.setdefault(cache, threading.Lock())
    with lock:
        if cache.exists():
            cached = json.loads(cache.read_text())
            if cached.get("sha256") == digest and cached.get("version") == RESULTS_VERSION:
                return cached["cells"]
        source_nb = nbformat.read(source, as_version=4)
        correct = {
            _grade_id(c): solution_text(c.source)
            for c in source_nb.cells
            if _role(c) == "solution" and c.cell_type == "code"
        }
        release = course.release_dir / assignment
        out: dict[str, dict[str, list]] = {}
        for name, bug in catalogue.items():
            gid = bug.get("cell")
            if gid not in correct:
                continue  # a mistake of another notebook of the assignment
            code = correct[gid]
            for old, new in bug.get("replace", []):
                if old not in code:
                    raise GradingSetupError(f"mistakes.json: {name}: {old!r} is not in the solution of {gid}")
                code = code.replace(old, new)
            student_nb = nbformat.from_dict(json.loads(json.dumps(source_nb)))
            for cell in student_nb.cells:
                if _role(cell) == "solution" and cell.cell_type == "code":
                    cell.source = code if _grade_id(cell) == gid else correct[_grade_id(cell)]
            wanted = _question_tests(source_nb, gid) | set(bug.get("fails", []))
            plan = [c for c in assemble(source_nb, student_nb) if c.role != "test" or c.grade_id in wanted]
            run = _run_student(plan, limits, session, release)
            for c in plan:
                if c.role != "test":
                    continue
                for cap in run.cells[c.index].captures:
                    out.setdefault(c.grade_id, {}).setdefault(cap["name"], []).append(
                        {"mistake": name, "says": str(bug.get("says", name)), "value": cap["value"]}
                    )
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": RESULTS_VERSION, "sha256": digest, "cells": out}))
        os.replace(tmp, cache)
        return out


# --- deciding -----------------------------------------------------------------------------


@dataclass
class CheckVerdict:
    name: str
    points: float
    passed: bool
    message: str  # "" when passed
    mistake: str | None = None  # the classic mistake the student's value matches, in words


@dataclass
class CellVerdict:
    grade_id: str
    points: float
    passed: bool  # every check passed (full points)
    message: str  # one sentence for the whole cell
    score: float = 0.0  # partial credit: the points of the checks that passed
    checks: list = field(default_factory=list)  # CheckVerdict as dicts, in the order of the reference


def _forbidden_use(text: str | None) -> str | None:
    if text and "ForbiddenLibraryUse" in text:
        return text.split("ForbiddenLibraryUse: ", 1)[-1]
    return None


def _not_run_reason(result, run: NotebookRun) -> str:
    if result.error:
        return f"the test cell stopped with {result.error}"
    return {
        "timeout": "the cell timed out",
        "died": "the notebook's process died",
        "not_run": run.fatal or "the cell did not run",
    }.get(result.status, "it was not reached")


def decide(plan: list[PlannedCell], run: NotebookRun, reference: dict) -> dict[str, CellVerdict]:
    """Each graded test cell's verdict: its points split evenly over its checks (partial credit),
    every failed check explained, and named as a classic mistake where the student's value equals the
    value that mistake gives (``reference["mistakes"]``, computed by the grader from the catalogue)."""
    verdicts = {}
    mistakes = reference.get("mistakes", {})
    for cell in plan:
        if cell.role != "test":
            continue
        result = run.cells[cell.index]
        expected = reference["cells"].get(cell.grade_id, [])
        got = {}
        for cap in result.captures:
            if isinstance(cap, dict) and isinstance(cap.get("name"), str):
                got.setdefault(cap["name"], cap.get("value"))
        share = cell.points / len(expected) if expected else 0.0
        checks: list[CheckVerdict] = []
        for ref in expected:
            name = ref["name"]
            about = f"for {ref['about']}: " if ref.get("about") else ""
            if name not in got:
                checks.append(
                    CheckVerdict(name, share, False, f"{about}this check did not run: {_not_run_reason(result, run)}")
                )
                continue
            problem = compare(got[name], ref["value"], ref["rtol"], ref["atol"])
            mistake = None
            if problem:
                for known in mistakes.get(cell.grade_id, {}).get(name, []):
                    if compare(got[name], known["value"], ref["rtol"], ref["atol"]) is None:
                        mistake = known["says"]
                        break
            checks.append(CheckVerdict(name, share, problem is None, f"{about}{problem}" if problem else "", mistake))
        forbidden_use = _forbidden_use(result.error)
        if forbidden_use:
            checks = [CheckVerdict(c.name, c.points, False, f"no points: {forbidden_use}") for c in checks]
        passed_checks = [c for c in checks if c.passed]
        score = round(share * len(passed_checks), 6) if len(passed_checks) < len(checks) else cell.points
        if not checks and result.status != "ok":
            score = 0.0
        passed = score == cell.points and (result.status == "ok" or bool(checks))
        if passed:
            message = f"passed ({len(checks)} check{'s' if len(checks) != 1 else ''})"
        elif forbidden_use:
            message = f"no points: {forbidden_use}"
        else:
            message = f"{len(passed_checks)} of {len(checks)} checks passed"
            if result.status != "ok" and result.error:
                message += f"; the test cell stopped with {result.error}"
        verdicts[cell.grade_id] = CellVerdict(
            cell.grade_id, cell.points, passed, message, score, [asdict(c) for c in checks]
        )
    return verdicts


# --- grading one submission ---------------------------------------------------------------


@dataclass
class Session:
    """What the notebooks of one grading run share: the two zygotes and how submissions are isolated."""

    reference: Zygote
    student: Zygote
    isolation: str  # "bwrap" or "process" (the reduced mode, asked for explicitly)


def source_notebook(course: Course, assignment: str, notebook: str) -> Path:
    return course.source_dir / assignment / f"{notebook}.ipynb"


def write_intake(course: Course, assignment: str, student: str, source_nb, student_nb, notebook: str) -> None:
    """The assembled notebook (and a valid ``timestamp.txt``) where phase 2 reads it."""
    folder = course.intake_dir / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    nb = assembled_notebook(source_nb, student_nb)
    tmp = folder / f".{notebook}.ipynb.tmp"
    nbformat.write(nb, tmp)
    os.replace(tmp, folder / f"{notebook}.ipynb")
    stamp = intake.read_timestamp(str(course.submitted_dir), [student, assignment, "timestamp.txt"])
    if stamp:
        (folder / "timestamp.txt").write_text(stamp)
    elif (folder / "timestamp.txt").exists():
        (folder / "timestamp.txt").unlink()


def _store(course: Course, result: NotebookResult) -> NotebookResult:
    out_path = course.results_path(result.assignment, result.student, result.notebook)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"version": RESULTS_VERSION, **asdict(result)}, indent=1))
    os.replace(tmp, out_path)  # atomic: an interrupted run never leaves half a result
    return result


def grade_notebook(
    course: Course,
    assignment: str,
    student: str,
    source: Path,
    limits: Limits,
    session: Session,
    env: dict[str, str] | None = None,
    gpu: bool = False,
    regrade: bool = False,
) -> NotebookResult:
    parts = [student, assignment, source.name]
    reference_sha = grading_digest(source)
    submission_sha = intake.fingerprint(str(course.submitted_dir), parts)
    if not regrade:
        cached = load_result(course.results_path(assignment, student, source.stem))
        if (
            cached
            and cached.submission_sha256 == submission_sha
            and cached.reference_sha256 == reference_sha
            and (course.intake_dir / student / assignment / source.name).exists()
        ):
            return cached
    source_nb = nbformat.read(source, as_version=4)
    try:
        student_nb, _ = intake.read_submission(str(course.submitted_dir), parts)
        unreadable = None
    except intake.SubmissionError as err:
        student_nb, unreadable = None, str(err)
    write_intake(course, assignment, student, source_nb, student_nb, source.stem)
    if student_nb is None:
        plan = source_plan(source_nb)
        verdicts = {
            c.grade_id: CellVerdict(c.grade_id, c.points, False, f"not graded: {unreadable}")
            for c in plan
            if c.role == "test"
        }
        return _store(
            course,
            NotebookResult(
                assignment,
                student,
                source.stem,
                submission_sha,
                reference_sha,
                session.isolation,
                0.0,
                unreadable,
                {k: asdict(v) for k, v in verdicts.items()},
                failed=True,
            ),
        )
    plan = assemble(source_nb, student_nb)
    release = course.release_dir / assignment
    run = _run_student(plan, limits, session, release, env=env, gpu=gpu)
    # the reference is needed only now: the first runs of a class overlap with it
    reference = reference_captures(course, assignment, source, limits, session.reference)
    if reference["sha256"] != sha256_file(source):
        raise GradingSetupError(f"{source} changed while it was being graded")
    reference = {**reference, "mistakes": mistake_captures(course, assignment, source, limits, session)}
    verdicts = decide(plan, run, reference)
    answer_errors = {
        c.grade_id: run.cells[c.index].error for c in plan if c.role == "solution" and run.cells[c.index].error
    }
    start_failed = run.fatal is not None and not any(r.status != "not_run" for r in run.cells.values())
    return _store(
        course,
        NotebookResult(
            assignment,
            student,
            source.stem,
            submission_sha,
            reference_sha,
            run.isolation,
            round(run.seconds, 3),
            run.fatal,
            {k: asdict(v) for k, v in verdicts.items()},
            answer_errors,
            failed=run.violation or start_failed,
        ),
    )


def _run_student(
    plan: list[PlannedCell], limits: Limits, session: Session, release: Path, env=None, gpu: bool = False
) -> NotebookRun:
    """Run planned cells the way every submission runs: in the sandbox (or, in the reduced mode, in a
    temporary folder holding the assignment's data files, removed afterwards)."""
    data_dir = release if release.is_dir() else None
    cells = [(c.index, c.code) for c in plan]
    if session.isolation == "bwrap":
        return run_cells(
            cells,
            mode="student",
            limits=limits,
            env=env,
            gpu=gpu,
            isolation="bwrap",
            data_dir=data_dir,
            zygote=session.student,
        )
    with tempfile.TemporaryDirectory(prefix="gd_run_") as tmp:
        work = Path(tmp) / "work"
        if data_dir:
            shutil.copytree(data_dir, work, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
        return run_cells(
            cells,
            mode="student",
            limits=limits,
            env=env,
            gpu=gpu,
            isolation=session.isolation,
            workdir=work,
            zygote=session.student,
        )


def failed_result(course: Course, assignment: str, student: str, source: Path, why: str) -> NotebookResult:
    """The result of a notebook whose grading broke (a bug, a machine problem): 0 points, the reason, counted."""
    try:
        plan = source_plan(nbformat.read(source, as_version=4))
    except Exception:  # noqa: BLE001
        plan = []
    verdicts = {
        c.grade_id: asdict(CellVerdict(c.grade_id, c.points, False, f"not graded: {why}"))
        for c in plan
        if c.role == "test"
    }
    return NotebookResult(
        assignment, student, source.stem, "error", "error", "none", 0.0, f"grading error: {why}", verdicts, failed=True
    )


def gpu_slots(gpus: int | None, per_gpu: int) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES values for the workers (None: no GPU): ``per_gpu`` slots on each
    of the first ``gpus`` devices this process sees (its own CUDA_VISIBLE_DEVICES, if set)."""
    if not gpus:
        return [None]
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    names = visible if "CUDA_VISIBLE_DEVICES" in os.environ else [str(g) for g in range(gpus)]
    return [names[g] for g in range(min(gpus, len(names))) for _ in range(per_gpu)] or [None]


def open_session(course: Course, assignment: str, allow_reduced: bool = False, start: bool = True) -> Session:
    """The two zygotes of a grading run (started now, importing while the caller goes on)."""
    isolation = require_isolation(allow_reduced)
    sources = course.source_notebooks(assignment)
    preload = preload_for(sources)
    try:
        forbidden = forbidden_module.resolve(forbidden_module.declared(sources))
    except ValueError as err:
        raise GradingSetupError(str(err)) from None
    reference = Zygote(preload=preload, mode="reference", start=False)  # only if the cache is stale
    student = Zygote(preload=preload, mode="student", forbidden=forbidden, sandbox=isolation == "bwrap", start=start)
    return Session(reference, student, isolation)


def close_session(session: Session) -> None:
    for z in (session.student, session.reference):
        z.__exit__(None, None, None)


def grade_class(
    course: Course,
    assignment: str,
    students: list[str] | None = None,
    workers: int = 2,
    limits: Limits = Limits(),
    gpus: int = 0,
    per_gpu: int = 1,
    regrade: bool = False,
    progress: bool = True,
    allow_reduced: bool = False,
    session: Session | None = None,
    on_student_done=None,
) -> list[NotebookResult]:
    """Phase 1 for a whole class, in parallel; returns one result per (student, notebook).

    Every notebook gets a result, whatever happens while grading it (``failed`` says which
    broke). ``on_student_done(student, results)`` is called in this thread as soon as all of a
    student's notebooks are graded (phase 2 uses it to record each student while the others are
    still running); an exception it raises is reported for that student and grading goes on."""
    sources = course.source_notebooks(assignment)
    students = course.students(assignment) if students is None else students
    if session is None:
        own = open_session(course, assignment, allow_reduced)
        try:
            return grade_class(
                course,
                assignment,
                students,
                workers,
                limits,
                gpus,
                per_gpu,
                regrade,
                progress,
                allow_reduced,
                own,
                on_student_done,
            )
        finally:
            close_session(own)
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
            env = (
                {}
                if device is None
                else {"CUDA_VISIBLE_DEVICES": device, "GD_GRADER_GPU_FRACTION": f"{0.95 / per_gpu:.3f}"}
            )
            return grade_notebook(
                course, assignment, student, source, limits, session, env=env, gpu=device is not None, regrade=regrade
            )
        except GradingSetupError:
            raise  # the instructor's side is broken: no student can be graded
        except Exception as err:  # noqa: BLE001 - one notebook's failure is that notebook's alone
            why = f"{type(err).__name__}: {err}"
            print(
                f"[grader] grading {student}/{source.name} failed: {why}\n{traceback.format_exc()}",
                file=__import__("sys").stderr,
            )
            return _store(course, failed_result(course, assignment, student, source, why))
        finally:
            with lock:
                free.append(slot)

    from tqdm.auto import tqdm

    results = []
    pending = {s: len(sources) for s in students}
    done: dict[str, list[NotebookResult]] = {}
    recording_errors: dict[str, str] = {}
    started = time.monotonic()
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(jobs), desc=f"grading {assignment}", unit="nb", disable=not progress) as bar,
    ):
        # the reference runs first, beside the first students (their verdicts wait for it)
        stale = regrade or not all(
            (course.cache_dir / "reference" / assignment / f"{s.stem}.json").exists() for s in sources
        )
        references = (
            {pool.submit(reference_captures, course, assignment, src, limits, session.reference) for src in sources}
            if stale
            else set()
        )
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
                    try:
                        on_student_done(result.student, done[result.student])
                    except Exception as err:  # noqa: BLE001 - recording one student never stops the others
                        recording_errors[result.student] = f"{type(err).__name__}: {err}"[:2000]
        except BaseException:  # e.g. the source notebook fails: the runs not started yet never start
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    for r in results:
        if r.student in recording_errors:
            r.failed = True
            r.fatal = (
                r.fatal + "; " if r.fatal else ""
            ) + f"not recorded in the gradebook: {recording_errors[r.student]}"
    results.sort(key=lambda r: (r.student, r.notebook))
    elapsed = time.monotonic() - started
    if progress:
        print(
            f"graded {len(results)} notebooks of {len(students)} students in {elapsed:.1f} s "
            f"with {workers} workers (isolation: {session.isolation})"
        )
    return results
