"""The item analysis of an assignment after grading: which checks the class passes, which classic
mistakes it makes, how the scores spread.

    python -m autograder report A [--out DIR]          (make report A=...)

For the instructor, after ``make autograde`` (and, for the final scores, after the written answers
are graded in the formgrader). It only reads:

* the grader's results, ``course/.autograder/results/A/<student>/<notebook>.json``
  (:class:`autograder.course.NotebookResult`: per graded test cell its points, partial score and
  checks, each check passed or not and the classic mistake it was diagnosed as, if any);
* the source notebooks ``solutions/A/*.ipynb``: each graded cell's question (the last heading
  above it), its points, and whether it holds public tests, hidden tests (nbgrader's
  ``### BEGIN HIDDEN TESTS``), both, or an answer graded by hand;
* the catalogue of classic mistakes ``solutions/A/mistakes.json`` (a diagnosis in a result is
  the catalogue entry's ``says``; it is matched back to the entry's name);
* nbgrader's gradebook ``course/gradebook.db`` through nbgrader's :class:`~nbgrader.api.Gradebook`,
  opened on a private copy (nbgrader's constructor may write): the final scores with the
  hand-graded answers and the late penalties, as ``nbgrader export`` computes them.

and writes one self-contained page ``course/reports/A/report.html`` (inline CSS, figures as
PNG data URIs, no script, nothing fetched), ``checks.csv`` beside it (the pass rate of every
check) and a short summary on the terminal. Submissions that were not graded normally (the
grader could not read or run them, a folder it refused, a student without results) are left
out of the pass rates and listed with the reason; students whose written answers are not graded
yet are named. Flags: a check nobody passes (a broken test, or a question nobody understood), a
check everybody passes (it tells no one apart), and a hidden check that fails far more often than
the public checks of its question (a hint that the public tests miss something the question asks).
"""

from __future__ import annotations

import base64
import csv
import datetime
import io
import json
import os
import re
import sqlite3
import stat
import statistics
import sys
import tempfile
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from .course import Course, grading_digest, load_result

COURSE_ID = "guided-descent"  # c.CourseDirectory.course_id in course/nbgrader_config.py
AUTOGRADED = ("public", "hidden", "mixed")
HIDDEN_REGION = re.compile(r"### BEGIN HIDDEN TESTS.*?(?:### END HIDDEN TESTS|\Z)", re.S)
POINTS_SUFFIX = re.compile(r"\s*\(\s*\d+(?:\.\d+)?\s*points?[^)]*\)\s*$")
# the Okabe–Ito palette (distinguishable under the common colour-vision deficiencies)
COLOURS = {
    "public": "#0072B2",
    "hidden": "#E69F00",
    "mixed": "#999999",
    "manual": "#009E73",
    "pending": "#D55E00",
    "complete": "#0072B2",
}


@dataclass(frozen=True)
class ReportConfig:
    """When a check is flagged."""

    hidden_gap: float = 0.25  # a hidden check failing this much more often than its question's public checks ...
    hidden_gap_students: int = 2  # ... by at least this many students who pass every public check of the question
    max_table_rows: int = 2000  # rows of a table on the page (the CSV has every check)

    def __post_init__(self):
        if not 0.0 < self.hidden_gap <= 1.0:
            raise ValueError(f"hidden_gap must be in (0, 1], got {self.hidden_gap}")
        if self.hidden_gap_students < 1:
            raise ValueError(f"hidden_gap_students must be >= 1, got {self.hidden_gap_students}")


# --- the assignment: questions and their graded cells (from the source notebooks) ----------------


@dataclass(frozen=True)
class GradedCell:
    notebook: str  # the notebook's name without .ipynb
    grade_id: str
    question: str  # the question's title
    points: float
    kind: str  # "public", "hidden", "mixed" (autograded tests), "manual" (graded by hand), "task"

    @property
    def autograded(self) -> bool:
        return self.kind in AUTOGRADED


@dataclass
class Question:
    title: str
    notebook: str
    cells: list[GradedCell] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)  # grade ids of its answer cells (mistakes point at these)

    @property
    def auto_points(self) -> float:
        return sum(c.points for c in self.cells if c.autograded)

    @property
    def manual_points(self) -> float:
        return sum(c.points for c in self.cells if not c.autograded)


def _source_text(cell: dict) -> str:
    source = cell.get("source", "")
    return source if isinstance(source, str) else "".join(source)


def heading_title(markdown: str) -> str | None:
    """The question title a markdown cell starts: its first line if it is a heading, without the
    ``#`` and the "(N points ...)" suffix."""
    first = markdown.strip().splitlines()[0] if markdown.strip() else ""
    if not first.startswith("#"):
        return None
    title = POINTS_SUFFIX.sub("", first.lstrip("#").strip())
    return re.sub(r"`|\*\*|__", "", title).strip() or None  # code and bold marks: the page shows plain text


def kind_of_tests(source: str) -> str:
    """ "public" (no hidden region), "hidden" (every check in a hidden region) or "mixed"."""
    outside = HIDDEN_REGION.sub("", source)
    if outside == source:
        return "public"
    calls = [line for line in outside.splitlines() if not line.lstrip().startswith("#")]
    return "mixed" if any(re.search(r"\bcheck\s*\(", line) for line in calls) else "hidden"


