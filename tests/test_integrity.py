"""`make integrity` on a class of hand-written submissions to 01_first_order.

tests/integrity_class.py holds the answers: alice, bob and carol solve every question
independently and correctly in their own styles (tests/test_integrity.py checks they are
correct); dave hands in alice's work renamed, re-wrapped and commented; quinn copies bob's
MyAdam only; erin's adam_step is gd_lib's adam_update renamed. frank and gina hand in the
released notebook untouched. Then the hostile submissions: a symbolic link to the solutions,
a hard link, a folder linked to a classmate's, text that is not JSON, bytes that are not
UTF-8, a notebook over 16 MiB, JSON nested 100000 deep, JSON that is not a notebook, a folder
and a FIFO in place of the notebook, and student folders named with HTML, a spreadsheet
formula or a terminal escape (the grader does not read those; the report names them, made
harmless). Every expectation below comes from how the submissions were written, not from a
run of the code under test.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
import torch

from integrity_class import ALICE, CLASS, DAVE, ERIN_ADAM, INDEPENDENT

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "01_first_order"
NOTEBOOK = "first_order.ipynb"
THRESHOLD = 0.5  # the default flag threshold (IntegrityConfig.threshold)
HTML_NAME = "zoe<script>alert(1)<\\script>"  # no "/": it is a folder name
TERMINAL_NAME = "tom\x1b]0;pwned\x07"  # a terminal escape sequence in a folder name
FORMULA_NAME = "=SUM(1+1)"
BLANK = ["frank", "gina"]

# student -> words of the reason the grader's intake gives for not reading the submission
UNREADABLE = {
    "mallory": "symbolic link",
    "harry": "hard link",
    "pat": "symbolic link",
    "ivan": "not valid JSON",
    "judy": "not UTF-8",
    "ken": "MiB",
    "leo": "nests deeper",
    "mia": "not a notebook",
    "nick": "not a regular file",
    "olga": "not a regular file",
    FORMULA_NAME: "folder name",
    TERMINAL_NAME: "folder name",
    HTML_NAME: "folder name",
}


def _notebook_with(answers: dict[str, str]):
    nb = nbformat.read(ROOT / "assignments" / ASSIGNMENT / NOTEBOOK, as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id].strip("\n")
    return nb


def _build_class(root: Path) -> None:
    shutil.copytree(ROOT / "solutions" / ASSIGNMENT, root / "solutions" / ASSIGNMENT)
    shutil.copytree(ROOT / "assignments" / ASSIGNMENT, root / "assignments" / ASSIGNMENT)
    (root / "course").mkdir()
    shutil.copy(ROOT / "course" / "nbgrader_config.py", root / "course" / "nbgrader_config.py")
    submitted = root / "course" / "submitted"

    def folder(student: str) -> Path:
        path = submitted / student / ASSIGNMENT
        path.mkdir(parents=True)
        return path

    for student, answers in CLASS.items():
        nbformat.write(_notebook_with(answers), folder(student) / NOTEBOOK)
    for student in [*BLANK, HTML_NAME]:
        nbformat.write(_notebook_with({}), folder(student) / NOTEBOOK)

    solution = root / "solutions" / ASSIGNMENT / NOTEBOOK
    (folder("mallory") / NOTEBOOK).symlink_to(solution)
    leaked = root / "leaked.ipynb"
    shutil.copy(solution, leaked)
    os.link(leaked, folder("harry") / NOTEBOOK)
    (submitted / "pat").mkdir()
    (submitted / "pat" / ASSIGNMENT).symlink_to(submitted / "alice" / ASSIGNMENT)
    (folder("ivan") / NOTEBOOK).write_text("def adam_step(param): return param  # pasted code, not a notebook")
    latin1 = nbformat.writes(_notebook_with({"adam_step": "# café\n" + ALICE["adam_step"]})).encode("utf-8")
    (folder("judy") / NOTEBOOK).write_bytes(latin1.replace("café".encode(), "café".encode("latin-1")))
    huge = _notebook_with(ALICE)
    huge.cells.append(
        nbformat.v4.new_code_cell(
            "print('x')", outputs=[nbformat.v4.new_output("stream", name="stdout", text="x" * (17 * 1024 * 1024))]
        )
    )  # over the intake's 16 MiB
    nbformat.write(huge, folder("ken") / NOTEBOOK)
    (folder("leo") / NOTEBOOK).write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    (folder("mia") / NOTEBOOK).write_text(
        json.dumps({"cells": "my answers", "nbformat": 4, "nbformat_minor": 5, "metadata": {}})
    )
    (folder("nick") / NOTEBOOK).mkdir()
    os.mkfifo(folder("olga") / NOTEBOOK)
    (folder(FORMULA_NAME) / NOTEBOOK).write_text("{ not json")
    (folder(TERMINAL_NAME) / NOTEBOOK).write_text("{ not json")

    (root / "course" / "gradebook.db").write_bytes(b"SQLite format 3\x00" + os.urandom(4096))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The class's integrity report made by `make integrity`, as an instructor runs it."""
    root = tmp_path_factory.mktemp("integrity_course")
    _build_class(root)
    before = _snapshot(root)
    env = {**os.environ, "GD_COURSE_ROOT": str(root)}
    proc = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "integrity", f"A={ASSIGNMENT}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = root / "course" / "reports" / ASSIGNMENT
    with open(out / "integrity.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return {
        "root": root,
        "stdout": proc.stdout,
        "rows": rows,
        "html": (out / "integrity.html").read_text(),
        "before": before,
    }


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every regular file and link under ``root``: content hash (or link target), size, mtime, mode."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            if os.path.islink(path):
                out[path] = ("link", os.readlink(path), info.st_mtime_ns)
            elif os.path.isfile(path):
                with open(path, "rb") as fh:
                    out[path] = (hashlib.sha256(fh.read()).hexdigest(), info.st_size, info.st_mtime_ns, info.st_mode)
    return out


