"""The steps a grading run takes in its own process to enter the sandbox bubblewrap built.

Trusted code, run in a process forked from a zygote (:mod:`autograder.zygote`),
never after student code:

- :func:`join` moves the run's supervising process into the namespaces of a
  bubblewrap sandbox (``setns``): the user namespaces (the one owning the others,
  then bubblewrap's nested one, in which no further user namespace can be made),
  then PID, mount, network, IPC and UTS. After the mount namespace its root and
  working directory are the sandbox's root: nothing of the host's file system
  is reachable but what bubblewrap bound into it. Its children are born in the
  sandbox's PID namespace, which dies with the sandbox's first process.
- :func:`drop_privileges` (in the runner, the child that will run the cells): an
  unprivileged uid of its own where the grader is root, no capabilities, no new
  privileges, and a seccomp filter (:func:`deny_kernel_surface`, libseccomp) that refuses
  the calls a sandboxed process never needs and that would reach around the
  sandbox or into rarely hardened kernel code: new namespaces, mounts, ptrace,
  keyrings, BPF, perf events, io_uring, module and kexec loading.
- :func:`set_limits`: resource limits (open files, file size, core dumps, processes,
  address space where no memory cgroup limits the run).

Why a join rather than letting bubblewrap start the runner: the runner is a fork of
a process that imported torch and the library once (seconds of CPU per submission
saved); a fork cannot be started by another program, but it can enter the
namespaces another program set up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as errno_module
import fcntl
import os
import resource

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
NS_GET_USERNS = 0xB701  # ioctl on a namespace file: the user namespace that owns it
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]

NAMESPACES = {"pid": CLONE_NEWPID, "mnt": CLONE_NEWNS, "net": CLONE_NEWNET, "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS}


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, value, 0, 0, 0), f"prctl({option}, {value})")


def open_namespaces(pid: int) -> dict[str, int]:
    """Descriptors of the namespaces of process ``pid`` (opened before joining any: once in the
    sandbox's mount namespace, the host's /proc is out of sight)."""
    fds = {name: os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC) for name in (*NAMESPACES, "user")}
    try:
        fds["owner"] = fcntl.ioctl(fds["pid"], NS_GET_USERNS)
    except OSError:
        fds["owner"] = -1
    return fds


def join(fds: dict[str, int]) -> None:
    """Enter the sandbox's namespaces (see the module docstring). The caller must be
    single-threaded; it keeps its uid (the runner drops it later)."""
    # this process's own namespaces, read before joining any (the sandbox's /proc does not show it)
    own = {name: os.stat(f"/proc/self/ns/{name}").st_ino for name in (*NAMESPACES, "user")}

    def same(fd: int, name: str) -> bool:
        return own[name] == os.fstat(fd).st_ino

    if fds["owner"] >= 0 and not same(fds["owner"], "user"):
        # the user namespace owning the PID and mount namespaces: the rights to join them
        _check(_libc.setns(fds["owner"], CLONE_NEWUSER), "setns(owning user namespace)")
    for name, flag in NAMESPACES.items():
        if not same(fds[name], name):
            _check(_libc.setns(fds[name], flag), f"setns({name})")
    if not same(fds["user"], "user"):
        # bubblewrap's innermost user namespace (--disable-userns: no namespace can be made in it)
        _check(_libc.setns(fds["user"], CLONE_NEWUSER), "setns(user)")
    for fd in fds.values():
        if fd >= 0:
            os.close(fd)


# --- seccomp, through libseccomp ----------------------------------------------------------------

SCMP_ACT_ALLOW = 0x7FFF0000


def SCMP_ACT_ERRNO(err: int) -> int:  # noqa: N802 - libseccomp's name
    return 0x00050000 | (err & 0xFFFF)


#: refused with EPERM: nothing a notebook needs, everything a sandbox escape or a kernel exploit likes
DENIED_SYSCALLS = (
    "unshare",
    "setns",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "syslog",
    "quotactl",
    "quotactl_fd",
    "lookup_dcookie",
    "open_by_handle_at",
    "name_to_handle_at",
    "personality",
    "uselib",
    "vhangup",
    "fanotify_init",
    "setdomainname",
    "sethostname",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "pidfd_getfd",
)
#: clone() is allowed without any of these flags; clone3() (flags in memory) answers ENOSYS,
#: so that the C library falls back to clone()
_NAMESPACE_FLAGS = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | 0x02000000


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


SCMP_CMP_MASKED_EQ = 7


def _libseccomp():
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def seccomp_available() -> bool:
    return _libseccomp() is not None


def deny_kernel_surface() -> None:
    """Load the seccomp filter of the module docstring (raises OSError when it cannot)."""
    lib = _libseccomp()
    if lib is None:
        raise OSError(errno_module.ENOSYS, "libseccomp is not installed")
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError(errno_module.ENOMEM, "seccomp_init failed")
    try:
        deny = SCMP_ACT_ERRNO(errno_module.EPERM)
        for name in DENIED_SYSCALLS:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:
                continue  # not a system call on this architecture
            ret = lib.seccomp_rule_add(ctx, deny, nr, 0)
            if ret < 0:
                raise OSError(-ret, f"seccomp rule for {name}")
        clone3 = lib.seccomp_syscall_resolve_name(b"clone3")
        if clone3 >= 0:
            _check_seccomp(lib.seccomp_rule_add(ctx, SCMP_ACT_ERRNO(errno_module.ENOSYS), clone3, 0), "clone3")
        clone = lib.seccomp_syscall_resolve_name(b"clone")
        if clone >= 0:
            # clone(flags, ...): the flags are the first argument on every architecture libseccomp knows
            for bit in _bits(_NAMESPACE_FLAGS):
                cmp = (_ArgCmp * 1)(_ArgCmp(0, SCMP_CMP_MASKED_EQ, bit, bit))
                _check_seccomp(lib.seccomp_rule_add_array(ctx, deny, clone, 1, cmp), "clone")
        _check_seccomp(lib.seccomp_load(ctx), "seccomp_load")
    finally:
        lib.seccomp_release(ctx)


def _bits(mask: int) -> list[int]:
    return [1 << i for i in range(mask.bit_length()) if mask >> i & 1]


def _check_seccomp(ret: int, what: str) -> None:
    if ret < 0:
        raise OSError(-ret, f"seccomp: {what}: {os.strerror(-ret)}")


# --- privileges and limits ---------------------------------------------------------------------


def drop_privileges(uid: int | None, groups: list[int] = ()) -> None:
    """Become ``uid`` (with the supplementary ``groups``) when given, empty every capability
    set and the bounding set, forbid gaining privileges (setuid programs), load the seccomp filter."""
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    for cap in range(last + 1):  # while this process still holds CAP_SETPCAP
        _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"dropping capability {cap} from the bounding set")
    if uid is not None:
        os.setgroups(list(groups))
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # leaving uid 0 clears the capabilities too
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(_libc.capset(header, data), "capset")
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    deny_kernel_surface()


def set_limits(limits: dict) -> None:
    """``limits``: max_open_files, max_file_bytes, address_space_bytes, nproc (None: unchanged)."""
    for res, value in [
        (resource.RLIMIT_NOFILE, limits.get("max_open_files")),
        (resource.RLIMIT_FSIZE, limits.get("max_file_bytes")),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_AS, limits.get("address_space_bytes")),
        (resource.RLIMIT_NPROC, limits.get("nproc")),
    ]:
        if value is not None:
            try:
                resource.setrlimit(res, (int(value), int(value)))
            except (ValueError, OSError):
                pass
