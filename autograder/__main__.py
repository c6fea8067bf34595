"""Command line of the course's autograder.

    python -m autograder autograde A [--workers N] [--gpus G] [--student S ...] [--regrade] ...
    python -m autograder feedback A
    python -m autograder export [--to course/grades.csv]
    python -m autograder grade-shard A --shard K/N --out DIR     (one job of a cluster array)
    python -m autograder merge A --from DIR [DIR ...]             (collect the shards' results)
    python -m autograder integrity A [--out DIR] [--threshold X]  (similar answers; changes no score)

``autograde`` grades every submission in ``course/submitted/<student>/A/``:
phase 1 runs each notebook sandboxed, in parallel (processes forked by one
zygote that has imported the libraries), and decides its tests in this
process; phase 2 hands the verdicts to ``nbgrader autograde`` which records
them in the gradebook and writes ``course/autograded/``, for each student as
soon as their notebooks are done, while the others still run. A rerun
resumes: finished notebooks whose submission did not change are not run
again (``--regrade`` forces it).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .course import Course, GradingSetupError, is_current
from .sandbox import GiB, Limits, isolation_mode
from .zygote import Zygote, ZygoteError, preload_for

# autograder.grading (nbformat, hence jsonschema: seconds to import) is imported inside the
# commands, after the zygote has started importing torch and gd_lib in parallel.


def _nbgrader(course: Course, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # nbgrader calls alembic
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course.course_dir, env=env,
                          check=check, capture_output=True, text=True)


def _limits(args) -> Limits:
    return Limits(cell_timeout_s=args.cell_timeout, notebook_timeout_s=args.notebook_timeout,
                  memory_bytes=int(args.memory_gib * GiB), max_processes=args.max_processes)


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


def nbgrader_api(course: Course, limits: Limits | None = None):
    """nbgrader's Python API with the course's configuration (one process for the whole class)."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course.course_dir)).load_config()
    if limits is not None:
        config.ApplySandboxedResults.cell_timeout = limits.cell_timeout_s
        config.ApplySandboxedResults.notebook_timeout = limits.notebook_timeout_s
        config.ApplySandboxedResults.memory_gib = limits.memory_bytes / GiB
        config.ApplySandboxedResults.max_processes = limits.max_processes
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    coursedir = CourseDirectory(config=config)
    return NbGraderAPI(coursedir=coursedir, config=config)


class GradebookRecorder:
    """Phase 2: nbgrader autograde, with the sandboxed verdicts instead of its own execution.
    One nbgrader API object records every student, in this process."""

    def __init__(self, course: Course, assignment: str, limits: Limits):
        self.assignment = assignment
        self.api = nbgrader_api(course, limits)

    def record(self, student: str, results=None) -> None:
        outcome = self.api.autograde(self.assignment, student, force=True, create=True)
        if not outcome.get("success"):
            raise GradingSetupError(f"nbgrader autograde failed for {student}:\n"
                                    f"{outcome.get('error', '')[-3000:]}\n{outcome.get('log', '')[-3000:]}")


def _record_in_gradebook(course: Course, assignment: str, students: list[str], limits: Limits) -> None:
    recorder = GradebookRecorder(course, assignment, limits)
    for student in students:
        recorder.record(student)


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


def summary_table(results) -> str:
    rows = [("student", "notebook", "score", "max", "seconds", "note")]
    for r in results:
        rows.append((r.student, r.notebook, f"{r.score:g}", f"{r.max_score:g}", f"{r.seconds:.1f}", r.fatal or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_autograde(args) -> int:
    course = Course.default()
    limits = _limits(args)
    students = args.student or course.students(args.assignment)
    if not students:
        print(f"no submissions in {course.submitted_dir}/*/{args.assignment}", file=sys.stderr)
        return 1
    # the zygote imports torch, gd_lib, ... while this process loads nbformat and nbgrader
    # (unless every result is up to date: then nothing runs and no zygote starts)
    sources = course.source_notebooks(args.assignment)
    stale = args.regrade or not all(is_current(course, args.assignment, s, src) for s in students for src in sources)
    with Zygote(preload=preload_for(sources), start=stale) as zygote:
        from .grading import grade_class

        _ensure_released(course, args.assignment)
        gpus = _detect_gpus(args.gpus)
        mode, why = isolation_mode()
        print(f"isolation: {mode} ({why})", file=sys.stderr)
        recorder = GradebookRecorder(course, args.assignment, limits)
        # each student goes into the gradebook as soon as their notebooks are graded, while the
        # other students' notebooks run
        results = grade_class(course, args.assignment, students, workers=args.workers, limits=limits, gpus=gpus,
                              per_gpu=args.per_gpu, regrade=args.regrade, progress=not args.quiet,
                              require_isolation=args.require_isolation, zygote=zygote,
                              on_student_done=recorder.record)
    print(summary_table(results))
    return 0


def cmd_feedback(args) -> int:
    course = Course.default()
    proc = _nbgrader(course, "generate_feedback", args.assignment, "--force", check=False)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode
    folder = course.feedback_dir
    pages = sorted(folder.glob(f"*/{args.assignment}/*.html"))
    print(f"{len(pages)} feedback pages in {folder}")
    return 0


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
    results = grade_class(course, args.assignment, students, workers=args.workers, limits=_limits(args),
                          gpus=_detect_gpus(args.gpus), per_gpu=args.per_gpu, regrade=args.regrade,
                          progress=not args.quiet, require_isolation=args.require_isolation)
    out = Path(args.out)
    for r in results:
        src = course.results_path(args.assignment, r.student, r.notebook)
        dest = out / args.assignment / r.student / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
    print(f"shard {args.shard}: {len(results)} notebooks graded into {out}")
    return 0


def cmd_merge(args) -> int:
    course = Course.default()
    students = set()
    for folder in args.sources:
        base = Path(folder) / args.assignment
        for path in base.glob("*/*.json"):
            dest = course.results_path(args.assignment, path.parent.name, path.stem)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
            students.add(path.parent.name)
    _ensure_released(course, args.assignment)
    _record_in_gradebook(course, args.assignment, sorted(students), _limits(args))
    print(f"merged {len(students)} students' results into the gradebook")
    return 0


def cmd_integrity(args) -> int:
    from .integrity import run

    return run(Course.default(), args.assignment, out=args.out, threshold=args.threshold, progress=not args.quiet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
        p.add_argument("--require-isolation", action="store_true",
                       help="refuse to grade without the namespace sandbox (root on Linux)")
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

    p = sub.add_parser("integrity", help="report near-identical answers and near-copies of library source "
                                         "(changes no score)")
    p.add_argument("assignment")
    p.add_argument("--out", default=None, help="folder for integrity.html and integrity.csv "
                                               "(default: course/reports/<assignment>)")
    p.add_argument("--threshold", type=float, default=None, help="flag pairs at or above this similarity "
                                                                 "(0-1, default 0.5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_integrity)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # nbgrader runs its database migrations through the `alembic` command of this environment
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    try:
        return args.func(args)
    except (GradingSetupError, ZygoteError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
