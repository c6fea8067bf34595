"""Grading a class: `make autograde` (sandboxed, parallel) vs plain sequential `nbgrader autograde`.

Both grade the same submissions of assignment 01_first_order from scratch
(fresh gradebook, fresh caches) in two scratch copies of the course; the
baseline uses nbgrader's own configuration (each notebook executed in its own
kernel, one after another). Reported: wall time of each and the ratio,
measured in one run; both must give the same scores. Also the CPU time each
used (all their processes) and the machine's load average during each, since
other work on a shared machine inflates wall times.

Then the sandbox's own cost per submission: the same one-cell notebook run
repeatedly from one zygote in the bubblewrap sandbox and in the reduced mode
(a plain forked process), alternating; the difference of the medians is what
the sandbox adds to each submission.
"""

from __future__ import annotations

import csv
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import header, table

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "01_first_order"

BASELINE_CONFIG = """
import os
c = get_config()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
c.CourseDirectory.course_id = "guided-descent"
c.CourseDirectory.root = ROOT
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "assignments"
c.CourseDirectory.submitted_directory = os.path.join("course", "submitted")
c.CourseDirectory.autograded_directory = os.path.join("course", "autograded")
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(ROOT, "course", "gradebook.db")
c.ExecutePreprocessor.timeout = 600
"""


def _course(root: Path, students: int, config: str | None) -> None:
    shutil.copytree(ROOT / "solutions" / ASSIGNMENT, root / "solutions" / ASSIGNMENT)
    shutil.copytree(ROOT / "assignments" / ASSIGNMENT, root / "assignments" / ASSIGNMENT)
    (root / "course").mkdir()
    if config is None:
        shutil.copy(ROOT / "course" / "nbgrader_config.py", root / "course" / "nbgrader_config.py")
    else:
        (root / "course" / "nbgrader_config.py").write_text(config)
    notebook = next((root / "solutions" / ASSIGNMENT).glob("*.ipynb"))
    for i in range(students):
        folder = root / "course" / "submitted" / f"student{i:03d}" / ASSIGNMENT
        folder.mkdir(parents=True)
        # half correct, half blank, as a class's first submissions might be
        src = notebook if i % 2 == 0 else root / "assignments" / ASSIGNMENT / notebook.name
        shutil.copy(src, folder / notebook.name)


def _scores(root: Path, env) -> dict[str, float]:
    out = root / "grades.csv"
    subprocess.run(
        [sys.executable, "-m", "nbgrader", "export", "--to", str(out)],
        cwd=root / "course",
        env=env,
        check=True,
        capture_output=True,
    )
    with out.open() as fh:
        return {r["student_id"]: float(r["raw_score"]) for r in csv.DictReader(fh)}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(args) -> None:
    students = 8 if args.quick else 40
    workers = os.cpu_count() or 2
    print(
        header(
            "autograder: make autograde vs sequential nbgrader autograde",
            assignment=ASSIGNMENT,
            submissions=students,
            workers=workers,
        )
    )
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    with tempfile.TemporaryDirectory() as tmp:
        ours, base = Path(tmp) / "ours", Path(tmp) / "baseline"
        _course(ours, students, None)
        _course(base, students, BASELINE_CONFIG)
        for root in (ours, base):  # release (fills the gradebook); not timed
            subprocess.run(
                [sys.executable, "-m", "nbgrader", "generate_assignment", ASSIGNMENT, "--force"],
                cwd=root / "course",
                env=env,
                check=True,
                capture_output=True,
            )

        def timed(cmd, **kw):
            load = os.getloadavg()[0]
            start, cpu = time.perf_counter(), _children_cpu()
            subprocess.run(cmd, env=env, check=True, capture_output=True, **kw)
            return time.perf_counter() - start, _children_cpu() - cpu, (load + os.getloadavg()[0]) / 2

        t_base, cpu_base, load_base = timed(
            [sys.executable, "-m", "nbgrader", "autograde", ASSIGNMENT, "--force"], cwd=base / "course"
        )
        env["GD_COURSE_ROOT"] = str(ours)
        t_ours, cpu_ours, load_ours = timed(
            [sys.executable, "-m", "autograder", "autograde", ASSIGNMENT, "--workers", str(workers), "--quiet"],
            cwd=ROOT,
        )
        del env["GD_COURSE_ROOT"]

        same = _scores(ours, env) == _scores(base, env)
    print(
        table(
            [
                {
                    "grader": "nbgrader autograde (sequential, in-kernel)",
                    "seconds": f"{t_base:.1f}",
                    "cpu seconds": f"{cpu_base:.1f}",
                    "load avg": f"{load_base:.1f}",
                    "ratio": "1.00",
                },
                {
                    "grader": f"make autograde ({workers} workers, sandboxed)",
                    "seconds": f"{t_ours:.1f}",
                    "cpu seconds": f"{cpu_ours:.1f}",
                    "load avg": f"{load_ours:.1f}",
                    "ratio": f"{t_base / t_ours:.2f}x faster",
                },
            ],
            ["grader", "seconds", "cpu seconds", "load avg", "ratio"],
        )
    )
    print(
        f"same scores from both: {same}; 1-minute load average of the machine during each run "
        f"(mean of start and end; above {workers} means other work shared the cores)"
    )
    sandbox_overhead(repeats=5 if args.quick else 20)


def sandbox_overhead(repeats: int) -> None:
    """Median wall time of a one-cell run in the bubblewrap sandbox and in the reduced mode, alternating."""
    import statistics

    from autograder.sandbox import Limits, isolation_mode, run_cells
    from autograder.zygote import Zygote

    if isolation_mode()[0] != "bwrap":
        print(f"sandbox overhead: not measured ({isolation_mode()[1]})")
        return
    times = {"bwrap": [], "process": []}
    with (
        Zygote(preload=("numpy", "torch", "gd_lib", "gd_lib.optim"), mode="student", sandbox=True) as zygote,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for i in range(repeats + 1):
            for isolation in ("bwrap", "process"):
                start = time.perf_counter()
                run = run_cells(
                    [(0, "x = 1")],
                    mode="student",
                    limits=Limits(),
                    isolation=isolation,
                    zygote=zygote,
                    workdir=Path(tmp) / f"{isolation}{i}" if isolation == "process" else None,
                )
                assert run.cells[0].status == "ok", run.output_tail
                if i:  # the first round waits for the zygote's imports
                    times[isolation].append(time.perf_counter() - start)
    b, p = statistics.median(times["bwrap"]), statistics.median(times["process"])
    print(
        table(
            [
                {
                    "run of one cell": "bubblewrap sandbox",
                    "median ms": f"{1000 * b:.0f}",
                    "spread ms": f"{1000 * min(times['bwrap']):.0f}-{1000 * max(times['bwrap']):.0f}",
                },
                {
                    "run of one cell": "reduced mode (forked process only)",
                    "median ms": f"{1000 * p:.0f}",
                    "spread ms": f"{1000 * min(times['process']):.0f}-{1000 * max(times['process']):.0f}",
                },
            ],
            ["run of one cell", "median ms", "spread ms"],
        )
    )
    print(f"the sandbox adds {1000 * (b - p):.0f} ms per submission ({repeats} runs each, alternating)")
