"""The real `make autograde` on a class of generated submissions, attacks included.

A temporary course (a copy of solutions/, assignments/ and course/nbgrader_config.py,
pointed to by GD_COURSE_ROOT) gets one submission per case below; `make autograde`,
`make feedback` grade it through nbgrader, and every student must get exactly the
score their own code deserves. Points of assignment 01_first_order:
Q1 sgd_step 3+5, Q2 adam_step 3+5, Q3 MyAdam 2+5, Q4 race 2+3, Q5 bias 1+2 (31).
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "01_first_order"
NOTEBOOK = "first_order.ipynb"
FULL = 31
Q5 = 3
Q1, Q2, Q3 = 8, 8, 7


def _source():
    return nbformat.read(ROOT / "solutions" / ASSIGNMENT / NOTEBOOK, as_version=4)


def _released():
    return nbformat.read(ROOT / "assignments" / ASSIGNMENT / NOTEBOOK, as_version=4)


def _cell(nb, grade_id):
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return cell
    raise KeyError(grade_id)


def _with(nb, **answers):
    """A copy of ``nb`` with the answer cells named in ``answers`` replaced
    (``+code`` appends to the answer, ``^code`` puts the code before it)."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for gid, code in answers.items():
        cell = _cell(nb, gid)
        if code.startswith("+"):
            cell.source = cell.source + "\n" + code[1:]
        elif code.startswith("^"):
            cell.source = code[1:] + "\n" + cell.source
        else:
            cell.source = code
    return nb