def load_questions(course: Course, assignment: str) -> list[Question]:
    """The questions of the assignment's source notebooks, in order, each with its graded cells."""
    notebooks = course.source_notebooks(assignment)  # FileNotFoundError for an unknown assignment
    questions: dict[tuple[str, str], Question] = {}
    for path in notebooks:
        nb = json.loads(path.read_text(encoding="utf-8"))
        prefix = f"{path.stem}: " if len(notebooks) > 1 else ""
        title = None
        for index, cell in enumerate(nb.get("cells", [])):
            meta = (cell.get("metadata") or {}).get("nbgrader") or {}
            source = _source_text(cell)
            if cell.get("cell_type") == "markdown" and not meta.get("grade") and not meta.get("solution"):
                title = heading_title(source) or title
                continue
            gid = meta.get("grade_id") or f"cell {index}"
            if not (meta.get("grade") or meta.get("solution") or meta.get("task")):
                continue
            question = questions.setdefault((path.stem, title or gid), Question(prefix + (title or gid), path.stem))
            if meta.get("solution") and not meta.get("grade"):
                question.answers.append(gid)
                continue
            if meta.get("task"):
                kind = "task"
            elif meta.get("solution"):
                kind = "manual"
            elif cell.get("cell_type") == "code":
                kind = kind_of_tests(source)
            else:
                continue
            question.cells.append(GradedCell(path.stem, gid, question.title, float(meta.get("points") or 0), kind))
    return [q for q in questions.values() if q.cells]


def load_catalogue(course: Course, assignment: str) -> tuple[dict, str | None]:
    """The classic mistakes ``{name: entry}`` and, when there is none or it cannot be read, why."""
    path = course.source_dir / assignment / "mistakes.json"
    if not path.exists():
        return {}, f"no catalogue of classic mistakes ({path.name} is missing in {path.parent})"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return {}, f"{path} cannot be read ({err})"
    if not isinstance(data, dict):
        return {}, f"{path} is not a JSON object of mistakes"
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}, None


# --- what was graded: the grader's results, and the gradebook ---------------------------------------


def _plain_folders(folder: Path) -> list[str]:
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [n for n in names if stat.S_ISDIR(os.lstat(folder / n).st_mode)]


@dataclass
class GradeEntry:
    score: float
    max_score: float
    pending: bool  # nbgrader still needs a manual grade for it


@dataclass
class Submission:
    """One student's submission of the assignment as nbgrader's gradebook holds it."""

    student: str
    raw: float  # autograded + hand-graded points
    max_score: float
    penalty: float  # late-submission penalty
    grades: dict[tuple[str, str], GradeEntry] = field(default_factory=dict)  # (notebook, grade id)

    @property
    def final(self) -> float:
        """As ``nbgrader export`` computes it."""
        return max(0.0, self.raw - self.penalty)

    @property
    def pending(self) -> list[tuple[str, str]]:
        return [key for key, g in self.grades.items() if g.pending]


def read_gradebook(course: Course, assignment: str) -> tuple[dict[str, Submission] | None, str]:
    """``({student: Submission}, how it went)``; ``None`` when there are no final scores to read.

    nbgrader's Gradebook creates tables and rows when it opens a database, so it opens a private
    copy (SQLite's backup API: consistent even while the grader writes)."""
    if not course.gradebook.exists():
        return None, f"no gradebook ({course.gradebook}): final scores are not known"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy's deprecation warnings: nothing to act on here
        from nbgrader.api import Gradebook, MissingEntry

        with tempfile.TemporaryDirectory(prefix="gd_report_") as tmp:
            copy = Path(tmp) / "gradebook.db"
            source = sqlite3.connect(f"file:{course.gradebook}?mode=ro", uri=True)
            target = sqlite3.connect(copy)
            try:
                source.backup(target)
                tables = target.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
            except sqlite3.DatabaseError as err:
                return None, f"the gradebook cannot be read ({err})"
            finally:
                source.close()
                target.close()
            if not tables:
                return None, f"the gradebook ({course.gradebook}) is empty: final scores are not known"
            with Gradebook(f"sqlite:///{copy}", COURSE_ID) as gb:
                try:
                    gb.find_assignment(assignment)
                except MissingEntry:
                    return None, f"the gradebook does not know {assignment} (not released or not graded yet)"
                out = {}
                for sub in gb.assignment_submissions(assignment):
                    entry = Submission(
                        sub.student.id,
                        float(sub.score or 0),
                        float(sub.max_score or 0),
                        float(sub.late_submission_penalty or 0),
                    )
                    for notebook in sub.notebooks:
                        for grade in notebook.grades:
                            entry.grades[notebook.name, grade.name] = GradeEntry(
                                float(grade.score or 0), float(grade.max_score or 0), bool(grade.needs_manual_grade)
                            )
                    out[entry.student] = entry
    return out, f"final scores from the gradebook ({len(out)} submissions)"


# --- the analysis ---------------------------------------------------------------------------------


@dataclass
class CheckStat:
    cell: GradedCell
    name: str
    points: float
    outcomes: dict[str, bool] = field(default_factory=dict)  # student -> passed
    mistakes: Counter = field(default_factory=Counter)  # mistake name -> students diagnosed here
    flags: list[str] = field(default_factory=list)

    @property
    def students(self) -> int:
        return len(self.outcomes)

    @property
    def passed(self) -> int:
        return sum(self.outcomes.values())

    @property
    def rate(self) -> float:
        return self.passed / self.students if self.students else float("nan")


@dataclass
class QuestionStat:
    question: Question
    scores: dict[str, float] = field(default_factory=dict)  # student -> autograded points of the question

    @property
    def students(self) -> int:
        return len(self.scores)

    @property
    def full_marks(self) -> int:
        return sum(1 for s in self.scores.values() if s >= self.question.auto_points - 1e-9)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores.values()) if self.scores else float("nan")


@dataclass
class MistakeStat:
    name: str
    says: str
    question: str | None
    hidden: bool  # caught by hidden tests alone, on purpose
    in_catalogue: bool
    students: set[str] = field(default_factory=set)
    checks: set[str] = field(default_factory=set)


@dataclass
class ManualStat:
    cell: GradedCell
    scores: dict[str, float] = field(default_factory=dict)  # graded by hand
    pending: list[str] = field(default_factory=list)  # awaiting a manual grade


