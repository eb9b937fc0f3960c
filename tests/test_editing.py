"""Editing through the one loop: inpainting [A.5] (RePaint) and SDEdit (§1.7)."""
import math

import pytest
import torch

from minidiff.editing import inpaint, sdedit
from minidiff.sampling import strided_timesteps
from minidiff.schedule import NoiseSchedule

COSINE, LINEAR = NoiseSchedule.cosine(), NoiseSchedule.linear()


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def toy_eps(x_t, t):
    """Any estimator will do for the inpainting identities; this one is smooth and t-dependent."""
    return torch.tanh(x_t) * (1 + t / 1000), None


def point_oracle(schedule, x0):
    def eps_fn(x_t, t):
        a = schedule.alpha_bar_at(t)
        return (x_t - math.sqrt(a) * x0) / math.sqrt(1 - a), None
    return eps_fn


def test_inpainting_keeps_the_noised_original_at_every_step_and_the_original_at_the_end():
    """[A.5]: after step i the mask-0 pixels are exactly forward(x_orig, t') with the loop's own second draw of
    noise; we replay the generator to know it (the loop draws: start noise, then per step z_step, z_keep)."""
    ts = strided_timesteps()
    x_orig = rand(2, 3, 16, 16, seed=1).clamp(-1, 1)
    mask = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    mask[..., 4:12, 4:12] = 1
    replay = torch.Generator().manual_seed(5)
    torch.randn(x_orig.shape, generator=replay, dtype=x_orig.dtype)                    # the starting noise
    steps = []

    def callback(i, t_prev, x, x0_hat):
        last = i == len(ts) - 2
        if not last:
            torch.randn(x.shape, generator=replay, dtype=x.dtype)                        # the step's noise
            z_keep = torch.randn(x.shape, generator=replay, dtype=x.dtype)
            known = COSINE.add_noise(x_orig, t_prev, z_keep)
        else:
            known = x_orig
        torch.testing.assert_close(x * (1 - mask), known * (1 - mask), rtol=0, atol=0)
        steps.append(i)

    out = inpaint(toy_eps, COSINE, x_orig, mask, ts, generator=torch.Generator().manual_seed(5), callback=callback)
    assert steps == list(range(len(ts) - 1))
    torch.testing.assert_close(out * (1 - mask), x_orig * (1 - mask), rtol=0, atol=0)
    assert not torch.allclose(out * mask, x_orig * mask)                                 # the hole is new


def test_inpainting_mask_shape_is_checked():
    with pytest.raises(ValueError, match="mask"):
        inpaint(toy_eps, COSINE, torch.zeros(1, 3, 8, 8), torch.ones(1, 1, 4, 4), strided_timesteps())


def test_sdedit_at_the_last_index_returns_nearly_the_input():
    """i_start = len - 1: noised to t = 0 (abar_0 = 1 - beta_0) and no step left."""
    for s, ts in ((COSINE, strided_timesteps()), (LINEAR, strided_timesteps(290, 10))):
        x = rand(1, 1, 28, 28).sigmoid()
        out = sdedit(toy_eps, s, x, ts, len(ts) - 1, generator=torch.Generator().manual_seed(0))
        assert (out - x).abs().max() < 6 * math.sqrt(1 - s.alpha_bar_at(0))           # ~ 0.01-0.06
        assert (out - x).abs().mean() < 0.02


def test_sdedit_noises_with_A1_then_runs_the_loop_from_i_start():
    ts = strided_timesteps(290, 10)
    x = rand(1, 1, 28, 28).sigmoid()
    seen = []
    out = sdedit(point_oracle(LINEAR, x), LINEAR, x, ts, 20, generator=torch.Generator().manual_seed(1),
                 callback=lambda i, t, x_t, x0_hat: seen.append((i, x0_hat)))
    assert [i for i, _ in seen] == list(range(20, len(ts) - 1))
    torch.testing.assert_close(seen[0][1], x)                 # the exact estimator sees through the noise
    assert (out - x).abs().max() < 0.05                       # and lands next to the input
    again = sdedit(point_oracle(LINEAR, x), LINEAR, x, ts, 20, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, again, rtol=0, atol=0)
    with pytest.raises(ValueError, match="i_start"):
        sdedit(toy_eps, LINEAR, x, ts, len(ts))


def test_sdedit_more_noise_moves_further():
    """Small i_start = more noise: with an estimator that pulls toward another image, the edit ends closer to it."""
    ts = strided_timesteps(290, 10)
    x, target = rand(1, 1, 28, 28, seed=3).sigmoid(), rand(1, 1, 28, 28, seed=4).sigmoid()
    dist = [(sdedit(point_oracle(LINEAR, target), LINEAR, x, ts, i, generator=torch.Generator().manual_seed(0))
             - target).norm().item() for i in (1, 10, 20, 28)]
    assert dist == sorted(dist)


def test_inpainting_on_a_flow_keeps_the_known_pixels_on_the_path_and_the_original_at_the_end():
    """The RePaint projection with the flow's forward process: after every step the mask-0 pixels are
    (1 - t') eps + t' x_orig for the loop's second noise draw; at t = 1 they are the original."""
    from minidiff.sampling import flow_times
    from minidiff.schedule import FlowPath
    path, ts = FlowPath(), flow_times(0.1)
    x_orig = rand(2, 1, 8, 8, seed=1).sigmoid()
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    mask[..., 2:6, 2:6] = 1
    replay = torch.Generator().manual_seed(3)
    torch.randn(x_orig.shape, generator=replay, dtype=x_orig.dtype)               # the starting noise
    seen = []

    def callback(i, t_next, x, x1_hat):                                          # Euler draws no noise of its own
        known = x_orig if i == len(ts) - 2 else path.add_noise(
            x_orig, t_next, torch.randn(x.shape, generator=replay, dtype=x.dtype))
        torch.testing.assert_close(x * (1 - mask), known * (1 - mask), rtol=0, atol=0)
        seen.append(t_next)

    u_fn = lambda x_t, t: (torch.tanh(x_t) - x_t, None)                          # noqa: E731  any velocity will do
    out = inpaint(u_fn, path, x_orig, mask, ts, generator=torch.Generator().manual_seed(3), callback=callback)
    assert seen == ts[1:]
    torch.testing.assert_close(out * (1 - mask), x_orig * (1 - mask), rtol=0, atol=0)


def test_sdedit_on_a_flow_starts_on_the_path():
    """SDEdit needs no flow code: [A.1] becomes the path, x_t = (1 - t) eps + t x; with the exact velocity of the
    image's own line, Euler lands back on it."""
    from minidiff.sampling import flow_times
    from minidiff.schedule import FlowPath
    path, ts = FlowPath(), flow_times(0.02)
    x = rand(1, 1, 8, 8).sigmoid()
    field = lambda x_t, t: ((x - x_t) / (1 - t), None)                           # noqa: E731
    out = sdedit(field, path, x, ts, 25, generator=torch.Generator().manual_seed(0))   # from t = 0.5
    torch.testing.assert_close(out, x)
