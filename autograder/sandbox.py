"""Run a notebook's cells in a sandboxed process, with limits, and read what it recorded.

Each run is a process of its own, forked by a zygote that has imported the
libraries already (:mod:`autograder.zygote`), inside a bubblewrap sandbox
(:mod:`autograder.bwrap`: nothing of the course, no network, one size-limited
writable tmpfs; :mod:`autograder.confine`: an unprivileged uid, no capabilities,
seccomp). The same sandbox is built when the grader runs as root (``make
autograde``) and when it runs as the instructor's own user (the formgrader on a
hub), through user namespaces. Where bubblewrap cannot build it, grading refuses
(:class:`IsolationUnavailable`) unless the instructor asks for the reduced mode
(``allow_reduced=True``, ``--allow-reduced-isolation``): a separate process with
resource and time limits only.

Everything the student's process sends back is untrusted input
(:class:`Channel`): one reply per cell, bounded in size, strict in form, matched
to the cell that was sent by its index and a fresh nonce; anything else ends that
notebook's run with a clear message, never the grader. The process's own output
goes through a pipe of which the grader keeps the last ``max_output_bytes``:
nothing a submission prints reaches the host's disk.

Time limits are enforced from outside: per cell and per notebook; a cell that
overruns is killed with the whole sandbox.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import bwrap
from .zygote import Zygote, ZygoteError, zygote_env

GiB = 1 << 30
MiB = 1 << 20


class IsolationUnavailable(RuntimeError):
    """The sandbox cannot be built here and the reduced mode was not asked for."""


@dataclass(frozen=True)
class Limits:
    cell_timeout_s: float = 60.0
    notebook_timeout_s: float = 600.0
    startup_timeout_s: float = 120.0
    memory_bytes: int = 4 * GiB
    max_processes: int = 256
    max_open_files: int = 1024
    max_file_bytes: int = 1 * GiB
    work_bytes: int = 1 * GiB  # everything a run may write (its tmpfs: /tmp and /dev/shm)
    max_output_bytes: int = 2 * MiB  # what is kept of the notebook's own stdout/stderr
    max_reply_bytes: int = 96 * MiB  # one cell's reply on the result channel
    cpus: float = 1.0  # CPU cores a run may use at once (where cgroups allow)

    def __post_init__(self):
        for name in ("cell_timeout_s", "notebook_timeout_s", "startup_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Invalid {name}: {getattr(self, name)!r}; expected a number > 0")
        for name in (
            "memory_bytes",
            "max_processes",
            "max_open_files",
            "max_file_bytes",
            "work_bytes",
            "max_output_bytes",
            "max_reply_bytes",
        ):
            if not getattr(self, name) >= 1:
                raise ValueError(f"Invalid {name}: {getattr(self, name)!r}; expected an integer >= 1")
        if not self.cpus >= 0.01:
            raise ValueError(f"Invalid cpus: {self.cpus!r}; expected a number >= 0.01")


@dataclass
class CellResult:
    index: int
    status: str  # "ok", "error", "timeout", "died", "not_run"
    error: str | None = None
    captures: list = field(default_factory=list)


@dataclass
class NotebookRun:
    cells: dict[int, CellResult]
    fatal: str | None  # why the run stopped early, if it did
    isolation: str  # "bwrap", "process" (reduced) or "trusted" (the reference run)
    seconds: float
    output_tail: str = ""
    uid: int | None = None  # the user the cells ran as (reported before any cell ran)
    violation: bool = False  # the run broke the channel's rules (counted as a grading failure)


def isolation_mode() -> tuple[str, str]:
    """("bwrap", how) when the sandbox can be built here, else ("process", why not)."""
    if sys.platform != "linux":
        return "process", "not Linux: no bubblewrap sandbox"
    ok, how = bwrap.probe()
    return ("bwrap", how) if ok else ("process", how)


def require_isolation(allow_reduced: bool) -> str:
    """The isolation grading will use; raises :class:`IsolationUnavailable` when only the reduced
    mode is possible and ``allow_reduced`` is false."""
    mode, why = isolation_mode()
    if mode != "bwrap" and not allow_reduced:
        raise IsolationUnavailable(
            f"the grading sandbox cannot be built here: {why}. Submissions would run with your own "
            "permissions (reading and writing everything you can). Install bubblewrap and allow user "
            "namespaces, or pass --allow-reduced-isolation to grade in the reduced mode anyway."
        )
    return mode


# --- cgroups (v1 here; v2 where unified) ----------------------------------------------------


def _cgroup_roots() -> dict[str, Path]:
    roots = {}
    for controller in ("pids", "memory", "cpu"):
        path = Path("/sys/fs/cgroup") / controller
        if path.is_dir() and os.access(path, os.W_OK):
            roots[controller] = path
    return roots


class Cgroups:
    """Per-submission cgroups for the process count, memory (tmpfs pages included) and CPU (at most
    ``limits.cpus`` cores, so that a fork bomb cannot starve the other submissions graded beside it);
    empty where the grader may not make them (then memory is bounded by the address-space limit)."""

    def __init__(self, limits: Limits):
        self.paths: dict[str, Path] = {}
        if os.geteuid() != 0:
            return
        import uuid

        name = f"gd_autograder/{uuid.uuid4().hex[:12]}"
        for controller, root in _cgroup_roots().items():
            path = root / name
            try:
                path.mkdir(parents=True)
                if controller == "pids":
                    (path / "pids.max").write_text(str(limits.max_processes + 8))  # + bubblewrap's own
                elif controller == "cpu":
                    (path / "cpu.cfs_period_us").write_text("100000")
                    (path / "cpu.cfs_quota_us").write_text(str(int(100000 * limits.cpus)))
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
            try:
                for pid in (path / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            except OSError:
                pass
            self._remove(path)


# --- the result channel: untrusted input --------------------------------------------------------


class ChannelViolation(ValueError):
    """The student's process broke the channel's rules."""


#: the only keys of a reply, and their types
_REPLY_TYPES = {"index": int, "nonce": str, "ok": bool, "error": (str, type(None)), "captures": list}
MAX_CAPTURES = 1000
MAX_NAME_CHARS = 200
MAX_ERROR_CHARS = 2000


def _depth_ok(line: bytes, limit: int) -> bool:
    """Whether the JSON text nests at most ``limit`` deep (counted before parsing, strings skipped)."""
    depth, in_string, escaped = 0, False, False
    for byte in line:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


def parse_reply(line: bytes, index: int, nonce: str, trusted: bool = False) -> dict:
    """The reply to cell ``index`` sent with ``nonce``, checked against the channel's schema
    (raises :class:`ChannelViolation`). Recorded values are checked later, one by one, where
    they are compared (:func:`autograder.checks.compare`): a bad one fails its own check only."""
    from .checks import MAX_DEPTH

    if not _depth_ok(line, MAX_DEPTH + 6):
        raise ChannelViolation("a reply nested deeper than the grader reads")
    try:
        reply = json.loads(line)
    except (ValueError, RecursionError) as err:
        raise ChannelViolation(f"a reply that is not JSON ({type(err).__name__})") from None
    if not isinstance(reply, dict) or set(reply) != set(_REPLY_TYPES):
        raise ChannelViolation("a reply of the wrong form")
    for key, types in _REPLY_TYPES.items():
        if type(reply[key]) not in (types if isinstance(types, tuple) else (types,)):
            raise ChannelViolation(f"a reply whose {key!r} has the wrong type")
    if reply["index"] != index or reply["nonce"] != nonce:
        raise ChannelViolation(f"a reply that does not answer cell {index}")
    captures = reply["captures"]
    if len(captures) > MAX_CAPTURES:
        raise ChannelViolation(f"more than {MAX_CAPTURES} recorded values in one cell")
    keys = {"name", "value", "rtol", "atol", "about"} if trusted else {"name", "value"}  # the reference's own
    for cap in captures:
        if (
            not isinstance(cap, dict)
            or not {"name", "value"} <= set(cap) <= keys
            or type(cap["name"]) is not str
            or len(cap["name"]) > MAX_NAME_CHARS
            or not isinstance(cap["value"], dict)
        ):
            raise ChannelViolation("a recorded value of the wrong form")
    if reply["error"] is not None:
        reply["error"] = reply["error"][:MAX_ERROR_CHARS]
    return reply


class Channel:
    """The grader's end of a run: the result pipe (replies), the output pipe (kept tail) and the
    run's socket (its exit), read together with deadlines."""

    def __init__(self, res_r: int, out_r: int, job, limits: Limits):
        self.res_r, self.out_r, self.job, self.limits = res_r, out_r, job, limits
        self.buf = b""
        self.tail = bytearray()
        self.res_open = self.out_open = True

    def _read_output(self) -> None:
        chunk = os.read(self.out_r, 1 << 20)
        if not chunk:
            self.out_open = False
            return
        self.tail += chunk
        if len(self.tail) > 2 * self.limits.max_output_bytes:
            del self.tail[: len(self.tail) - self.limits.max_output_bytes]

    def readline(self, deadline: float) -> bytes | None:
        """The next line on the result pipe; b"" when the process ended (or closed the pipe),
        None when the deadline passed first."""
        while b"\n" not in self.buf:
            if not self.res_open:
                return b""
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            job_alive = self.job is not None and self.job.status is None and not self.job.error
            watched = [self.res_r] + ([self.out_r] if self.out_open else []) + ([self.job.sock] if job_alive else [])
            ready, _, _ = select.select(watched, [], [], min(remaining, 1.0))
            if self.out_r in ready:
                self._read_output()
            if self.job is not None and self.job.sock in ready:
                self.job.wait(0)  # reads the exit status: the runner is gone
                if self.job.status is not None or self.job.error:
                    self._drain_results()
                    if b"\n" not in self.buf:
                        return b""
            if self.res_r in ready:
                chunk = os.read(self.res_r, 1 << 20)
                if not chunk:
                    self.res_open = False
                    continue
                self.buf += chunk
                if len(self.buf) > self.limits.max_reply_bytes:
                    raise ChannelViolation(f"a reply larger than {self.limits.max_reply_bytes // MiB} MiB")
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def _drain_results(self) -> None:
        """What the runner wrote before it ended (its children may hold the pipe open)."""
        while select.select([self.res_r], [], [], 0)[0]:
            chunk = os.read(self.res_r, 1 << 20)
            if not chunk:
                self.res_open = False
                return
            self.buf += chunk
            if len(self.buf) > self.limits.max_reply_bytes:
                raise ChannelViolation(f"a reply larger than {self.limits.max_reply_bytes // MiB} MiB")

    def expect_nothing_more(self) -> None:
        """Nothing may follow a reply before the next command is sent."""
        if self.buf:
            raise ChannelViolation("more than one reply to one cell")

    def finish_output(self) -> str:
        while self.out_open and select.select([self.out_r], [], [], 0)[0]:
            self._read_output()
        return bytes(self.tail[-self.limits.max_output_bytes :]).decode("utf-8", "replace")