@dataclass
class StudentRow:
    student: str
    auto_score: float | None = None  # the grader's points (None: no normal result)
    auto_max: float = 0.0
    submission: Submission | None = None
    problems: list[str] = field(default_factory=list)  # why not graded normally
    pending: list[str] = field(default_factory=list)  # questions awaiting manual grading
    notes: list[str] = field(default_factory=list)  # anything else to know (e.g. not in the gradebook)

    @property
    def normal(self) -> bool:
        return not self.problems

    def sort_key(self) -> tuple:
        """Final score (gradebook) first, highest first; then the grader's points; then nothing."""
        if self.submission is not None:
            return 0, -self.submission.final, self.student
        return (1, -self.auto_score, self.student) if self.auto_score is not None else (2, 0.0, self.student)


@dataclass
class ItemAnalysis:
    assignment: str
    config: ReportConfig
    questions: list[QuestionStat]
    checks: list[CheckStat]
    mistakes: list[MistakeStat]
    catalogue_note: str | None
    manual: list[ManualStat]
    students: list[StudentRow]
    gradebook_note: str
    notes: list[str]
    auto_max: float
    max_score: float | None
    results_read: int  # result files found (failed ones included)

    def normal(self) -> list[StudentRow]:
        return [s for s in self.students if s.normal]

    def not_normal(self) -> list[StudentRow]:
        return [s for s in self.students if not s.normal]

    def in_gradebook(self) -> list[StudentRow]:
        return [s for s in self.students if s.submission is not None]

    def flagged(self) -> list[CheckStat]:
        return [c for c in self.checks if c.flags]


def _describe(values: list[float]) -> dict[str, float]:
    """n, mean, median, quartiles (linear interpolation between order statistics, numpy's default), min, max."""
    import numpy as np

    if not values:
        return {"n": 0}
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {
        "n": len(values),
        "mean": float(np.mean(values)),
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(min(values)),
        "max": float(max(values)),
    }


def _read_results(
    course: Course,
    assignment: str,
    questions: list[Question],
    notebooks: list[Path],
    rows: dict[str, StudentRow],
    notes: list[str],
) -> tuple[dict[str, dict[str, dict]], int]:
    """({student: {notebook: result's cells}} of the normally graded notebooks, result files found); the
    rest become the students' problems."""
    results_dir = course.cache_dir / "results" / assignment
    submitted, refused = course.students(assignment), course.refused_students(assignment)
    for name, why in refused.items():
        rows.setdefault(name, StudentRow(name)).problems.append(f"not graded: {why}")
    stale: list[str] = []
    read = 0
    cells_of: dict[str, dict[str, dict]] = {}
    known = {c.grade_id for q in questions for c in q.cells}
    digests = {source.stem: grading_digest(source) for source in notebooks}
    for student in sorted(set(_plain_folders(results_dir)) | set(submitted)):
        row = rows.setdefault(student, StudentRow(student))
        for source in notebooks:
            path = results_dir / student / f"{source.stem}.json"
            result = load_result(path) if path.is_file() else None
            read += path.exists()
            if result is None:
                row.problems.append(
                    f"no result for {source.name}: "
                    + (
                        "it is unreadable or from another grader version (run make autograde again)"
                        if path.exists()
                        else "not graded yet (run make autograde)"
                    )
                )
                continue
            if result.failed:
                row.problems.append(f"{source.name} not graded normally: {result.fatal or 'no reason recorded'}")
                continue
            if result.reference_sha256 != digests[source.stem]:
                stale.append(student)
            cells_of.setdefault(student, {})[source.stem] = {k: v for k, v in result.cells.items() if k in known}
    if stale:
        notes.append(
            f"the results of {len(set(stale))} student(s) were graded against an older version of the "
            f"source notebook or its mistakes.json: run make autograde A={assignment} again to refresh them"
        )
    return cells_of, read


def _check_stats(
    questions: list[Question], cells_of: dict[str, dict[str, dict]], catalogue: dict, rows: dict[str, StudentRow]
) -> tuple[list[QuestionStat], list[CheckStat], dict[str, MistakeStat]]:
    question_of_answer = {(q.notebook, a): q.title for q in questions for a in q.answers}
    by_says: dict[str, list[str]] = {}
    mistakes: dict[str, MistakeStat] = {}
    notebooks = {q.notebook for q in questions}
    for name, entry in catalogue.items():
        says = str(entry.get("says", name))
        by_says.setdefault(says, []).append(name)
        where = [
            question_of_answer[nb, entry.get("cell")]
            for nb in sorted(notebooks)
            if (nb, entry.get("cell")) in question_of_answer
        ]
        mistakes[name] = MistakeStat(name, says, where[0] if where else None, bool(entry.get("hidden")), True)
    checks: dict[tuple[str, str, str], CheckStat] = {}  # in the order of the cells, then of first appearance
    for q in questions:
        for cell in q.cells:
            for student_cells in cells_of.values():
                verdict = student_cells.get(cell.notebook, {}).get(cell.grade_id)
                for check in (verdict or {}).get("checks", []):
                    checks.setdefault(
                        (cell.notebook, cell.grade_id, check["name"]),
                        CheckStat(cell, check["name"], float(check.get("points", 0))),
                    )
    question_stats = [QuestionStat(q) for q in questions]
    for student, notebooks_cells in cells_of.items():
        row = rows[student]
        row.auto_score = 0.0
        for qs in question_stats:
            if qs.question.notebook not in notebooks_cells or not qs.question.auto_points:
                continue
            total = 0.0
            for cell in qs.question.cells:
                verdict = notebooks_cells[cell.notebook].get(cell.grade_id)
                if verdict is None or not cell.autograded:
                    continue
                total += verdict["points"] if verdict.get("passed") else float(verdict.get("score", 0.0))
                for check in verdict.get("checks", []):
                    check_stat = checks[cell.notebook, cell.grade_id, check["name"]]
                    check_stat.outcomes[student] = bool(check.get("passed"))
                    said = check.get("mistake")
                    if not said or check.get("passed"):
                        continue
                    names = by_says.get(said, [])
                    named = [n for n in names if mistakes[n].question == qs.question.title] or names
                    name = named[0] if named else said
                    if name not in mistakes:
                        mistakes[name] = MistakeStat(name, said, qs.question.title, False, False)
                    mistakes[name].students.add(student)
                    mistakes[name].checks.add(f"{cell.grade_id}: {check['name']}")
                    check_stat.mistakes[name] += 1
            qs.scores[student] = total
            row.auto_score += total
    return question_stats, list(checks.values()), mistakes