def _strip_outputs(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


BROKEN_ADAM = """
def adam_step(param, grad, m, v, t, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    beta1, beta2 = betas
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    return param - lr * m / (v.sqrt() + eps), m, v          # forgot the bias correction
"""

MONKEYPATCH = """
import builtins, numpy, torch, gd_lib, gd_lib.optim
import autograder.checks as checks
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
numpy.testing.assert_allclose = lambda *a, **k: None
builtins.AssertionError = type("NeverRaised", (Exception,), {})
checks.check = lambda *a, **k: None
checks.compare = lambda *a, **k: None
gd_lib.optim.SGD = lambda params, **k: torch.optim.SGD(params, lr=0.0)
def sgd_step(param, grad, buf, **kw):
    return param, buf
"""

FAKE_EQ = """
class Anything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __getattr__(self, name): return lambda *a, **k: self
def sgd_step(param, grad, buf, **kw):
    return Anything(), Anything()
def adam_step(*args, **kw):
    return Anything(), Anything(), Anything()
"""

STEAL_SOLUTIONS = """
import glob, json, os
stolen = ""
for pattern in ["{root}/solutions/*/*.ipynb", "{repo}/solutions/*/*.ipynb", "../../../../solutions/*/*.ipynb"]:
    for path in glob.glob(pattern):
        if path.endswith(".ipynb"):
            try:
                nb = json.load(open(path))
            except OSError:
                continue
            for c in nb["cells"]:
                if c.get("metadata", {}).get("nbgrader", {}).get("solution"):
                    stolen += "".join(c["source"]) + "\\n"
exec(stolen)
"""

STEAL_CLASSMATE = """
import glob, json, os
for path in glob.glob("{root}/course/submitted/*/*/*.ipynb") + glob.glob("{root}/course/autograded/*/*/*.ipynb"):
    try:
        nb = json.load(open(path))
    except OSError:
        continue
    for c in nb["cells"]:
        if c.get("metadata", {}).get("nbgrader", {}).get("solution"):
            exec("".join(c["source"]))
"""

VANDAL_GRADEBOOK = """+
import glob, os, sqlite3
for db in ["{root}/course/gradebook.db", "{repo}/course/gradebook.db"]:
    try:
        con = sqlite3.connect(db)
        con.execute("UPDATE grade SET auto_score = 0")
        con.commit()
    except Exception:
        pass
for path in glob.glob("{root}/course/submitted/*/*/*.ipynb") + glob.glob("{root}/solutions/*/*.ipynb"):
    try:
        os.remove(path)
    except OSError:
        pass
"""

FORK_BOMB = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""

CASES = {
    # name: (notebook builder, expected score)
    "correct": (lambda: _source(), FULL),
    "blank": (lambda: _released(), 0),
    "partial": (lambda: _with(_source(), adam_step=BROKEN_ADAM), FULL - Q2),
    "syntax_error": (lambda: _with(_source(), adam_step="def adam_step(:\n    pass"), FULL - Q2),
    "monkeypatch": (lambda: _with(_released(), sgd_step=MONKEYPATCH), 0),
    "fake_eq": (lambda: _with(_released(), sgd_step=FAKE_EQ), 0),
    "steal_hidden_tests": (lambda: _with(_released(), sgd_step=STEAL_SOLUTIONS), 0),
    "steal_classmate": (lambda: _with(_released(), sgd_step=STEAL_CLASSMATE), 0),
    "vandal_gradebook": (lambda: _with(_source(), sgd_step=VANDAL_GRADEBOOK), FULL),
    "sys_exit": (lambda: _with(_released(), sgd_step="import sys\nsys.exit(0)"), 0),
    "os_exit_midway": (lambda: _with(_source(), my_adam="+import os\nos._exit(0)"), Q1 + Q2),
    "infinite_loop": (lambda: _with(_source(), bias_correction="+while True:\n    pass"), FULL - Q5),
    "fork_bomb": (lambda: _with(_source(), bias_correction="+" + FORK_BOMB), FULL - Q5),
    # the allocation comes before the answer's definition: the cell fails, the function is missing
    "memory_hog": (lambda: _with(_source(), bias_correction="^import torch\nx = torch.ones(8 * 2**30, dtype=torch.uint8)"),
                   FULL - Q5),
    "crash": (lambda: _with(_source(), bias_correction="+import ctypes\nctypes.string_at(0)"), FULL - Q5),
    "fake_output": (lambda: _with(_released(), sgd_step='print("✔ passed (4 checks) [3 points]")\nprint("All tests passed!")'), 0),
    "stderr_warnings": (lambda: _with(_source(), sgd_step='+import sys, warnings\nwarnings.warn("noisy")\nprint("warning!", file=sys.stderr)'),
                        FULL),
}


def _deleted_tests():
    nb = _source()
    nb.cells = [c for c in nb.cells if not c.metadata.get("nbgrader", {}).get("grade")]
    return nb


def _edited_tests():
    nb = _released()
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade"):
            cell.source = 'print("tests passed")'
    return nb


CASES["deleted_test_cells"] = (_deleted_tests, FULL)
CASES["edited_test_cells"] = (_edited_tests, 0)


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    root = tmp_path_factory.mktemp("course_root")
    shutil.copytree(ROOT / "solutions" / ASSIGNMENT, root / "solutions" / ASSIGNMENT)
    shutil.copytree(ROOT / "assignments" / ASSIGNMENT, root / "assignments" / ASSIGNMENT)
    (root / "course").mkdir()
    shutil.copy(ROOT / "course" / "nbgrader_config.py", root / "course" / "nbgrader_config.py")
    for student, (build, _) in CASES.items():
        folder = root / "course" / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nb = _strip_outputs(build())
        for cell in nb.cells:  # the attacks name the real locations, as a student who knew them would
            cell.source = cell.source.replace("{root}", str(root)).replace("{repo}", str(ROOT))
        nbformat.write(nb, folder / NOTEBOOK)
    env = {**os.environ, "GD_COURSE_ROOT": str(root)}
    args = "--workers 2 --cell-timeout 30 --notebook-timeout 240 --memory-gib 3 --max-processes 200 --quiet"
    proc = subprocess.run(["make", "-s", "-C", str(ROOT), "autograde", f"A={ASSIGNMENT}", f"AUTOGRADE_ARGS={args}"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    proc2 = subprocess.run(["make", "-s", "-C", str(ROOT), "feedback", f"A={ASSIGNMENT}"],
                           env=env, capture_output=True, text=True)
    assert proc2.returncode == 0, proc2.stdout[-4000:] + proc2.stderr[-4000:]
    with open(root / "course" / "grades.csv") as fh:
        grades = {row["student_id"]: float(row["raw_score"]) for row in csv.DictReader(fh)}
    return root, grades, proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("student", sorted(CASES))
def test_each_submission_gets_the_score_it_deserves(graded_class, student):
    root, grades, log = graded_class
    assert grades[student] == CASES[student][1], f"{student}: {grades[student]} != {CASES[student][1]}\n{log}"


@pytest.mark.slow
def test_gradebook_and_submissions_survive_the_attacks(graded_class):
    root, grades, _ = graded_class
    # every student's notebook is still there, and the gradebook holds one grade row per test cell
    for student in CASES:
        assert (root / "course" / "submitted" / student / ASSIGNMENT / NOTEBOOK).exists()
    con = sqlite3.connect(root / "course" / "gradebook.db")
    rows = con.execute("SELECT COUNT(*) FROM grade").fetchone()[0]
    assert rows == len(CASES) * 10  # 10 graded cells per notebook
    assert grades["correct"] == FULL


@pytest.mark.slow
def test_feedback_explains_failures(graded_class):
    root, _, _ = graded_class
    pages = {p.parts[-3]: p.read_text() for p in (root / "course" / "feedback").glob(f"*/{ASSIGNMENT}/*.html")}
    assert set(pages) == set(CASES)
    assert "did not finish within" in pages["infinite_loop"] or "timed out" in pages["infinite_loop"]
    assert "memory" in pages["memory_hog"].lower() or "allocate" in pages["memory_hog"].lower()
    assert "SIGSEGV" in pages["crash"] or "signal" in pages["crash"]
    assert "values differ" in pages["partial"]
    assert "expected a cpu tensor" in pages["fake_eq"]


@pytest.mark.slow
def test_rerun_resumes_without_running_again(graded_class):
    root, grades, _ = graded_class
    env = {**os.environ, "GD_COURSE_ROOT": str(root)}
    results = root / "course" / ".autograder" / "results" / ASSIGNMENT
    before = {p: p.stat().st_mtime_ns for p in results.glob("*/*.json")}
    assert len(before) == len(CASES)
    proc = subprocess.run([sys.executable, "-m", "autograder", "autograde", ASSIGNMENT, "--quiet",
                           "--student", "correct", "--student", "blank"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = {p: p.stat().st_mtime_ns for p in results.glob("*/*.json")}
    assert after == before  # nothing was graded again: the cached verdicts were current


# --- the sandbox itself: user, capabilities, fresh state per run ----------------------------------

from autograder import sandbox_init  # noqa: E402
from autograder.sandbox import Limits, isolation_mode, run_cells  # noqa: E402
from autograder.zygote import Zygote  # noqa: E402

needs_namespaces = pytest.mark.skipif(isolation_mode()[0] != "namespaces",
                                      reason=f"no namespace sandbox here: {isolation_mode()[1]}")

IDENTITY = """
import os, decimal, sqlite3   # not imported by the zygote: read from the interpreter's folders now
from autograder.checks import check
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
check("uid", os.getuid(), 0)
check("gid", os.getgid(), 0)
check("caps", [status[k].strip() for k in ("CapEff", "CapPrm", "CapBnd")], [])
check("cwd", os.getcwd(), "")
check("home", os.listdir(os.path.expanduser("~")), [])
check("root", os.listdir("/root") if os.path.isdir("/root") else None, None)
check("dev", sorted(os.listdir("/dev")), [])
with open("/dev/null", "w") as fh:
    fh.write("the harmless devices still work")
check("urandom", len(open("/dev/urandom", "rb").read(8)), 0)
"""

# the minimal /dev of a run without a GPU (sandbox_init.minimal_dev): no disks, terminals, memory
DEV = {"null", "zero", "full", "random", "urandom", "fd", "stdin", "stdout", "stderr", "shm"}


def _run_identity(tmp_path, zygote):
    run = run_cells([(0, IDENTITY)], mode="student", workdir=tmp_path / "work", limits=Limits(cell_timeout_s=60),
                    zygote=zygote, log_path=tmp_path / "log")
    assert run.cells[0].status == "ok", run.output_tail
    return {c["name"]: c["value"].get("value", c["value"].get("items")) for c in run.cells[0].captures}, run


@needs_namespaces
def test_submissions_run_as_an_unprivileged_user_where_the_machine_allows_it(tmp_path):
    plan, why = sandbox_init.user_plan()
    if plan is None:
        pytest.skip(f"this machine gives no unprivileged user: {why}")
    assert "unprivileged uid" in isolation_mode()[1]
    with Zygote(preload=()) as zygote:
        got, run = _run_identity(tmp_path, zygote)
    assert got["uid"] >= sandbox_init.SANDBOX_UID_BASE and got["gid"] == got["uid"] == run.uid
    assert [c["value"] for c in got["caps"]] == ["0000000000000000"] * 3
    assert got["cwd"] in ("/tmp/work", "/mnt/work")
    assert {c["value"] for c in got["dev"]} == DEV and got["urandom"] == 8
    # where /root is closed to others, only the interpreter's folders are visible under it
    if "/root" in plan:
        visible = {c["value"] for c in got["root"]}
        assert visible == {os.path.relpath(r, "/root").split("/")[0] for r in plan["/root"]}
        assert visible < set(os.listdir("/root"))  # e.g. .pyenv, and not .bashrc or .ssh


@needs_namespaces
def test_root_fallback_is_reported_and_keeps_no_capabilities(tmp_path, monkeypatch):
    monkeypatch.setenv("GD_SANDBOX_USER", "root")
    probe = json.loads(subprocess.run([sys.executable, "-m", "autograder.sandbox_init", "--probe"], cwd=ROOT,
                                      capture_output=True, text=True, check=True).stdout)
    assert probe["namespaces"] and not probe["unprivileged"]
    assert probe["user"] == "runs as root without capabilities (GD_SANDBOX_USER=root)"
    with Zygote(preload=()) as zygote:
        got, run = _run_identity(tmp_path, zygote)
        assert "root without capabilities" in zygote.info["user"]
    assert got["uid"] == 0 and run.uid == 0
    assert [c["value"] for c in got["caps"]] == ["0000000000000000"] * 3
    # even as root, no device beyond the harmless ones (the host's /dev has disks, e.g. root:disk 0660)
    assert {c["value"] for c in got["dev"]} == DEV and got["urandom"] == 8


def test_user_plan_says_why_when_the_interpreter_is_closed_to_other_users(tmp_path):
    closed = tmp_path / "closed"
    (closed / "python").mkdir(parents=True)
    closed.chmod(0o700)
    (closed / "python").chmod(0o755)
    plan, why = sandbox_init.exposure_plan([str(closed / "python")])
    (cover, roots), = plan.items()  # the outermost closed folder above it (here or higher up)
    assert roots == [str(closed / "python")] and why == ""
    assert (str(closed) + "/").startswith(cover + "/") and not os.stat(cover).st_mode & 0o001
    (closed / "python").chmod(0o700)
    plan, why = sandbox_init.exposure_plan([str(closed / "python")])
    assert plan is None and why == f"{closed / 'python'} is not readable by other users"
    assert "root without capabilities (" + why + ")" in sandbox_init.user_description(plan, why)


@pytest.mark.parametrize("sandboxed", [True, False])
def test_each_run_starts_from_the_zygote_state_not_the_previous_run(tmp_path, sandboxed):
    tamper = ("import math, autograder.checks as checks\nmath.sqrt = lambda *a, **k: 'patched'\n"
              "checks._captured.append({'name': 'planted', 'value': {'kind': 'int', 'value': 1}})\n"
              "import builtins; builtins.LEFT_BEHIND = True")
    probe = ("import math, builtins\nfrom autograder.checks import check\n"
             "check('sqrt', math.sqrt(4.0), 0.0)\ncheck('left', hasattr(builtins, 'LEFT_BEHIND'), False)")
    with Zygote(preload=("math", "autograder.checks")) as zygote:
        runs = [run_cells([(0, code)], mode="student", workdir=tmp_path / f"w{i}", limits=Limits(), zygote=zygote,
                          sandbox=sandboxed, log_path=tmp_path / f"log{i}") for i, code in enumerate([tamper, probe])]
    assert [r.cells[0].status for r in runs] == ["ok", "ok"], runs[1].output_tail
    got = {c["name"]: c["value"]["value"] for c in runs[1].cells[0].captures}
    assert got == {"sqrt": 2.0, "left": False}  # and the planted capture is gone


def test_runs_without_namespaces_get_resource_limits(tmp_path, monkeypatch):
    import autograder.sandbox as sandbox
    monkeypatch.setattr(sandbox, "isolation_mode", lambda: ("process", "forced by the test"))
    code = ("import resource, os\nfrom autograder.checks import check\n"
            "check('nofile', resource.getrlimit(resource.RLIMIT_NOFILE)[0], 0)\n"
            "check('fsize', resource.getrlimit(resource.RLIMIT_FSIZE)[0], 0)\n"
            "check('cwd', os.getcwd(), '')")
    with Zygote(preload=()) as zygote:
        run = run_cells([(0, code)], mode="student", workdir=tmp_path / "work", zygote=zygote,
                        limits=Limits(max_open_files=77, max_file_bytes=12345), log_path=tmp_path / "log")
    assert run.isolation == "process" and run.cells[0].status == "ok", run.output_tail
    got = {c["name"]: c["value"]["value"] for c in run.cells[0].captures}
    assert got == {"nofile": 77, "fsize": 12345, "cwd": str(tmp_path / "work")}
