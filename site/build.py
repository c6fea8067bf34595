"""Build the course website (what ``make site`` runs).

    python site/build.py [--mode quick|full|auto] [--hub-url URL] [--repository URL] [--branch NAME]
                         [--execute cache|off] [--root REPO] [--out out/site] [--work out/site-build]
                         [--mathjax DIR]

1. *Stage* the sources into ``WORK/src``, laid out as in the repository: the front page and
   its companions (``site/pages/``), every lecture (``lectures/[0-9]*.ipynb``), every released
   assignment notebook (``assignments/*/*.ipynb``: what students get, never ``solutions/``), and
   the instructor guide cut from sections of ``README.md``. A file is rewritten only when its
   content changed, so Sphinx reads again only what changed.
2. *Build* ``WORK/html`` with Sphinx and MyST-NB (``site/conf.py``). The lectures are executed
   through jupyter-cache in ``WORK/cache/<mode>-<library>``: a lecture whose code cells are in
   the cache for this mode (quick or full) and this version of ``gd_lib`` is not executed again.
   (The outputs depend on the library as much as on the notebook: after a change of ``gd_lib``
   every lecture runs again, once.)
3. *Publish*: ``WORK/html`` is copied to ``OUT``; the summary says how many notebooks ran.

Quick mode is ``GD_QUICK=1`` (seconds to a minute per lecture on a 2-core CPU); ``--mode auto``
picks full mode when a CUDA device is there and quick mode otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# (page, README heading): the instructor guide, cut from the README so that it never drifts from it
INSTRUCTOR_SECTIONS = [
    ("grading", "For instructors: grading"),
    ("hub", "The course on JupyterHub"),
    ("site", "The course website"),
]
# Markers that only an instructor's notebook has (nbgrader removes them, with what they enclose, on release)
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION", "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
PLACEHOLDER_REPOSITORY = "https://github.com/CHANGE-ME/guided-descent"
# where a repository host shows a file of a branch: <repository>/<this>/<branch>/<path>
FILE_PATHS = {"github": "blob", "gitlab": "-/blob", "bitbucket": "src"}


class SiteError(Exception):
    """A problem with the course's sources or the build's settings, said in words."""


# --------------------------------------------------------------------------- staging
def write_if_changed(path: Path, data: bytes, mtime: float | None = None) -> bool:
    """Write ``data`` to ``path`` unless it already holds exactly that (keeping its time stamp)."""
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return True


def normalize_repository(url: str) -> str:
    """The repository as nbgitpuller and the book theme want it: no trailing slash, no '.git'
    (nbgitpuller clones into the URL's last part without '.git'; the link's path must name that folder);
    git@host:org/repo becomes https://host/org/repo, a folder /srv/git/repo becomes file:///srv/git/repo."""
    url = url.strip().rstrip("/")
    match = re.fullmatch(r"[\w.-]+@([\w.-]+):(.+)", url)
    if match:
        url = f"https://{match.group(1)}/{match.group(2)}"
    elif url.startswith("/"):  # a folder on the hub's machine (make hub on one server)
        url = "file://" + url
    return url[:-4] if url.endswith(".git") else url


def readme_section(readme: str, heading: str, file_url) -> str:
    """The README's ``## heading`` section (to the next ``## ``), one heading level up, with links
    to repository files made absolute (``file_url(path)``): the page lives on the site, not beside them."""
    out, inside, fence = [], False, False
    for line in readme.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        if not fence and line.startswith("## "):
            if inside:
                break
            inside = line[3:].strip().lower().startswith(heading.lower())
        if inside:
            out.append(line[1:] if not fence and re.match(r"#{2,6} ", line) else line)
    if not out:
        raise SiteError(
            f"README.md has no section '## {heading}' (the site's instructor guide is cut from it; "
            "a renamed section needs its new name in site/build.py's INSTRUCTOR_SECTIONS)"
        )

    def absolute(match):
        label, target = match.group(1), match.group(2)
        if target.startswith("#"):
            target = file_url("README.md") + target
        elif not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:|/", target):
            target = file_url(target)
        return f"[{label}]({target})"

    return re.sub(r"\[([^\]]*)\]\(([^)\s]+)\)", absolute, "\n".join(out).rstrip() + "\n")


