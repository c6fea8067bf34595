"""Entering the grading sandbox: namespaces, mounts, limits, an unprivileged user.

Trusted code, run as root by the process that will run a submission's
cells (a child of :mod:`autograder.zygote`), before any student code:

1. :func:`unshare_namespaces` (in the supervising parent): new mount, PID,
   network (no interface is up) and IPC (no System V objects shared with
   other runs) namespaces, mounts private.
2. :func:`enter`, in the first process of the new PID namespace:

   a. joins the submission's cgroups (process count and memory limits),
   b. mounts a fresh, read-only ``/proc`` for the new PID namespace and
      makes every other mount read-only (``/sys`` included),
   c. hides the secret paths (solutions, the gradebook, other students'
      work, the grader's caches) under empty read-only tmpfs mounts,
   d. gives the submission a private writable ``/tmp`` (``/mnt`` when the
      interpreter or the library live under ``/tmp``) holding only its own
      working directory (``/tmp/work``), and a minimal ``/dev`` (:func:`minimal_dev`:
      the harmless character devices, a fresh ``/dev/shm``, the GPU's nodes
      only for a run given a GPU; no disks, no terminals),
   e. makes the interpreter reachable for an unprivileged user where a
      directory above it is closed to others (e.g. ``/root/.pyenv`` under a
      ``/root`` of mode 0700): an empty read-only tmpfs (mode 0755) covers
      that directory and only the interpreter's folders are bound back into
      it, so nothing else of it is visible,
   f. sets resource limits (open files, file size, core dumps, address
      space, processes),
   g. drops every capability (bounding set emptied, no-new-privs) and
      switches to the submission's own unprivileged uid and gid — or, where
      the machine does not allow that (see :func:`user_plan`), stays root
      without capabilities, which :func:`autograder.sandbox.isolation_mode`
      reports.

Without capabilities the student's code cannot undo any of the mounts.
``python -m autograder.sandbox_init --probe`` checks that this machine
allows the namespaces and says which user the submissions will run as.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import resource
import stat
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP, PR_SET_PDEATHSIG = 38, 24, 1
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, _LINUX_CAPABILITY_VERSION_3 = 47, 4, 0x20080522
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x08000000, 0x20000000, 0x40000000

# Submissions run as uid = gid = SANDBOX_UID_BASE + k, k unique among the submissions running
# at the same time: ids that no account uses, so a submission owns nothing outside its work area,
# and per-user limits (RLIMIT_NPROC) count its own processes only.
SANDBOX_UID_BASE = int(os.environ.get("GD_SANDBOX_UID_BASE", "1900000000"))
SANDBOX_UID_SLOTS = 100_000

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _mount(source, target, fstype, flags, data=None) -> None:
    args = [None if a is None else a.encode() for a in (source, target, fstype)]
    if _libc.mount(args[0], args[1], args[2], flags, None if data is None else data.encode()) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} -> {target} ({fstype}, flags={flags}): {os.strerror(errno)}")


def prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}, {value}): {os.strerror(errno)}")


def unshare_namespaces() -> None:
    """New mount, PID, network and IPC namespaces for this process (the PID namespace takes
    effect for its next child, which becomes PID 1 there); mount events stay private to it."""
    if _libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare: {os.strerror(errno)}")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)


def _mount_points() -> list[tuple[str, set[str]]]:
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            mount_point = fields[4].replace("\\040", " ")
            options = set(fields[5].split(","))
            points.append((mount_point, options))
    return points


def mount_proc() -> None:
    """A read-only /proc of this PID namespace (it shows the submission's processes only)."""
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)


def make_read_only() -> None:
    """Remount every mount read-only in this namespace (per-mount flag; the host is untouched).
    /dev itself stays as it is (device nodes), the mounts below it (/dev/mqueue, /dev/pts) do
    not; /dev/shm is replaced by a private one, /proc by the namespace's own."""
    for point, options in sorted(_mount_points(), key=lambda p: p[0].count("/")):
        if point == "/dev" or point == "/proc" or point.startswith("/proc/"):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
        flags |= MS_NODEV if "nodev" in options else 0
        flags |= MS_NOEXEC if "noexec" in options else 0
        try:
            _mount(None, point, None, flags)
        except OSError:
            pass  # e.g. a mount point hidden under another one: covered by its parent


def hide(path: str) -> None:
    """Put an empty read-only tmpfs over a directory (or /dev/null over a file)."""
    if os.path.isdir(path):
        _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555")
    elif os.path.exists(path):
        _mount("/dev/null", path, None, MS_BIND)


#: the device nodes every run gets (no disks, no terminals, no memory or kernel devices)
SAFE_DEVICES = ("null", "zero", "full", "random", "urandom")


