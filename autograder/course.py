"""Where the course's files are, and the grader's stored results.

Kept apart from :mod:`autograder.grading` so that the command line can find
out what needs grading (and start the zygote) before it imports nbformat.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

RESULTS_VERSION = 2


class GradingSetupError(RuntimeError):
    """The instructor's side is wrong (e.g. the source notebook fails its own tests)."""


@dataclass(frozen=True)
class Course:
    """Where things are (nbgrader's course directory mapped onto the repository)."""

    root: Path

    @classmethod
    def default(cls) -> Course:
        return cls(Path(os.environ.get("GD_COURSE_ROOT", Path(__file__).resolve().parents[1])).resolve())

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

    @property
    def intake_dir(self) -> Path:
        """The assembled notebooks nbgrader records (phase 2 reads these, never the raw submissions)."""
        return self.cache_dir / "intake"

    def results_path(self, assignment: str, student: str, notebook: str) -> Path:
        return self.cache_dir / "results" / assignment / student / f"{notebook}.json"

    def source_notebooks(self, assignment: str) -> list[Path]:
        folder = self.source_dir / assignment
        notebooks = sorted(folder.glob("*.ipynb"))
        if not notebooks:
            raise FileNotFoundError(f"no source notebooks in {folder}")
        return notebooks

    def students(self, assignment: str) -> list[str]:
        """The students with a submission folder for ``assignment`` (plain folders with safe names)."""
        from .intake import student_folders

        return student_folders(str(self.submitted_dir), assignment)[0]

    def refused_students(self, assignment: str) -> dict[str, str]:
        """Entries of the submission folder that are not graded, and why (links, unsafe names)."""
        from .intake import student_folders

        return student_folders(str(self.submitted_dir), assignment)[1]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def grading_digest(source: Path) -> str:
    """What a stored verdict depends on from the instructor's side: the source notebook and the
    catalogue of classic mistakes beside it."""
    catalogue = Path(source).parent / "mistakes.json"
    extra = catalogue.read_bytes() if catalogue.exists() else b""
    return hashlib.sha256(Path(source).read_bytes() + b"\0" + extra).hexdigest()


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
    cells: dict = field(default_factory=dict)  # grade_id -> CellVerdict as dict
    answer_errors: dict = field(default_factory=dict)  # grade_id of answer cell -> its error
    failed: bool = False  # grading did not run normally (unreadable submission, broken channel, grader error)

    @property
    def score(self) -> float:
        """Partial credit: each cell's ``score`` (its full points when it passed)."""
        return sum(c["points"] if c["passed"] else c.get("score", 0.0) for c in self.cells.values())

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


def is_current(course: Course, assignment: str, student: str, source: Path) -> bool:
    """Whether the stored result of this notebook is up to date (nothing would run)."""
    from .intake import fingerprint

    try:
        reference = json.loads((course.cache_dir / "reference" / assignment / f"{source.stem}.json").read_text())
    except (OSError, ValueError):
        return False
    cached = load_result(course.results_path(assignment, student, source.stem))
    return (
        cached is not None
        and reference.get("version") == RESULTS_VERSION
        and reference.get("sha256") == sha256_file(source)
        and cached.reference_sha256 == grading_digest(source)
        and (course.intake_dir / student / assignment / source.name).exists()
        and cached.submission_sha256 == fingerprint(str(course.submitted_dir), [student, assignment, source.name])
    )