def _flag(checks: list[CheckStat], config: ReportConfig) -> None:
    by_question: dict[str, list[CheckStat]] = {}
    for c in checks:
        by_question.setdefault(c.cell.question, []).append(c)
        if c.students and c.passed == 0:
            c.flags.append("nobody passes it: a broken test, or a question nobody understood")
        elif c.students and c.passed == c.students:
            c.flags.append("everybody passes it: it tells no one apart")
    for question_checks in by_question.values():
        public = [c for c in question_checks if c.cell.kind == "public" and c.students]
        if not public:
            continue
        public_fail = sum(c.students - c.passed for c in public) / sum(c.students for c in public)
        passed_public = set.intersection(*({s for s, ok in c.outcomes.items() if ok} for c in public))
        for c in question_checks:
            if c.cell.kind != "hidden" or not c.students:
                continue
            slipped = sum(1 for s in passed_public if c.outcomes.get(s) is False)
            fail = 1 - c.rate
            if fail - public_fail >= config.hidden_gap and slipped >= config.hidden_gap_students:
                c.flags.append(
                    f"fails {100 * fail:.0f}% of the class against {100 * public_fail:.0f}% for the "
                    f"public checks of its question; {slipped} students pass every public check and "
                    f"fail this one: the public tests may miss something the question asks"
                )


def analyse(course: Course, assignment: str, config: ReportConfig = ReportConfig()) -> ItemAnalysis:
    """Read the results, the source notebooks, the catalogue and the gradebook; compute every figure."""
    notebooks = course.source_notebooks(assignment)
    questions = load_questions(course, assignment)
    catalogue, catalogue_note = load_catalogue(course, assignment)
    notes: list[str] = []
    rows: dict[str, StudentRow] = {}
    cells_of, results_read = _read_results(course, assignment, questions, notebooks, rows, notes)
    question_stats, checks, mistakes = _check_stats(questions, cells_of, catalogue, rows)
    _flag(checks, config)
    submissions, gradebook_note = read_gradebook(course, assignment)
    auto_max = sum(q.auto_points for q in questions)
    manual = [ManualStat(c) for q in questions for c in q.cells if not c.autograded]
    title_of = {(c.notebook, c.grade_id): c.question for q in questions for c in q.cells}
    for row in rows.values():
        row.auto_max = auto_max
    max_score = None
    if submissions is not None:
        for student, sub in submissions.items():
            row = rows.setdefault(student, StudentRow(student, auto_max=auto_max))
            row.submission = sub
            max_score = sub.max_score
            row.pending = sorted({title_of.get(key, key[1]) for key in sub.pending})
        for m in manual:
            for student, sub in submissions.items():
                grade = sub.grades.get((m.cell.notebook, m.cell.grade_id))
                if grade is None:
                    continue
                if grade.pending:
                    m.pending.append(student)
                else:
                    m.scores[student] = grade.score
        for row in rows.values():
            if row.submission is None and row.auto_score is not None:
                row.notes.append(
                    "graded, but not in the gradebook (recording failed, or the grader ran without "
                    "recording: run make autograde again)"
                )
    for row in rows.values():
        if row.auto_score is None and not row.problems:
            row.problems.append("no results from the grader (only the gradebook has a submission)")
    if max_score is None:
        max_score = auto_max + sum(c.points for q in questions for c in q.cells if not c.autograded)
    students = sorted(rows.values(), key=StudentRow.sort_key)
    checks.sort(key=lambda c: (c.rate if c.students else 2.0, c.cell.question, c.name))
    mistake_list = sorted(mistakes.values(), key=lambda m: (-len(m.students), not m.in_catalogue, m.name))
    return ItemAnalysis(
        assignment,
        config,
        question_stats,
        checks,
        mistake_list,
        catalogue_note,
        manual,
        students,
        gradebook_note,
        notes,
        auto_max,
        max_score,
        results_read,
    )


# --- figures (matplotlib, PNG data URIs) -----------------------------------------------------------


@contextmanager
def course_style():
    """The course's figure style (``gd_lib.plotting.use_course_style`` where the library has it) for
    the figures drawn inside the block; matplotlib's settings are restored after it."""
    import matplotlib

    with matplotlib.rc_context():
        try:
            from gd_lib.plotting import use_course_style
        except ImportError:
            matplotlib.rcParams.update(
                {
                    "figure.dpi": 150,
                    "savefig.dpi": 150,
                    "figure.constrained_layout.use": True,
                    "font.size": 11,
                    "axes.spines.top": False,
                    "axes.spines.right": False,
                    "axes.grid": True,
                    "grid.alpha": 0.3,
                }
            )
        else:
            use_course_style()
        yield


def _figure(width: float, height: float, ncols: int = 1):
    """A figure without pyplot (no backend, no global figure list): safe inside any process."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.set_axisbelow(True)  # grid lines behind the bars
    return fig, axes


CSS_PX_PER_INCH = 96  # a figure is shown at its size in inches, sharp on high-density screens (150 dpi)


def _embedded(fig) -> tuple[str, int]:
    """(PNG data URI, width in CSS pixels) of a figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return (
        "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"),
        round(fig.get_figwidth() * CSS_PX_PER_INCH),
    )


