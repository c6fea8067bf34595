"""Command line of the course's autograder.

    python -m autograder autograde A [--workers N] [--gpus G] [--student S ...] [--regrade] ...
    python -m autograder feedback A
    python -m autograder export [--to course/grades.csv]
    python -m autograder grade-shard A --shard K/N --out DIR     (one job of a cluster array)
    python -m autograder merge A --from DIR [DIR ...]             (collect the shards' results)
    python -m autograder integrity A [--out DIR] [--threshold X]  (similar answers; changes no score)
    python -m autograder report A [--out DIR]                     (item analysis; changes no score)

``autograde`` grades every submission in ``course/submitted/<student>/A/``:
phase 1 reads each notebook safely, runs it sandboxed (bubblewrap), in parallel
(processes forked by zygotes that have imported the libraries), and decides its
tests in this process; phase 2 hands the verdicts to ``nbgrader autograde`` which
records them in the gradebook and writes ``course/autograded/``, for each student as
soon as their notebooks are done, while the others still run. A rerun
resumes: finished notebooks whose submission did not change are not run
again (``--regrade`` forces it).

Whatever a submission does, the others are graded and recorded. The exit status
is the number of submissions that could not be graded normally (unreadable,
broken the grader's channel, not recorded; at most 100), 0 when all were, and 2
when the instructor's side is wrong (e.g. the source notebook fails its own tests).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .course import Course, GradingSetupError, is_current
from .sandbox import GiB, IsolationUnavailable, Limits, isolation_mode
from .zygote import ZygoteError

# autograder.grading (nbformat, hence jsonschema: seconds to import) is imported inside the
# commands, after the zygote has started importing torch and gd_lib in parallel.


def _nbgrader(course: Course, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # nbgrader calls alembic
    return subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course.course_dir,
        env=env,
        check=check,
        capture_output=True,
        text=True,
    )


def _limits(args) -> Limits:
    return Limits(
        cell_timeout_s=args.cell_timeout,
        notebook_timeout_s=args.notebook_timeout,
        memory_bytes=int(args.memory_gib * GiB),
        max_processes=args.max_processes,
        work_bytes=int(args.work_gib * GiB),
    )


def _quiet_libraries() -> None:
    """nbgrader's gradebook (SQLAlchemy) and traitlets warn about their own deprecations on every
    student: nothing an instructor can act on."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", module="sqlalchemy")
    warnings.filterwarnings("ignore", module="nbgrader")
    warnings.filterwarnings("ignore", message=".*SQLAlchemy.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        from sqlalchemy import exc as sa_exc

        warnings.filterwarnings("ignore", category=sa_exc.SAWarning)
        warnings.filterwarnings("ignore", category=getattr(sa_exc, "MovedIn20Warning", sa_exc.SAWarning))
    except ImportError:
        pass
    logging.getLogger("traitlets").setLevel(logging.ERROR)


def _detect_gpus(requested: int | None) -> int:
    if requested is not None:
        return requested
    if not (os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")):
        return 0  # no NVIDIA driver: no need to import torch here to learn that
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def nbgrader_api(course: Course, limits: Limits | None = None, from_intake: bool = False, allow_reduced: bool = False):
    """nbgrader's Python API with the course's configuration (one process for the whole class).
    ``from_intake``: nbgrader reads the grader's assembled notebooks, never the raw submissions."""
    _quiet_libraries()
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course.course_dir)).load_config()
    if from_intake:
        config.CourseDirectory.submitted_directory = os.path.relpath(course.intake_dir, course.root)
    config.NbGraderAPI.log_level = "ERROR"
    config.Application.log_level = "ERROR"
    for name in ("ApplySandboxedResults", "UseAssembledNotebook"):
        section = config[name]
        section.allow_reduced_isolation = allow_reduced
        if limits is not None:
            section.cell_timeout = limits.cell_timeout_s
            section.notebook_timeout = limits.notebook_timeout_s
            section.memory_gib = limits.memory_bytes / GiB
            section.max_processes = limits.max_processes
            section.work_gib = limits.work_bytes / GiB
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    coursedir = CourseDirectory(config=config)
    return NbGraderAPI(coursedir=coursedir, config=config)


class GradebookRecorder:
    """Phase 2: nbgrader autograde, with the sandboxed verdicts instead of its own execution.
    One nbgrader API object records every student, in this process."""

    def __init__(self, course: Course, assignment: str, limits: Limits, allow_reduced: bool = False):
        self.assignment = assignment
        self.api = nbgrader_api(course, limits, from_intake=True, allow_reduced=allow_reduced)

    def record(self, student: str, results=None) -> None:
        """Record one student (raises RuntimeError for that student alone when nbgrader fails)."""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome = self.api.autograde(self.assignment, student, force=True, create=True)
        if not outcome.get("success"):
            raise RuntimeError(f"nbgrader autograde failed: {outcome.get('error', '')[-800:]}")


