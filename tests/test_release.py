"""``make release``, exactly as the README writes it, regenerates every assignment.

A scratch copy of the course (Makefile, packaging files, ``course/``, ``solutions/``) gets this
checkout's ``.venv`` through a symbolic link and no ``assignments/`` at all; ``make release`` with
no ``A=`` must then write every ``assignments/<A>`` again, equal to the committed one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir() and p.name[:2].isdigit())
# What the Makefile reads (its prerequisites keep their times: copy2), and what nbgrader reads.
COPIED_FILES = ["Makefile", "pyproject.toml", "constraints.txt", "requirements-lock.txt", "README.md"]
COPIED_DIRS = ["course", "solutions"]
# make's own variables from a calling make (make test) or a shell must not change the command
MAKE_ENV_DROPPED = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "A", "PY", "VENV", "NO_SETUP"}


def _scratch_course(tmp_path: Path) -> Path:
    scratch = tmp_path / "course-copy"
    scratch.mkdir()
    for name in COPIED_FILES:
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, scratch / name)
    ignore = shutil.ignore_patterns(
        "submitted",
        "autograded",
        "feedback",
        "gradebook.db",
        ".autograder",
        "released_solutions",
        "reports",
        "__pycache__",
    )
    for name in COPIED_DIRS:
        shutil.copytree(ROOT / name, scratch / name, ignore=ignore, copy_function=shutil.copy2)
    (scratch / ".venv").symlink_to(Path(sys.prefix))
    return scratch


def _make(scratch: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in MAKE_ENV_DROPPED}
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=scratch, env=env, capture_output=True, text=True, timeout=900
    )


def _cells(path: Path) -> list[tuple]:
    nb = nbformat.read(path, as_version=4)
    return [(c.cell_type, c.source, dict(c.metadata)) for c in nb.cells]


@pytest.mark.slow
def test_make_release_without_A_regenerates_every_assignment(tmp_path):
    assert (Path(sys.prefix) / "pyvenv.cfg").exists(), "the tests run from the project's virtual environment"
    assert len(ASSIGNMENTS) >= 5, ASSIGNMENTS
    scratch = _scratch_course(tmp_path)
    # the set-up the release depends on is already done: make must not reinstall into the linked venv
    up_to_date = _make(scratch, "--question", ".venv/.installed")
    assert up_to_date.returncode == 0, "the virtual environment is older than pyproject.toml: run make setup"

    proc = _make(scratch, "release")

    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [line for line in proc.stdout.splitlines() if line.startswith("releasing ")] == [
        f"releasing {a}" for a in ASSIGNMENTS
    ]
    for assignment in ASSIGNMENTS:
        committed = sorted(
            p.relative_to(ROOT / "assignments") for p in (ROOT / "assignments" / assignment).rglob("*") if p.is_file()
        )
        released = sorted(
            p.relative_to(scratch / "assignments")
            for p in (scratch / "assignments" / assignment).rglob("*")
            if p.is_file()
        )
        assert released == committed, assignment
        for rel in committed:
            assert _cells(scratch / "assignments" / rel) == _cells(ROOT / "assignments" / rel), (
                f"{rel}: the committed release differs from what make release writes (run make release)"
            )


def test_make_release_stops_at_an_unknown_assignment(tmp_path):
    """The loop's failure is make's failure (the message names the assignment)."""
    scratch = _scratch_course(tmp_path)
    proc = _make(scratch, "release", "A=99_no_such_assignment", "NO_SETUP=1")
    assert proc.returncode != 0
    assert "releasing 99_no_such_assignment" in proc.stdout
    assert not (scratch / "assignments" / "99_no_such_assignment").exists()
