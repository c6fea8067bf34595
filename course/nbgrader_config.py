"""nbgrader configuration of the Guided Descent course.

nbgrader's course directory is mapped onto the repository: ``solutions/`` is
the source directory (instructor notebooks with solutions and hidden tests),
``assignments/`` the release directory (what students get, committed), and
the runtime folders (submitted, autograded, feedback, the gradebook) live in
``course/`` and are git-ignored.

Autograding replaces nbgrader's in-kernel ``Execute`` step by
``autograder.nbgrader_plugin.ApplySandboxedResults``: the notebook runs in a
sandbox and the tests are decided outside the student's process (see
``autograder/`` and ``docs/grading-security.md``); and nbgrader sanitizes the
notebook the grader assembled from the instructor's notebook and the student's
answers (``UseAssembledNotebook``), never the raw submission's cells. Run it through
``make autograde A=<assignment>`` (or the formgrader's *Autograde* button).
"""

import os

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    ClearHiddenTests,
    ClearOutput,
    DeduplicateIds,
    GetGrades,
    IgnorePattern,
    LimitOutput,
    OverwriteCells,
    OverwriteKernelspec,
    SaveAutoGrades,
)

import autograder
from autograder.nbgrader_plugin import ApplySandboxedResults, UseAssembledNotebook

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

c.CourseDirectory.course_id = "guided-descent"
c.CourseDirectory.root = ROOT
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "assignments"
c.CourseDirectory.submitted_directory = os.path.join("course", "submitted")
c.CourseDirectory.autograded_directory = os.path.join("course", "autograded")
c.CourseDirectory.feedback_directory = os.path.join("course", "feedback")
c.CourseDirectory.solution_directory = os.path.join("course", "released_solutions")
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(ROOT, "course", "gradebook.db")
# nbgrader's exchange (release, submit, collect, feedback): a shared folder on the course hub.
c.Exchange.root = os.environ.get("GD_NBGRADER_EXCHANGE") or "/srv/nbgrader/exchange"
c.CourseDirectory.ignore = [
    ".ipynb_checkpoints",
    "*.pyc",
    "__pycache__",
    "feedback",
    ".autograder",
    "mistakes.json",
]  # the catalogue of classic mistakes is the instructor's

# Released notebooks carry no outputs and no solution code.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Autograde: the grader's assembled notebook, sanitized and restored as nbgrader does, then the
# sandboxed verdicts.
c.Autograde.sanitize_preprocessors = [
    UseAssembledNotebook,
    ClearOutput,
    DeduplicateIds,
    OverwriteKernelspec,
    OverwriteCells,
    CheckCellMetadata,
]
c.Autograde.autograde_preprocessors = [
    ApplySandboxedResults,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]

# Feedback: hidden tests stay hidden (their code would show how expected values are computed), the
# summary names each question, messages wrap, and the page loads nothing from the internet.
c.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTests, CSSHTMLHeaderPreprocessor]
c.HTMLExporter.template_name = "feedback"  # ours (autograder/templates/feedback) shadows nbgrader's
c.HTMLExporter.extra_template_basedirs = [os.path.join(os.path.dirname(autograder.__file__), "templates")]