# --- running the cells --------------------------------------------------------------------


def _run_env(mode: str, extra: dict[str, str], home: str) -> dict[str, str]:
    """A run's whole environment: the zygote's (threads, plotting, quick mode, the GPU slot)
    plus its home and ``extra``."""
    env = {
        **zygote_env(mode),
        "HOME": home,
        "TMPDIR": home,
        "IPYTHONDIR": f"{home}/.ipython",
        "MPLCONFIGDIR": f"{home}/.matplotlib",
        "USER": "student",
        "LOGNAME": "student",
    }
    env.update(extra)
    return env


def _job_config(
    *,
    mode: str,
    limits: Limits,
    isolation: str,
    gpu: bool,
    workdir: Path | None,
    data_dir: Path | None,
    env: dict[str, str] | None,
) -> tuple[dict, Cgroups | None]:
    """What the zygote's supervisor needs to start one run, and the run's cgroups (bwrap only)."""
    job_config = {
        "mode": isolation,
        "gpu": gpu,
        "max_reply_bytes": limits.max_reply_bytes,
        "limits": {
            "max_open_files": limits.max_open_files,
            "max_file_bytes": limits.max_file_bytes,
            "address_space_bytes": None if gpu else limits.memory_bytes,
            "max_processes": limits.max_processes,
        },
    }
    cgroups = None
    if isolation == "bwrap":
        cgroups = Cgroups(limits)
        if "memory" in cgroups.paths:
            job_config["limits"]["address_space_bytes"] = None  # the cgroup counts what matters
        job_config["limits"]["nproc"] = limits.max_processes
        job_config.update(
            cgroups=[str(p) for p in cgroups.paths.values()],
            work_bytes=limits.work_bytes,
            data_dir=str(data_dir) if data_dir else None,
        )
        home = "/tmp/work"
    else:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(workdir, 0o700)
        job_config["workdir"] = str(workdir)
        home = str(workdir)
    job_config["env"] = _run_env(mode, dict(env or {}), home)
    return job_config, cgroups


