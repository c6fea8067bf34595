"""Every assignment, graded for real by nbgrader through the course's autograder.

For each folder ``solutions/<A>`` a temporary course root (a copy of ``solutions/<A>``,
``assignments/<A>`` and ``course/nbgrader_config.py``, pointed to by ``GD_COURSE_ROOT``, as in
``tests/test_autograder.py``) receives these submissions and ``python -m autograder autograde``
grades them all in one run:

- ``correct``: the released notebook with every answer cell filled in from the source notebook's
  solution: must score full marks, every graded cell passing;
- ``blank``: the released notebook as students get it: must score 0 without crashing the grader;
- ``cheat``: every answer returns an object equal to anything, after monkeypatching torch's, numpy's and
  ``autograder.checks``' comparisons: must score 0 (values are recorded and compared outside the student's
  process, types exactly);
- one submission per *classic bug* of the assignment (``BUGS`` below): the correct submission with
  one answer cell changed by a textual substitution in its solution code; it must fail exactly the
  graded cells listed for that bug (its own question's) and pass all the others.

The per-cell verdicts come from the grader's result files
(``course/.autograder/results/<A>/<student>/<nb>.json``) and the totals from nbgrader's gradebook
(``python -m autograder export``). The autograde run also regenerates the release inside the
temporary root (the fresh gradebook does not know the assignment, so ``nbgrader
generate_assignment`` runs there): the committed ``assignments/<A>`` must equal it, cell by cell.

The static tests (no grading) check the released notebooks: no solution code, no hidden test code,
no nbgrader markers, no outputs, points on every graded cell, at least 25 points in at least 6
graded cells, and the release matches the source notebook with solutions and hidden tests removed.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir() and p.name[:2].isdigit())


# --- the classic bugs -------------------------------------------------------------------------------
# The catalogue is course data: solutions/<A>/mistakes.json (never released: course/nbgrader_config.py
# ignores it), {bug name: {"cell": answer cell grade_id, "replace": [[old, new], ...] substitutions in
# its solution code, "fails": graded cells that must fail, "says": the diagnosis the feedback gives,
# "hidden": true when only hidden tests catch it on purpose}}. Here as
# assignment -> {bug name: (answer cell grade_id, [(old, new), ...], {graded cells that must fail})}.
def _load_bugs() -> dict[str, dict[str, tuple[str, list[tuple[str, str]], set[str]]]]:
    bugs = {}
    for assignment in ASSIGNMENTS:
        path = ROOT / "solutions" / assignment / "mistakes.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        bugs[assignment] = {
            name: (b["cell"], [tuple(r) for r in b["replace"]], set(b["fails"])) for name, b in data.items()
        }
    return bugs


BUGS = _load_bugs()

GRADE_ARGS = ["--workers", "2", "--cell-timeout", "120", "--notebook-timeout", "600", "--quiet"]


# --- notebooks ----------------------------------------------------------------------------------------


def _notebook_name(assignment: str) -> str:
    (source,) = sorted((ROOT / "solutions" / assignment).glob("*.ipynb"))
    return source.name


def _read(folder: str, assignment: str):
    return nbformat.read(ROOT / folder / assignment / _notebook_name(assignment), as_version=4)


def _meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {}) or {}


def _by_id(nb) -> dict:
    return {_meta(c)["grade_id"]: c for c in nb.cells if _meta(c).get("grade_id")}


def _regions(code: str, begin: str, end: str) -> list[str]:
    """The lines strictly between ``### BEGIN x`` and ``### END x`` markers."""
    inside, lines = False, []
    for line in code.split("\n"):
        if line.strip() == begin:
            inside = True
        elif line.strip() == end:
            inside = False
        elif inside:
            lines.append(line)
    return lines