def stage(root: Path, src: Path, file_url) -> dict:
    """Lay the site's sources out in ``src``; returns what was staged (lists of relative paths)."""
    staged: dict[str, list[str]] = {"pages": [], "lectures": [], "assignments": [], "instructors": []}
    keep: set[Path] = set()

    for page in sorted((HERE / "pages").rglob("*")):
        if page.is_file():
            rel = page.relative_to(HERE / "pages")
            write_if_changed(src / rel, page.read_bytes(), page.stat().st_mtime)
            keep.add(src / rel)
            staged["pages"].append(str(rel))

    lectures = sorted((root / "lectures").glob("[0-9]*.ipynb"))
    if not lectures:
        raise SiteError(f"no lectures in {root / 'lectures'} (expected NN_topic.ipynb files)")
    for notebook in lectures:
        rel = Path("lectures") / notebook.name
        write_if_changed(src / rel, notebook.read_bytes(), notebook.stat().st_mtime)
        keep.add(src / rel)
        staged["lectures"].append(str(rel))

    for notebook in sorted((root / "assignments").glob("*/*.ipynb")):
        text = notebook.read_text(encoding="utf-8")
        leaked = [marker for marker in SOLUTION_MARKERS if marker in text]
        if leaked:
            raise SiteError(
                f"{notebook} contains {leaked[0]!r}: assignments/ must hold released notebooks "
                "(make release), never an instructor's copy"
            )
        rel = notebook.relative_to(root)
        write_if_changed(src / rel, text.encode("utf-8"), notebook.stat().st_mtime)
        keep.add(src / rel)
        staged["assignments"].append(str(rel))

    readme = (root / "README.md").read_text(encoding="utf-8")
    for page, heading in INSTRUCTOR_SECTIONS:
        rel = Path("instructors") / f"{page}.md"
        note = (
            f"\n```{{note}}\nThis page is the section *{heading}* of the course repository's "
            f"[README]({file_url('README.md')}).\n```\n\n"
        )
        section = readme_section(readme, heading, file_url)
        title, _, rest = section.partition("\n")
        write_if_changed(src / rel, (title + "\n" + note + rest).encode("utf-8"))
        keep.add(src / rel)
        staged["instructors"].append(str(rel))

    for path in sorted(src.rglob("*"), reverse=True):  # lectures or assignments that are gone
        if path.is_file() and path not in keep:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return staged


