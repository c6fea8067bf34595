"""Sphinx configuration of the course website (Sphinx + MyST-NB + the book theme).

Build it with ``make site``: ``site/build.py`` stages the lectures, the released
assignments and the instructor pages into a scratch source folder, and sets the
``GD_SITE_*`` variables read here (what to execute, where the cache is, the hub
and the repository that the "open on the hub" links name). Run on its own,
``sphinx-build`` stops with a message that says so.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _setting(name: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise RuntimeError(
            f"{name} is not set: build the site with `make site` (site/build.py), not with sphinx-build directly"
        )
    return value


MODE = _setting("GD_SITE_MODE")  # quick | full: how the lectures were executed
EXECUTE = _setting("GD_SITE_EXECUTE")  # cache (execute what the cache lacks) | off
REPOSITORY = _setting("GD_SITE_REPOSITORY")
BRANCH = _setting("GD_SITE_BRANCH")
HUB_URL = _setting("GD_SITE_HUB_URL")
STATIC = _setting("GD_SITE_STATIC")  # a folder with mathjax/ in it (from npm, see site/package.json)

project = "Guided Descent"
author = "the Guided Descent course team"
copyright = "the Guided Descent course team"
root_doc = "index"
language = "en"
extensions = ["myst_nb", "course_site"]
exclude_patterns = ["**/.ipynb_checkpoints"]
# Notebooks often step from a title (#) straight to a subsection (###): fine on a page.
suppress_warnings = ["myst.header"]

# --- MyST: the mathematics of the notebooks' markdown ($...$, $$...$$, \begin{align}) ---
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# --- MyST-NB: execute the lectures through jupyter-cache; show the released assignments as released ---
nb_execution_mode = "cache" if EXECUTE == "cache" else "off"
nb_execution_cache_path = _setting("GD_SITE_CACHE")
nb_execution_timeout = int(_setting("GD_SITE_TIMEOUT"))
nb_execution_raise_on_error = True  # a lecture that fails is a failed build, not a page with a traceback
nb_execution_show_tb = True
nb_execution_excludepatterns = ["assignments/*/*.ipynb"]  # matched from the right of the path
nb_merge_streams = True
# No widget manager from a CDN: course_site draws every widget's controls as static HTML,
# next to the figure the lecture draws for their initial values.
nb_ipywidgets_js = {}

# --- HTML: the book theme, MathJax served from the site itself ---
html_theme = "sphinx_book_theme"
html_title = "Guided Descent"
html_favicon = "static/favicon.svg"
html_static_path = [STATIC, str(HERE / "static")]
html_css_files = ["course.css"]
html_math_renderer = "mathjax"
mathjax_path = "mathjax/tex-chtml-full.js"  # relative: under _static/, copied from npm's mathjax package
html_copy_source = True  # _sources/lectures/NN_topic.ipynb: the source notebook
html_show_sphinx = True
html_theme_options = {
    "repository_url": REPOSITORY,
    "repository_branch": BRANCH,
    "repository_provider": _setting("GD_SITE_PROVIDER"),
    "path_to_docs": "",  # the staged tree mirrors the repository: lectures/NN_topic.ipynb
    "use_repository_button": True,
    "use_download_button": True,
    "use_source_button": False,  # the front page is not a file of the repository
    "use_edit_page_button": False,
    "use_issues_button": False,
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "launch_buttons": {"jupyterhub_url": HUB_URL, "notebook_interface": "jupyterlab"},
}

# --- course_site (site/course_site.py): schedule, run times, static widgets, launch banner ---
course_mode = MODE
course_machine = _setting("GD_SITE_MACHINE")
course_schedule = str(HERE / "schedule.yaml")
course_file_url = _setting("GD_SITE_FILE_URL")
