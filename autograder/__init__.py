"""The course's grading pipeline around nbgrader.

nbgrader keeps doing release, collection, the gradebook, feedback and export.
This package runs the student's code: each submission in its own sandboxed
process (:mod:`autograder.sandbox`), the tests' verdicts decided in the
grader's process from recorded values (:mod:`autograder.checks`), many
submissions in parallel (:mod:`autograder.grading`).
"""