def _short(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def score_histogram(analysis: ItemAnalysis):
    """Final scores (gradebook) stacked by whether grading is complete; the grader's points without one."""
    import numpy as np

    graded = analysis.in_gradebook()
    if graded:
        complete = [r.submission.final for r in graded if not r.pending]
        pending = [r.submission.final for r in graded if r.pending]
        top, what = analysis.max_score or 1.0, "final score (gradebook)"
    else:
        complete = [r.auto_score for r in analysis.normal() if r.auto_score is not None]
        pending, top, what = [], analysis.auto_max or 1.0, "autograded points"
    width = max(1.0, float(np.ceil(top / 25)))
    edges = np.arange(0.0, top + width + 1e-9, width)
    fig, (ax,) = _figure(7.0, 3.6)
    ax.hist(
        [complete, pending],
        bins=edges,
        stacked=True,
        color=[COLOURS["complete"], COLOURS["pending"]],
        label=["grading complete", "awaiting manual grading"],
        edgecolor="white",
        linewidth=0.6,
    )
    values = complete + pending
    if values:
        ax.axvline(
            float(np.median(values)),
            color="black",
            linestyle="--",
            linewidth=1.2,
            label=f"median {np.median(values):.4g}",
        )
    ax.set_xlabel(f"{what}, out of {top:g} points")
    ax.set_ylabel("students")
    ax.set_xlim(0, edges[-1])
    ax.yaxis.get_major_locator().set_params(integer=True)
    fig.legend(loc="outside upper center", ncols=3, frameon=False, fontsize=9)
    return fig


def _barh(labels, values, colours, xlabel, ylabel, *, xlim=None, annotate=None):
    fig, (ax,) = _figure(7.5, 1.0 + 0.24 * max(1, len(labels)))
    y = range(len(labels))
    ax.barh(list(y), values, color=colours)
    ax.set_yticks(list(y), labels)
    ax.set_ylim(len(labels) - 0.4, -0.6)  # first row on top, no empty margin
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xlim is not None:
        ax.set_xlim(*xlim)
    for i, text in enumerate(annotate or []):
        ax.text(values[i], i, f" {text}", va="center", fontsize=9)
    return fig, ax


def question_label(title: str) -> str:
    """A short label for a question in a chart: "Q3" for "3. Newton–Schulz ..." (the notebook's
    name kept where an assignment has several), the title cut short otherwise."""
    notebook, _, rest = title.rpartition(": ") if re.match(r"^[\w.-]+: \d", title) else ("", "", title)
    number = re.match(r"^(\d+[a-z]?)[.)]\s", rest)
    label = f"Q{number.group(1)}" if number else _short(rest, 24)
    return f"{notebook} {label}" if notebook else label


def _legend(fig, entries) -> None:
    """The colours' key above the axes, where it covers no bar."""
    from matplotlib.patches import Patch

    fig.legend(
        handles=[Patch(color=colour, label=label) for label, colour in entries],
        loc="outside upper center",
        ncols=len(entries),
        frameon=False,
        fontsize=9,
    )


def check_chart(analysis: ItemAnalysis):
    shown = [c for c in analysis.checks if c.students]
    labels = [f"{question_label(c.cell.question)} · {_short(c.name, 40)}" for c in shown]
    fig, ax = _barh(
        labels,
        [100 * c.rate for c in shown],
        [COLOURS[c.cell.kind] for c in shown],
        "students who pass the check (%)",
        "question · check",
        xlim=(0, 112),
        annotate=[f"{c.passed}/{c.students}" + (" ⚑" if c.flags else "") for c in shown],
    )
    for tick, c in zip(ax.get_yticklabels(), shown):
        if c.flags:
            tick.set_color(COLOURS["pending"])
    kinds = sorted({c.cell.kind for c in shown}, key=AUTOGRADED.index)
    _legend(fig, [(f"{k} tests", COLOURS[k]) for k in kinds])
    ax.set_title("pass rate of each check, lowest first (⚑ flagged)", fontsize=11)
    return fig


def question_chart(analysis: ItemAnalysis):
    rows = []
    for qs in analysis.questions:
        if qs.question.auto_points and qs.students:
            rows.append(
                (
                    qs.question.title,
                    100 * qs.mean / qs.question.auto_points,
                    "public",
                    f"{qs.full_marks}/{qs.students} full marks",
                )
            )
    for m in analysis.manual:
        if m.scores and m.cell.points:
            rows.append(
                (
                    f"{m.cell.question} (by hand)",
                    100 * statistics.fmean(m.scores.values()) / m.cell.points,
                    "manual",
                    f"{len(m.scores)} graded",
                )
            )
    rows.sort(key=lambda r: r[1])
    fig, ax = _barh(
        [_short(r[0]) for r in rows],
        [r[1] for r in rows],
        [COLOURS[r[2]] for r in rows],
        "mean score (% of the question's points)",
        "question",
        xlim=(0, 125),
        annotate=[r[3] for r in rows],
    )
    _legend(fig, [("autograded", COLOURS["public"]), ("graded by hand", COLOURS["manual"])])
    ax.set_title("questions, hardest first", fontsize=11)
    return fig


def mistake_chart(analysis: ItemAnalysis):
    shown = analysis.mistakes
    fig, ax = _barh(
        [_short(m.name) for m in shown],
        [len(m.students) for m in shown],
        [
            COLOURS["mixed"] if not m.in_catalogue else COLOURS["hidden"] if m.hidden else COLOURS["public"]
            for m in shown
        ],
        "students diagnosed with the mistake",
        "classic mistake",
        annotate=["never seen" if not m.students else "" for m in shown],
    )
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlim(0, max([len(m.students) for m in shown] + [1]) * 1.25)
    _legend(
        fig,
        [("caught by public tests", COLOURS["public"]), ("caught by hidden tests only, on purpose", COLOURS["hidden"])]
        + ([("not in the catalogue", COLOURS["mixed"])] if not all(m.in_catalogue for m in shown) else []),
    )
    return fig


def manual_chart(analysis: ItemAnalysis):
    shown = [m for m in analysis.manual if m.scores or m.pending]
    fig, axes = _figure(3.2 * len(shown) + 0.6, 3.0, ncols=len(shown))
    for ax, m in zip(axes, shown):
        scores = [round(s * 2) / 2 for s in m.scores.values()]
        step = 0.5 if any(s % 1 for s in scores) or m.cell.points % 1 else 1.0
        values = [i * step for i in range(int(m.cell.points / step) + 1)]
        counts = Counter(scores)
        ax.bar(values, [counts.get(v, 0) for v in values], width=0.8 * step, color=COLOURS["manual"])
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.set_xlabel(f"score (of {m.cell.points:g} points)")
        ax.set_ylabel("students")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_title(
            _short(m.cell.question, 30) + (f"\n{len(m.pending)} awaiting grading" if m.pending else ""), fontsize=10
        )
    return fig


def figures(analysis: ItemAnalysis) -> dict[str, tuple[str, int]]:
    """{figure: (PNG data URI, width in CSS pixels)} of the figures the analysis has data for."""
    out = {}
    with course_style():
        if analysis.in_gradebook() or analysis.normal():
            out["scores"] = _embedded(score_histogram(analysis))
        if any(qs.students for qs in analysis.questions) or any(m.scores for m in analysis.manual):
            out["questions"] = _embedded(question_chart(analysis))
        if any(c.students for c in analysis.checks):
            out["checks"] = _embedded(check_chart(analysis))
        if analysis.mistakes:
            out["mistakes"] = _embedded(mistake_chart(analysis))
        if any(m.scores or m.pending for m in analysis.manual):
            out["manual"] = _embedded(manual_chart(analysis))
    return out


# --- the page -------------------------------------------------------------------------------------

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1.5em; color: #1d1d1f; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.note { color: #555; max-width: 62em; }
table.list { border-collapse: collapse; margin: .6em 0; }
table.list th, table.list td { padding: 3px 10px; border-bottom: 1px solid #e5e5e5; text-align: left;
                               vertical-align: top; }
table.list th { background: #f4f4f6; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.flag td { background: #fff4e5; } tr.problem td { background: #fff1f0; }
.bar { display: inline-block; height: .7em; background: #0072B2; vertical-align: middle; margin-right: .4em; }
.flags { color: #b3261e; } .muted { color: #888; }
img.figure { max-width: 100%; height: auto; display: block; margin: .8em 0; }
ul.tight li { margin: .15em 0; }
"""


def _students(n: int) -> str:
    return f"{n} student" + ("" if n == 1 else "s")


def _num(x: float | None, digits: int = 4) -> str:
    return "–" if x is None or x != x else f"{x:.{digits}g}"


def _pct(x: float) -> str:
    return "–" if x != x else f"{100 * x:.0f}%"


def _table(header: list[str], rows: list[tuple[str, list[str]]], numeric: set[int]) -> str:
    """Rows are (css class, cells) with the cells already escaped."""
    head = "".join(f"<th{' class=num' if i in numeric else ''}>{escape(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        f"<tr{f' class={cls}' if cls else ''}>"
        + "".join(f"<td{' class=num' if i in numeric else ''}>{cell}</td>" for i, cell in enumerate(cells))
        + "</tr>"
        for cls, cells in rows
    )
    return f'<table class="list"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _img(figure: tuple[str, int] | None, alt: str) -> str:
    if figure is None:
        return ""
    uri, width = figure
    return f'<img class="figure" src="{uri}" width="{width}" alt="{escape(alt)}">'


def _summary_rows(analysis: ItemAnalysis) -> list[tuple[str, list[str]]]:
    rows = []
    graded = analysis.in_gradebook()
    series = []
    if graded:
        series.append(
            (
                f"final score, all {len(graded)} students in the gradebook",
                analysis.max_score,
                [r.submission.final for r in graded],
            )
        )
        complete = [r.submission.final for r in graded if not r.pending]
        if len(complete) != len(graded):
            series.append(("final score, students whose grading is complete", analysis.max_score, complete))
    series.append(
        (
            "autograded points, students graded normally",
            analysis.auto_max,
            [r.auto_score for r in analysis.normal() if r.auto_score is not None],
        )
    )
    for label, top, values in series:
        d = _describe(values)
        rows.append(
            (
                "",
                [
                    escape(label),
                    _num(top),
                    str(d["n"]),
                    *(_num(d.get(k)) for k in ("mean", "median", "q1", "q3", "min", "max")),
                ],
            )
        )
    return rows


def render_html(analysis: ItemAnalysis, figs: dict[str, tuple[str, int]], csv_name: str = "checks.csv") -> str:
    a = analysis
    parts = [
        f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>Item analysis: {escape(a.assignment)}"
        f"</title><style>{CSS}</style></head><body>",
        f"<h1>Item analysis: {escape(a.assignment)}</h1>",
        f'<p class="note">{len(a.students)} students; generated '
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} from the grader's results, the source notebooks"
        f" and {escape(a.gradebook_note)}. The pass rates count only submissions graded normally. "
        f'Every check\'s pass rate is also in <a href="{escape(csv_name)}">{escape(csv_name)}</a>.</p>',
    ]

    # class summary
    parts.append("<h2>Class</h2>")
    parts.append(
        _table(
            ["", "out of", "students", "mean", "median", "lower quartile", "upper quartile", "min", "max"],
            _summary_rows(a),
            set(range(1, 9)),
        )
    )
    problems = a.not_normal()
    pending = [r for r in a.students if r.pending]
    items = [
        f"<li>{_students(len(a.normal()))} graded normally; <b>{len(problems)} not graded normally</b>"
        + (":" if problems else "")
        + "</li>"
    ]
    if problems:
        items.append(
            "<ul class=tight>"
            + "".join(f"<li>{escape(r.student)}: {escape('; '.join(r.problems))}</li>" for r in problems)
            + "</ul>"
        )
    unrecorded = [r for r in a.students if r.notes]
    if unrecorded:
        items.append(
            "<li>" + "; ".join(f"{escape(r.student)}: {escape('; '.join(r.notes))}" for r in unrecorded) + "</li>"
        )
    if pending:
        items.append(
            f"<li><b>{_students(len(pending))} awaiting manual grading</b> (their ungraded answers count 0 "
            f"so far): " + ", ".join(escape(r.student) for r in pending) + "</li>"
        )
    items += [f"<li>{escape(n)}</li>" for n in a.notes]
    parts.append("<ul>" + "".join(items) + "</ul>")
    parts.append(_img(figs.get("scores"), "histogram of the class's scores"))

    # questions
    parts.append("<h2>Questions</h2>")
    parts.append(_img(figs.get("questions"), "mean score of each question"))
    rows = []
    for qs in a.questions:
        q = qs.question
        if q.auto_points:
            rows.append(
                (
                    "",
                    [
                        escape(q.title),
                        "autograded",
                        _num(q.auto_points),
                        str(qs.students),
                        _num(qs.mean, 3),
                        _pct(qs.full_marks / qs.students if qs.students else float("nan")),
                        "",
                    ],
                )
            )
    for m in a.manual:
        d = _describe(list(m.scores.values()))
        rows.append(
            (
                "flag" if m.pending else "",
                [
                    escape(m.cell.question),
                    "by hand",
                    _num(m.cell.points),
                    str(d["n"]),
                    _num(d.get("mean"), 3),
                    _pct(sum(1 for s in m.scores.values() if s >= m.cell.points) / d["n"] if d["n"] else float("nan")),
                    f"{len(m.pending)} awaiting grading" if m.pending else "",
                ],
            )
        )
    parts.append(_table(["question", "graded", "points", "students", "mean", "full marks", ""], rows, {2, 3, 4, 5}))

    # checks
    parts.append("<h2>Checks</h2>")
    flagged = a.flagged()
    if flagged:
        parts.append(
            "<ul>"
            + "".join(
                f"<li><span class=flags>⚑</span> <b>{escape(c.cell.question)} · "
                f"{escape(c.name)}</b> ({c.cell.kind}, {c.passed}/{c.students}): "
                f"{escape('; '.join(c.flags))}</li>"
                for c in flagged
            )
            + "</ul>"
        )
    parts.append(_img(figs.get("checks"), "pass rate of each check"))
    rows = []
    for c in a.checks[: a.config.max_table_rows]:
        bar = f'<span class=bar style="width:{round(60 * c.rate) if c.students else 0}px"></span>'
        seen = ", ".join(f"{escape(n)} ({k})" for n, k in c.mistakes.most_common())
        rows.append(
            (
                "flag" if c.flags else "",
                [
                    escape(c.cell.question),
                    escape(c.cell.grade_id),
                    escape(c.cell.kind),
                    escape(c.name),
                    _num(c.points, 3),
                    f"{c.passed}/{c.students}",
                    bar + _pct(c.rate),
                    seen,
                    f"<span class=flags>{escape('; '.join(c.flags))}</span>",
                ],
            )
        )
    parts.append(
        _table(
            [
                "question",
                "test cell",
                "tests",
                "check",
                "points",
                "passed",
                "pass rate",
                "classic mistakes diagnosed",
                "flags",
            ],
            rows,
            {4, 5, 6},
        )
    )
    if len(a.checks) > a.config.max_table_rows:
        parts.append(f"<p class=note>{len(a.checks) - a.config.max_table_rows} more checks in {escape(csv_name)}.</p>")

    # classic mistakes
    parts.append("<h2>Classic mistakes</h2>")
    if a.catalogue_note:
        parts.append(f"<p class=note>{escape(a.catalogue_note)}.</p>")
    if a.mistakes:
        graded = len(a.normal())
        never = [m for m in a.mistakes if m.in_catalogue and not m.students]
        parts.append(
            f"<p class=note>A check's failure is diagnosed as a classic mistake when the student's value is "
            f"the one that mistake gives. {len(a.mistakes) - len(never)} mistakes seen, "
            f"{len(never)} of the catalogue never seen.</p>"
        )
        parts.append(_img(figs.get("mistakes"), "students per classic mistake"))
        rows = []
        for m in a.mistakes:
            where = escape(m.question or "–") + (
                "" if m.in_catalogue else " <span class=flags>(not in the catalogue: it changed since grading?)</span>"
            )
            rows.append(
                (
                    "" if m.students else "muted",
                    [
                        escape(m.name),
                        where,
                        escape(m.says),
                        "–" if not m.in_catalogue else "hidden tests only" if m.hidden else "public tests",
                        str(len(m.students)),
                        _pct(len(m.students) / graded if graded else float("nan")),
                        escape(", ".join(sorted(m.checks))) or "never seen",
                    ],
                )
            )
        parts.append(
            _table(
                [
                    "mistake",
                    "question",
                    "what the student is told",
                    "caught by",
                    "students",
                    "of the class",
                    "on checks",
                ],
                rows,
                {4, 5},
            )
        )

    # hand-graded questions
    if a.manual:
        parts.append("<h2>Questions graded by hand</h2>")
        parts.append(_img(figs.get("manual"), "score distribution of each hand-graded question"))
        if not any(m.scores for m in a.manual):
            parts.append("<p class=note>No written answer is graded yet (the formgrader).</p>")

    # students
    parts.append(
        "<h2>Students</h2><p class=note>Sorted by final score (the grader's points where the gradebook has none).</p>"
    )
    rows = []
    for r in a.students:
        sub = r.submission
        status = "; ".join(
            r.problems + (["awaiting manual grading: " + ", ".join(r.pending)] if r.pending else []) + r.notes
        )
        rows.append(
            (
                "problem" if r.problems else ("flag" if r.pending else ""),
                [
                    escape(r.student),
                    _num(r.auto_score),
                    _num(sub.raw if sub else None),
                    _num(sub.penalty if sub else None),
                    _num(sub.final if sub else None),
                    escape(status),
                ],
            )
        )
    parts.append(
        _table(
            [
                "student",
                f"autograded (of {a.auto_max:g})",
                "gradebook, before penalty",
                "late penalty",
                f"final (of {_num(a.max_score)})",
                "notes",
            ],
            rows,
            {1, 2, 3, 4},
        )
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def _csv_safe(value) -> str:
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text  # no formulas in a spreadsheet


def write_csv(analysis: ItemAnalysis, path: Path) -> None:
    header = [
        "notebook",
        "question",
        "test_cell",
        "tests",
        "check",
        "points",
        "students",
        "passed",
        "pass_rate",
        "mistakes",
        "flags",
    ]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for c in analysis.checks:
            writer.writerow(
                [
                    _csv_safe(v)
                    for v in [
                        c.cell.notebook,
                        c.cell.question,
                        c.cell.grade_id,
                        c.cell.kind,
                        c.name,
                        f"{c.points:g}",
                        c.students,
                        c.passed,
                        f"{c.rate:.4f}" if c.students else "",
                        "; ".join(f"{n}={k}" for n, k in c.mistakes.most_common()),
                        "; ".join(c.flags),
                    ]
                ]
            )


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_report(analysis: ItemAnalysis, out_dir: Path) -> tuple[Path, Path]:
    """report.html and checks.csv in ``out_dir`` (created); returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, csv_path = out_dir / "report.html", out_dir / "checks.csv"
    page = render_html(analysis, figures(analysis), csv_path.name)
    _atomic_write(html_path, lambda p: p.write_text(page, encoding="utf-8"))
    _atomic_write(csv_path, lambda p: write_csv(analysis, p))
    return html_path, csv_path


def _printable(text: str) -> str:
    """Student names are folder names: no control character reaches the terminal."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(text))


def terminal_summary(
    analysis: ItemAnalysis, html_path: Path | None = None, csv_path: Path | None = None, rows: int = 5
) -> str:
    a = analysis
    graded = a.in_gradebook()
    values = [r.submission.final for r in graded] if graded else [r.auto_score for r in a.normal()]
    top = a.max_score if graded else a.auto_max
    d = _describe([v for v in values if v is not None])
    lines = [
        f"item analysis of {a.assignment}: {len(a.students)} students, {len(a.normal())} graded normally, "
        f"{len(a.not_normal())} not graded normally, {sum(1 for r in a.students if r.pending)} awaiting manual "
        f"grading"
    ]
    if d["n"]:
        lines.append(
            f"{'final scores' if graded else 'autograded points'} (of {top:g}): mean {d['mean']:.4g}, median "
            f"{d['median']:.4g}, quartiles {d['q1']:.4g}-{d['q3']:.4g}, range {d['min']:.4g}-{d['max']:.4g}"
        )
    hardest = [c for c in a.checks if c.students][:rows]
    if hardest:
        lines.append(
            "hardest checks: " + "; ".join(f"{c.cell.question} · {c.name} {c.passed}/{c.students}" for c in hardest)
        )
    flags = Counter(
        f.split(":")[0]
        if f.startswith(("nobody", "everybody"))
        else "hidden check failing far more than its question's public ones"
        for c in a.checks
        for f in c.flags
    )
    if flags:
        lines.append("flagged: " + "; ".join(f"{k}: {n} check{'s' if n != 1 else ''}" for k, n in flags.items()))
    seen = [m for m in a.mistakes if m.students]
    if seen:
        lines.append("classic mistakes: " + "; ".join(f"{m.name} {len(m.students)}" for m in seen[: rows * 2]))
    never = [m.name for m in a.mistakes if m.in_catalogue and not m.students]
    if never:
        lines.append(f"never seen: {', '.join(never)}")
    if a.catalogue_note:
        lines.append(a.catalogue_note)
    lines.append(a.gradebook_note)
    lines += a.notes
    for r in [r for r in a.students if r.notes][:rows]:
        lines.append(f"  {r.student}: {'; '.join(r.notes)}"[:300])
    for r in a.not_normal()[: rows * 2]:
        lines.append(f"  {r.student}: {'; '.join(r.problems)}"[:300])
    if len(a.not_normal()) > rows * 2:
        lines.append(f"  ... and {len(a.not_normal()) - rows * 2} more (in the report)")
    if html_path is not None:
        lines.append(f"report: {html_path}" + (f" and {csv_path}" if csv_path else ""))
    return "\n".join(_printable(line) for line in lines)


def run(course: Course, assignment: str, out: str | Path | None = None, config: ReportConfig = ReportConfig()) -> int:
    """The ``report`` command: analyse, write the page and the CSV, print the summary."""
    course.source_notebooks(assignment)  # FileNotFoundError (exit 2) for an unknown assignment
    analysis = analyse(course, assignment, config)
    if not analysis.results_read and not analysis.in_gradebook():
        print(
            f"nothing graded for {assignment}: no results in {course.cache_dir / 'results' / assignment}, "
            f"nothing in the gradebook (run make autograde A={assignment} first)",
            file=sys.stderr,
        )
        return 1
    out_dir = Path(out) if out is not None else course.course_dir / "reports" / assignment
    html_path, csv_path = write_report(analysis, out_dir)
    print(terminal_summary(analysis, html_path, csv_path))
    return 0


__all__ = [
    "ReportConfig",
    "ItemAnalysis",
    "analyse",
    "load_questions",
    "read_gradebook",
    "figures",
    "render_html",
    "write_report",
    "terminal_summary",
    "run",
]