def minimal_dev(gpu: bool) -> None:
    """Replace /dev by a tmpfs holding only :data:`SAFE_DEVICES` (bound from the real nodes),
    the NVIDIA nodes when ``gpu`` is true, the usual fd/stdin/stdout/stderr links and a fresh
    /dev/shm; the tmpfs itself is then made read-only."""
    wanted = [n for n in SAFE_DEVICES if os.path.exists("/dev/" + n)]
    if gpu:
        wanted += sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))
    # keep a handle on each node before /dev is covered, to bind it back from the handle
    handles = {name: os.open("/dev/" + name, os.O_PATH | os.O_NOFOLLOW) for name in wanted}
    try:
        _mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=65536,mode=0755")
        for name, fd in handles.items():
            target = "/dev/" + name
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.mkdir(target)
                _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
            else:
                open(target, "w").close()
                _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND)
    finally:
        for fd in handles.values():
            os.close(fd)
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, "/dev/" + link)
    os.mkdir("/dev/shm")
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=268435456,mode=1777")
    _mount(None, "/dev", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)


def join_cgroups(paths: list[str]) -> None:
    for path in paths:
        with open(os.path.join(path, "cgroup.procs"), "w") as fh:
            fh.write(str(os.getpid()))


def set_limits(limits: dict) -> None:
    def setl(res, value):
        if value is not None:
            try:
                resource.setrlimit(res, (int(value), int(value)))
            except (ValueError, OSError):
                pass

    setl(resource.RLIMIT_NOFILE, limits.get("max_open_files"))
    setl(resource.RLIMIT_FSIZE, limits.get("max_file_bytes"))
    setl(resource.RLIMIT_CORE, 0)
    setl(resource.RLIMIT_AS, limits.get("address_space_bytes"))
    setl(resource.RLIMIT_NPROC, limits.get("nproc"))


def gpu_groups() -> list[int]:
    """The groups that open the NVIDIA devices where these are closed to other users (e.g.
    ``video`` with mode 0660): an unprivileged run needs them to use its GPU."""
    groups = set()
    for name in os.listdir("/dev") if os.path.isdir("/dev") else []:
        if name.startswith("nvidia"):
            st = os.stat(os.path.join("/dev", name))
            if stat.S_ISCHR(st.st_mode) and (st.st_mode & 0o006) != 0o006 and st.st_mode & 0o060 == 0o060:
                groups.add(st.st_gid)
    return sorted(groups - {0})


def drop_privileges(uid: int | None, groups: list[int] = ()) -> None:
    """Empty the capability bounding set, switch to ``uid`` (with the supplementary ``groups``)
    when one is given, drop every capability this process holds, and forbid gaining
    privileges (setuid binaries)."""
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    for cap in range(last + 1):
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    if uid is not None:
        os.setgroups(list(groups))
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)   # leaving uid 0 clears the capabilities too
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    # effective, permitted and inheritable sets emptied: this process keeps running (no exec), so
    # the bounding set alone would not take root's capabilities away from it
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    if _libc.capset(header, data) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"capset: {os.strerror(errno)}")
    prctl(PR_SET_NO_NEW_PRIVS, 1)


# --- an unprivileged user that can still run the interpreter -----------------------------------

def interpreter_roots() -> list[str]:
    """The folders the running interpreter reads code from: its installation, the environment,
    every import path, and the folders of the packages already imported (editable installs)."""
    candidates = {sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix,
                  os.path.dirname(sys.executable)}
    candidates.update(p for p in sys.path[1:] if p)
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and "." not in module.__name__:  # a top-level module: its folder's parent holds it
            folder = os.path.dirname(path)
            candidates.add(os.path.dirname(folder) if os.path.basename(path) == "__init__.py" else folder)
    roots = set()
    for path in candidates:
        real = os.path.realpath(path)
        if os.path.isdir(real):
            roots.add(real)
    # keep the outermost folders only
    ordered = sorted(roots)
    outer = [p for p in ordered if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in ordered)]
    return outer


def _others_may(path: str, bits: int) -> bool:
    try:
        return (os.stat(path).st_mode & bits) == bits
    except OSError:
        return False


def exposure_plan(roots: list[str]) -> tuple[dict[str, list[str]] | None, str]:
    """{closed folder: [roots under it]} to cover and bind back so that a user with no
    special rights can read every root; ``(None, why)`` where that is not possible."""
    plan: dict[str, list[str]] = {}
    for root in roots:
        if not _others_may(root, stat.S_IROTH | stat.S_IXOTH):
            return None, f"{root} is not readable by other users"
        parts = root.strip("/").split("/")
        for depth in range(len(parts) - 1):
            ancestor = "/" + "/".join(parts[:depth + 1])
            if not _others_may(ancestor, stat.S_IXOTH):
                plan.setdefault(ancestor, []).append(root)
                break
        else:
            if not _others_may("/", stat.S_IXOTH):
                return None, "/ is closed to other users"
    return plan, ""