def _released_form(code: str, markdown: bool = False) -> str:
    """What nbgrader's generate_assignment makes of a source cell: each solution region replaced by the
    course's stub at the marker's indentation (``YOUR ANSWER HERE`` in a markdown cell), each hidden-test region
    removed with its markers."""
    out, mode = [], None
    for line in code.split("\n"):
        marker = line.strip()
        if marker == "### BEGIN SOLUTION":
            indent = line[: len(line) - len(line.lstrip())]
            out += (
                [indent + "YOUR ANSWER HERE"]
                if markdown
                else [indent + "# YOUR CODE HERE", indent + "raise NotImplementedError()"]
            )
            mode = "solution"
        elif marker == "### BEGIN HIDDEN TESTS":
            mode = "hidden"
        elif marker in ("### END SOLUTION", "### END HIDDEN TESTS"):
            mode = None
        elif mode is None:
            out.append(line)
    return "\n".join(out)


def _solution_code(source_nb, grade_id: str) -> str:
    """The source's answer cell with the solution markers removed: what a correct student writes."""
    code = _by_id(source_nb)[grade_id].source
    return "\n".join(
        line for line in code.split("\n") if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")
    )


def _submission(assignment: str, replace: dict[str, str] | None = None):
    """The released notebook with every answer cell filled in from the source's solution
    (``replace``: grade_id -> other code for that answer cell)."""
    source, nb = _read("solutions", assignment), _read("assignments", assignment)
    for cell in nb.cells:
        meta = _meta(cell)
        if meta.get("solution"):
            gid = meta["grade_id"]
            cell.source = (replace or {}).get(gid, _solution_code(source, gid))
    return nb


def _buggy(assignment: str, bug: str):
    gid, substitutions, _ = BUGS[assignment][bug]
    code = _solution_code(_read("solutions", assignment), gid)
    for old, new in substitutions:
        assert old in code, f"{assignment}/{bug}: {old!r} is not in the solution of {gid}"
        code = code.replace(old, new)
    return _submission(assignment, {gid: code})


CHEAT_PRELUDE = """
import numpy, torch
import autograder.checks as checks
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
numpy.testing.assert_allclose = lambda *a, **k: None
checks.check = lambda *a, **k: None
checks.compare = lambda *a, **k: None


class Anything:
    # equal to everything, iterable, callable, with every attribute
    def __init__(self, *args, **kwargs): pass
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __le__(self, other): return True
    def __ge__(self, other): return True
    def __float__(self): return 0.0
    def __iter__(self): return iter([Anything(), Anything()])
    def __getattr__(self, name): return lambda *a, **k: Anything()
    def __call__(self, *a, **k): return Anything()
"""


def _cheat(assignment: str):
    """Every answer replaced by objects that claim to equal anything, after monkeypatching the comparison
    functions of torch, numpy and autograder.checks: must score 0 (check() records values, the grader decides)."""
    source, nb = _read("solutions", assignment), _read("assignments", assignment)
    replace, first = {}, True
    for gid, cell in _by_id(source).items():
        if not _meta(cell).get("solution") or cell.cell_type != "code":
            continue
        lines = [CHEAT_PRELUDE] if first else []
        first = False
        for kind, name in re.findall(r"^(def|class) (\w+)", cell.source, re.M):
            lines.append(
                f"def {name}(*args, **kwargs):\n    return Anything()"
                if kind == "def"
                else f"class {name}(Anything):\n    pass"
            )
        replace[gid] = "\n".join(lines)
    for cell in nb.cells:
        if _meta(cell).get("solution") and cell.cell_type == "code":
            cell.source = replace[_meta(cell)["grade_id"]]
    return nb


def _graded_cells(nb) -> dict[str, float]:
    return {
        _meta(c)["grade_id"]: float(_meta(c).get("points", 0) or 0)
        for c in nb.cells
        if _meta(c).get("grade") and not _meta(c).get("solution")
    }


# --- static checks of the released notebooks ------------------------------------------------------------


def _hidden_flags() -> dict[str, dict[str, bool]]:
    """assignment -> {bug: marked "hidden" (only hidden tests catch it, on purpose)}."""
    out = {}
    for assignment in ASSIGNMENTS:
        path = ROOT / "solutions" / assignment / "mistakes.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        out[assignment] = {name: bool(b.get("hidden")) for name, b in data.items()}
    return out


