"""First process inside a grading sandbox (trusted code, run as root in fresh namespaces).

``autograder.sandbox`` starts it through ``unshare --mount --net --pid
--fork --kill-child --mount-proc``, so it is PID 1 of a new PID namespace,
has a private mount table and a network namespace with no interfaces up.
It then, in order:

1. joins the submission's cgroups (process count and memory limits),
2. makes every mount read-only, hides the secret paths (solutions, the
   gradebook, other students' work, the grader's caches) under empty
   read-only tmpfs mounts, gives the submission a private writable ``/tmp``
   holding only its own working directory (``/tmp/work``) and a fresh
   ``/dev/shm``,
3. sets resource limits (open files, file size, core dumps, address space),
4. drops every capability (bounding set emptied, no-new-privs) or, where the
   interpreter is readable by it, switches to an unprivileged user,
5. and execs the cell runner. Without capabilities the student's code
   cannot undo any of the mounts.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import resource
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC = 32, 4096, 16384
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 38, 24

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def _mount(source, target, fstype, flags, data=None) -> None:
    args = [None if a is None else a.encode() for a in (source, target, fstype)]
    if _libc.mount(args[0], args[1], args[2], flags, None if data is None else data.encode()) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} -> {target} ({fstype}, flags={flags}): {os.strerror(errno)}")


def _mount_points() -> list[tuple[str, set[str]]]:
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            mount_point = fields[4].replace("\\040", " ")
            options = set(fields[5].split(","))
            points.append((mount_point, options))
    return points


def make_read_only() -> None:
    """Remount every mount read-only in this namespace (per-mount flag; the host is untouched)."""
    skip = ("/proc", "/sys", "/dev")
    for point, options in sorted(_mount_points(), key=lambda p: p[0].count("/")):
        if any(point == s or point.startswith(s + "/") for s in skip):
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


def join_cgroups(paths: list[str]) -> None:
    for path in paths:
        with open(os.path.join(path, "cgroup.procs"), "w") as fh:
            fh.write(str(os.getpid()))


def set_limits(limits: dict) -> None:
    def setl(res, value):
        if value is not None:
            soft_hard = (int(value), int(value))
            try:
                resource.setrlimit(res, soft_hard)
            except (ValueError, OSError):
                pass

    setl(resource.RLIMIT_NOFILE, limits.get("max_open_files"))
    setl(resource.RLIMIT_FSIZE, limits.get("max_file_bytes"))
    setl(resource.RLIMIT_CORE, 0)
    setl(resource.RLIMIT_AS, limits.get("address_space_bytes"))
    setl(resource.RLIMIT_NPROC, limits.get("nproc"))


def drop_privileges(uid: int | None) -> None:
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if uid is None:
        last = int(open("/proc/sys/kernel/cap_last_cap").read())
        for cap in range(last + 1):
            _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
        # exec as root with an empty bounding set gives the new program no capabilities


def main() -> None:
    config = json.loads(sys.argv[1])
    workdir_fd = os.open(config["workdir"], os.O_RDONLY | os.O_DIRECTORY)
    join_cgroups(config.get("cgroups", []))
    make_read_only()
    for path in config.get("hide", []):
        hide(path)
    # the private writable area replaces /tmp, unless the interpreter or the library live under
    # /tmp (e.g. a clone checked out there): then it goes over /mnt instead
    needed = [os.path.realpath(config["argv"][0]), os.path.realpath(sys.prefix),
              os.path.dirname(os.path.dirname(os.path.realpath(__file__)))]
    base = "/tmp" if not any(p == "/tmp" or p.startswith("/tmp/") for p in needed) else "/mnt"
    _mount("tmpfs", base, "tmpfs", MS_NOSUID | MS_NODEV, f"size={config.get('tmp_bytes', 1 << 30)},mode=1777")
    work = base + "/work"
    os.mkdir(work)
    _mount(f"/proc/self/fd/{workdir_fd}", work, None, MS_BIND)
    _mount(None, work, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV)  # the bind copied "ro"
    os.close(workdir_fd)
    if os.path.isdir("/dev/shm"):
        try:
            _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=268435456,mode=1777")
        except OSError:
            pass
    os.chdir(work)
    set_limits(config.get("limits", {}))
    drop_privileges(config.get("uid"))
    env = {k: v.replace("/tmp/work", work) for k, v in config["env"].items()}
    os.execve(config["argv"][0], config["argv"], env)


if __name__ == "__main__":
    main()