def expose(plan: dict[str, list[str]]) -> None:
    """Cover each closed folder with an empty read-only tmpfs (mode 0755) and bind the roots
    under it back in place (recursively, so the secret paths hidden below stay hidden)."""
    for closed, roots in plan.items():
        handles = [(root, os.open(root, os.O_PATH | os.O_DIRECTORY)) for root in roots]
        _mount("tmpfs", closed, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
        for root, fd in handles:
            target = closed.rstrip("/") + "/" + os.path.relpath(root, closed)
            os.makedirs(target, mode=0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
            _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
            os.close(fd)
        _mount(None, closed, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=64k,mode=0755")


def user_plan(roots: list[str] | None = None) -> tuple[dict | None, str]:
    """(exposure plan, "") when submissions can run as an unprivileged user here, else (None, why).
    ``GD_SANDBOX_USER=root`` asks for root without capabilities (the fallback) on purpose."""
    if os.environ.get("GD_SANDBOX_USER", "").strip().lower() == "root":
        return None, "GD_SANDBOX_USER=root"
    if os.geteuid() != 0:
        return None, "the grader is not root"
    try:  # inside a user namespace only some uids exist (e.g. just 0 in a rootless container)
        mapped = False
        with open("/proc/self/uid_map") as fh:
            for line in fh:
                inside, _, count = (int(x) for x in line.split())
                if inside <= SANDBOX_UID_BASE and SANDBOX_UID_BASE + SANDBOX_UID_SLOTS <= inside + count:
                    mapped = True
        if not mapped:
            return None, f"uids {SANDBOX_UID_BASE}+ do not exist in this user namespace"
    except OSError:
        pass
    plan, why = exposure_plan(interpreter_roots() if roots is None else roots)
    if plan is None:
        return None, why
    return plan, ""


def user_description(plan: dict | None, why: str) -> str:
    if plan is None:
        return f"runs as root without capabilities ({why})"
    covered = f", with {', '.join(sorted(plan))} covered and the interpreter bound back" if plan else ""
    return f"runs as an unprivileged uid of its own ({SANDBOX_UID_BASE}+k){covered}"


# --- the whole sequence ---------------------------------------------------------------------------

def enter(config: dict, plan: dict | None, uid: int | None) -> str:
    """Steps 2a-2g of the module docstring, in the first process of the new namespaces.
    Returns the path of the private working directory (now the current directory)."""
    workdir_fd = os.open(config["workdir"], os.O_RDONLY | os.O_DIRECTORY)
    join_cgroups(config.get("cgroups", []))
    mount_proc()
    make_read_only()
    for path in config.get("hide", []):
        hide(path)
    # the private writable area replaces /tmp, unless the interpreter or the library live under
    # /tmp (e.g. a clone checked out there): then it goes over /mnt instead
    needed = [os.path.realpath(sys.executable), os.path.realpath(sys.prefix),
              os.path.dirname(os.path.dirname(os.path.realpath(__file__)))]
    base = "/tmp" if not any(p == "/tmp" or p.startswith("/tmp/") for p in needed) else "/mnt"
    _mount("tmpfs", base, "tmpfs", MS_NOSUID | MS_NODEV, f"size={config.get('tmp_bytes', 1 << 30)},mode=1777")
    work = base + "/work"
    os.mkdir(work)
    _mount(f"/proc/self/fd/{workdir_fd}", work, None, MS_BIND)
    _mount(None, work, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV)  # the bind copied "ro"
    os.close(workdir_fd)
    gpu_gids = gpu_groups() if config.get("gpu") else []  # read before /dev is replaced
    minimal_dev(bool(config.get("gpu")))
    if uid is not None:
        expose(plan or {})
        for folder, dirs, files in os.walk(work):  # the student's own files, and nothing else
            os.lchown(folder, uid, uid)
            for name in dirs + files:
                os.lchown(os.path.join(folder, name), uid, uid)
    os.chdir(work)
    set_limits(config.get("limits", {}))
    drop_privileges(uid, gpu_gids)
    return work


def probe() -> dict:
    """Can this machine give a process new mount, PID, network and IPC namespaces, and as whom would
    the submissions run? Done in a forked child, so this process is unchanged."""
    plan, why = user_plan()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            unshare_namespaces()
            os.write(w, b"ok")
        except OSError as err:
            os.write(w, str(err).encode()[:500])
        os._exit(0)
    os.close(w)
    answer = b""
    while chunk := os.read(r, 1024):
        answer += chunk
    os.close(r)
    os.waitpid(pid, 0)
    ok = answer == b"ok"
    return {"namespaces": ok, "why": "" if ok else answer.decode(errors="replace"),
            "user": user_description(plan, why), "unprivileged": plan is not None}


if __name__ == "__main__":
    if sys.argv[1:] == ["--probe"]:
        print(json.dumps(probe()))
    else:
        sys.exit("usage: python -m autograder.sandbox_init --probe")