def _is_hidden_test(cell) -> bool:
    return "### BEGIN HIDDEN TESTS" in cell.source


def _question_tests(source, answer_id: str) -> dict[str, bool]:
    """{graded test cell: is hidden} of the question whose answer cell is ``answer_id``: the graded test cells
    between it and the next answer cell (how the grader groups a question's tests)."""
    tests, inside = {}, False
    for cell in source.cells:
        meta = _meta(cell)
        if meta.get("solution"):
            inside = meta.get("grade_id") == answer_id
        elif inside and meta.get("grade") and cell.cell_type == "code":
            tests[meta["grade_id"]] = _is_hidden_test(cell)
    return tests


def _written_cells(nb) -> dict[str, float]:
    """The answers in words: markdown answer cells graded by hand in the formgrader."""
    return {
        _meta(c)["grade_id"]: float(_meta(c).get("points", 0) or 0)
        for c in nb.cells
        if c.cell_type == "markdown" and _meta(c).get("solution") and _meta(c).get("grade")
    }


def test_every_assignment_has_classic_bugs():
    """Every assignment has at least 3 classic mistakes; each one changes its own question's answer and is caught by
    that question's tests: by at least one public test, unless it is marked "hidden" on purpose (the grading test
    below checks that the listed cells really fail)."""
    assert ASSIGNMENTS[0] == "01_first_order" and len(ASSIGNMENTS) >= 7, ASSIGNMENTS
    assert all(BUGS[a] for a in ASSIGNMENTS), "every assignment needs its classic bugs in solutions/<A>/mistakes.json"
    hidden_flags = _hidden_flags()
    for assignment, bugs in BUGS.items():
        source = _read("solutions", assignment)
        graded = _graded_cells(source)
        answers = {gid for gid, c in _by_id(source).items() if _meta(c).get("solution") and c.cell_type == "code"}
        assert len(bugs) >= 3, f"{assignment}: only {len(bugs)} classic mistakes"
        for bug, (gid, substitutions, failing) in bugs.items():
            assert gid in answers, f"{assignment}/{bug}: {gid} is not an answer cell"
            assert failing and failing <= set(graded), (
                f"{assignment}/{bug}: unknown graded cells {failing - set(graded)}"
            )
            tests = _question_tests(source, gid)
            assert failing <= set(tests), (
                f"{assignment}/{bug}: fails {sorted(failing - set(tests))}, not its question's"
            )
            if not hidden_flags[assignment][bug]:
                assert any(not tests[t] for t in failing), (
                    f"{assignment}/{bug}: no public test of its question catches it "
                    "(mark it hidden on purpose, or add one)"
                )
            code = _solution_code(source, gid)
            assert all(old in code for old, _ in substitutions), f"{assignment}/{bug}: substitution does not apply"
            for old, replacement in substitutions:
                code = code.replace(old, replacement)
            compile(code, f"{assignment}/{bug}", "exec")  # a mistake is wrong code that runs, not a syntax error


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_questions_beyond_code(assignment):
    """At least two questions ask to derive, predict or interpret: answers in words (markdown answer cells graded
    by hand, with a rubric in the source's solution region) or numbers/choices the student assigns (an answer cell
    with no function or class in it), autograded."""
    source = _read("solutions", assignment)
    written = _written_cells(source)
    numbers = [
        gid
        for gid, c in _by_id(source).items()
        if c.cell_type == "code" and _meta(c).get("solution") and not re.search(r"^(def|class) ", c.source, re.M)
    ]
    assert len(written) + len(numbers) >= 2, f"{assignment}: written {sorted(written)}, predictions {numbers}"
    for gid, points in written.items():
        cell = _by_id(source)[gid]
        meta = _meta(cell)
        assert points > 0 and meta.get("task") is False and meta.get("locked") is False, f"{assignment}/{gid}: {meta}"
        inside = "\n".join(_regions(cell.source, "### BEGIN SOLUTION", "### END SOLUTION"))
        assert "Rubric" in inside and "Model answer" in inside, (
            f"{assignment}/{gid}: the rubric and model answer belong in the solution region"
        )
    for gid in numbers:  # a prediction is checked by a hidden test of its question, never revealed by a public one
        tests = _question_tests(source, gid)
        assert tests and all(tests.values()), f"{assignment}/{gid}: a prediction's tests must all be hidden"