def _record_in_gradebook(course: Course, assignment: str, students: list[str], limits: Limits) -> dict[str, str]:
    """Record each student; {student: why} for those nbgrader could not record."""
    recorder = GradebookRecorder(course, assignment, limits)
    failures = {}
    for student in students:
        try:
            recorder.record(student)
        except Exception as err:  # noqa: BLE001 - one student's failure is that student's alone
            failures[student] = str(err)
    return failures


def _ensure_released(course: Course, assignment: str) -> None:
    """The gradebook must know the assignment (nbgrader learns it at generate_assignment)."""
    from nbgrader.api import Gradebook, MissingEntry

    db_url = "sqlite:///" + str(course.gradebook)
    with Gradebook(db_url, "guided-descent") as gb:
        try:
            gb.find_assignment(assignment)
            return
        except MissingEntry:
            pass
    _nbgrader(course, "generate_assignment", assignment, "--force")


def summary_table(results, refused: dict[str, str] | None = None) -> str:
    rows = [("student", "notebook", "score", "max", "seconds", "note")]
    for r in results:
        note = ("NOT GRADED NORMALLY: " if r.failed else "") + (r.fatal or "")
        rows.append((r.student, r.notebook, f"{r.score:g}", f"{r.max_score:g}", f"{r.seconds:.1f}", note[:160]))
    for name, why in (refused or {}).items():
        rows.append((name, "-", "-", "-", "-", f"NOT GRADED: {why}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _exit_status(failed: int) -> int:
    return min(failed, 100)


def cmd_autograde(args) -> int:
    course = Course.default()
    limits = _limits(args)
    students = args.student or course.students(args.assignment)
    refused = {} if args.student else course.refused_students(args.assignment)
    if not students and not refused:
        print(f"no submissions in {course.submitted_dir}/*/{args.assignment}", file=sys.stderr)
        return 1
    sources = course.source_notebooks(args.assignment)
    stale = args.regrade or not all(is_current(course, args.assignment, s, src) for s in students for src in sources)
    # the zygotes import torch, gd_lib, ... while this process loads nbformat and nbgrader
    # (unless every result is up to date: then nothing runs and no zygote starts)
    from .grading import close_session, open_session

    session = open_session(course, args.assignment, allow_reduced=args.allow_reduced_isolation, start=stale)
    try:
        from .grading import grade_class

        _ensure_released(course, args.assignment)
        gpus = _detect_gpus(args.gpus)
        mode, why = isolation_mode()
        print(f"isolation: {session.isolation} ({why})", file=sys.stderr)
        recorder = GradebookRecorder(course, args.assignment, limits, args.allow_reduced_isolation)
        # each student goes into the gradebook as soon as their notebooks are graded, while the
        # other students' notebooks run
        results = grade_class(
            course,
            args.assignment,
            students,
            workers=args.workers,
            limits=limits,
            gpus=gpus,
            per_gpu=args.per_gpu,
            regrade=args.regrade,
            progress=not args.quiet,
            session=session,
            on_student_done=recorder.record,
        )
    finally:
        close_session(session)
    print(summary_table(results, refused))
    failed = sum(1 for r in results if r.failed) + len(refused)
    if failed:
        print(
            f"{failed} submission(s) could not be graded normally (see the notes above); "
            f"every other submission is graded and recorded",
            file=sys.stderr,
        )
    return _exit_status(failed)


def cmd_feedback(args) -> int:
    """Feedback for each graded student, one at a time: a student whose feedback fails is named,
    the others get theirs."""
    course = Course.default()
    api = nbgrader_api(course)
    students = (
        sorted(
            p.parent.name
            for p in course.autograded_dir.glob(f"*/{args.assignment}")
            if p.is_dir() and not p.is_symlink()
        )
        if course.autograded_dir.is_dir()
        else []
    )
    failures = {}
    import warnings

    for student in students:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                outcome = api.generate_feedback(args.assignment, student, force=True)
                if not outcome.get("success"):
                    failures[student] = (outcome.get("error") or "")[-500:]
            except Exception as err:  # noqa: BLE001
                failures[student] = f"{type(err).__name__}: {err}"
    folder = course.feedback_dir
    pages = sorted(folder.glob(f"*/{args.assignment}/*.html"))
    print(f"{len(pages)} feedback pages in {folder}")
    for student, why in failures.items():
        print(f"no feedback for {student}: {why}", file=sys.stderr)
    return _exit_status(len(failures))


def cmd_export(args) -> int:
    course = Course.default()
    target = Path(args.to).resolve()
    proc = _nbgrader(course, "export", "--to", str(target), check=False)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode
    print(target.read_text(), end="")
    return 0


def _shard(students: list[str], shard: str) -> list[str]:
    k, n = (int(x) for x in shard.split("/"))
    if not 0 <= k < n:
        raise ValueError(f"Invalid shard {shard!r}; expected K/N with 0 <= K < N")
    return [s for i, s in enumerate(sorted(students)) if i % n == k]


def cmd_grade_shard(args) -> int:
    from .grading import grade_class

    course = Course.default()
    students = _shard(course.students(args.assignment), args.shard)
    results = grade_class(
        course,
        args.assignment,
        students,
        workers=args.workers,
        limits=_limits(args),
        gpus=_detect_gpus(args.gpus),
        per_gpu=args.per_gpu,
        regrade=args.regrade,
        progress=not args.quiet,
        allow_reduced=args.allow_reduced_isolation,
    )
    out = Path(args.out)
    for r in results:
        src = course.results_path(args.assignment, r.student, r.notebook)
        dest = out / args.assignment / r.student / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
        assembled = course.intake_dir / r.student / args.assignment / f"{r.notebook}.ipynb"
        if assembled.exists():
            shutil.copy2(assembled, dest.parent / assembled.name)
    print(f"shard {args.shard}: {len(results)} notebooks graded into {out}")
    return _exit_status(sum(1 for r in results if r.failed))


def cmd_merge(args) -> int:
    course = Course.default()
    students = set()
    for folder in args.sources:
        base = Path(folder) / args.assignment
        for path in base.glob("*/*.json"):
            dest = course.results_path(args.assignment, path.parent.name, path.stem)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
            assembled = path.with_suffix(".ipynb")
            if assembled.exists():
                target = course.intake_dir / path.parent.name / args.assignment / assembled.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(assembled, target)
            students.add(path.parent.name)
    _ensure_released(course, args.assignment)
    failures = _record_in_gradebook(course, args.assignment, sorted(students), _limits(args))
    print(f"merged {len(students) - len(failures)} students' results into the gradebook")
    for student, why in failures.items():
        print(f"not recorded: {student}: {why}", file=sys.stderr)
    return _exit_status(len(failures))


def cmd_integrity(args) -> int:
    from .integrity import run

    return run(Course.default(), args.assignment, out=args.out, threshold=args.threshold, progress=not args.quiet)


def cmd_report(args) -> int:
    from .report import run

    return run(Course.default(), args.assignment, out=args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m autograder", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def grading_options(p):
        p.add_argument("assignment")
        p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel notebooks (CPU)")
        p.add_argument("--gpus", type=int, default=None, help="GPUs to spread workers over (default: all visible)")
        p.add_argument("--per-gpu", type=int, default=1, help="workers sharing one GPU")
        p.add_argument("--cell-timeout", type=float, default=60.0, help="seconds per cell")
        p.add_argument("--notebook-timeout", type=float, default=600.0, help="seconds per notebook")
        p.add_argument("--memory-gib", type=float, default=4.0, help="memory per submission")
        p.add_argument("--max-processes", type=int, default=256, help="processes/threads per submission")
        p.add_argument("--regrade", action="store_true", help="run again even where a result is up to date")
        p.add_argument(
            "--work-gib",
            type=float,
            default=1.0,
            help="writable space per submission, in memory (its /tmp and /dev/shm), GiB",
        )
        p.add_argument(
            "--allow-reduced-isolation",
            action="store_true",
            help="grade even where the bubblewrap sandbox cannot be built (submissions then run "
            "with your permissions: only for trusted work)",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("autograde", help="grade every submission of an assignment")
    grading_options(p)
    p.add_argument("--student", action="append", help="grade only this student (repeatable)")
    p.set_defaults(func=cmd_autograde)

    p = sub.add_parser("feedback", help="write feedback HTML for every graded student")
    p.add_argument("assignment")
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("export", help="export the gradebook as CSV (nbgrader's format)")
    p.add_argument("--to", default=str(Course.default().course_dir / "grades.csv"))
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("grade-shard", help="phase 1 for one shard of the class (a cluster array job)")
    grading_options(p)
    p.add_argument("--shard", required=True, help="K/N: this job grades the students with index % N == K")
    p.add_argument("--out", required=True, help="folder for this shard's results")
    p.set_defaults(func=cmd_grade_shard)

    p = sub.add_parser("merge", help="record the shards' results in the gradebook")
    grading_options(p)
    p.add_argument("--from", dest="sources", nargs="+", required=True, help="the shards' result folders")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser(
        "integrity", help="report near-identical answers and near-copies of library source (changes no score)"
    )
    p.add_argument("assignment")
    p.add_argument(
        "--out", default=None, help="folder for integrity.html and integrity.csv (default: course/reports/<assignment>)"
    )
    p.add_argument(
        "--threshold", type=float, default=None, help="flag pairs at or above this similarity (0-1, default 0.5)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_integrity)

    p = sub.add_parser(
        "report",
        help="item analysis after grading: pass rate of each check, classic mistakes, "
        "score histogram (changes no score)",
    )
    p.add_argument("assignment")
    p.add_argument(
        "--out", default=None, help="folder for report.html and checks.csv (default: course/reports/<assignment>)"
    )
    p.set_defaults(func=cmd_report)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # nbgrader runs its database migrations through the `alembic` command of this environment
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    try:
        return args.func(args)
    except (GradingSetupError, ZygoteError, IsolationUnavailable, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
