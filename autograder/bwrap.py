"""What a submission sees: the bubblewrap sandbox of one grading run.

`bubblewrap <https://github.com/containers/bubblewrap>`_ (``bwrap``, Debian's
``bubblewrap``, the sandbox Flatpak uses) builds the sandbox: new user (where the
grader is not root), PID, mount, network, IPC and UTS namespaces, and a root file
system that holds only what is bound into it:

- the system's ``/usr`` (and the ``/bin``, ``/lib*`` links), read-only, and from
  ``/etc`` only what the dynamic loader needs (no account or host files);
- the Python interpreter's folders, read-only, with every ``site-packages``
  folder reduced to the packages the grading process has imported (torch,
  numpy, IPython, ``gd_lib``, ... and what they depend on) and their metadata:
  other installed packages (other optimizer libraries among them) are not there;
- the course's own packages (``gd_lib``, ``autograder``) as the folders of those
  packages only: never the repository around them (no ``solutions/``, ``.git``,
  ``course/``, caches);
- the library modules an assignment asks its students to write, replaced by
  stubs (:mod:`autograder.forbidden`), their compiled ``__pycache__`` hidden;
- a fresh ``/proc`` of the run's own processes, a minimal ``/dev`` (null, zero,
  full, random, urandom; the GPU's nodes for a GPU run), ``/sys`` only where the
  CPU (or GPU) needs it;
- one size-limited tmpfs for everything writable: ``/tmp`` (the working directory
  ``/tmp/work``) and ``/dev/shm`` (a folder of the same tmpfs), so that a
  submission can write at most ``tmp_bytes`` in all, in memory, never on the host disk;
- the assignment's data files, read-only in ``/run/grader/data`` (copied into the
  working directory when the run starts).

No network interface is up. Where the grader is not root, bubblewrap makes the
namespaces as an unprivileged user (user namespaces; ``--disable-userns``: none can
be made inside); as root it makes them directly, and the run drops to an
unprivileged uid of its own (:mod:`autograder.confine`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

#: what the dynamic loader and the C library need from /etc, and nothing else
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime")
#: device nodes every run gets
SAFE_DEVICES = ("null", "zero", "full", "random", "urandom")
#: site-packages entries kept whenever present: shared libraries that torch and numpy load lazily
#: (CUDA's wheels, Triton), not Python packages a submission would reach for
ALWAYS_VISIBLE_PREFIXES = ("nvidia", "triton", "cuda", "cusparselt")


def bwrap_path() -> str | None:
    return shutil.which("bwrap") or next((p for p in ("/usr/bin/bwrap",) if os.access(p, os.X_OK)), None)


def _site_dirs() -> list[str]:
    """Every site-packages-like folder of this interpreter (the environment's and the base's)."""
    dirs = set()
    for scheme_path in ("purelib", "platlib"):
        for vars_ in ({}, {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}):
            try:
                dirs.add(sysconfig.get_paths(vars=vars_)[scheme_path])
            except KeyError:
                pass
    dirs.update(p for p in sys.path if p and (p.endswith("site-packages") or p.endswith("dist-packages")))
    return sorted(os.path.realpath(d) for d in dirs if os.path.isdir(d))


def _module_location(module) -> list[str]:
    """The file or folder(s) a top-level module was imported from."""
    path = getattr(module, "__file__", None)
    if path:
        path = os.path.realpath(path)
        return [os.path.dirname(path)] if os.path.basename(path).startswith("__init__.") else [path]
    return [os.path.realpath(p) for p in getattr(module, "__path__", []) or []]  # namespace packages


def _normalize(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


@dataclass
class View:
    """The read-only part of the sandbox (the same for every run of a grading session)."""

    prefixes: list[str]  # interpreter folders bound whole (outside /usr)
    site_dirs: dict[str, list[str]]  # site-packages folder -> the entries kept
    package_dirs: list[str]  # packages imported from elsewhere (editable installs)
    overlays: dict[str, str] = field(default_factory=dict)  # original file -> stub file bound over it
    empty_dirs: list[str] = field(default_factory=list)  # folders shown empty (forbidden bytecode)
    empty_dir_source: str = ""

    @classmethod
    def of_this_process(
        cls, overlays: dict[str, str] | None = None, empty_dirs=(), empty_dir_source: str = "", extra_modules=()
    ) -> View:
        """The view for runs forked from this process: what it has imported (plus ``extra_modules``'
        folders) stays visible, nothing else of the environments."""
        site_dirs = _site_dirs()
        stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
        prefixes = sorted(
            {
                os.path.realpath(p)
                for p in (
                    sys.base_prefix,
                    sys.base_exec_prefix,
                    sys.prefix,
                    sys.exec_prefix,
                    os.path.dirname(sys.executable),
                )
                if os.path.isdir(p)
            }
        )
        top_level = {name.partition(".")[0] for name in list(sys.modules)} | set(extra_modules)
        kept: dict[str, set[str]] = {d: set() for d in site_dirs}
        package_dirs: set[str] = set()
        visible_dists: set[str] = set()
        for name in sorted(top_level):
            module = sys.modules.get(name)
            if module is None:
                continue
            for location in _module_location(module):
                parent = os.path.dirname(location)
                if parent in kept:
                    kept[parent].add(os.path.basename(location))
                    visible_dists.add(_normalize(name))
                elif location.startswith(stdlib + os.sep) or location == stdlib:
                    continue
                elif any(location.startswith(d + os.sep) for d in site_dirs):
                    continue  # inside a kept entry already
                elif os.path.exists(location):
                    package_dirs.add(location)
        try:
            from importlib.metadata import packages_distributions

            for top, dists in packages_distributions().items():
                if _normalize(top) in visible_dists:
                    visible_dists.update(_normalize(d) for d in dists)
        except Exception:  # metadata is a convenience for the runs, not a requirement
            pass
        for site in site_dirs:
            for entry in os.listdir(site):
                base = entry.split("-")[0] if entry.endswith((".dist-info", ".egg-info")) else entry
                if entry.endswith(".libs"):
                    base = entry[:-5]
                if (
                    entry.endswith((".dist-info", ".egg-info", ".libs")) and _normalize(base) in visible_dists
                ) or entry.startswith(ALWAYS_VISIBLE_PREFIXES):
                    kept[site].add(entry)
        # the prefixes hold the site-packages folders: those are rebuilt from their kept entries
        return cls(
            prefixes=[p for p in prefixes if not p.startswith("/usr/") and p != "/usr"],
            site_dirs={d: sorted(e for e in entries if not e.endswith(".pth")) for d, entries in kept.items()},
            package_dirs=sorted(package_dirs),
            overlays=dict(overlays or {}),
            empty_dirs=list(empty_dirs),
            empty_dir_source=empty_dir_source,
        )

    def to_json(self) -> str:
        return json.dumps(self.__dict__)


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts[1:]
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


def _system_args() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    args += ["--perms", "0755", "--dir", "/etc"]
    for name in ETC_FILES:
        path = "/etc/" + name
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    return args


def command(
    view: View, *, work_bytes: int, data_dir: str | None, gpu: bool, unprivileged: bool, holder: list[str], info_fd: int
) -> list[str]:
    """The ``bwrap`` command line of one run: the sandbox of the module docstring, whose first
    process runs ``holder`` (a process that only keeps the namespaces alive for the run)."""
    args = [bwrap_path() or "bwrap"]
    if unprivileged:
        args += ["--unshare-user", "--disable-userns"]
    args += [
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "grader",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--as-pid-1",
        "--info-fd",
        str(info_fd),
    ]
    args += _system_args()
    # the one writable area: a tmpfs of work_bytes for /tmp (the working directory) and /dev/shm. Mounted
    # before the read-only folders, so that an interpreter or a course checked out under /tmp is bound
    # on top of it rather than hidden by it.
    args += [
        "--size",
        str(int(work_bytes)),
        "--perms",
        "1777",
        "--tmpfs",
        "/tmp",
        "--perms",
        "1777",
        "--dir",
        "/tmp/.shm",
    ]
    made = {"/tmp"}

    def dirs_for(path):
        out = []
        for parent in _ancestors(path):
            if parent not in made and not parent.startswith("/usr/") and parent != "/usr":
                made.add(parent)
                out += ["--perms", "0755", "--dir", parent]
        return out

    for prefix in view.prefixes:
        args += dirs_for(prefix) + ["--ro-bind", prefix, prefix]
    for site, entries in view.site_dirs.items():
        args += dirs_for(site) + ["--perms", "0755", "--tmpfs", site]
        for entry in entries:
            args += ["--ro-bind", f"{site}/{entry}", f"{site}/{entry}"]
        args += ["--remount-ro", site]
    for package in view.package_dirs:
        args += dirs_for(package) + ["--ro-bind", package, package]
    for original, stub in view.overlays.items():
        args += ["--ro-bind", stub, original]
    for folder in view.empty_dirs:
        args += ["--ro-bind", view.empty_dir_source, folder]
    args += ["--size", "65536", "--perms", "0755", "--tmpfs", "/dev"]
    devices = [d for d in SAFE_DEVICES if os.path.exists("/dev/" + d)]
    if gpu:
        devices += sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))
    for name in devices:
        args += ["--dev-bind", "/dev/" + name, "/dev/" + name]
    for link, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        args += ["--symlink", target, "/dev/" + link]
    args += ["--symlink", "/tmp/.shm", "/dev/shm", "--remount-ro", "/dev"]
    args += ["--proc", "/proc"]
    if gpu and os.path.isdir("/sys"):
        args += ["--ro-bind", "/sys", "/sys"]
    elif os.path.isdir("/sys/devices/system/cpu"):
        args += ["--ro-bind", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
    if data_dir:
        args += [
            "--perms",
            "0755",
            "--dir",
            "/run",
            "--perms",
            "0755",
            "--dir",
            "/run/grader",
            "--ro-bind",
            data_dir,
            "/run/grader/data",
        ]
    args += ["--remount-ro", "/", "--chdir", "/", "--", *holder]
    return args


@lru_cache(maxsize=1)
def probe() -> tuple[bool, str]:
    """(True, how) when bubblewrap can build the sandbox here, else (False, why not)."""
    path = bwrap_path()
    if path is None:
        return False, "bubblewrap (bwrap) is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    unprivileged = os.geteuid() != 0
    args = [path] + (["--unshare-user", "--disable-userns"] if unprivileged else [])
    args += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--ro-bind", "/", "/", "--proc", "/proc", "true"]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"bubblewrap did not run: {err}"
    if proc.returncode != 0:
        hint = (
            " (user namespaces are disabled for unprivileged users here: "
            "sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces > 0)"
            if unprivileged
            else ""
        )
        return False, f"bubblewrap cannot create the sandbox: {proc.stderr.strip()[-300:]}{hint}"
    if unprivileged:
        return True, "bubblewrap with user namespaces (grading as an unprivileged user)"
    return True, "bubblewrap as root; each submission runs as an unprivileged uid of its own"
