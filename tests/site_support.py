"""What the course website's tests share (``tests/test_site*.py``, ``tests/test_browser_site.py``).

- :func:`build_site` runs ``site/build.py`` as ``make site`` does, on any course folder;
- :func:`solution_lines` reads the instructors' notebooks (``solutions/``) for the code of their
  solution and hidden-test regions, and :func:`find_leaks` looks for those lines in a built site;
- :func:`external_references` lists what a built page would fetch from outside the site.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
MATHJAX = ROOT / "out" / "site-build" / "npm" / "node_modules" / "mathjax" / "es5"
BINARY_SUFFIXES = {
    ".png",
    ".jpg",
    ".jpeg",
    ".gif",
    ".svg",
    ".ico",
    ".woff",
    ".woff2",
    ".ttf",
    ".eot",
    ".otf",
    ".pdf",
    ".pickle",
    ".inv",
    ".doctree",
}
# A solution line this short ("pass", "else:", "return x") says nothing about the solution.
MIN_LINE = 12


def load_build_module():
    """site/build.py as a module (its helpers are tested directly)."""
    spec = importlib.util.spec_from_file_location("course_site_build", ROOT / "site" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_site(
    root: Path, out: Path, work: Path, *args: str, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """``site/build.py --root root --out out --work work ...``, MathJax from ``make site-setup``."""
    if not (MATHJAX / "tex-chtml-full.js").exists():
        raise AssertionError(f"MathJax is missing at {MATHJAX}: run `make site-setup` (make test does)")
    command = [
        sys.executable,
        str(ROOT / "site" / "build.py"),
        "--root",
        str(root),
        "--out",
        str(out),
        "--work",
        str(work),
        "--mathjax",
        str(MATHJAX),
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env or dict(os.environ))
    if check and result.returncode != 0:
        raise AssertionError(
            f"site/build.py failed ({result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
        )
    return result


# --------------------------------------------------------------------------- solutions
def _split(source: str) -> tuple[list[str], list[str]]:
    """A cell's lines inside its solution and hidden-test regions, and the lines outside them."""
    inside, outside, region = [], [], None
    for line in source.splitlines():
        if "### BEGIN SOLUTION" in line or "### BEGIN HIDDEN TESTS" in line:
            region = True
        elif "### END SOLUTION" in line or "### END HIDDEN TESTS" in line:
            region = None
        else:
            (inside if region else outside).append(line)
    return inside, outside


def solution_regions(solutions: Path = ROOT / "solutions") -> tuple[dict[str, set[str]], str]:
    """Every line of the instructors' solution and hidden-test regions, by notebook (a solution cell
    without BEGIN/END markers counts whole: nbgrader replaces all of it), and the text of the same
    notebooks outside those regions (what students are meant to see)."""
    found: dict[str, set[str]] = {}
    public: list[str] = []
    for notebook in sorted(solutions.glob("*/*.ipynb")):
        lines: set[str] = set()
        for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
            source = "".join(cell["source"])
            inside, outside = _split(source)
            if cell.get("metadata", {}).get("nbgrader", {}).get("solution") and "### BEGIN SOLUTION" not in source:
                inside, outside = inside + outside, []
            lines.update(inside)
            public += outside
        found[str(notebook.relative_to(solutions))] = lines
    return found, "\n".join(public)


def solution_lines(solutions: Path = ROOT / "solutions") -> dict[str, set[str]]:
    return solution_regions(solutions)[0]


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class _Text(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data):
        self.parts.append(data)


def page_text(path: Path) -> str:
    """What a file of the site says: an HTML page's text (syntax highlighting's spans taken out),
    a notebook's cell sources and outputs, anything else as it is."""
    raw = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".html":
        parser = _Text()
        parser.feed(raw)
        return "".join(parser.parts) + "\n" + raw
    if path.suffix == ".ipynb" or path.name.endswith(".ipynb.txt"):
        try:
            cells = json.loads(raw).get("cells", [])
        except json.JSONDecodeError:
            return raw
        parts = ["".join(cell.get("source", "")) for cell in cells]
        for cell in cells:
            for output in cell.get("outputs", []):
                parts.append("".join(output.get("text", "")))
                parts.append("".join(output.get("data", {}).get("text/plain", "")))
        return "\n".join(parts)
    return raw