def _pairs(rows, question="(all answers)"):
    return {
        frozenset((r["student"], r["other"])): float(r["similarity"])
        for r in rows
        if r["kind"] in ("pair", "pair-question") and r["question"] == question
    }


def test_hand_written_answers_are_correct_and_independent_ones_differ():
    """The premise: the 'independent correct solutions' are correct (against gd_lib's optimizers)
    and written differently (no two share their text)."""
    from gd_lib.optim import SGD, Adam, AdamW

    gen = torch.Generator().manual_seed(0)
    param = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    grads = [torch.randn(3, 4, generator=gen, dtype=torch.float64) for _ in range(4)]

    def library(cls, **kw):
        p = torch.nn.Parameter(param.clone())
        opt = cls([p], **kw)
        for g in grads:
            p.grad = g.clone()
            opt.step()
        return p.detach()

    for student, answers in {**INDEPENDENT, "dave": DAVE, "erin": {"adam_step": ERIN_ADAM}}.items():
        ns = {"torch": torch, "math": math, "DTYPE": torch.float64, "device": torch.device("cpu")}
        for source in answers.values():
            exec(source, ns)
        if "sgd_step" in ns:
            kw = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)
            x, buf = param.clone(), None
            for g in grads:
                x, buf = ns["sgd_step"](x, g, buf, **kw)
            # same operations up to reordering in float64: 1e-12
            torch.testing.assert_close(x, library(SGD, **kw), rtol=1e-12, atol=1e-12, msg=student)
        for cls, kw, decoupled in [
            (Adam, dict(lr=1e-2, weight_decay=0.1), False),
            (AdamW, dict(lr=1e-2, weight_decay=0.5), True),
        ]:
            x, m, v = param.clone(), torch.zeros_like(param), torch.zeros_like(param)
            for t, g in enumerate(grads, 1):
                x, m, v = ns["adam_step"](x, g, m, v, t, decoupled=decoupled, **kw)
            torch.testing.assert_close(x, library(cls, **kw), rtol=1e-10, atol=1e-12, msg=student)
        if "MyAdam" in ns:
            w = torch.nn.Parameter(param.clone())
            opt = ns["MyAdam"]([w], lr=5e-2, betas=(0.5, 0.9), weight_decay=0.01)
            for g in grads:
                w.grad = g.clone()
                opt.step()
            torch.testing.assert_close(
                w.detach(),
                library(Adam, lr=5e-2, betas=(0.5, 0.9), weight_decay=0.01),
                rtol=1e-10,
                atol=1e-12,
                msg=student,
            )
    released = {line.strip() for cell in _notebook_with({}).cells for line in cell.source.splitlines()}
    for question in ALICE:
        texts = [answers[question] for answers in INDEPENDENT.values()]
        lines = [{line.strip() for line in text.splitlines() if len(line.strip()) > 25} - released for text in texts]
        for i in range(len(lines)):
            for j in range(i + 1, len(lines)):
                shared = lines[i] & lines[j]
                assert len(shared) <= 1, (question, shared)  # beyond the given code, one line at most


