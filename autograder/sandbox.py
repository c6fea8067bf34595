"""Run a notebook's cells in an isolated process, with limits, and collect what it recorded.

Each run is a process of its own, forked by a zygote that has imported the
libraries already (:mod:`autograder.zygote`). Isolation, where the machine
allows it (root on Linux): new mount, PID, network and IPC namespaces (no network
at all), every mount read-only, the secret paths hidden, a private writable
working directory, a process-count and memory limit per submission (cgroups
when writable, resource limits too), an unprivileged uid of its own and no
capabilities (:mod:`autograder.sandbox_init`; where no other uid can be
used, root without capabilities, and :func:`isolation_mode` says so).
Elsewhere (e.g. an instructor's laptop without root) the cells still run in
their own process with resource limits and time limits, and
:func:`isolation_mode` says that isolation is reduced, so a grader can
refuse to grade untrusted work that way (``--require-isolation``).

Time limits are enforced from outside: per cell and per notebook; a cell
that overruns is killed with its whole process tree (the PID namespace dies
with its first process).
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .zygote import Zygote, ZygoteError, zygote_env

GiB = 1 << 30


@dataclass(frozen=True)
class Limits:
    cell_timeout_s: float = 60.0
    notebook_timeout_s: float = 600.0
    startup_timeout_s: float = 120.0
    memory_bytes: int = 4 * GiB
    max_processes: int = 256
    max_open_files: int = 1024
    max_file_bytes: int = 1 * GiB
    max_output_bytes: int = 2 << 20   # what is kept of the notebook's own stdout/stderr

    def __post_init__(self):
        for name in ("cell_timeout_s", "notebook_timeout_s", "startup_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Invalid {name}: {getattr(self, name)!r}; expected a number > 0")
        for name in ("memory_bytes", "max_processes", "max_open_files", "max_file_bytes"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"Invalid {name}: {getattr(self, name)!r}; expected an integer >= 1")


@dataclass
class CellResult:
    index: int
    status: str                     # "ok", "error", "timeout", "died", "not_run"
    error: str | None = None
    captures: list = field(default_factory=list)


@dataclass
class NotebookRun:
    cells: dict[int, CellResult]
    fatal: str | None               # why the run stopped early, if it did
    isolation: str
    seconds: float
    output_tail: str = ""
    uid: int | None = None          # the user the cells ran as (reported before any cell ran)


@lru_cache(maxsize=1)
def isolation_mode() -> tuple[str, str]:
    """("namespaces", what) when the full sandbox is available here, else ("process", why not).
    ``what`` also says as whom submissions run: an unprivileged uid of their own where the
    machine allows it, else root without capabilities, and why."""
    if sys.platform != "linux":
        return "process", "not Linux: no namespaces"
    if os.geteuid() != 0:
        return "process", "not running as root: namespaces, read-only mounts and cgroups are unavailable"
    probe = subprocess.run([sys.executable, "-m", "autograder.sandbox_init", "--probe"],
                           capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        info = json.loads(probe.stdout)
    except ValueError:
        return "process", f"the namespace probe failed: {probe.stderr.strip()[-300:]}"
    if not info.get("namespaces"):
        return "process", f"new namespaces are not permitted here: {info.get('why', '')[:200]}"
    return "namespaces", ("mount, PID, network and IPC namespaces; read-only file system; no capabilities; "
                          + info["user"])


# --- cgroups (v1 here; v2 where unified) ----------------------------------------------------

def _cgroup_roots() -> dict[str, Path]:
    roots = {}
    for controller in ("pids", "memory"):
        path = Path("/sys/fs/cgroup") / controller
        if path.is_dir() and os.access(path, os.W_OK):
            roots[controller] = path
    return roots


class Cgroups:
    """Per-submission cgroups for the process count and memory; empty where unavailable."""

    def __init__(self, limits: Limits):
        self.paths: dict[str, Path] = {}
        if os.geteuid() != 0:
            return
        name = f"gd_autograder/{uuid.uuid4().hex[:12]}"
        for controller, root in _cgroup_roots().items():
            path = root / name
            try:
                path.mkdir(parents=True)
                if controller == "pids":
                    (path / "pids.max").write_text(str(limits.max_processes))
                else:
                    (path / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
                    swap = path / "memory.memsw.limit_in_bytes"
                    if swap.exists():
                        try:
                            swap.write_text(str(limits.memory_bytes))
                        except OSError:
                            pass
                self.paths[controller] = path
            except OSError:
                self._remove(path)

    def oom_killed(self) -> bool:
        path = self.paths.get("memory")
        if not path:
            return False
        try:
            for line in (path / "memory.oom_control").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
            # older kernels do not count OOM kills: the limit was hit and the process died
            return int((path / "memory.failcnt").read_text()) > 0
        except OSError:
            return False

    @staticmethod
    def _remove(path: Path) -> None:
        for _ in range(50):
            try:
                if path.exists():
                    path.rmdir()
                return
            except OSError:
                time.sleep(0.05)

    def close(self) -> None:
        for path in self.paths.values():
            procs = path / "cgroup.procs"
            try:
                for pid in procs.read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            except OSError:
                pass
            self._remove(path)


# --- running the cells --------------------------------------------------------------------

class _LineReader:
    def __init__(self, fd: int, limit: int = 512 << 20):
        self.fd, self.buf, self.limit = fd, b"", limit

    def readline(self, deadline: float) -> bytes | None:
        """A line, b"" at end of file, or None when the deadline passes first."""
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], min(remaining, 1.0))
            if not ready:
                continue
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                return b""
            self.buf += chunk
            if len(self.buf) > self.limit:
                raise ValueError("the notebook wrote more than the grader reads on its result channel")
        line, _, self.buf = self.buf.partition(b"\n")
        return line


def _base_env(mode: str, extra: dict[str, str]) -> dict[str, str]:
    """A run's whole environment: the zygote's (threads, plotting, quick mode, the GPU slot)
    plus the grading mode and ``extra``."""
    env = {**zygote_env(), "GD_GRADER_MODE": mode}
    env.update(extra)
    return env


def run_cells(cells: list[tuple[int, str]], *, mode: str, workdir: Path, limits: Limits,
              hide: list[str] = (), env: dict[str, str] | None = None, sandbox: bool = True,
              gpu: bool = False, log_path: Path | None = None, zygote: Zygote | None = None) -> NotebookRun:
    """Run ``cells`` (index, code) in order in a fresh process; see the module docstring.

    The process is forked by ``zygote`` (:mod:`autograder.zygote`), which has imported the
    libraries already; without one, a zygote that preloads nothing is started for this run.
    ``sandbox=False`` runs trusted code (the instructor's reference run) with the time limits only.
    """
    if zygote is None:
        with Zygote(preload=()) as own:
            return run_cells(cells, mode=mode, workdir=workdir, limits=limits, hide=hide, env=env,
                             sandbox=sandbox, gpu=gpu, log_path=log_path, zygote=own)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o700)
    isolation, _ = isolation_mode() if sandbox else ("trusted", "")
    extra = dict(env or {})
    cgroups = None
    log_path = log_path or (workdir.parent / f".{workdir.name}.log")
    job_config = {"mode": isolation, "workdir": str(workdir), "gpu": gpu,
                  "limits": {"max_open_files": limits.max_open_files, "max_file_bytes": limits.max_file_bytes,
                             "address_space_bytes": None if gpu else limits.memory_bytes,
                             "max_processes": limits.max_processes}}
    if isolation == "namespaces":
        cgroups = Cgroups(limits)
        job_config["limits"]["nproc"] = limits.max_processes  # the submission's own uid: its processes only
        job_config.update(hide=[str(p) for p in hide], cgroups=[str(p) for p in cgroups.paths.values()])
        home = {"HOME": "/tmp/work", "TMPDIR": "/tmp/work", "IPYTHONDIR": "/tmp/work/.ipython",
                "MPLCONFIGDIR": "/tmp/work/.matplotlib", **extra}
    else:
        home = {"HOME": str(workdir), "TMPDIR": str(workdir), "IPYTHONDIR": str(workdir / ".ipython"),
                "MPLCONFIGDIR": str(workdir / ".matplotlib"), **extra}
    job_config["env"] = _base_env(mode, home)
    cmd_r, cmd_w = os.pipe()
    res_r, res_w = os.pipe()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    job = None
    try:
        job = zygote.spawn(job_config, [cmd_r, res_w, log_fd])  # waits for the zygote's imports, once
        start = time.monotonic()
    except ZygoteError as err:
        spawn_error, start = str(err), time.monotonic()
    finally:
        for fd in (cmd_r, res_w, log_fd):
            os.close(fd)

    results: dict[int, CellResult] = {}
    fatal = None
    uid = None
    reader = _LineReader(res_r)
    commands = os.fdopen(cmd_w, "w", encoding="utf-8")
    notebook_deadline = start + limits.notebook_timeout_s

    def kill():
        if job is not None:
            job.kill()
        if cgroups:
            cgroups.close()

    def died_message(when: str) -> str:
        status = job.wait(timeout=5) if job is not None else None
        if cgroups and cgroups.oom_killed():
            return f"the notebook exceeded the memory limit ({limits.memory_bytes / GiB:.1f} GiB) {when} and was stopped"
        if status is not None and os.WIFSIGNALED(status):
            return f"the notebook's process was killed by signal {signal.Signals(os.WTERMSIG(status)).name} {when}"
        code = os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else None
        return f"the notebook's process ended (exit status {code}) {when}"

    try:
        ready = None if job is None else reader.readline(
            min(notebook_deadline, time.monotonic() + limits.startup_timeout_s))
        if job is None:
            fatal = f"the grading process did not start: {spawn_error}"
        elif not ready:
            fatal = "the grading process did not start" if ready == b"" else "the grading process timed out starting"
            job.started(timeout=5)  # picks up the zygote's or the supervisor's error, if any
            if job.error:
                fatal += f": {job.error}"
        else:
            try:
                uid = json.loads(ready).get("uid")
            except (ValueError, AttributeError):
                uid = None
            for index, code in cells:
                now = time.monotonic()
                if now >= notebook_deadline:
                    fatal = f"the notebook exceeded its total time limit of {limits.notebook_timeout_s:g} s"
                    break
                try:
                    commands.write(json.dumps({"index": index, "code": code}) + "\n")
                    commands.flush()
                except (BrokenPipeError, OSError):
                    fatal = died_message(f"before cell {index}")
                    break
                deadline = min(now + limits.cell_timeout_s, notebook_deadline)
                line = reader.readline(deadline)
                if line is None:
                    limit = "its time limit" if deadline < notebook_deadline else "the notebook's total time limit"
                    results[index] = CellResult(index, "timeout", f"the cell did not finish within {limit} "
                                                f"({min(limits.cell_timeout_s, limits.notebook_timeout_s):g} s)")
                    fatal = f"cell {index} timed out; the cells after it did not run"
                    break
                if line == b"":
                    fatal = died_message(f"while running cell {index}")
                    results[index] = CellResult(index, "died", fatal)
                    break
                try:
                    reply = json.loads(line)
                    if not isinstance(reply, dict) or reply.get("index") != index:
                        raise ValueError("reply for another cell")
                    captures = reply.get("captures", [])
                    if not isinstance(captures, list):
                        raise ValueError("malformed captures")
                except ValueError:
                    fatal = "the notebook wrote to the grader's result channel; grading stopped there"
                    results[index] = CellResult(index, "error", fatal)
                    break
                status = "ok" if reply.get("ok") is True else "error"
                error = reply.get("error") if isinstance(reply.get("error"), str) else None
                results[index] = CellResult(index, status, error, captures)
    except ValueError as err:
        fatal = str(err)
    finally:
        try:
            commands.close()
        except OSError:
            pass
        if job is not None and fatal is None:
            job.wait(timeout=5)  # it ends on its own once the commands are closed
        kill()
        if job is not None:
            job.close()
        os.close(res_r)
    for index, _ in cells:
        results.setdefault(index, CellResult(index, "not_run", fatal or "not run"))
    tail = b""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limits.max_output_bytes))
            tail = fh.read()
    except OSError:
        pass
    return NotebookRun(results, fatal, isolation, time.monotonic() - start, tail.decode("utf-8", "replace"), uid)