LECTURE_REFERENCE = re.compile(r"`lectures/(\w+\.ipynb)`, section \"([^\"]+)\"")


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_theorems_point_to_course_material(assignment):
    """Every "Theorem" an assignment cites is proved in a lecture it names by file and section title."""
    source = _read("solutions", assignment)
    text = "\n".join(c.source for c in source.cells if c.cell_type == "markdown")
    if "Theorem" not in text:
        return
    assert "course notes" not in text, f"{assignment}: points to course notes that do not exist"
    references = LECTURE_REFERENCE.findall(text)
    assert references, f"{assignment}: cites a theorem without naming the lecture that proves it"
    for lecture, section in references:
        path = ROOT / "lectures" / lecture
        assert path.exists(), f"{assignment}: {lecture} does not exist"
        headings = [
            line.lstrip("#").strip()
            for c in nbformat.read(path, as_version=4).cells
            if c.cell_type == "markdown"
            for line in c.source.split("\n")
            if line.startswith("#")
        ]
        assert any(section in h for h in headings), f"{assignment}: no section {section!r} in {lecture}: {headings}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_points_and_graded_cells(assignment):
    for folder in ("solutions", "assignments"):
        nb = _read(folder, assignment)
        graded = _graded_cells(nb)
        assert len(graded) >= 6, f"{folder}/{assignment}: only {len(graded)} graded cells"
        assert all(p > 0 for p in graded.values()), f"{folder}/{assignment}: a graded cell without points: {graded}"
        assert sum(graded.values()) >= 25, f"{folder}/{assignment}: only {sum(graded.values())} points"
        ids = [_meta(c)["grade_id"] for c in nb.cells if _meta(c).get("grade_id")]
        assert len(ids) == len(set(ids)), f"{folder}/{assignment}: repeated grade ids"
        code_cells = [c for c in nb.cells if c.cell_type == "code"]
        assert all(_meta(c).get("grade_id") for c in code_cells), "every code cell is an nbgrader cell"
        for c in code_cells:
            meta = _meta(c)
            if meta.get("grade") and not meta.get("solution"):
                assert meta.get("locked"), f"{meta['grade_id']}: test cells are locked"
                # graded cells pass only through check(); every one of them calls it (in the source:
                # a released hidden-test cell is only its comment)
                assert folder == "assignments" or "check(" in c.source, f"{meta['grade_id']} calls no check()"
    # every question has a public and a hidden test cell
    source = _read("solutions", assignment)
    hidden = [gid for gid, c in _by_id(source).items() if "### BEGIN HIDDEN TESTS" in c.source]
    public = [gid for gid in _graded_cells(source) if gid not in hidden]
    assert len(hidden) >= 3 and len(public) >= 3, (public, hidden)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_released_notebook_holds_no_solution_and_no_hidden_test(assignment):
    source, released = _read("solutions", assignment), _read("assignments", assignment)
    text = "\n".join(c.source for c in released.cells)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS"):
        assert marker not in text, f"{assignment}: released notebook contains {marker!r}"
    # lines of solution or hidden-test code that occur nowhere else in the source must not be released
    secret, public = [], []
    for cell in source.cells:
        if cell.cell_type != "code":
            continue
        secret += _regions(cell.source, "### BEGIN SOLUTION", "### END SOLUTION")
        secret += _regions(cell.source, "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
        public += _released_form(cell.source).split("\n")
    public_lines = {line.strip() for line in public}
    secret_lines = {line.strip() for line in secret} - public_lines - {""}
    assert len(secret_lines) >= 20, f"{assignment}: suspiciously little solution/hidden code"
    released_lines = {line.strip() for line in text.split("\n")}
    leaked = sorted(secret_lines & released_lines)
    assert not leaked, f"{assignment}: released notebook contains solution or hidden-test code: {leaked[:5]}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_matches_source(assignment):
    source, released = _read("solutions", assignment), _read("assignments", assignment)
    assert [c.cell_type for c in source.cells] == [c.cell_type for c in released.cells]
    for s, r in zip(source.cells, released.cells):
        sm, rm = _meta(s), _meta(r)
        for key in ("grade_id", "grade", "solution", "locked", "points"):
            assert sm.get(key) == rm.get(key), f"{assignment}/{sm.get('grade_id')}: {key} differs"
        expected = (
            _released_form(s.source)
            if s.cell_type == "code"
            else _released_form(s.source, markdown=True)
            if sm.get("solution")
            else s.source
        )
        assert r.source == expected, f"{assignment}/{sm.get('grade_id')}: the release is out of date (make release)"
        if r.cell_type == "code":
            assert r.outputs == [] and r.execution_count is None, f"{assignment}: released cells carry outputs"
    for nb in (source, released):
        for c in nb.cells:
            if c.cell_type == "code":
                assert c.outputs == [] and c.execution_count is None, f"{assignment}: committed outputs"


# --- grading for real ----------------------------------------------------------------------------------


def _grade(assignment: str, tmp_path: Path):
    """Grade the correct, blank and buggy submissions of ``assignment`` in one autograde run.

    Returns (per-student cell verdicts {grade_id: (passed, points)}, gradebook totals, results, root, seconds).
    """
    root = tmp_path / "course_root"
    shutil.copytree(ROOT / "solutions" / assignment, root / "solutions" / assignment)
    shutil.copytree(ROOT / "assignments" / assignment, root / "assignments" / assignment)
    (root / "course").mkdir()
    shutil.copy(ROOT / "course" / "nbgrader_config.py", root / "course" / "nbgrader_config.py")
    name = _notebook_name(assignment)
    submissions = {"correct": _submission(assignment), "blank": _read("assignments", assignment)}
    submissions["cheat"] = _cheat(assignment)
    submissions.update({f"bug_{bug}": _buggy(assignment, bug) for bug in BUGS[assignment]})
    for student, nb in submissions.items():
        folder = root / "course" / "submitted" / student / assignment
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / name)
    env = {**os.environ, "GD_COURSE_ROOT": str(root), "GD_QUICK": "1"}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "autograder", "autograde", assignment, *GRADE_ARGS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    csv_path = root / "grades.csv"
    proc2 = subprocess.run(
        [sys.executable, "-m", "autograder", "export", "--to", str(csv_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc2.returncode == 0, proc2.stdout[-3000:] + proc2.stderr[-3000:]
    with open(csv_path) as fh:
        totals = {
            row["student_id"]: float(row["raw_score"]) for row in csv.DictReader(fh) if row["assignment"] == assignment
        }
    results = {}
    for student in submissions:
        path = root / "course" / ".autograder" / "results" / assignment / student / f"{Path(name).stem}.json"
        results[student] = json.loads(path.read_text())
    return results, totals, root, seconds


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_grading_scores_each_submission_exactly(assignment, tmp_path):
    results, totals, root, seconds = _grade(assignment, tmp_path)
    name = _notebook_name(assignment)
    graded = _graded_cells(_read("solutions", assignment))
    full = sum(graded.values())
    per_notebook = {s: r["seconds"] for s, r in results.items()}
    print(
        f"\n{assignment}: graded {len(results)} notebooks in {seconds:.1f} s (2 workers); seconds per "
        f"notebook: {per_notebook}; full marks {full:g}"
    )

    problems = []
    expected_failing = {"correct": set(), "blank": set(graded), "cheat": set(graded)}
    expected_failing.update({f"bug_{bug}": failing for bug, (_, _, failing) in BUGS[assignment].items()})
    for student, failing in expected_failing.items():
        cells = results[student]["cells"]
        if set(cells) != set(graded):
            problems.append(f"{student}: graded cells {sorted(cells)} != {sorted(graded)}")
            continue
        got_failing = {gid for gid, v in cells.items() if not v["passed"]}
        if got_failing != failing:
            messages = {gid: cells[gid]["message"][:300] for gid in got_failing ^ failing}
            problems.append(f"{student}: failed {sorted(got_failing)}, expected {sorted(failing)}: {messages}")
        # partial credit: a failing cell keeps the points of its checks that passed, so the total is the sum of
        # the cells' scores (each passing cell at full points, each failing one below them)
        scores = {gid: (v["points"] if v["passed"] else v.get("score", 0.0)) for gid, v in cells.items()}
        below = {gid for gid in failing if not scores[gid] < graded[gid]}
        if below:
            problems.append(f"{student}: cells {sorted(below)} fail but keep full points")
        score = sum(scores.values())
        if totals.get(student) is None or abs(totals[student] - score) > 1e-3:
            problems.append(f"{student}: gradebook total {totals.get(student)} != {score} (sum of the cells' scores)")
        if student.startswith("bug_") and not score < full:
            problems.append(f"{student}: a classic bug keeps full marks")
        if results[student]["fatal"]:
            problems.append(f"{student}: fatal {results[student]['fatal']}")
    # every classic mistake fails a public test of its question (unless marked hidden on purpose), and the
    # feedback names it on at least one of its failing checks
    source = _read("solutions", assignment)
    hidden_flags, catalogue = (
        _hidden_flags()[assignment],
        json.loads((ROOT / "solutions" / assignment / "mistakes.json").read_text()),
    )
    for bug, (gid, _, _) in BUGS[assignment].items():
        cells = results[f"bug_{bug}"]["cells"]
        public = {t for t, hidden in _question_tests(source, gid).items() if not hidden}
        if not hidden_flags[bug] and all(cells[t]["passed"] for t in public):
            problems.append(f"bug_{bug}: passes every public test of its question {sorted(public)}")
        named = {
            check.get("mistake") for cell in cells.values() for check in cell.get("checks", []) if not check["passed"]
        }
        if catalogue[bug]["says"] not in named:
            problems.append(f"bug_{bug}: the feedback does not name the mistake (it names {sorted(map(str, named))})")
    assert totals["correct"] == full and totals["blank"] == 0 and totals["cheat"] == 0
    assert not problems, "\n".join(problems)

    # the blank notebook fails every cell through a clean verdict: its stubs raise NotImplementedError (a test of a
    # number the student assigns finds the name undefined)
    blank = {gid: cell["message"] for gid, cell in results["blank"]["cells"].items()}
    assert all("NotImplementedError" in message or "is not defined" in message for message in blank.values()), blank

    # answers in words: kept from the student's notebook in the autograded one, left to the formgrader
    written = _written_cells(source)
    if written:
        from nbgrader.api import Gradebook

        autograded = nbformat.read(root / "course" / "autograded" / "correct" / assignment / name, as_version=4)
        submitted = _by_id(_submission(assignment))
        for gid in written:
            assert _by_id(autograded)[gid].source == submitted[gid].source, f"{gid}: the written answer is lost"
        with Gradebook(f"sqlite:///{root / 'course' / 'gradebook.db'}") as gradebook:
            notebook = gradebook.find_submission_notebook(Path(name).stem, assignment, "correct")
            assert notebook.needs_manual_grade, "the written answers must wait for the formgrader"
            for gid in written:
                grade = gradebook.find_grade(gid, Path(name).stem, assignment, "correct")
                assert grade.needs_manual_grade and grade.max_score == written[gid], (gid, grade.max_score)

    # the release regenerated by nbgrader in the temporary root equals the committed one
    regenerated = nbformat.read(root / "assignments" / assignment / name, as_version=4)
    committed = _read("assignments", assignment)
    assert [(c.cell_type, c.source, _meta(c)) for c in regenerated.cells] == [
        (c.cell_type, c.source, _meta(c)) for c in committed.cells
    ], f"{assignment}: assignments/ is not what `make release A={assignment}` generates"
