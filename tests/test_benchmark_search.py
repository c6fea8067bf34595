"""Quasirandom search: the Halton sequence by hand, shifts, and mapping into search spaces."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gd_lib.benchmark.search import Choice, LogUniform, Uniform, halton, radical_inverse, sample_search_space


def test_radical_inverse_by_hand():
    # 6 = 110 in base 2 -> 0.011 = 3/8; 5 = 12 in base 3 -> 0.21 = 2/3 + 1/9 = 7/9
    assert radical_inverse(6, 2) == 3 / 8
    assert radical_inverse(5, 3) == pytest.approx(7 / 9, abs=1e-15)
    assert radical_inverse(0, 5) == 0.0


def test_halton_first_points_by_hand():
    pts = halton(4, 2)
    np.testing.assert_allclose(pts, [[1 / 2, 1 / 3], [1 / 4, 2 / 3], [3 / 4, 1 / 9], [1 / 8, 4 / 9]], atol=1e-15)


def test_shifted_halton_is_a_rotation_mod_one_and_deterministic():
    base, a, b = halton(16, 3), halton(16, 3, seed=7), halton(16, 3, seed=7)
    np.testing.assert_array_equal(a, b)
    shift = np.mod(a - base, 1.0)
    # every point moved by the same vector (mod 1): differences agree up to wrap-around round-off
    assert np.allclose(shift, shift[0], atol=1e-12) or np.allclose(np.mod(shift - shift[0] + 0.5, 1.0), 0.5, atol=1e-12)
    assert not np.array_equal(halton(16, 3, seed=8), a)
    assert ((a >= 0) & (a < 1)).all()


def test_halton_covers_the_square_better_than_its_worst_case():
    # 64 points in an 8x8 grid: uniform random points hit 64(1 - (63/64)^64) ≈ 40.7 cells on average
    # (sd ≈ 2.3); the shifted Halton points must do clearly better (> 2 sd above that).
    pts = halton(64, 2, seed=3)
    cells = {(int(x * 8), int(y * 8)) for x, y in pts}
    assert len(cells) >= 46


def test_search_space_mapping():
    space = {"lr": LogUniform(1e-4, 1e-1), "wd": Uniform(0.0, 0.5), "nesterov": Choice((True, False)), "beta2": 0.999}
    settings = sample_search_space(space, 32, seed=0)
    assert len(settings) == 32
    for s in settings:
        assert 1e-4 <= s["lr"] <= 1e-1 and 0.0 <= s["wd"] <= 0.5 and s["nesterov"] in (True, False)
        assert s["beta2"] == 0.999
    logs = np.log10([s["lr"] for s in settings])
    assert logs.min() < -3.5 and logs.max() > -1.5  # spread over the whole log range
    assert {s["nesterov"] for s in settings} == {True, False}
    assert LogUniform(1e-4, 1e-2)(0.5) == pytest.approx(1e-3, rel=1e-12)


def test_bad_distributions_raise():
    with pytest.raises(ValueError, match="LogUniform"):
        LogUniform(0.0, 1.0)
    with pytest.raises(ValueError, match="Uniform"):
        Uniform(1.0, 1.0)
    with pytest.raises(ValueError, match="Choice"):
        Choice(())
    with pytest.raises(ValueError, match="dim"):
        halton(3, 0)
    assert math.isfinite(LogUniform(1e-3, 1.0)(0.999))