class _Run:
    """One notebook's run in a forked process: start it, feed it cells one by one, read its replies.

    Each step is a method; ``run_cells`` strings them together. Every method that meets the end
    of the run sets ``fatal`` (the sentence the student reads) and returns False.
    """

    def __init__(
        self, zygote: Zygote, job_config: dict, cgroups: Cgroups | None, limits: Limits, isolation: str
    ) -> None:
        self.limits, self.cgroups, self.isolation = limits, cgroups, isolation
        self.results: dict[int, CellResult] = {}
        self.fatal: str | None = None
        self.uid: int | None = None
        self.violation = False
        cmd_r, cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()
        self._out_r, out_w = os.pipe()
        self.job = None
        try:
            self.job = zygote.spawn(job_config, [cmd_r, res_w, out_w])  # waits for the zygote's imports, once
        except ZygoteError as err:
            self.fatal = f"the grading process did not start: {err}"
        finally:
            for fd in (cmd_r, res_w, out_w):
                os.close(fd)
        self.start = time.monotonic()
        self.channel = Channel(self._res_r, self._out_r, self.job, limits)
        self.commands = os.fdopen(cmd_w, "w", encoding="utf-8")
        self.deadline = self.start + limits.notebook_timeout_s

    def died_message(self, when: str) -> str:
        """Why the process is gone: the memory limit, a signal, or its exit status."""
        status = self.job.wait(timeout=5) if self.job is not None else None
        if self.cgroups and self.cgroups.oom_killed():
            return (
                f"the notebook exceeded the memory limit ({self.limits.memory_bytes / GiB:.1f} GiB) {when} "
                "and was stopped"
            )
        if status is not None and os.WIFSIGNALED(status):
            return f"the notebook's process was killed by signal {signal.Signals(os.WTERMSIG(status)).name} {when}"
        code = os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else None
        return f"the notebook's process ended (exit status {code}) {when}"

    def await_start(self) -> bool:
        """Wait for the process's hello line (it carries the uid the run got)."""
        if self.job is None:
            return False  # ``fatal`` says why
        ready = self.channel.readline(min(self.deadline, time.monotonic() + self.limits.startup_timeout_s))
        if not ready:
            self.job.started(timeout=5)  # picks up the zygote's or the supervisor's error, if any
            self.fatal = (
                "the grading process did not start" if ready == b"" else "the grading process timed out starting"
            )
            if self.job.error:
                self.fatal += f": {self.job.error}"
            elif self.channel.tail:
                self.fatal += f": {self.channel.finish_output()[-1500:]}"
            return False
        try:
            hello = json.loads(ready)
            self.uid = hello.get("uid") if isinstance(hello, dict) and type(hello.get("uid")) is int else None
        except ValueError:
            self.uid = None
        return True

    def run_cell(self, index: int, code: str) -> bool:
        """Send one cell with a fresh nonce and record its reply; False ends the run."""
        now = time.monotonic()
        if now >= self.deadline:
            self.fatal = f"the notebook exceeded its total time limit of {self.limits.notebook_timeout_s:g} s"
            return False
        nonce = secrets.token_hex(16)
        try:
            self.channel.expect_nothing_more()
            self.commands.write(json.dumps({"index": index, "nonce": nonce, "code": code}) + "\n")
            self.commands.flush()
        except (BrokenPipeError, OSError):
            self.fatal = self.died_message(f"before cell {index}")
            return False
        deadline = min(now + self.limits.cell_timeout_s, self.deadline)
        line = self.channel.readline(deadline)
        if line is None:
            limit = "its time limit" if deadline < self.deadline else "the notebook's total time limit"
            allowed = min(self.limits.cell_timeout_s, self.limits.notebook_timeout_s)
            message = f"the cell did not finish within {limit} ({allowed:g} s)"
            self.results[index] = CellResult(index, "timeout", message)
            self.fatal = f"cell {index} timed out; the cells after it did not run"
            return False
        if line == b"":
            self.fatal = self.died_message(f"while running cell {index}")
            self.results[index] = CellResult(index, "died", self.fatal)
            return False
        reply = parse_reply(line, index, nonce, trusted=self.isolation == "trusted")
        status = "ok" if reply["ok"] else "error"
        self.results[index] = CellResult(index, status, reply["error"], reply["captures"])
        return True

    def close(self) -> str:
        """End the process, free its cgroups and pipes; returns what it printed (the tail)."""
        try:
            self.commands.close()
        except OSError:
            pass
        if self.job is not None and self.fatal is None:
            self.job.wait(timeout=5)  # it ends on its own once the commands are closed
        if self.job is not None:
            self.job.kill()
        if self.cgroups:
            self.cgroups.close()
        tail = self.channel.finish_output()
        if self.job is not None:
            self.job.close()
        os.close(self._res_r)
        os.close(self._out_r)
        return tail


