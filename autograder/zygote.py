"""A fork server for grading: the libraries are imported once, each notebook runs in a fork.

Starting a Python process and importing torch, ``gd_lib`` and IPython takes
seconds of CPU, and torch's first optimizer step imports ``torch._dynamo``
and sympy (seconds more): far more than the cells of a typical submission.
The grader therefore starts *zygote* processes (trusted code only) that import
those modules and take a first optimizer step once, then wait for requests:
one for the instructor's reference runs (the whole library) and one for the
students' runs, which never loads the library code the assignment asks the
students to write (:mod:`autograder.forbidden`) and has its grading mode fixed
before :mod:`autograder.checks` is imported. For every notebook run it forks:

``supervisor`` (one per run, in a session of its own, outside the sandbox's PID namespace)
    joins the run's cgroups (where the grader may make them), starts
    bubblewrap (:mod:`autograder.bwrap`), which builds the sandbox and runs a
    *holder* process in it, waits until the sandbox is ready, enters its
    namespaces (:func:`autograder.confine.join`), forks the runner, tells the grader
    the process ids, waits for the runner and reports its exit status, then waits
    until the grader has cleaned up before it exits. Its exit ends bubblewrap
    (``--die-with-parent``), hence the sandbox and every process in it.
``runner`` (born inside the sandbox's PID namespace)
    sets its resource limits, drops to an unprivileged uid of its own where the
    grader is root, drops every capability and loads a seccomp filter
    (:func:`autograder.confine.drop_privileges`), copies the assignment's data files
    into its working directory, takes the run's environment, and serves the cells
    (:func:`autograder.cell_runner.serve`). It never returns into the zygote's
    code: it ends with ``os._exit``.

Without bubblewrap (only when the instructor asks for the reduced mode) the runner
is a plain child with resource limits.

Fork safety: the zygote runs single-threaded (``OMP_NUM_THREADS=1``, no
thread pool started, checked before it serves) and never initializes CUDA
(``PYTORCH_NVML_BASED_CUDA_CHECK=1``, checked too), so a forked runner can
use the GPU named by its own ``CUDA_VISIBLE_DEVICES``; joining namespaces needs a
single-threaded process too. A zygote that cannot guarantee this says so and
the grader uses one that preloads nothing.

Each runner gets a copy of the zygote's memory, which holds only the
imported libraries: the zygote never reads solutions, the gradebook or any
submission, and every file descriptor but the run's own is closed in the
supervisor. What one submission changes (monkeypatched modules, for
instance) lives in its own copy and disappears with it.

Protocol: the grader sends each request on a ``SOCK_SEQPACKET`` socket as
one JSON message (the run's configuration) with four descriptors attached
(SCM_RIGHTS): the run's own socket, the command pipe's read end, the result
pipe's write end and the output pipe's write end. The supervisor answers on
the run's socket: ``{"pid", "runner", "sandbox"}``, then ``{"status"}`` (or ``{"error"}``).
"""

from __future__ import annotations

import importlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from . import bwrap, confine

PR_SET_CHILD_SUBREAPER = 36

# What every assignment imports: torch, numpy, the library, IPython (the cell runner), the checks.
PRELOAD = (
    "numpy",
    "torch",
    "gd_lib",
    "gd_lib.optim",
    "IPython.core.interactiveshell",
    "autograder.checks",
    "autograder.cell_runner",
)

# What every run needs whatever it preloads (the cell runner): imported by every zygote.
RUNNER_MODULES = ("autograder.checks", "autograder.cell_runner", "IPython.core.interactiveshell")

# Submissions of a grader running as root run as uid = gid = SANDBOX_UID_BASE + k, k unique among the
# runs at the same time on this machine: ids no account uses, so a submission owns nothing outside
# its sandbox, and per-user limits (RLIMIT_NPROC) count its own processes only.
SANDBOX_UID_BASE = int(os.environ.get("GD_SANDBOX_UID_BASE", "1900000000"))
SANDBOX_UID_SLOTS = 100_000