@pytest.mark.slow
def test_renamed_reformatted_copy_is_the_top_pair(report):
    pairs = _pairs(report["rows"])
    ranked = sorted(pairs.items(), key=lambda kv: -kv[1])
    assert ranked[0][0] == frozenset({"alice", "dave"}), ranked[:3]
    assert ranked[0][1] >= 0.8
    for question in ALICE:
        # every answer of dave's is alice's renamed: each question well above the threshold
        assert _pairs(report["rows"], question)[frozenset({"alice", "dave"})] >= 0.7, question
    first_table_row = next(line for line in report["stdout"].splitlines() if line.startswith("1 "))
    assert "alice" in first_table_row and "dave" in first_table_row and "*" in first_table_row


@pytest.mark.slow
def test_a_copied_question_is_flagged_though_the_rest_differs(report):
    assert _pairs(report["rows"], "my_adam")[frozenset({"bob", "quinn"})] >= 0.9
    overall = _pairs(report["rows"])
    assert overall[frozenset({"bob", "quinn"})] > max(v for k, v in overall.items() if not k & {"dave", "quinn"})


@pytest.mark.slow
def test_independent_solutions_stay_below_the_threshold(report):
    independent = set(INDEPENDENT) | {"erin"}
    copies = [frozenset({"alice", "dave"}), frozenset({"bob", "quinn"})]
    overall = _pairs(report["rows"])
    for question in ["(all answers)", *ALICE]:
        for pair, similarity in _pairs(report["rows"], question).items():
            if pair <= independent:
                assert similarity < THRESHOLD, (question, sorted(pair), similarity)
    lowest_copy = min(overall[c] for c in copies)
    assert all(v < lowest_copy for k, v in overall.items() if k <= independent)


@pytest.mark.slow
def test_starter_code_alone_does_not_flag(report):
    for row in report["rows"]:
        if row["kind"] in ("pair", "pair-question", "library"):
            assert row["student"] not in BLANK and row["other"] not in BLANK, row


@pytest.mark.slow
def test_near_copy_of_the_library_adam_update_is_flagged_and_named(report):
    library = [r for r in report["rows"] if r["kind"] == "library"]
    flagged = [r for r in library if r["flagged"] == "1"]
    assert [(r["student"], r["question"], r["other"]) for r in flagged] == [
        ("erin", "adam_step", "gd_lib.optim.adam.adam_update")
    ]
    assert flagged[0]["note"].startswith("gd_lib/optim/adam.py:")
    # the lines named for the library are those of adam_update in gd_lib/optim/adam.py
    source = (ROOT / "gd_lib" / "optim" / "adam.py").read_text().splitlines()
    lines = [int(n) for span in flagged[0]["lines_other"].split() for n in span.split("-")]
    assert any("lerp_" in source[n - 1] for n in range(min(lines), max(lines) + 1))
    assert "erin" in report["html"] and "gd_lib.optim.adam.adam_update" in report["html"]


@pytest.mark.slow
def test_unreadable_submissions_cost_only_their_student(report):
    unreadable = {r["student"].lstrip("'"): r["note"] for r in report["rows"] if r["kind"] == "unreadable"}
    assert set(unreadable) == {name.lstrip("'") for name in UNREADABLE}, unreadable
    for student, words in UNREADABLE.items():
        assert words in unreadable[student.lstrip("'")], (student, unreadable[student.lstrip("'")])
    # nothing of the linked notebooks was read: neither the solutions nor alice's work pairs with anyone
    for row in report["rows"]:
        if row["kind"] != "unreadable":
            assert not {row["student"], row["other"]} & {"mallory", "harry", "pat"}
    # everyone else is in the report as read
    roster = report["html"].split("<h2>Every student</h2>")[1].split("<h2>")[0]
    for student in [*CLASS, "frank", "gina"]:
        assert re.search(rf"<td>{student}</td><td><span class=\"ok\">read</span>", roster), student


@pytest.mark.slow
def test_gradebook_and_every_other_file_are_unchanged(report):
    gradebook = str(report["root"] / "course" / "gradebook.db")
    after = _snapshot(report["root"])
    assert after[gradebook] == report["before"][gradebook]
    written = {path for path in after if path.startswith(str(report["root"] / "course" / "reports"))}
    assert {Path(p).name for p in written} == {"integrity.html", "integrity.csv"}
    assert {p: v for p, v in after.items() if p not in written} == report["before"]


