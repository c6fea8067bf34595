"""The course's main job end to end, on a scratch copy of the course (``make demo``).

1. release an assignment with ``nbgrader generate_assignment`` (solutions/ -> assignments/),
2. place two sample submissions: a correct one (the instructor's solution)
   and a blank one (the released notebook as a student receives it),
3. autograde them (sandboxed, in parallel, into nbgrader's gradebook),
4. generate the feedback HTML,
5. export and print the grade table.

Everything happens in ``--out`` (default ``out/demo/course``), so the real
``course/`` folder is never touched.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_demo(out: Path, assignment: str = "01_first_order", workers: int = 2) -> list[dict]:
    out = out.resolve()
    if out.exists():
        shutil.rmtree(out)
    (out / "course").mkdir(parents=True)
    shutil.copytree(ROOT / "solutions" / assignment, out / "solutions" / assignment)
    shutil.copy(ROOT / "course" / "nbgrader_config.py", out / "course" / "nbgrader_config.py")
    env = {
        **os.environ,
        "GD_COURSE_ROOT": str(out),
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    }

    def step(title, *cmd, cwd=out / "course"):
        print(f"==> {title}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            raise SystemExit(f"demo step failed: {title}")
        print(f"    done in {time.perf_counter() - start:.1f} s", flush=True)
        return proc

    step(
        f"1. release {assignment} (nbgrader generate_assignment)",
        sys.executable,
        "-m",
        "nbgrader",
        "generate_assignment",
        assignment,
        "--force",
        "--log-level=WARN",
    )
    notebook = next((out / "assignments" / assignment).glob("*.ipynb")).name
    print("==> 2. two sample submissions: 'sample_correct' (the solution) and 'sample_blank' (as released)")
    for student, source in [
        ("sample_correct", out / "solutions" / assignment / notebook),
        ("sample_blank", out / "assignments" / assignment / notebook),
    ]:
        folder = out / "course" / "submitted" / student / assignment
        folder.mkdir(parents=True)
        shutil.copy(source, folder / notebook)
    proc = step(
        "3. autograde (sandboxed, parallel)",
        sys.executable,
        "-m",
        "autograder",
        "autograde",
        assignment,
        "--workers",
        str(workers),
        "--quiet",
        cwd=ROOT,
    )
    print("\n".join("    " + line for line in proc.stdout.strip().splitlines()))
    step("4. feedback", sys.executable, "-m", "autograder", "feedback", assignment, cwd=ROOT)
    for page in sorted((out / "course" / "feedback").glob(f"*/{assignment}/*.html")):
        print(f"    {page.relative_to(out)}")
    grades = out / "course" / "grades.csv"
    step("5. export the grade table", sys.executable, "-m", "autograder", "export", "--to", str(grades), cwd=ROOT)
    with grades.open() as fh:
        rows = list(csv.DictReader(fh))
    print(f"\n{'student':<16} {'score':>6} {'max':>6}")
    for row in rows:
        print(f"{row['student_id']:<16} {float(row['score']):>6g} {float(row['max_score']):>6g}")
    print(f"\ncourse folder: {out}")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/demo/course", help="scratch course root (recreated)")
    parser.add_argument("--assignment", default="01_first_order")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    run_demo(Path(args.out), args.assignment, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