def site_files(site: Path):
    for path in sorted(site.rglob("*")):
        if path.is_file() and path.suffix.lower() not in BINARY_SUFFIXES:
            yield path


def find_leaks(site: Path, lines: set[str], allowed_text: str = "") -> list[tuple[str, str]]:
    """(file, line) for every solution or hidden-test line (at least MIN_LINE characters) that a file
    of the site contains, except lines that the site's legitimate sources (``allowed_text``: the
    released assignments, the lectures, the README) contain too."""
    allowed = normalize(allowed_text)
    wanted = {normalize(line) for line in lines}
    wanted = {line for line in wanted if len(line) >= MIN_LINE and line not in allowed}
    leaks = []
    for path in site_files(site):
        text = normalize(page_text(path))
        leaks += [(str(path.relative_to(site)), line) for line in sorted(wanted) if line in text]
    return leaks


def legitimate_sources(root: Path = ROOT) -> str:
    """Text the site is meant to show that may repeat a line of a region (``w.grad = g.clone()`` in a
    public and a hidden test): the instructors' notebooks outside their regions, the lectures, the
    README, the site's own pages and gd_lib's source (every student has the library; a lecture shows
    its code with ``inspect.getsource``, e.g. the Lanczos loop an assignment asks students to write).
    (Not the released assignments: a line of a region that only a released notebook has is a leak.)"""
    parts = [solution_regions(root / "solutions")[1]]
    parts += [p.read_text(encoding="utf-8") for p in sorted((root / "gd_lib").rglob("*.py"))]
    parts += [page_text(path) for path in sorted((root / "lectures").glob("*.ipynb"))]
    parts.append((root / "README.md").read_text(encoding="utf-8"))
    parts += [p.read_text(encoding="utf-8") for p in sorted((ROOT / "site" / "pages").rglob("*.md"))]
    return "\n".join(parts)


# --------------------------------------------------------------------------- external references
class _References(HTMLParser):
    """URLs that a browser fetches while it renders a page (not links a reader may follow)."""

    FETCHED = {
        "script": ("src",),
        "link": ("href",),
        "img": ("src", "srcset"),
        "iframe": ("src",),
        "source": ("src", "srcset"),
        "video": ("src", "poster"),
        "audio": ("src",),
        "embed": ("src",),
        "object": ("data",),
        "track": ("src",),
    }

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "link" and (attrs.get("rel") or "").lower() in (
            "canonical",
            "alternate",
            "author",
            "license",
            "next",
            "prev",
            "index",
            "search",
            "help",
        ):
            return  # relations a browser does not load
        for name in self.FETCHED.get(tag, ()):
            if attrs.get(name):
                self.urls += [part.strip().split(" ")[0] for part in attrs[name].split(",")]
        if attrs.get("style"):
            self.urls += css_urls(attrs["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.urls += css_urls(data)


def css_urls(css: str) -> list[str]:
    return [m.strip("'\" ") for m in re.findall(r"url\(([^)]*)\)", css)] + re.findall(r"@import\s+['\"]([^'\"]+)", css)


def is_external(url: str) -> bool:
    parsed = urlparse(url)
    return url.startswith("//") or (parsed.scheme not in ("", "data", "blob") and parsed.scheme != "file")


def external_references(site: Path) -> list[tuple[str, str]]:
    """(file, url) for every resource an HTML page or a style sheet of the site would fetch from
    outside it (scripts, style sheets, fonts, images, frames)."""
    found = []
    for path in sorted(site.rglob("*.html")):
        parser = _References()
        parser.feed(path.read_text(encoding="utf-8", errors="replace"))
        found += [(str(path.relative_to(site)), url) for url in parser.urls if is_external(url)]
    for path in sorted(site.rglob("*.css")):
        found += [
            (str(path.relative_to(site)), url) for url in css_urls(path.read_text(errors="replace")) if is_external(url)
        ]
    return found
