"""gd_lib.averaging against naive averages of stored snapshots, torch's AveragedModel, exact swaps."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gd_lib.averaging import EMA, LAWA, LAWAEMA, SWA, Polyak, averaged_weights, ema_update_, mean_update_

STEPS = 25


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def train_with(model, averagers, steps=STEPS):
    """SGD on random data; returns the snapshot of every iterate w_1..w_steps (after each step)."""
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 4, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    snapshots = []
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        for averager in averagers:
            averager.update(model)
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return snapshots


def param_names(model):
    return [name for name, _ in model.named_parameters()]


def assert_average(averager, model, expected: dict, atol=1e-6):
    got = averager.averaged()
    for name in param_names(model):
        # float32 sums of ≤ 25 terms in a different order: ~1e-7 relative; weights are O(1)
        torch.testing.assert_close(got[name], expected[name], rtol=1e-6, atol=atol)


# --- the primitives --------------------------------------------------------------------------------


def test_lerp_primitives():
    m, w = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -1.0])
    torch.testing.assert_close(ema_update_(m.clone(), w, 0.9), 0.9 * m + 0.1 * w)
    torch.testing.assert_close(mean_update_(m.clone(), w, 3), (3 * m + w) / 4)


# --- EMA ------------------------------------------------------------------------------------------------


def test_ema_with_decay_zero_is_the_raw_weights():
    model = make_model()
    ema = EMA(model, decay=0.0)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 4, generator=gen), torch.randint(0, 3, (16,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        ema.update(model)
        for name, p in model.named_parameters():
            assert torch.equal(ema.averaged()[name], p)


@pytest.mark.parametrize("decay", [0.5, 0.9])
def test_ema_matches_naive_loop(decay):
    model = make_model()
    ema = EMA(model, decay=decay)
    snaps = train_with(model, [ema])
    expected = {k: v.clone() for k, v in snaps[0].items()}  # m_1 = w_1
    for snap in snaps[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * snap[k] for k in expected}
    assert_average(ema, model, expected)


def test_ema_debias_matches_optax_formula():
    decay = 0.9
    model = make_model()
    ema = EMA(model, decay=decay, debias=True)
    snaps = train_with(model, [ema])
    m = {k: torch.zeros_like(v) for k, v in snaps[0].items()}  # m_0 = 0
    for snap in snaps:
        m = {k: decay * m[k] + (1 - decay) * snap[k] for k in m}
    expected = {k: v / (1 - decay ** len(snaps)) for k, v in m.items()}
    assert_average(ema, model, expected)


def test_ema_warmup_matches_timm_decay_and_reduces_to_polyak():
    model = make_model()
    warm = EMA(model, decay=0.95, warmup_power=0.75, warmup_gamma=2.0)
    polyak_like = EMA(model, decay=1.0, warmup_power=1.0, warmup_gamma=1.0)
    polyak = Polyak(model)
    snaps = train_with(model, [warm, polyak_like, polyak])
    expected = None
    for n, snap in enumerate(snaps, start=1):
        beta = min(0.95, 1 - (1 + (n - 1) / 2.0) ** -0.75)  # timm ModelEmaV3 get_decay
        expected = (
            {k: v.clone() for k, v in snap.items()}
            if expected is None
            else {k: beta * expected[k] + (1 - beta) * snap[k] for k in expected}
        )
    assert_average(warm, model, expected)
    # β_n = 1 − 1/n: the EMA is the running mean
    assert_average(polyak_like, model, polyak.averaged())


# --- equal-weight averages ------------------------------------------------------------------------------------


def naive_mean(snaps, steps):
    """Mean of the iterates w_t (t = 1-based step) for t in ``steps``."""
    chosen = [snaps[t - 1] for t in steps]
    return {k: torch.stack([s[k] for s in chosen]).mean(0) for k in chosen[0] if chosen[0][k].is_floating_point()}


def test_polyak_is_the_arithmetic_mean():
    model = make_model()
    polyak = Polyak(model)
    late = Polyak(model, start=10)
    snaps = train_with(model, [polyak, late])
    assert_average(polyak, model, naive_mean(snaps, range(1, STEPS + 1)))
    assert_average(late, model, naive_mean(snaps, range(10, STEPS + 1)))


@pytest.mark.parametrize("start,every", [(0, 1), (5, 3), (12, 4)])
def test_swa_matches_naive_and_torch_averaged_model(start, every):
    model = make_model()
    swa = SWA(model, start=start, every=every)
    torch_swa = torch.optim.swa_utils.AveragedModel(model)

    class TorchHook:  # update torch's AveragedModel at the same steps
        step = 0

        def update(self, m):
            self.step += 1
            if self.step >= start and (self.step - start) % every == 0:
                torch_swa.update_parameters(m)

    snaps = train_with(model, [swa, TorchHook()])
    steps = [t for t in range(1, STEPS + 1) if t >= start and (t - start) % every == 0]
    assert swa.count == len(steps)
    assert_average(swa, model, naive_mean(snaps, steps))
    theirs = dict(torch_swa.module.named_parameters())
    assert_average(swa, model, {k: v.detach() for k, v in theirs.items()})


@pytest.mark.parametrize("k,interval,start", [(3, 1, 0), (4, 2, 5), (5, 3, 1)])
def test_lawa_matches_naive_queue(k, interval, start):
    model = make_model()
    lawa = LAWA(model, k=k, interval=interval, start=start)
    snaps, full_at = [], None
    gen_model = model
    for step in range(1, STEPS + 1):
        snaps += train_with(gen_model, [lawa], steps=1)
        taken = [t for t in range(1, step + 1) if t >= start and (t - start) % interval == 0]
        assert lawa.has_average == (len(taken) >= k)
        if lawa.has_average:
            full_at = full_at or step
            assert_average(lawa, model, naive_mean(snaps, taken[-k:]))
    assert full_at is not None


def test_lawa_ema_matches_naive():
    decay, interval, start = 0.8, 3, 4
    model = make_model()
    lawa_ema = LAWAEMA(model, decay, interval=interval, start=start)
    snaps = train_with(model, [lawa_ema])
    expected = None
    for t in range(start, STEPS + 1, interval):
        w = snaps[t - 1]
        expected = (
            {k: v.clone() for k, v in w.items()}
            if expected is None
            else {k: decay * expected[k] + (1 - decay) * w[k] for k in expected}
        )
    assert_average(lawa_ema, model, expected)


# --- swapping ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda m: EMA(m, 0.9, include_buffers=True),
        lambda m: SWA(m),
        lambda m: LAWA(m, 3),
        lambda m: Polyak(m, include_buffers=True),
    ],
    ids=["ema", "swa", "lawa", "polyak"],
)
def test_swap_and_restore_is_exact(make):
    model = make_model()
    averager = make(model)
    train_with(model, [averager], steps=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(5, 4)
    model.eval()
    with averaged_weights(model, averager):
        for name, value in averager.averaged().items():
            assert torch.equal(model.state_dict()[name], value)
        averaged_out = model(x)
    raw_out = model(x)
    assert not torch.allclose(averaged_out, raw_out)  # the swap did something
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    # an exception inside the block restores too
    with pytest.raises(KeyError):
        with averager.swapped(model):
            raise KeyError("boom")
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_buffers_are_averaged_only_when_asked():
    model = make_model()
    with_buffers, without = EMA(model, 0.5, include_buffers=True), EMA(model, 0.5)
    train_with(model, [with_buffers, without], steps=4)
    assert "1.running_mean" in with_buffers.averaged() and "1.running_mean" not in without.averaged()
    # the integer counter is carried, not averaged
    assert with_buffers.averaged()["1.num_batches_tracked"].item() == 4


def test_no_average_yet_raises():
    model = make_model()
    lawa = LAWA(model, k=3)
    train_with(model, [lawa], steps=2)
    with pytest.raises(RuntimeError, match="LAWA"):
        with averaged_weights(model, lawa):
            pass


# --- checkpointing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda m: EMA(m, 0.9, debias=True),
        lambda m: SWA(m, start=3, every=2),
        lambda m: LAWA(m, 4, interval=2),
        lambda m: LAWAEMA(m, 0.7, interval=2),
    ],
    ids=["ema", "swa", "lawa", "lawa_ema"],
)
def test_state_dict_resume_is_bit_identical(make):
    model = make_model()
    straight = make(model)
    snaps = train_with(model, [straight], steps=20)

    model2 = make_model()
    first = make(model2)
    for snap in snaps[:11]:
        model2.load_state_dict(snap)
        first.update(model2)
    resumed = make(model2)
    resumed.load_state_dict(first.state_dict())
    for snap in snaps[11:]:
        model2.load_state_dict(snap)
        resumed.update(model2)
    for name, value in straight.averaged().items():
        assert torch.equal(resumed.averaged()[name], value), name


@pytest.mark.parametrize(
    "build,name",
    [
        (lambda m: EMA(m, decay=1.5), "decay"),
        (lambda m: EMA(m, decay=1.0), "decay"),
        (lambda m: EMA(m, warmup_power=0.0), "warmup_power"),
        (lambda m: EMA(m, warmup_power=1.0, warmup_gamma=-1.0), "warmup_gamma"),
        (lambda m: EMA(m, debias=True, warmup_power=1.0), "debias"),
        (lambda m: SWA(m, start=-1), "start"),
        (lambda m: SWA(m, every=0), "every"),
        (lambda m: LAWA(m, k=0), "k"),
        (lambda m: LAWA(m, interval=0), "interval"),
    ],
)
def test_bad_arguments_raise(build, name):
    with pytest.raises(ValueError, match=name):
        build(make_model())
