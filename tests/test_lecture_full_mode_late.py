"""Lectures 07-12 in full mode with their training loops cut short: see ``test_lecture_full_mode.py``
(the same check; a file of its own so that pytest-xdist runs it beside lectures 01-06)."""

from __future__ import annotations

import pytest

from test_lecture_full_mode import check_full_mode_run, lectures_numbered


@pytest.mark.slow
@pytest.mark.parametrize("path", lectures_numbered(7, 12))
def test_full_mode_code_paths_run_with_steps_cut_short(path):
    check_full_mode_run(path)
