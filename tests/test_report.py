"""`make report A=...`, the item analysis: on a scratch course whose numbers are counted by hand.

A small assignment (``09_demo``, written below): question 1 ``step`` with a public and a hidden
test cell (2 checks each, 1 point per check), question 2 ``norm`` with one test cell mixing public
and hidden checks (4 checks, 0.75 points each), question 2b a written answer graded by hand
(2 points), and a catalogue of four classic mistakes.

The synthetic class: the grader's result files are written in the grader's own format
(:class:`autograder.course.NotebookResult` with :class:`autograder.grading.CellVerdict` and
``CheckVerdict``), from the table ``FAILS`` (which checks each student fails, and the diagnosis, if
any), and nbgrader's gradebook is filled through nbgrader's ``Gradebook`` API from ``GRADEBOOK``.
Every expected number below is counted by hand from those two tables (the counts are written
out beside each assertion). Odd cases: ``fay``'s notebook could not be read (a failed result),
``gus`` has a submission but no result, ``hal`` is graded but not in the gradebook and his result
comes from an older source notebook, and two folders are refused by the grader (a name with HTML
in it, a link to a classmate's folder). A second assignment has no ``mistakes.json``.

The slow test grades a few submissions of the same assignment with the real grader (sandbox,
nbgrader) and checks the report against what each submission was written to do.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import asdict
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from autograder.course import RESULTS_VERSION, Course, NotebookResult, grading_digest
from autograder.grading import CellVerdict, CheckVerdict
from autograder.report import analyse, heading_title, kind_of_tests, load_questions, run

ROOT = Path(__file__).resolve().parents[1]
A = "09_demo"
PLAIN = "10_plain"  # the same notebook, without mistakes.json
NB = "demo"
HTML_NAME = "zoe<b>"  # refused by the grader (not a safe folder name); must reach the page escaped

# --- the assignment ---------------------------------------------------------------------------------------


def _meta(gid, *, grade=False, solution=False, points=None):
    meta = {
        "grade": grade,
        "grade_id": gid,
        "locked": not solution,
        "schema_version": 3,
        "solution": solution,
        "task": False,
    }
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def source_notebook():
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    cells = [
        md("# Demo assignment\n\nTwo small functions.", metadata=_meta("intro")),
        code("from autograder.checks import check, reference", metadata=_meta("setup")),
        md("## 1. Step (4 points)\n\nReturn `x + 1`.", metadata=_meta("q1_text")),
        code(
            "def step(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION",
            metadata=_meta("step", solution=True),
        ),
        code(
            '# Public tests\ncheck("step/one", step(1), 2)\ncheck("step/two", step(2), 3)',
            metadata=_meta("test_step_public", grade=True, points=2),
        ),
        code(
            '### BEGIN HIDDEN TESTS\ncheck("step/big", step(100), 101)\ncheck("step/neg", step(-5), -4)\n'
            "### END HIDDEN TESTS",
            metadata=_meta("test_step_hidden", grade=True, points=2),
        ),
        md("## 2. Norm (3 points)\n\nThe sum of the absolute values.", metadata=_meta("q2_text")),
        code(
            "def norm(v):\n    ### BEGIN SOLUTION\n    return sum(abs(x) for x in v)\n    ### END SOLUTION",
            metadata=_meta("norm", solution=True),
        ),
        code(
            'check("norm/a", norm([1, -2]), 3)\ncheck("norm/type", isinstance(norm([1]), int), True)\n'
            '### BEGIN HIDDEN TESTS\ncheck("norm/b", norm([-3]), 3)\ncheck("norm/inf", norm([2, -7]), 9)\n'
            "### END HIDDEN TESTS",
            metadata=_meta("test_norm", grade=True, points=3),
        ),
        md("### 2b. Explain (2 points, graded by hand)\n\nWhy is it a norm?", metadata=_meta("q2b_text")),
        md(
            "### BEGIN SOLUTION\nIt is positive, homogeneous and satisfies the triangle inequality.\n### END SOLUTION",
            metadata=_meta("explain", grade=True, solution=True, points=2),
        ),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


OFF, SIGN, SQUARED = "the step is off by one", "the sign is flipped", "the norm is squared"
CATALOGUE = {
    "off_by_one": {
        "cell": "step",
        "replace": [["return x + 1", "return x + 2"]],
        "fails": ["test_step_public", "test_step_hidden"],
        "says": OFF,
        "hidden": False,
    },
    "sign_flip": {
        "cell": "step",
        "replace": [["return x + 1", "return abs(x) + 1"]],
        "fails": ["test_step_hidden"],
        "says": SIGN,
        "hidden": True,
    },
    "norm_squared": {
        "cell": "norm",
        "replace": [["abs(x)", "x * x"]],
        "fails": ["test_norm"],
        "says": SQUARED,
        "hidden": False,
    },
    "never_made": {
        "cell": "norm",
        "replace": [["sum(", "max("]],
        "fails": ["test_norm"],
        "says": "nobody does this",
        "hidden": False,
    },
}


def make_course(root: Path) -> Path:
    for assignment in (A, PLAIN):
        folder = root / "solutions" / assignment
        folder.mkdir(parents=True)
        nbformat.write(source_notebook(), folder / f"{NB}.ipynb")
    (root / "solutions" / A / "mistakes.json").write_text(json.dumps(CATALOGUE, indent=1))
    (root / "course").mkdir()
    shutil.copy(ROOT / "course" / "nbgrader_config.py", root / "course" / "nbgrader_config.py")
    return root


# --- the synthetic class --------------------------------------------------------------------------------

CELLS = {
    "test_step_public": (2.0, ["step/one", "step/two"]),
    "test_step_hidden": (2.0, ["step/big", "step/neg"]),
    "test_norm": (3.0, ["norm/a", "norm/type", "norm/b", "norm/inf"]),
}
# student -> {check the student fails: the diagnosis in the feedback ("" for none)}; other checks pass.
# norm/inf fails for everybody (a broken test, as far as the report can tell); norm/type for nobody.
OLD = "an old diagnosis"  # a diagnosis no entry of today's catalogue gives
FAILS = {
    "ann": {"norm/inf": ""},
    "ben": {"step/big": SIGN, "step/neg": SIGN, "norm/inf": ""},
    "cat": {"step/big": SIGN, "norm/b": SQUARED, "norm/inf": ""},
    "dan": {
        "step/one": OFF,
        "step/two": OFF,
        "step/big": OFF,
        "step/neg": "",
        "norm/a": SQUARED,
        "norm/b": SQUARED,
        "norm/inf": "",
    },
    "eve": {"step/big": "", "norm/inf": ""},
    "hal": {"step/one": "", "step/two": OLD, "norm/inf": ""},
}
# each check is worth its cell's points / its number of checks: 1 for step, 0.75 for norm
AUTO = {"ann": 6.25, "ben": 4.25, "cat": 4.5, "dan": 0.75, "eve": 5.25, "hal": 4.25}
# the gradebook: (autograded points per cell, hand-graded points (None: not graded yet), late penalty)
GRADEBOOK = {
    "ann": ({"test_step_public": 2, "test_step_hidden": 2, "test_norm": 2.25}, 2.0, 0.0),
    "ben": ({"test_step_public": 2, "test_step_hidden": 0, "test_norm": 2.25}, 1.0, 0.0),
    "cat": ({"test_step_public": 2, "test_step_hidden": 1, "test_norm": 1.5}, None, 0.0),
    "dan": ({"test_step_public": 0, "test_step_hidden": 0, "test_norm": 0.75}, 0.0, 0.0),
    "eve": ({"test_step_public": 2, "test_step_hidden": 1, "test_norm": 2.25}, 1.5, 1.0),
    "fay": ({"test_step_public": 0, "test_step_hidden": 0, "test_norm": 0}, 0.0, 0.0),
}
# final = autograded + by hand - penalty: ann 8.25, ben 5.25, cat 4.5 (awaiting), dan 0.75, eve 5.75, fay 0
FINAL = {"ann": 8.25, "ben": 5.25, "cat": 4.5, "dan": 0.75, "eve": 5.75, "fay": 0.0}


def _verdicts(fails: dict[str, str]) -> dict:
    cells = {}
    for gid, (points, names) in CELLS.items():
        share = points / len(names)
        checks = [
            CheckVerdict(n, share, n not in fails, "differs" if n in fails else "", fails.get(n) or None) for n in names
        ]
        passed = sum(c.passed for c in checks)
        cells[gid] = asdict(
            CellVerdict(
                gid,
                points,
                passed == len(names),
                f"{passed} of {len(names)} passed",
                share * passed,
                [asdict(c) for c in checks],
            )
        )
    return cells


def write_result(
    course: Course,
    assignment: str,
    student: str,
    cells: dict,
    *,
    failed=False,
    fatal=None,
    reference: str | None = None,
) -> None:
    source = course.source_dir / assignment / f"{NB}.ipynb"
    result = NotebookResult(
        assignment, student, NB, "sha", reference or grading_digest(source), "bwrap", 1.0, fatal, cells, failed=failed
    )
    path = course.results_path(assignment, student, NB)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": RESULTS_VERSION, **asdict(result)}))


def write_gradebook(course: Course, assignment: str, rows: dict) -> None:
    from nbgrader.api import Gradebook

    path = os.environ["PATH"]
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + path  # a new gradebook runs `alembic`
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SQLAlchemy's about nbgrader's own session use
            _fill_gradebook(Gradebook(f"sqlite:///{course.gradebook}", "guided-descent"), assignment, rows)
    finally:
        os.environ["PATH"] = path


def _fill_gradebook(gradebook, assignment: str, rows: dict) -> None:
    with gradebook as gb:
        gb.add_assignment(assignment)
        gb.add_notebook(NB, assignment)
        for gid, (points, _) in CELLS.items():
            gb.add_grade_cell(gid, NB, assignment, max_score=points, cell_type="code")
        gb.add_grade_cell("explain", NB, assignment, max_score=2.0, cell_type="markdown")
        for student, (auto, manual, penalty) in rows.items():
            gb.add_student(student)
            gb.add_submission(assignment, student)
            for gid, score in auto.items():
                grade = gb.find_grade(gid, NB, assignment, student)
                grade.auto_score, grade.needs_manual_grade = float(score), False
            grade = gb.find_grade("explain", NB, assignment, student)
            grade.manual_score, grade.needs_manual_grade = manual, manual is None
            gb.find_submission_notebook(NB, assignment, student).late_submission_penalty = penalty
        gb.db.commit()


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Course:
    root = make_course(tmp_path_factory.mktemp("report") / "root")
    course = Course(root)
    for student, fails in FAILS.items():
        write_result(course, A, student, _verdicts(fails), reference="old" if student == "hal" else None)
    blank = {
        gid: asdict(CellVerdict(gid, points, False, "not graded: the notebook is not valid JSON"))
        for gid, (points, _) in CELLS.items()
    }
    write_result(course, A, "fay", blank, failed=True, fatal="the notebook is not valid JSON")
    for student in [*FAILS, "fay", "gus"]:
        (course.submitted_dir / student / A).mkdir(parents=True)
    (course.submitted_dir / HTML_NAME / A).mkdir(parents=True)
    os.symlink(course.submitted_dir / "ann", course.submitted_dir / "sym")
    write_gradebook(course, A, GRADEBOOK)
    # the assignment without a catalogue: two students, one whose check was diagnosed by a catalogue since removed
    write_result(course, PLAIN, "ann", _verdicts({}))
    write_result(course, PLAIN, "ben", _verdicts({"step/big": SIGN}))
    return course


@pytest.fixture(scope="module")
def analysis(course):
    return analyse(course, A)


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _cli(course: Course, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GD_COURSE_ROOT": str(course.root), "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "autograder", "report", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


# --- reading the assignment -------------------------------------------------------------------------------


def test_questions_and_their_cells_come_from_the_headings(course):
    questions = load_questions(course, A)
    got = [(q.title, [(c.grade_id, c.kind, c.points) for c in q.cells], q.answers) for q in questions]
    assert got == [
        ("1. Step", [("test_step_public", "public", 2.0), ("test_step_hidden", "hidden", 2.0)], ["step"]),
        ("2. Norm", [("test_norm", "mixed", 3.0)], ["norm"]),
        ("2b. Explain", [("explain", "manual", 2.0)], []),
    ]
    assert heading_title("## 3. `MyAdam`: an optimizer class (7 points)") == "3. MyAdam: an optimizer class"
    assert heading_title("Not a heading") is None
    assert (
        kind_of_tests("# a comment: check(x)\n### BEGIN HIDDEN TESTS\ncheck('a', 1)\n### END HIDDEN TESTS") == "hidden"
    )


# --- the numbers ------------------------------------------------------------------------------------------


def test_pass_rate_of_each_check_is_the_hand_count(analysis):
    rates = {c.name: (c.passed, c.students) for c in analysis.checks}
    # counted in FAILS, over the six students graded normally (ann, ben, cat, dan, eve, hal)
    assert rates == {
        "step/one": (4, 6),  # dan, hal fail
        "step/two": (4, 6),  # dan, hal
        "step/big": (2, 6),  # ben, cat, dan, eve
        "step/neg": (4, 6),  # ben, dan
        "norm/a": (5, 6),  # dan
        "norm/type": (6, 6),  # nobody fails
        "norm/b": (4, 6),  # cat, dan
        "norm/inf": (0, 6),
    }  # everybody fails
    order = [c.name for c in analysis.checks]
    assert order[:2] == ["norm/inf", "step/big"] and order[-1] == "norm/type"  # lowest pass rate first


def test_flags(analysis):
    flags = {c.name: " ".join(c.flags) for c in analysis.checks if c.flags}
    assert set(flags) == {"norm/inf", "norm/type", "step/big"}
    assert flags["norm/inf"].startswith("nobody passes")
    assert flags["norm/type"].startswith("everybody passes")
    # step/big fails 4/6 = 67% against 4/12 = 33% for the public checks of question 1; of the students who
    # pass both public checks (ann, ben, cat, eve), ben, cat and eve fail it. step/neg (2/6 = 33%) is not flagged.
    assert (
        "fails 67% of the class against 33%" in flags["step/big"]
        and "3 students pass every public" in flags["step/big"]
    )


def test_questions_scores(analysis):
    stats = {qs.question.title: qs for qs in analysis.questions}
    step, norm = stats["1. Step"], stats["2. Norm"]
    # question 1 (4 points): ann 4, ben 2, cat 3, dan 0, eve 3, hal 2 -> mean 14/6, full marks: ann
    assert step.scores == {"ann": 4, "ben": 2, "cat": 3, "dan": 0, "eve": 3, "hal": 2}
    assert step.full_marks == 1 and step.mean == pytest.approx(14 / 6, abs=1e-12)
    # question 2 (3 points, norm/inf failing for all): 2.25 for ann ben eve hal, 1.5 cat, 0.75 dan; no full marks
    assert norm.scores == {"ann": 2.25, "ben": 2.25, "cat": 1.5, "dan": 0.75, "eve": 2.25, "hal": 2.25}
    assert norm.full_marks == 0
    assert {r.student: r.auto_score for r in analysis.normal()} == AUTO


def test_classic_mistakes_per_student(analysis):
    seen = {m.name: sorted(m.students) for m in analysis.mistakes}
    assert seen == {
        "off_by_one": ["dan"],
        "sign_flip": ["ben", "cat"],
        "norm_squared": ["cat", "dan"],
        "never_made": [],
        OLD: ["hal"],
    }
    by_name = {m.name: m for m in analysis.mistakes}
    assert by_name["sign_flip"].hidden and not by_name["off_by_one"].hidden
    assert by_name["sign_flip"].question == "1. Step" and by_name["norm_squared"].question == "2. Norm"
    assert not by_name[OLD].in_catalogue and by_name["never_made"].in_catalogue
    assert by_name["off_by_one"].checks == {
        "test_step_public: step/one",
        "test_step_public: step/two",
        "test_step_hidden: step/big",
    }
    big = next(c for c in analysis.checks if c.name == "step/big")
    assert dict(big.mistakes) == {"sign_flip": 2, "off_by_one": 1}


def test_students_not_graded_normally_and_why(analysis):
    problems = {r.student: " ".join(r.problems) for r in analysis.not_normal()}
    assert set(problems) == {"fay", "gus", HTML_NAME, "sym"}
    assert "not valid JSON" in problems["fay"]
    assert "not graded yet" in problems["gus"]
    assert "symbolic link" in problems["sym"] and "folder name" in problems[HTML_NAME]
    assert [r.student for r in analysis.students if r.notes] == ["hal"]  # graded, not in the gradebook
    assert "not in the gradebook" in analysis.students[[r.student for r in analysis.students].index("hal")].notes[0]
    assert [r.student for r in analysis.students if r.pending] == ["cat"]
    assert any("older version" in n and "1 student" in n for n in analysis.notes)  # hal's stale result


def test_final_scores_from_the_gradebook(analysis):
    finals = {r.student: r.submission.final for r in analysis.in_gradebook()}
    assert finals == pytest.approx(FINAL, abs=1e-9)
    assert analysis.max_score == 9.0 and analysis.auto_max == 7.0
    # sorted by final score, then the grader's points (hal), then the students with neither, by name
    assert [r.student for r in analysis.students] == [
        "ann",
        "eve",
        "ben",
        "cat",
        "dan",
        "fay",
        "hal",
        "gus",
        "sym",
        HTML_NAME,
    ]
    explain = analysis.manual[0]
    assert explain.scores == {"ann": 2.0, "ben": 1.0, "dan": 0.0, "eve": 1.5, "fay": 0.0} and explain.pending == ["cat"]


# --- the command, the page, the CSV -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_run(course):
    before = _snapshot(course.root)
    proc = _cli(course, A)
    after = _snapshot(course.root)
    return proc, before, after


def test_command_writes_only_the_report(course, cli_run):
    proc, before, after = cli_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = f"course/reports/{A}/"
    assert {k: v for k, v in after.items() if not k.startswith(reports)} == before  # gradebook and results untouched
    assert sorted(k for k in after if k.startswith(reports)) == [reports + "checks.csv", reports + "report.html"]


def test_terminal_summary(cli_run):
    out = cli_run[0].stdout
    assert "10 students, 6 graded normally, 4 not graded normally, 1 awaiting manual grading" in out
    # finals of the six students in the gradebook: 0, 0.75, 4.5, 5.25, 5.75, 8.25 -> mean 24.5/6 = 4.083,
    # median (4.5 + 5.25)/2 = 4.875, quartiles at positions 1.25 and 3.75 (linear): 1.688 and 5.625
    assert "mean 4.083, median 4.875, quartiles 1.688-5.625, range 0-8.25" in out
    assert "never seen: never_made" in out
    assert "sign_flip 2" in out and "norm_squared 2" in out and "off_by_one 1" in out


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]

    def handle_data(self, data):
        self.text.append(data)


def test_page_is_self_contained_with_its_figures(course, cli_run):
    html = (course.course_dir / "reports" / A / "report.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(html)
    images = [v for tag, k, v in page.attrs if tag == "img" and k == "src"]
    # the score histogram, the questions, the checks, the mistakes, the hand-graded question
    assert len(images) == 5
    for uri in images:
        assert uri.startswith("data:image/png;base64,")
        png = base64.b64decode(uri.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not re.search(r"https?://|//cdn|@import|url\(", html)
    assert not {"script", "link", "iframe", "object"} & set(page.tags)
    links = [v for _, k, v in page.attrs if k == "href"]
    assert links == ["checks.csv"]
    assert HTML_NAME not in html and "zoe&lt;b&gt;" in html  # a folder name is text, never markup
    text = " ".join(page.text)
    for words in (
        "6 students graded normally",
        "4 not graded normally",
        "1 student awaiting manual grading",
        "nobody passes it",
        "everybody passes it",
        "public tests may miss something",
        "never seen",
        "not in the catalogue",
        "awaiting grading",
    ):
        assert words in text, words


def test_csv_has_every_check(course, cli_run):
    with open(course.course_dir / "reports" / A / "checks.csv", newline="", encoding="utf-8") as fh:
        rows = {row["check"]: row for row in csv.DictReader(fh)}
    assert {k: (int(r["passed"]), int(r["students"])) for k, r in rows.items()} == {
        "step/one": (4, 6),
        "step/two": (4, 6),
        "step/big": (2, 6),
        "step/neg": (4, 6),
        "norm/a": (5, 6),
        "norm/type": (6, 6),
        "norm/b": (4, 6),
        "norm/inf": (0, 6),
    }
    assert float(rows["step/big"]["pass_rate"]) == pytest.approx(2 / 6, abs=1e-4)  # 4 decimals in the file
    assert rows["step/big"]["tests"] == "hidden" and rows["norm/a"]["tests"] == "mixed"
    assert rows["step/big"]["mistakes"] == "sign_flip=2; off_by_one=1"


def test_assignment_without_catalogue_or_gradebook_entry(course, tmp_path):
    out = tmp_path / "elsewhere"
    proc = _cli(course, PLAIN, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no catalogue of classic mistakes" in proc.stdout
    assert f"the gradebook does not know {PLAIN}" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["checks.csv", "report.html"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "not in the catalogue" in html  # ben's diagnosis, from a catalogue since removed
    analysis = analyse(course, PLAIN)
    assert {c.name: (c.passed, c.students) for c in analysis.checks}["step/big"] == (1, 2)
    assert [m.name for m in analysis.mistakes] == [SIGN] and not analysis.in_gradebook()


def test_nothing_graded_and_unknown_assignment(course):
    empty = course.source_dir / "11_empty"
    empty.mkdir()
    nbformat.write(source_notebook(), empty / f"{NB}.ipynb")
    try:
        assert run(course, "11_empty") == 1
        assert not (course.course_dir / "reports" / "11_empty").exists()
    finally:
        shutil.rmtree(empty)
    proc = _cli(course, "99_missing")
    assert proc.returncode == 2 and "no source notebooks" in proc.stderr


# --- with the real grader -----------------------------------------------------------------------------------


def _answered(nb, replace=()):
    """The source notebook as a student who wrote the solution (with ``replace`` applied) hands it in."""
    out = nbformat.from_dict(json.loads(json.dumps(nb)))
    for cell in out.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and cell.cell_type == "code":
            code = "\n".join(line for line in cell.source.split("\n") if "### " not in line)
            for old, new in replace:
                code = code.replace(old, new)
            cell.source = code
        if meta.get("grade") and not meta.get("solution"):
            cell.source = re.sub(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", "", cell.source, flags=re.S)
    return out


@pytest.mark.slow
def test_report_on_submissions_graded_for_real(tmp_path):
    if not shutil.which("bwrap"):
        pytest.fail("bubblewrap is missing: apt-get install -y bubblewrap (make setup installs it)")
    course = Course(make_course(tmp_path / "root"))
    env = {
        **os.environ,
        "GD_COURSE_ROOT": str(course.root),
        "GD_QUICK": "1",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    }
    release = subprocess.run(
        [sys.executable, "-m", "nbgrader", "generate_assignment", A, "--force"],
        cwd=course.course_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert release.returncode == 0, release.stderr[-3000:]
    source = source_notebook()
    submissions = {
        "good": _answered(source),
        "off": _answered(source, CATALOGUE["off_by_one"]["replace"]),
        "sq": _answered(source, CATALOGUE["norm_squared"]["replace"]),
        "blank": nbformat.read(course.release_dir / A / f"{NB}.ipynb", as_version=4),
    }
    for student, nb in submissions.items():
        folder = course.submitted_dir / student / A
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{NB}.ipynb")
    graded = subprocess.run(
        [sys.executable, "-m", "autograder", "autograde", A, "--workers", "2", "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert graded.returncode == 0, graded.stdout[-3000:] + graded.stderr[-3000:]
    proc = _cli(course, A)
    assert proc.returncode == 0, proc.stderr[-3000:]

    analysis = analyse(course, A)
    rates = {c.name: (c.passed, c.students) for c in analysis.checks}
    # good passes all; off fails every step check (x + 2); sq fails norm a, b, inf (squares: 5, 9, 53) but
    # passes norm/type (an int); blank passes nothing (its answers raise NotImplementedError)
    assert rates == {
        "step/one": (2, 4),
        "step/two": (2, 4),
        "step/big": (2, 4),
        "step/neg": (2, 4),
        "norm/a": (2, 4),
        "norm/type": (3, 4),
        "norm/b": (2, 4),
        "norm/inf": (2, 4),
    }
    seen = {m.name: sorted(m.students) for m in analysis.mistakes}
    assert seen == {"off_by_one": ["off"], "norm_squared": ["sq"], "sign_flip": [], "never_made": []}
    # autograded points (7): good 7, off 3 (norm only), sq 4 + 0.75 (norm/type), blank 0
    assert {r.student: r.auto_score for r in analysis.students} == {"good": 7, "off": 3, "sq": 4.75, "blank": 0}
    # the written answer: unchanged in the blank notebook (nbgrader gives it 0), to be graded for the others
    assert sorted(r.student for r in analysis.students if r.pending) == ["good", "off", "sq"]
    assert {r.student: r.submission.final for r in analysis.in_gradebook()} == {
        "good": 7,
        "off": 3,
        "sq": 4.75,
        "blank": 0,
    }
    html = (course.course_dir / "reports" / A / "report.html").read_text(encoding="utf-8")
    assert html.count('src="data:image/png;base64,') == 5
