"""A fork server for grading: the libraries are imported once, each notebook runs in a fork.

Starting a Python process and importing torch, ``gd_lib`` and IPython takes
seconds of CPU, and torch's first optimizer step imports ``torch._dynamo``
and sympy (seconds more): far more than the cells of a typical submission.
The grader therefore starts one *zygote* process (trusted code only) that
imports those modules and takes the first optimizer step once, then waits
for requests. For every notebook run it forks:

``supervisor`` (one per run, root, in a session of its own)
    enters new mount, PID, network and IPC namespaces
    (:func:`autograder.sandbox_init.unshare_namespaces`), forks the runner,
    tells the grader both process ids, waits for the runner and reports its
    exit status, then waits until the grader has cleaned up (killing the
    process group) before it exits, so that its ids are never reused while
    the grader may still signal them.
``runner`` (PID 1 of the new namespaces)
    joins the submission's cgroups, builds the sandbox and drops to an
    unprivileged uid of its own (:func:`autograder.sandbox_init.enter`),
    takes the run's environment, and serves the cells
    (:func:`autograder.cell_runner.serve`). It never returns into the
    zygote's code: it ends with ``os._exit``.

Fork safety: the zygote runs single-threaded (``OMP_NUM_THREADS=1``, no
thread pool started, checked before it serves) and never initializes CUDA
(``PYTORCH_NVML_BASED_CUDA_CHECK=1``, checked too), so a forked runner can
use the GPU named by its own ``CUDA_VISIBLE_DEVICES``. A zygote that cannot
guarantee this says so and the grader uses one that preloads nothing.

Each runner gets a copy of the zygote's memory, which holds only the
imported libraries: the zygote never reads solutions, the gradebook or any
submission, and every file descriptor but the run's own pipes is closed in
the supervisor. What one submission changes (monkeypatched modules, for
instance) lives in its own copy and disappears with it.

Protocol: the grader sends each request on a ``SOCK_SEQPACKET`` socket as
one JSON message (the run's configuration) with four descriptors attached
(SCM_RIGHTS): the run's own socket, the command pipe's read end, the result
pipe's write end and the log file. The supervisor answers on the run's
socket: ``{"pid", "runner"}``, then ``{"status"}`` (or ``{"error"}``).
"""
from __future__ import annotations

import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from . import sandbox_init

PR_SET_CHILD_SUBREAPER = 36

# What every assignment imports: torch, numpy, the library, IPython (the cell runner), the checks.
PRELOAD = ("numpy", "torch", "gd_lib", "gd_lib.optim", "IPython.core.interactiveshell", "autograder.checks",
           "autograder.cell_runner")


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
    sympy, seconds of CPU); on tiny CPU tensors, so no thread pool starts."""
    import torch
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    p.grad = torch.ones_like(p)
    for opt in (torch.optim.SGD([p], lr=0.1, momentum=0.9), torch.optim.Adam([p], lr=0.1)):
        opt.step()


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
    for slot in range(sandbox_init.SANDBOX_UID_SLOTS):
        if slot in taken:
            continue
        fd = os.open(os.path.join(folder, str(slot)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return slot, fd
        except BlockingIOError:
            os.close(fd)
    return None


def _process_limits(limits: dict) -> None:
    """Resource limits for a run without namespaces (a separate process is all there is)."""
    import resource
    for res, value in [(resource.RLIMIT_NOFILE, limits.get("max_open_files")),
                       (resource.RLIMIT_FSIZE, limits.get("max_file_bytes")), (resource.RLIMIT_CORE, 0),
                       (resource.RLIMIT_AS, limits.get("address_space_bytes"))]:
        if value is not None:
            try:
                resource.setrlimit(res, (int(value), int(value)))
            except (ValueError, OSError):
                pass
    try:  # without a PID namespace, count this user's processes: the ones running now plus the budget
        running = sum(1 for d in os.listdir("/proc") if d.isdigit())
        resource.setrlimit(resource.RLIMIT_NPROC, (running + int(limits["max_processes"]),) * 2)
    except (KeyError, ValueError, OSError):
        pass


def _run(job: dict, cmd_r: int, res_w: int, log_fd: int, plan, uid) -> None:
    """The runner: build the sandbox, then serve the cells. Never returns."""
    code = 70
    try:
        sandbox_init.prctl(sandbox_init.PR_SET_PDEATHSIG, signal.SIGKILL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(devnull)
        os.close(log_fd)
        work = job["workdir"]
        if job["mode"] == "namespaces":
            work = sandbox_init.enter(job, plan, uid)
            sandbox_init.prctl(sandbox_init.PR_SET_PDEATHSIG, signal.SIGKILL)  # a change of user clears it
        else:
            if job["mode"] == "process":
                _process_limits(job["limits"])
            os.chdir(work)
        os.environ.clear()
        os.environ.update({k: v.replace("/tmp/work", work) for k, v in job["env"].items()})
        import tempfile as tempfile_module
        tempfile_module.tempdir = None  # the zygote's choice, cached: chosen again from TMPDIR
        sys.path[0] = work  # as in a kernel started in the notebook's folder
        sys.argv = [""]
        from autograder import cell_runner
        code = cell_runner.serve(cmd_r, res_w)
    except BaseException:  # noqa: B902 - whatever happens, this process must not go back to the zygote's loop
        import traceback
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _supervise(job: dict, fds: list[int], plan, uid, zygote_pid: int) -> None:
    """The supervisor: namespaces, the runner, its exit status. Never returns."""
    try:
        sock_fd, cmd_r, res_w, log_fd = fds
        os.setsid()
        sandbox_init.prctl(sandbox_init.PR_SET_PDEATHSIG, signal.SIGKILL)
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
        if job["mode"] == "namespaces":
            try:
                sandbox_init.unshare_namespaces()
            except OSError as err:
                sock.send(json.dumps({"error": f"could not enter the namespaces: {err}"}).encode())
                os._exit(1)
        runner = os.fork()
        if runner == 0:
            sock.close()
            _run(job, cmd_r, res_w, log_fd, plan, uid)
        for fd in (cmd_r, res_w, log_fd):
            os.close(fd)
        sock.send(json.dumps({"pid": os.getpid(), "runner": runner}).encode())
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


def serve(control: socket.socket, preload: list[str]) -> None:
    """The zygote's main loop (see the module docstring)."""
    zygote_pid = os.getpid()
    sandbox_init.prctl(sandbox_init.PR_SET_PDEATHSIG, signal.SIGKILL)  # the grader's death ends it
    # a runner whose supervisor was killed first is reparented here and reaped below
    sandbox_init.prctl(PR_SET_CHILD_SUBREAPER, 1)
    failed = []
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception as err:  # the notebook will hit the same error in its own cell
            failed.append(f"{name}: {type(err).__name__}: {err}")
    if "torch" in sys.modules:
        try:
            _warm_up()
        except Exception as err:
            failed.append(f"warm-up: {type(err).__name__}: {err}")
    hazards = _fork_hazards()
    plan, why = sandbox_init.user_plan()
    sys.stdout.flush()
    sys.stderr.flush()
    control.send(json.dumps({"ready": not hazards, "hazards": hazards, "failed": failed,
                             "preloaded": sorted(m for m in preload if m in sys.modules),
                             "user": sandbox_init.user_description(plan, why),
                             "unprivileged": plan is not None}).encode())
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
        claim = uid = None
        if job["mode"] == "namespaces" and plan is not None:
            try:
                claim = _claim_uid_slot({slot for slot, _ in claims.values()})
            except OSError as err:
                _refuse(fds, f"no uid for the run: {err}")
                continue
            if claim is None:
                _refuse(fds, "every sandbox uid is in use")
                continue
            uid = sandbox_init.SANDBOX_UID_BASE + claim[0]
        pid = os.fork()
        if pid == 0:
            control.close()
            _supervise(job, fds, plan, uid, zygote_pid)
        if claim is not None:
            claims[pid] = claim
        for fd in fds:
            os.close(fd)


