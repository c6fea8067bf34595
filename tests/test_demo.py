"""`make demo` (gd_lib.demo): the Rosenbrock race runs, reports finite losses, and saves its plot."""

from __future__ import annotations

import math

import torch

from gd_lib import demo


def test_rosenbrock_value_and_grad_match_autograd():
    g = torch.Generator().manual_seed(0)
    for x, y in [(-1.5, 2.0), (1.0, 1.0), *torch.randn(5, 2, generator=g, dtype=torch.float64).tolist()]:
        xy = torch.tensor([x, y], dtype=torch.float64, requires_grad=True)
        f = (1 - xy[0]) ** 2 + 100 * (xy[1] - xy[0] ** 2) ** 2  # the textbook formula
        f.backward()
        value, grad = demo.rosenbrock_value_and_grad(x, y)
        # same polynomial evaluated in a different order: float64 rounding, ~1e-13 relative
        assert math.isclose(value, f.item(), rel_tol=1e-12, abs_tol=1e-12)
        torch.testing.assert_close(torch.tensor(grad, dtype=torch.float64), xy.grad, rtol=1e-12, atol=1e-12)
    assert demo.rosenbrock(torch.tensor(demo.START)).item() == 12.5  # f(-1.5, 2) = 6.25 + 6.25


def test_race_entrant_follows_a_naive_heavy_ball_loop():
    """The race's bookkeeping (path, final loss, steps to target) against a loop written here."""
    entrant = demo.Entrant("SGD momentum", "SGD", 1e-3, {"momentum": 0.9})
    result = demo.run_entrant(entrant, demo.available_entrants([entrant])[0][1], steps=800)
    x, y = demo.START
    bx = by = None
    path, first_below = [(x, y)], None
    for t in range(1, 801):
        gx = -2 * (1 - x) - 400 * x * (y - x * x)
        gy = 200 * (y - x * x)
        bx, by = (gx, gy) if bx is None else (0.9 * bx + gx, 0.9 * by + gy)
        x, y = x - 1e-3 * bx, y - 1e-3 * by
        path.append((x, y))
        if first_below is None and (1 - x) ** 2 + 100 * (y - x * x) ** 2 < demo.TARGET:
            first_below = t
    # identical arithmetic up to the order of a few float64 operations per step; the
    # trajectory is stable here, so the paths agree to ~1e-12
    torch.testing.assert_close(
        torch.from_numpy(result.path), torch.tensor(path, dtype=torch.float64), rtol=1e-9, atol=1e-9
    )
    assert result.steps == 800
    assert result.steps_to_target == first_below and first_below is not None


def test_demo_main_writes_png_and_reports_finite_losses(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path), "--steps", "100"]) == 0
    png = tmp_path / "rosenbrock_race.png"
    assert png.exists() and png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    rows = [
        line
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith("| optimizer") and not line.startswith("| -")
    ]
    labels = [e.label for e, _ in demo.available_entrants()]
    assert [r.split("|")[1].strip() for r in rows] == labels
    for row in rows:
        final_loss = float(row.split("|")[4])
        assert math.isfinite(final_loss), row
    # the optimizers of this issue are always in the race
    for name in ["SGD", "SGD momentum", "SGD Nesterov", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam"]:
        assert name in labels
