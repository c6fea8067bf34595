"""gd_lib.train: reaches the accuracy it promises, equals a naive loop, schedules, closures, progress."""

import fcntl
import os
import pty
import random
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gd_lib
from gd_lib import averaging, data, models, schedules
from gd_lib.train import Target, cross_entropy, evaluate, train

CPU = torch.device("cpu")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


def test_mlp_reaches_95_percent_on_digits(digits):
    torch.manual_seed(0)
    model = models.MLP(64, [128, 128], 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    history = train(model, optimizer, digits, steps=300, batch_size=64, eval_every=100, device=CPU)
    elapsed = time.perf_counter() - t0
    print(
        f"\nMLP on digits: {history.final('val_accuracy'):.1%} validation accuracy after "
        f"{history.steps_taken} steps in {elapsed:.1f} s (train {history.train_time:.1f} s)"
    )
    assert history.final("val_accuracy") >= 0.95
    assert history.step.tolist() == list(range(1, 301))
    assert history.eval_step.tolist() == [100, 200, 300]
    # the recorded accuracy is the model's: recompute it independently
    with torch.no_grad():
        model.eval()
        accuracy = (model(digits.X_val).argmax(1) == digits.y_val).float().mean().item()
    assert history.final("val_accuracy") == pytest.approx(accuracy, abs=1e-12)


def test_full_batch_training_equals_a_naive_loop():
    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(50, 5, generator=gen), torch.randint(0, 3, (50,), generator=gen)
    torch.manual_seed(1)
    model = models.MLP(5, [16], 3)
    naive = models.MLP(5, [16], 3)
    naive.load_state_dict(model.state_dict())
    schedule = schedules.Cosine(20, final=0.1)
    history = train(
        model,
        torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9),
        (X, y),
        steps=20,
        batch_size=None,
        schedule=schedule,
        device=CPU,
    )
    optimizer = torch.optim.SGD(naive.parameters(), lr=0.5, momentum=0.9)
    naive_losses, naive_lrs = [], []
    for t in range(20):
        for group in optimizer.param_groups:
            group["lr"] = 0.5 * schedule(t)
        optimizer.zero_grad()
        loss = F.cross_entropy(naive(X), y)
        loss.backward()
        optimizer.step()
        naive_losses.append(loss.item())
        naive_lrs.append(optimizer.param_groups[0]["lr"])
    # same operations in the same order: bit for bit
    assert history.loss.tolist() == naive_losses
    assert history.lr.tolist() == naive_lrs
    for p, q in zip(model.parameters(), naive.parameters()):
        assert torch.equal(p, q)


def test_minibatches_are_epochs_without_replacement():
    n, batch = 24, 6

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(1, 1)
            self.seen = []

        def forward(self, x):
            self.seen.append(x[:, 0].long().tolist())
            return self.linear(x)

    model = Recorder()
    X, y = torch.arange(n, dtype=torch.float32).unsqueeze(1), torch.zeros(n)
    train(model, torch.optim.SGD(model.parameters(), lr=0.0), (X, y), steps=12, batch_size=batch, device=CPU)
    per_epoch = n // batch
    for epoch in range(12 // per_epoch):
        indices = sum(model.seen[epoch * per_epoch : (epoch + 1) * per_epoch], [])
        assert sorted(indices) == list(range(n))
    assert model.seen[:per_epoch] != model.seen[per_epoch : 2 * per_epoch]  # reshuffled each epoch


def test_same_seed_same_history(digits):
    def run(seed):
        torch.manual_seed(0)
        model = models.MLP(64, [32], 10, dropout=0.2)
        return train(model, torch.optim.SGD(model.parameters(), lr=0.1), digits, steps=30, device=CPU, seed=seed)

    a, b, c = run(3), run(3), run(4)
    assert a.loss.tolist() == b.loss.tolist()
    assert a.loss.tolist() != c.loss.tolist()


def test_optimizer_that_needs_a_closure():
    problem = data.least_squares(100, 5, condition_number=10.0, noise=0.1, seed=0)
    model = nn.Linear(5, 1, bias=False)
    nn.init.zeros_(model.weight)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=20, line_search_fn="strong_wolfe")
    history = train(model, optimizer, (problem.X, problem.y), steps=3, batch_size=None, device=CPU)
    # mse = 2 ℓ(w); L-BFGS on a 5-d quadratic reaches the least-squares solution (float32: ~1e-5)
    torch.testing.assert_close(model.weight[0], problem.w_star, rtol=1e-4, atol=1e-4)
    assert history.loss[0] == pytest.approx(2 * problem.loss(torch.zeros(5)).item(), rel=1e-6)


def test_averager_target_and_divergence(digits):
    torch.manual_seed(0)
    model = models.MLP(64, [64], 10)
    ema = averaging.EMA(model, decay=0.9)
    history = train(
        model,
        torch.optim.Adam(model.parameters(), lr=1e-3),
        digits,
        steps=2000,
        eval_every=25,
        averager=ema,
        target=("val_accuracy", 0.9),
        device=CPU,
    )
    accuracy = history["val_accuracy"]
    assert history.target_step == history.eval_step[-1] < 2000
    assert accuracy[-1] >= 0.9 and np.all(accuracy[:-1] < 0.9)
    assert history.steps_taken == history.target_step
    assert "avg_val_accuracy" in history.metrics and np.isfinite(history["avg_val_accuracy"][-1])
    # the averaged accuracy is the EMA's
    with averaging.averaged_weights(model, ema):
        expected = evaluate(model, digits.X_val, digits.y_val)["val_accuracy"]
    assert history["avg_val_accuracy"][-1] == pytest.approx(expected, abs=1e-12)

    torch.manual_seed(0)
    model = models.MLP(64, [64], 10)
    blown = train(model, torch.optim.SGD(model.parameters(), lr=1e6), digits, steps=100, device=CPU)
    assert blown.diverged and blown.steps_taken < 100