# --- the grader's side ----------------------------------------------------------------------------

def zygote_env() -> dict[str, str]:
    """The zygote's environment: what matters at import time (threads, CUDA checks) set as the
    runs will have it. Each run replaces the whole environment with its own."""
    env = {
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
    for key in ("CUDA_VISIBLE_DEVICES", "GD_DEVICE", "GD_SANDBOX_USER", "GD_SANDBOX_UID_BASE"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


class Job:
    """One run in the zygote: its process ids and exit status, read from its socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.pid: int | None = None      # the supervisor (leader of the run's process group)
        self.runner: int | None = None   # the process serving the cells (PID 1 of its namespaces)
        self.status: int | None = None   # the runner's wait status, once it ended
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
        """Kill the run's processes (the runner's death ends its PID namespace)."""
        if not self.started(timeout=10):
            return  # the supervisor never started (or failed before forking the runner)
        self.wait(0)
        if self.status is None and self.runner:
            try:
                os.kill(self.runner, signal.SIGKILL)
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

    def __init__(self, preload=PRELOAD, startup_timeout_s: float = 600.0, start: bool = True):
        self.preload = list(dict.fromkeys(preload))
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
        env = {**zygote_env(), "HOME": self._home.name}
        self._proc = subprocess.Popen([sys.executable, "-m", "autograder.zygote", str(theirs.fileno()),
                                       json.dumps(self.preload)], pass_fds=(theirs.fileno(),), cwd=_PACKAGE_ROOT,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
                                      env=env)
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
            print(f"[grader] zygote not fork-safe ({'; '.join(info['hazards'])}); preloading nothing",
                  file=sys.stderr)
            self.close()
            self.preload = []
            self._start()
            return self._ensure_ready()
        if info.get("failed"):
            print(f"[grader] the zygote could not preload: {'; '.join(info['failed'])}", file=sys.stderr)
        self.info = info

    def spawn(self, job: dict, fds: list[int]) -> Job:
        """Start one run; ``fds``: the command pipe's read end, the result pipe's write end and
        the log file (the caller closes its copies)."""
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
                        raise ZygoteError(f"the zygote stopped answering:\n{self._stderr_tail()}")
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

    def __enter__(self) -> "Zygote":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        self._home.cleanup()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    control = socket.socket(fileno=int(argv[0]))
    serve(control, json.loads(argv[1]) if len(argv) > 1 else list(PRELOAD))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown (torch's takes a second): the grader waits for it