class _Page(HTMLParser):
    """Tags and, per side-by-side table, the highlighted lines of each column."""

    def __init__(self):
        super().__init__()
        self.tags, self.external = [], []
        self.columns: list[list[str]] = []  # per <td> of a table.sbs: its highlighted lines
        self._row_highlighted = False
        self._in_code_cell = False
        self._text = ""
        self._sbs_depth = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        for name in ("src", "href"):
            if name in attrs and not (attrs[name] or "").startswith("#"):
                self.external.append(attrs[name])
        if tag == "table" and attrs.get("class") == "sbs":
            self._sbs_depth += 1
        if tag == "table" and attrs.get("class") == "code":
            self.columns.append([])
        if tag == "tr" and self.columns:
            self._row_highlighted = "background" in (attrs.get("style") or "")
        if tag == "td" and self._row_highlighted and attrs.get("class") != "ln":
            self._in_code_cell, self._text = True, ""

    def handle_endtag(self, tag):
        if tag == "td" and self._in_code_cell:
            self.columns[-1].append(self._text)
            self._in_code_cell = False

    def handle_data(self, data):
        if self._in_code_cell:
            self._text += data


@pytest.mark.slow
def test_html_is_self_contained_escaped_and_shows_the_lines_side_by_side(report):
    page = _Page()
    page.feed(report["html"])
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags
    assert page.external == []
    assert "zoe&lt;script&gt;alert(1)&lt;\\script&gt;" in report["html"]
    # the first detail is alice <-> dave; its first question's columns highlight the matching lines:
    # alice's sgd_step lines on the left, dave's renamed ones on the right
    left, right = page.columns[0], page.columns[1]
    assert "    if momentum == 0:" in left
    assert "    if momentum == 0:   # plain SGD" in right
    assert any("new_buf = g.clone() if buf is None" in line for line in left)
    assert any("buffer = gradient.clone() if buf is None" in line for line in right)


@pytest.mark.slow
def test_student_names_cannot_act_in_a_spreadsheet_or_a_terminal(report):
    names = [r["student"] for r in report["rows"] if r["kind"] == "unreadable"]
    assert "'" + FORMULA_NAME in names and FORMULA_NAME not in names
    assert "\x1b" not in report["stdout"] and "\x07" not in report["stdout"]
    assert "unreadable: tom?]0;pwned?:" in report["stdout"]


@pytest.mark.slow
def test_command_line_options(tmp_path):
    """--out and --threshold: a lower threshold flags the nearest independent pair too."""
    root = tmp_path / "root"
    root.mkdir()
    _build_class(root)
    env = {**os.environ, "GD_COURSE_ROOT": str(root)}
    out = tmp_path / "elsewhere"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "autograder",
            "integrity",
            ASSIGNMENT,
            "--out",
            str(out),
            "--threshold",
            "0.15",
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "integrity.html").exists() and not (root / "course" / "reports").exists()
    with open(out / "integrity.csv", newline="") as fh:
        flagged = {
            frozenset((r["student"], r["other"]))
            for r in csv.DictReader(fh)
            if r["kind"] == "pair" and r["flagged"] == "1"
        }
    assert {frozenset({"alice", "dave"}), frozenset({"bob", "quinn"})} < flagged
    bad = subprocess.run(
        [sys.executable, "-m", "autograder", "integrity", ASSIGNMENT, "--threshold", "7"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2 and "threshold" in bad.stderr


@pytest.mark.slow
def test_a_library_copy_that_spread_through_the_class_is_still_flagged(tmp_path):
    """Twelve students hand in gd_lib's adam_update, each renamed their own way: more than the
    common-passage cap (10), so between students their passages no longer count (MOSS's rule),
    but each is still a near-copy of the library; the three independent students are not."""
    from autograder.course import Course
    from autograder.integrity import IntegrityConfig, analyse

    names = ["b1", "b2", "g", "bias_correction1", "bias_correction2_sqrt", "step_size", "second_moment", "denom"]
    copiers = []
    for i in range(12):
        source = ERIN_ADAM
        for name in names:
            source = re.sub(rf"\b{name}\b", f"{name[:3]}_{i}_{len(name)}", source)
        copiers.append(f"copier{i:02d}")
        folder = tmp_path / "course" / "submitted" / copiers[-1] / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(_notebook_with({"adam_step": source}), folder / NOTEBOOK)
    for student, answers in INDEPENDENT.items():
        folder = tmp_path / "course" / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(_notebook_with(answers), folder / NOTEBOOK)
    shutil.copytree(ROOT / "solutions" / ASSIGNMENT, tmp_path / "solutions" / ASSIGNMENT)
    shutil.copytree(ROOT / "assignments" / ASSIGNMENT, tmp_path / "assignments" / ASSIGNMENT)

    report = analyse(Course(tmp_path), ASSIGNMENT, IntegrityConfig())
    assert report.common_cap == 10
    flagged = {(m.student, m.question, m.segment.name) for m in report.flagged_library()}
    assert flagged == {(c, "adam_step", "gd_lib.optim.adam.adam_update") for c in copiers}
    # the ring itself is above the cap: its passages count as common between students (documented)
    assert not any(p.similarity >= THRESHOLD for p in report.pairs)