def test_target_direction():
    assert Target("val_loss", 0.5).mode == "min" and Target("val_accuracy", 0.5).mode == "max"
    assert Target("val_loss", 0.5).reached({"val_loss": 0.4})
    assert not Target("val_accuracy", 0.5).reached({"val_accuracy": 0.4})


def test_transformer_on_modular_arithmetic_and_text():
    torch.manual_seed(0)
    split = data.modular_arithmetic(7, "+", train_fraction=0.6)
    model = models.TinyTransformer(split.info["vocab_size"], 4, width=32, depth=1, heads=2)
    history = train(model, torch.optim.AdamW(model.parameters(), lr=3e-3), split, steps=40, batch_size=16, device=CPU)
    assert history.loss[-5:].mean() < history.loss[:5].mean()
    assert set(history.metrics) == {"val_loss", "val_accuracy"}

    corpus = data.stdlib_corpus("char", max_files=3)
    model = models.TinyTransformer(corpus.vocab_size, 16, width=32, depth=1, heads=2)
    history = train(
        model,
        torch.optim.Adam(model.parameters(), lr=3e-3),
        corpus.sampler(16, max_val_windows=8),
        steps=30,
        batch_size=8,
        device=CPU,
    )
    assert history.loss[-5:].mean() < history.loss[:5].mean() and "val_loss" in history.metrics


def test_cross_entropy_shapes():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7)
    tokens = torch.randint(0, 7, (3, 5))
    last = torch.randint(0, 7, (3,))
    per_position = -torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).mean()
    torch.testing.assert_close(cross_entropy(logits, tokens), per_position)
    torch.testing.assert_close(cross_entropy(logits, last), F.cross_entropy(logits[:, -1], last))


def test_seed_everything():
    gd_lib.seed_everything(5)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    gd_lib.seed_everything(5)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    with pytest.raises(ValueError, match="seed"):
        gd_lib.seed_everything(-1)


@pytest.mark.parametrize(
    "kwargs,name", [(dict(steps=0), "steps"), (dict(batch_size=0), "batch_size"), (dict(eval_every=0), "eval_every")]
)
def test_bad_arguments_raise(kwargs, name, digits):
    model = models.MLP(64, [8], 10)
    with pytest.raises(ValueError, match=name):
        train(model, torch.optim.SGD(model.parameters(), lr=0.1), digits, device=CPU, **kwargs)
    with pytest.raises(ValueError, match="data"):
        train(model, torch.optim.SGD(model.parameters(), lr=0.1), [1, 2, 3], device=CPU)


# --- progress bar -----------------------------------------------------------------------------------------


def test_no_progress_output_under_pytest(capfd, digits):
    assert "PYTEST_CURRENT_TEST" in os.environ
    model = models.MLP(64, [8], 10)
    train(model, torch.optim.SGD(model.parameters(), lr=0.1), digits, steps=20, device=CPU)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    # asked for explicitly, the bar does appear (so the check above can fail)
    train(model, torch.optim.SGD(model.parameters(), lr=0.1), digits, steps=20, device=CPU, progress=True)
    assert "20/20" in capfd.readouterr().err


SCRIPT = textwrap.dedent("""
    import torch
    from gd_lib import data, models
    from gd_lib.train import train
    torch.set_num_threads(1)
    split = data.load_digits()
    model = models.MLP(64, [8], 10)
    train(model, torch.optim.SGD(model.parameters(), lr=0.1), split, steps=50, device="cpu")
    print("DONE")
""")


def _clean_env():
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env["PYTHONPATH"] = REPO
    return env


@pytest.mark.slow
def test_progress_bar_in_a_terminal():
    # under a pseudo-terminal: stderr is a tty, the tqdm bar is drawn
    primary, secondary = pty.openpty()
    # a terminal of 24 rows × 100 columns, as a user's would report
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=_clean_env(),
        close_fds=True,
    )
    os.close(secondary)
    chunks = []
    deadline = time.time() + 120
    while time.time() < deadline:
        ready, _, _ = select.select([primary], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(primary)
    terminal = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, terminal
    assert "DONE" in terminal and "50/50" in terminal and "it/s" in terminal, terminal


def test_no_progress_bar_when_stderr_is_not_a_terminal(monkeypatch, digits):
    import io

    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    fake_stderr = io.StringIO()  # not a tty, as a pipe or a log file
    monkeypatch.setattr(sys, "stderr", fake_stderr)
    model = models.MLP(64, [8], 10)
    train(model, torch.optim.SGD(model.parameters(), lr=0.1), digits, steps=20, device=CPU)
    assert fake_stderr.getvalue() == ""
    train(model, torch.optim.SGD(model.parameters(), lr=0.1), digits, steps=20, device=CPU, progress=True)
    assert "20/20" in fake_stderr.getvalue()