# --------------------------------------------------------------------------- execution cache
def library_fingerprint(root: Path) -> str:
    """A short hash of gd_lib's sources: the lectures' outputs depend on them."""
    digest = hashlib.sha256()
    for path in sorted((root / "gd_lib").rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def cache_records(cache_path: Path) -> dict[int, str]:
    """jupyter-cache's executed notebooks: record id -> notebook."""
    if not cache_path.exists():
        return {}
    from jupyter_cache import get_cache

    return {record.pk: record.uri for record in get_cache(str(cache_path)).list_cache_records()}


def resolve_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    import torch

    return "full" if torch.cuda.is_available() else "quick"


def kernel_environment(mode: str, environ) -> dict:
    """The environment of Sphinx and of the lectures' kernels: quick or full mode, figures drawn
    inline (no MPLBACKEND from a test run), this environment's Python first on PATH."""
    env = {key: value for key, value in environ.items() if key != "MPLBACKEND"}
    env["GD_QUICK"] = "1" if mode == "quick" else "0"
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def describe_machine() -> str:
    """CPU cores and GPU, as the run-time table of the front page names them."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores, {gpu}"


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mode",
        choices=("quick", "full", "auto"),
        default="auto",
        help="quick: GD_QUICK=1; full: the lectures' full scale (for a GPU); "
        "auto (default): full when CUDA is available, else quick",
    )
    parser.add_argument(
        "--execute",
        choices=("cache", "off"),
        default="cache",
        help="cache (default): execute the lectures the cache lacks; off: no outputs",
    )
    parser.add_argument(
        "--hub-url",
        default="http://127.0.0.1:8000",
        help="the course's JupyterHub, which the lectures' 'open on the hub' links go to",
    )
    parser.add_argument(
        "--repository", default="", help="the course repository the hub pulls with nbgitpuller (default: git's origin)"
    )
    parser.add_argument("--branch", default="main", help="its branch (default: main)")
    parser.add_argument(
        "--provider",
        default="github",
        choices=("github", "gitlab", "bitbucket"),
        help="how the repository's web pages are laid out, for links to files (default: github)",
    )
    parser.add_argument("--root", type=Path, default=REPO, help="the course repository to build from")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "site", help="where the site goes")
    parser.add_argument(
        "--work",
        type=Path,
        default=REPO / "out" / "site-build",
        help="staged sources, Sphinx's state, the execution cache",
    )
    parser.add_argument(
        "--mathjax",
        type=Path,
        default=None,
        help="MathJax's es5 folder (default: WORK/npm/node_modules/mathjax/es5, from make site)",
    )
    parser.add_argument("--timeout", type=int, default=3600, help="seconds a lecture's cell may run")
    parser.add_argument("--strict", action="store_true", help="fail on any Sphinx warning")
    return parser.parse_args(argv)


def origin_of(root: Path) -> str:
    result = subprocess.run(["git", "-C", str(root), "remote", "get-url", "origin"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else ""


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    root, out, work = args.root.resolve(), args.out.resolve(), args.work.resolve()
    mathjax = (args.mathjax or work / "npm" / "node_modules" / "mathjax" / "es5").resolve()
    if not (mathjax / "tex-chtml-full.js").exists():
        raise SiteError(f"MathJax is not at {mathjax}: `make site` installs it from npm (site/package.json)")
    repository = normalize_repository(args.repository or origin_of(root) or PLACEHOLDER_REPOSITORY)
    if repository == PLACEHOLDER_REPOSITORY:
        print(
            f"note: no repository given and no git origin: the hub links name {repository} "
            "(set SITE_REPO=... for make site)",
            file=sys.stderr,
        )
    mode = resolve_mode(args.mode)

    src = work / "src"
    file_url = f"{repository}/{FILE_PATHS[args.provider]}/{args.branch}/"
    staged = stage(root, src, lambda path: file_url + path)
    static = work / "static"
    if (
        not (static / "mathjax" / "tex-chtml-full.js").exists()
        or (static / "mathjax" / "tex-chtml-full.js").read_bytes() != (mathjax / "tex-chtml-full.js").read_bytes()
    ):
        shutil.rmtree(static / "mathjax", ignore_errors=True)
        shutil.copytree(mathjax, static / "mathjax")

    fingerprint = library_fingerprint(root)
    cache = work / "cache" / f"{mode}-{fingerprint}"
    for old in (work / "cache").glob(f"{mode}-*"):  # the same mode for an older library
        if old != cache:
            shutil.rmtree(old)
    before = cache_records(cache)

    env = kernel_environment(mode, os.environ)
    env.update(
        GD_SITE_MODE=mode,
        GD_SITE_EXECUTE=args.execute,
        GD_SITE_CACHE=str(cache),
        GD_SITE_TIMEOUT=str(args.timeout),
        GD_SITE_REPOSITORY=repository,
        GD_SITE_BRANCH=args.branch,
        GD_SITE_PROVIDER=args.provider,
        GD_SITE_HUB_URL=args.hub_url.rstrip("/"),
        GD_SITE_STATIC=str(static),
        GD_SITE_FILE_URL=file_url,
        GD_SITE_MACHINE=describe_machine(),
        PYTHONUNBUFFERED="1",
    )
    html = work / "html"
    command = [
        sys.executable,
        "-m",
        "sphinx",
        "-b",
        "html",
        "-c",
        str(HERE),
        "-d",
        str(work / "doctrees"),
        "-j",
        "1",
        str(src),
        str(html),
    ]
    if args.strict:
        command[4:4] = ["-W", "--keep-going"]
    print(
        f"building the course website in {mode} mode: {len(staged['lectures'])} lectures, "
        f"{len(staged['assignments'])} assignment notebooks; execution cache {cache.relative_to(work)}",
        flush=True,
    )
    result = subprocess.run(command, env=env)
    if result.returncode != 0:
        print(f"make site: Sphinx failed (exit {result.returncode}); see above", file=sys.stderr)
        return result.returncode

    executed = sorted(uri for pk, uri in cache_records(cache).items() if pk not in before)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(html, out)
    (out / ".nojekyll").touch()  # a GitHub Pages host serves _static/ as it is
    (out / "_course_build.json").write_text(
        json.dumps(
            {
                "mode": mode,
                "executed": [Path(uri).name for uri in executed],
                "library": fingerprint,
                "repository": repository,
                "branch": args.branch,
                "hub_url": args.hub_url.rstrip("/"),
                "seconds": round(time.monotonic() - start, 1),
            },
            indent=1,
        )
        + "\n"
    )
    if args.execute == "off":
        ran = "lectures not executed (--execute off)"
    else:
        ran = f"executed {len(executed)} notebook(s)" + (
            ": " + ", ".join(Path(uri).name for uri in executed) if executed else ", the rest from the cache"
        )
    print(f"site: {out / 'index.html'} ({mode} mode; {ran}; {time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SiteError as error:
        print(f"make site: {error}", file=sys.stderr)
        sys.exit(2)