def run_cells(
    cells: list[tuple[int, str]],
    *,
    mode: str,
    limits: Limits,
    workdir: Path | None = None,
    data_dir: Path | None = None,
    env: dict[str, str] | None = None,
    isolation: str = "bwrap",
    gpu: bool = False,
    zygote: Zygote | None = None,
) -> NotebookRun:
    """Run ``cells`` (index, code) in order in a fresh process; see the module docstring.

    ``isolation``: "bwrap" (the sandbox; ``data_dir``'s files are copied into its working
    directory), "process" (the reduced mode: ``workdir`` on the host, resource limits only) or
    "trusted" (the instructor's reference run: ``workdir``, time limits only). The process is
    forked by ``zygote``; without one, a zygote that preloads nothing is started for this run.
    """
    if zygote is None:
        with Zygote(preload=(), mode=mode, sandbox=isolation == "bwrap") as own:
            return run_cells(
                cells,
                mode=mode,
                limits=limits,
                workdir=workdir,
                data_dir=data_dir,
                env=env,
                isolation=isolation,
                gpu=gpu,
                zygote=own,
            )
    job_config, cgroups = _job_config(
        mode=mode, limits=limits, isolation=isolation, gpu=gpu, workdir=workdir, data_dir=data_dir, env=env
    )
    run = _Run(zygote, job_config, cgroups, limits, isolation)
    try:
        if run.await_start():
            for index, code in cells:
                if not run.run_cell(index, code):
                    break
    except ChannelViolation as err:
        run.violation = True
        run.fatal = (
            f"grading stopped: the notebook's process broke the grader's result channel ({err}); "
            "a notebook must not write to it"
        )
    finally:
        tail = run.close()
    for index, _ in cells:
        run.results.setdefault(index, CellResult(index, "not_run", run.fatal or "not run"))
    return NotebookRun(run.results, run.fatal, isolation, time.monotonic() - run.start, tail, run.uid, run.violation)