# The zygote starts in the folder holding this package, so that it imports the same autograder
# and gd_lib as the grader (not whatever an editable install of the environment points to).
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def notebook_imports(notebooks) -> list[str]:
    """The modules the instructor's notebooks import at top level (trusted code: the zygote
    imports them once, so that no run pays for them)."""
    import ast

    modules = []
    for path in notebooks:
        with open(path, encoding="utf-8") as fh:
            cells = json.load(fh).get("cells", [])
        for cell in cells:
            if cell.get("cell_type") != "code":
                continue
            source = cell.get("source", "")
            try:
                tree = ast.parse(source if isinstance(source, str) else "".join(source))
            except SyntaxError:  # e.g. IPython magics
                continue
            for node in tree.body:
                if isinstance(node, ast.Import):
                    modules.extend(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    modules.append(node.module)
    return list(dict.fromkeys(modules))


def preload_for(notebooks) -> list[str]:
    """What a zygote grading these source notebooks imports: :data:`PRELOAD` and theirs."""
    return list(dict.fromkeys([*PRELOAD, *notebook_imports(notebooks)]))


class ZygoteError(RuntimeError):
    """The fork server could not start or stopped answering."""


# --- the zygote process -------------------------------------------------------------------------


def _warm_up() -> None:
    """Do once what torch does lazily on the first optimizer step (imports torch._dynamo and
    sympy, seconds of CPU); with an optimizer of its own (the library's may be forbidden), on tiny
    CPU tensors, so no thread pool starts."""
    import torch

    class _WarmUp(torch.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {})

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    p.add_(p.grad)

    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    p.grad = torch.ones_like(p)
    _WarmUp([p]).step()


def _thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def _fork_hazards() -> list[str]:
    hazards = []
    if _thread_count() > 1:
        hazards.append(f"{_thread_count()} threads are running (a fork keeps only one)")
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        hazards.append("CUDA is initialized (a forked process could not use the GPU)")
    return hazards


def _uid_lock_dir() -> str:
    for folder in ("/run/gd_autograder/uids", os.path.join(tempfile.gettempdir(), "gd_autograder_uids")):
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            if os.stat(folder).st_uid == os.geteuid():
                return folder
        except OSError:
            continue
    raise OSError("no folder for the uid locks")


def _claim_uid_slot(taken: set[int]) -> tuple[int, int] | None:
    """A uid slot no other run on this machine holds (whichever grader started it): the
    slot and the descriptor holding its lock (``flock``, released if this process dies)."""
    import fcntl

    folder = _uid_lock_dir()
    for slot in range(SANDBOX_UID_SLOTS):
        if slot in taken:
            continue
        fd = os.open(os.path.join(folder, str(slot)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return slot, fd
        except BlockingIOError:
            os.close(fd)
    return None


def gpu_groups() -> list[int]:
    """The groups that open the NVIDIA devices where these are closed to other users (e.g.
    ``video`` with mode 0660): an unprivileged run needs them to use its GPU."""
    import stat

    groups = set()
    for name in os.listdir("/dev") if os.path.isdir("/dev") else []:
        if name.startswith("nvidia"):
            st = os.stat(os.path.join("/dev", name))
            if stat.S_ISCHR(st.st_mode) and (st.st_mode & 0o006) != 0o006 and st.st_mode & 0o060 == 0o060:
                groups.add(st.st_gid)
    return sorted(groups - {0})


DATA_DIR_IN_SANDBOX = "/run/grader/data"


def _copy_data(work: str) -> None:
    """The assignment's data files (bound read-only into the sandbox) into the working directory."""
    if not os.path.isdir(DATA_DIR_IN_SANDBOX):
        return
    for entry in os.listdir(DATA_DIR_IN_SANDBOX):
        if entry.endswith(".ipynb") or entry in (".ipynb_checkpoints", "__pycache__"):
            continue
        src, dst = os.path.join(DATA_DIR_IN_SANDBOX, entry), os.path.join(work, entry)
        if os.path.isdir(src) and not os.path.islink(src):
            shutil.copytree(src, dst, symlinks=True)
        elif os.path.isfile(src) and not os.path.islink(src):
            shutil.copyfile(src, dst)


def _run(job: dict, cmd_r: int, res_w: int, out_w: int, uid: int | None) -> None:
    """The runner: leave the zygote's state behind, confine itself, then serve the cells. Never returns."""
    code = 70
    try:
        confine.prctl(confine.PR_SET_PDEATHSIG, signal.SIGKILL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        os.close(devnull)
        os.close(out_w)
        limits = job["limits"]
        if job["mode"] == "bwrap":
            confine.set_limits(limits)
            confine.drop_privileges(uid, job.get("gpu_groups", []) if uid is not None else ())
            confine.prctl(confine.PR_SET_PDEATHSIG, signal.SIGKILL)  # a change of user clears it
            work = "/tmp/work"
            os.mkdir(work, 0o700)
            _copy_data(work)
        else:
            work = job["workdir"]
            if job["mode"] == "process":
                _process_limits(limits)
        os.chdir(work)
        os.environ.clear()
        os.environ.update({k: v.replace("/tmp/work", work) for k, v in job["env"].items()})
        import tempfile as tempfile_module

        tempfile_module.tempdir = None  # the zygote's choice, cached: chosen again from TMPDIR
        sys.path[0] = work  # as in a kernel started in the notebook's folder
        sys.argv = [""]
        from autograder import cell_runner

        code = cell_runner.serve(cmd_r, res_w, max_reply_bytes=job.get("max_reply_bytes"))
    except BaseException:  # noqa: B902 - whatever happens, this process must not go back to the zygote's loop
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _process_limits(limits: dict) -> None:
    """Resource limits for a run without a sandbox (the reduced mode: a separate process is all there is)."""
    lim = dict(limits)
    try:  # without a PID namespace, count this user's processes: the ones running now plus the budget
        lim["nproc"] = sum(1 for d in os.listdir("/proc") if d.isdigit()) + int(limits["max_processes"])
    except (KeyError, ValueError, OSError):
        lim.pop("nproc", None)
    confine.set_limits(lim)


def _read_all(fd: int, deadline: float, limit: int = 1 << 16) -> bytes:
    data = b""
    while len(data) < limit:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise TimeoutError("bubblewrap did not answer in time")
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


# The sandbox's first process (PID 1 of its namespace: bubblewrap's --as-pid-1, so that nothing in the
# sandbox can kill it): says it is ready, reaps the orphans of the run, and keeps the namespaces alive
# until the supervisor (the writer of its stdin) is gone.
HOLDER = """
import os, select, sys
os.write(int(sys.argv[1]), b"r")
os.close(int(sys.argv[1]))
while True:
    if select.select([0], [], [], 1.0)[0] and not os.read(0, 1):
        break
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
"""


def _start_sandbox(job: dict, view: bwrap.View, unprivileged: bool) -> int:
    """Start bubblewrap with the holder; the outer pid of the sandbox's first process, once ready."""
    ready_r, ready_w = os.pipe()
    info_r, info_w = os.pipe()
    hold_r, hold_w = os.pipe()  # the holder's stdin: this process keeps the write end until it exits
    args = bwrap.command(
        view,
        work_bytes=job["work_bytes"],
        data_dir=job.get("data_dir"),
        gpu=job.get("gpu", False),
        unprivileged=unprivileged,
        info_fd=info_w,
        holder=[os.path.realpath(sys.executable), "-I", "-S", "-c", HOLDER, str(ready_w)],
    )
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        args, stdin=hold_r, stdout=subprocess.DEVNULL, stderr=err, pass_fds=(ready_w, info_w), close_fds=True
    )
    for fd in (ready_w, info_w, hold_r):
        os.close(fd)
    deadline = time.monotonic() + 60
    try:
        info = _read_all(info_r, deadline)
        ready = _read_all(ready_r, deadline, limit=1)
    except TimeoutError as error:
        proc.kill()
        raise OSError(str(error)) from error
    finally:
        os.close(info_r)
        os.close(ready_r)
    if ready != b"r" or not info:
        proc.wait()
        err.seek(0)
        raise OSError(f"bubblewrap could not build the sandbox: {err.read().decode(errors='replace')[-1500:]}")
    return int(json.loads(info)["child-pid"])


def _join_cgroups(paths: list[str]) -> None:
    for path in paths:
        with open(os.path.join(path, "cgroup.procs"), "w") as fh:
            fh.write(str(os.getpid()))


def _supervise(job: dict, fds: list[int], view, uid, zygote_pid: int) -> None:
    """The supervisor: the sandbox, the runner, its exit status. Never returns."""
    try:
        sock_fd, cmd_r, res_w, out_w = fds
        os.setsid()
        confine.prctl(confine.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != zygote_pid:
            os._exit(1)
        for name in os.listdir("/proc/self/fd"):  # the zygote's descriptors go, the run's own four stay
            if int(name) > 2 and int(name) not in fds:
                try:
                    os.close(int(name))
                except OSError:
                    pass  # the listing's own descriptor, already closed
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        sock = socket.socket(fileno=sock_fd)
        sandbox_pid = None
        if job["mode"] == "bwrap":
            try:
                _join_cgroups(job.get("cgroups", []))
                sandbox_pid = _start_sandbox(job, view, unprivileged=os.geteuid() != 0)
                confine.join(confine.open_namespaces(sandbox_pid))
            except OSError as err:
                sock.send(json.dumps({"error": f"could not build the sandbox: {err}"}).encode())
                os._exit(1)
        runner = os.fork()
        if runner == 0:
            sock.close()
            _run(job, cmd_r, res_w, out_w, uid)
        for fd in (cmd_r, res_w, out_w):
            os.close(fd)
        sock.send(json.dumps({"pid": os.getpid(), "runner": runner, "sandbox": sandbox_pid}).encode())
        _, status = os.waitpid(runner, 0)
        sock.send(json.dumps({"status": status}).encode())
        sock.recv(16)  # until the grader is done with this run's process ids
    except BaseException:  # noqa: B902
        pass
    os._exit(0)


def _refuse(fds: list[int], why: str) -> None:
    """Answer a request with an error instead of a run."""
    try:
        os.write(fds[0], json.dumps({"error": why}).encode())
    except OSError:
        pass
    for fd in fds:
        os.close(fd)


def serve(control: socket.socket, preload: list[str], settings: dict) -> None:
    """The zygote's main loop (see the module docstring). ``settings``: ``forbidden`` (modules the
    runs must not have, :mod:`autograder.forbidden`), ``stub_dir`` (where their stubs are written for
    the sandbox), ``visible`` (extra top-level modules the sandbox shows)."""
    from . import forbidden as forbidden_module

    zygote_pid = os.getpid()
    confine.prctl(confine.PR_SET_PDEATHSIG, signal.SIGKILL)  # the grader's death ends it
    # a runner whose supervisor was killed first is reparented here and reaped below
    confine.prctl(PR_SET_CHILD_SUBREAPER, 1)
    failed = []
    stubs = [forbidden_module.Forbidden(**f) for f in settings.get("forbidden", [])]
    forbidden_module.install(stubs)  # before any import: the originals are never loaded here
    for name in dict.fromkeys([*preload, *RUNNER_MODULES]):
        try:
            importlib.import_module(name)
        except Exception as err:  # the notebook will hit the same error in its own cell
            failed.append(f"{name}: {type(err).__name__}: {err}")
    if "torch" in sys.modules:
        try:
            _warm_up()
        except Exception as err:
            failed.append(f"warm-up: {type(err).__name__}: {err}")
    view = None
    if settings.get("sandbox"):
        overlays, caches, empty = forbidden_module.write_stubs(stubs, settings["stub_dir"]) if stubs else ({}, [], "")
        view = bwrap.View.of_this_process(
            overlays=overlays, empty_dirs=caches, empty_dir_source=empty, extra_modules=settings.get("visible", ())
        )
    hazards = _fork_hazards()
    unprivileged_uids = os.geteuid() == 0
    sys.stdout.flush()
    sys.stderr.flush()
    control.send(
        json.dumps(
            {
                "ready": not hazards,
                "hazards": hazards,
                "failed": failed,
                "preloaded": sorted(m for m in preload if m in sys.modules),
                "forbidden": [f.module for f in stubs],
                "visible_packages": sorted({e for es in (view.site_dirs.values() if view else []) for e in es}),
                "user": (
                    "an unprivileged uid of its own per run"
                    if unprivileged_uids
                    else "the grader's own user, in a user namespace without capabilities"
                ),
            }
        ).encode()
    )
    if hazards:
        return
    claims: dict[int, tuple[int, int]] = {}  # supervisor pid -> (uid slot, its lock)
    while True:
        while True:  # reap the supervisors that finished (their uids are free again) and orphans
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in claims:
                os.close(claims.pop(pid)[1])
        if not select.select([control], [], [], 1.0)[0]:
            continue
        try:
            msg, fds, _, _ = socket.recv_fds(control, 1 << 20, 8)
        except OSError:
            return
        if not msg:
            return  # the grader is gone; the runs end through their parent-death signals
        job = json.loads(msg)
        hazards = _fork_hazards()
        if hazards:
            _refuse(fds, "the zygote cannot fork safely any more: " + "; ".join(hazards))
            continue
        if job["mode"] == "bwrap" and view is None:
            _refuse(fds, "this zygote was started without a sandbox view")
            continue
        claim = uid = None
        if job["mode"] == "bwrap" and unprivileged_uids:
            try:
                claim = _claim_uid_slot({slot for slot, _ in claims.values()})
            except OSError as err:
                _refuse(fds, f"no uid for the run: {err}")
                continue
            if claim is None:
                _refuse(fds, "every sandbox uid is in use")
                continue
            uid = SANDBOX_UID_BASE + claim[0]
            if job.get("gpu"):
                job["gpu_groups"] = gpu_groups()
        pid = os.fork()
        if pid == 0:
            control.close()
            _supervise(job, fds, view, uid, zygote_pid)
        if claim is not None:
            claims[pid] = claim
        for fd in fds:
            os.close(fd)


# --- the grader's side ----------------------------------------------------------------------------


def zygote_env(mode: str = "student") -> dict[str, str]:
    """The zygote's environment: what matters at import time (threads, CUDA checks, the grading
    mode, read once when :mod:`autograder.checks` is imported) set as the runs will have it. Each
    run replaces the whole environment with its own."""
    env = {
        "GD_GRADER_MODE": mode,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "GD_QUICK": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TQDM_DISABLE": "1",
        "PYTORCH_NVML_BASED_CUDA_CHECK": "1",
    }
    for key in ("CUDA_VISIBLE_DEVICES", "GD_DEVICE", "GD_SANDBOX_UID_BASE"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


class Job:
    """One run in the zygote: its process ids and exit status, read from its socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.pid: int | None = None  # the supervisor (leader of the run's process group)
        self.runner: int | None = None  # the process serving the cells
        self.sandbox: int | None = None  # the sandbox's first process (its death ends every process in it)
        self.status: int | None = None  # the runner's wait status, once it ended
        self.error: str | None = None

    def _read(self, timeout: float) -> bool:
        if not select.select([self.sock], [], [], max(timeout, 0))[0]:
            return False
        try:
            msg = self.sock.recv(1 << 16)
        except OSError:
            msg = b""
        if not msg:
            self.error = self.error or "the supervising process ended"
            return False
        data = json.loads(msg)
        if "pid" in data:
            self.pid, self.runner = int(data["pid"]), int(data["runner"])
            self.sandbox = int(data["sandbox"]) if data.get("sandbox") else None
        if "status" in data:
            self.status = int(data["status"])
        if "error" in data:
            self.error = str(data["error"])
        return True

    def started(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.pid is None and self.error is None and time.monotonic() < deadline:
            self._read(deadline - time.monotonic())
        return self.pid is not None

    def wait(self, timeout: float) -> int | None:
        """The runner's wait status (None if it is still running after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while self.status is None and self.error is None:
            if not self._read(deadline - time.monotonic()) and time.monotonic() >= deadline:
                break
        return self.status

    def kill(self) -> None:
        """Kill the run's processes: the sandbox's first process (the PID namespace dies with it),
        the runner, and the supervisor's process group (bubblewrap dies with its parent)."""
        if not self.started(timeout=10):
            return  # the supervisor never started (or failed before forking the runner)
        self.wait(0)
        for pid in (self.sandbox, self.runner if self.status is None else None):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:  # the supervisor and, without namespaces, whatever stayed in its process group
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        self.sock.close()


class Zygote:
    """The grader's handle on a zygote process (see the module docstring).

    Thread-safe: the grading threads call :meth:`spawn` concurrently. The
    zygote imports while the grader does other work; the first spawn waits
    for it (``start=False``: the process only starts then). If it dies, the
    next spawn starts a new one.
    """

    def __init__(
        self,
        preload=PRELOAD,
        startup_timeout_s: float = 600.0,
        start: bool = True,
        *,
        mode: str = "student",
        forbidden=(),
        sandbox: bool = False,
        visible=(),
    ):
        """``mode``: the grading mode of its runs ("student" or "reference"); ``forbidden``: the
        :class:`autograder.forbidden.Forbidden` modules its runs never load; ``sandbox``: its runs
        go into bubblewrap sandboxes (the view is computed once it has imported everything)."""
        self.preload = list(dict.fromkeys(preload))
        self.mode = mode
        self.settings = {"forbidden": [f.__dict__ for f in forbidden], "sandbox": sandbox, "visible": list(visible)}
        self.startup_timeout_s = startup_timeout_s
        self.info: dict = {}
        self._lock = threading.Lock()
        self._proc = None
        self._control = None
        self._home = tempfile.TemporaryDirectory(prefix="gd_zygote_")
        if start:  # else on the first spawn (nothing to run: no zygote)
            self._start()

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._stderr = tempfile.TemporaryFile()
        env = {**zygote_env(self.mode), "HOME": self._home.name}
        settings = {**self.settings, "stub_dir": os.path.join(self._home.name, "stubs")}
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "autograder.zygote",
                str(theirs.fileno()),
                json.dumps(self.preload),
                json.dumps(settings),
            ],
            pass_fds=(theirs.fileno(),),
            cwd=_PACKAGE_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=env,
        )
        theirs.close()
        self._control = ours
        self.info = {}

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-3000:].decode(errors="replace")

    def _ensure_ready(self) -> None:
        if self.info:
            return
        if self._control is None:
            self._start()
        if not select.select([self._control], [], [], self.startup_timeout_s)[0]:
            raise ZygoteError(f"the zygote did not start within {self.startup_timeout_s:g} s")
        msg = self._control.recv(1 << 16)
        if not msg:
            raise ZygoteError(f"the zygote ended while starting:\n{self._stderr_tail()}")
        info = json.loads(msg)
        if not info.get("ready"):
            if not self.preload:
                raise ZygoteError(f"the zygote cannot fork safely: {'; '.join(info.get('hazards', []))}")
            # fall back to a zygote that imports nothing (each run imports what it needs)
            print(f"[grader] zygote not fork-safe ({'; '.join(info['hazards'])}); preloading nothing", file=sys.stderr)
            self.close()
            self.preload = []
            self._start()
            return self._ensure_ready()
        if info.get("failed"):
            print(f"[grader] the zygote could not preload: {'; '.join(info['failed'])}", file=sys.stderr)
        self.info = info

    def spawn(self, job: dict, fds: list[int]) -> Job:
        """Start one run; ``fds``: the command pipe's read end, the result pipe's write end and
        the output pipe's write end (the caller closes its copies)."""
        with self._lock:
            for attempt in (1, 2):
                self._ensure_ready()
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                try:
                    socket.send_fds(self._control, [json.dumps(job).encode()], [theirs.fileno(), *fds])
                    return Job(ours)
                except OSError:
                    ours.close()
                    if attempt == 2:
                        raise ZygoteError(f"the zygote stopped answering:\n{self._stderr_tail()}") from None
                    self.close()  # it died (e.g. killed): start a new one
                    self._start()
                finally:
                    theirs.close()

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        self._home.cleanup()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    control = socket.socket(fileno=int(argv[0]))
    serve(
        control, json.loads(argv[1]) if len(argv) > 1 else list(PRELOAD), json.loads(argv[2]) if len(argv) > 2 else {}
    )
    return 0


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown (torch's takes a second): the grader waits for it
