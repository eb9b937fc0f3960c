"""The reverse process: x0_hat, the strided step [A.3] and its variances, and the one sampling loop."""
import io
import math
import sys

import pytest
import torch

from minidiff.sampling import (ddpm_timesteps, dynamic_threshold, iterative_denoise, one_step_denoise,
                               predict_x0, reverse_step, strided_timesteps)
from minidiff.schedule import NoiseSchedule

COSINE, LINEAR = NoiseSchedule.cosine(), NoiseSchedule.linear()


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def step(schedule, x_t, t, t_prev, eps_hat, v_hat=None, noise=None, threshold=None):
    """One step of the loop, spelled out: x0_hat from eps_hat (thresholded if asked), then reverse_step's mean,
    plus sigma * noise when noise is given."""
    x0_hat = predict_x0(schedule, x_t, t, eps_hat)
    if threshold is not None:
        x0_hat = dynamic_threshold(x0_hat, threshold)
    mean, sigma = reverse_step(x_t, x0_hat, eps_hat, v_hat, schedule.alpha_bar_at(t), schedule.alpha_bar_at(t_prev))
    return mean if noise is None else mean + sigma * noise


def point_oracle(schedule, x0):
    """The exact noise estimator of a data set with one image x0: eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)."""
    def eps_fn(x_t, t):
        a = schedule.alpha_bar_at(t)
        return (x_t - math.sqrt(a) * x0) / math.sqrt(1 - a), None
    return eps_fn


def test_strided_timesteps():
    ts = strided_timesteps(990, 30)
    assert ts[:3] == [990, 960, 930] and ts[-1] == 0 and len(ts) == 34
    assert strided_timesteps(290, 10) == list(range(290, -1, -10))
    with pytest.raises(ValueError, match="multiple"):
        strided_timesteps(1000, 30)
    assert ddpm_timesteps(300)[:2] == [299, 298] and ddpm_timesteps(300)[-2:] == [0, -1]


@pytest.mark.parametrize("schedule", [COSINE, LINEAR])
def test_x0_hat_with_the_true_eps_returns_x0(schedule):
    x0, eps = rand(2, 3, 8, 8), rand(2, 3, 8, 8, seed=1)
    for t in (0, 100, schedule.num_steps - 10):
        torch.testing.assert_close(predict_x0(schedule, schedule.add_noise(x0, t, eps), t, eps), x0)


@pytest.mark.parametrize("schedule,t", [(COSINE, 500), (COSINE, 30), (LINEAR, 150), (LINEAR, 30)])
def test_step_to_t_minus_1_is_the_ddpm_posterior_mean(schedule, t):
    """Ho et al. 2020 eq. 7 with the schedule's own beta_t (not the alpha_bar ratio [A.3] uses):
    mu = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0 + sqrt(1 - beta_t) (1 - abar_{t-1}) / (1 - abar_t) x_t.
    The float32 ratio abar_t / abar_{t-1} recovers beta_t only to ~1e-4 relative (IF's scheduler computes it the
    same way), hence the 1e-4 tolerance; at t = 1 it would be ~1e-3."""
    x_t, eps = rand(2, 3, 8, 8), rand(2, 3, 8, 8, seed=1)
    abar, abar_prev = schedule.alpha_bar.double()[t], schedule.alpha_bar.double()[t - 1]
    beta = schedule.betas.double()[t]
    x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
    mu = abar_prev.sqrt() * beta / (1 - abar) * x0 + (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar) * x_t
    torch.testing.assert_close(step(schedule, x_t, t, t - 1, eps), mu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("t,t_prev", [(990, 960), (690, 660), (30, 0), (0, -1), (500, 200)])
def test_exact_eps_maps_scaled_x0_to_scaled_x0(t, t_prev):
    """With x_t = sqrt(abar_t) x0 the true noise is 0; the step must land on sqrt(abar_t') x0 (the posterior
    mean of a noiseless trajectory), for any stride."""
    x0 = rand(1, 3, 8, 8)
    x_t = math.sqrt(COSINE.alpha_bar_at(t)) * x0
    out = step(COSINE, x_t, t, t_prev, torch.zeros_like(x0))
    torch.testing.assert_close(out, math.sqrt(COSINE.alpha_bar_at(t_prev)) * x0)


def noise_term(schedule, t, t_prev, v_hat, z):
    x_t, eps = rand(1, 3, 8, 8, seed=3), rand(1, 3, 8, 8, seed=4)
    return step(schedule, x_t, t, t_prev, eps, v_hat, noise=z) - step(schedule, x_t, t, t_prev, eps)


@pytest.mark.parametrize("t,t_prev", [(990, 960), (300, 270), (30, 0)])
def test_learned_range_variance_endpoints(t, t_prev):
    """v = -1 gives the posterior variance beta_tilde, v = +1 gives beta (Nichol & Dhariwal 2021, eq. 15),
    with the strided beta_t = 1 - abar_t / abar_t'; the step adds exactly sigma * z."""
    a, a_prev = COSINE.alpha_bar_at(t), COSINE.alpha_bar_at(t_prev)
    beta = 1 - a / a_prev
    beta_tilde = (1 - a_prev) / (1 - a) * beta
    z = rand(1, 3, 8, 8, seed=5)
    ones = torch.ones_like(z)
    torch.testing.assert_close(noise_term(COSINE, t, t_prev, -ones, z), math.sqrt(beta_tilde) * z)
    torch.testing.assert_close(noise_term(COSINE, t, t_prev, ones, z), math.sqrt(beta) * z)
    # in between: the geometric interpolation, per pixel
    v = torch.linspace(-1, 1, z.numel(), dtype=z.dtype).view_as(z)
    sigma = torch.exp(0.5 * ((v + 1) / 2 * math.log(beta) + (1 - v) / 2 * math.log(beta_tilde)))
    torch.testing.assert_close(noise_term(COSINE, t, t_prev, v, z), sigma * z)


def test_fixed_variance_is_beta_and_noise_is_added_exactly():
    z = rand(1, 3, 8, 8, seed=6)
    beta = 1 - LINEAR.alpha_bar_at(100) / LINEAR.alpha_bar_at(90)
    torch.testing.assert_close(noise_term(LINEAR, 100, 90, None, z), math.sqrt(beta) * z)
    torch.testing.assert_close(noise_term(LINEAR, 100, 99, None, z), math.sqrt(float(LINEAR.betas[100])) * z,
                               rtol=1e-5, atol=1e-6)


def test_the_loop_rejects_forward_time_and_the_step_follows_dtype():
    with pytest.raises(ValueError, match="backwards"):
        iterative_denoise(lambda x_t, t: (x_t, None), COSINE, rand(1, 1, 2, 2), [20, 10, 10])
    x = rand(1, 1, 4, 4, dtype=torch.float32)
    assert step(COSINE, x, 10, 5, x, torch.zeros_like(x), torch.randn_like(x)).dtype == torch.float32


def test_dynamic_threshold():
    x = torch.tensor([[[[0.5, -3.0, 2.0, 0.1]]]]).repeat(2, 1, 1, 25)              # |x| quantile 0.95 = 3
    y = dynamic_threshold(x, max_value=1.5)
    torch.testing.assert_close(y, x.clamp(-1.5, 1.5) / 1.5)
    small = 0.5 * x / 3                                                            # inside [-1, 1]: untouched
    torch.testing.assert_close(dynamic_threshold(small, 1.5), small)


def diffusers_learned_range(timesteps, thresholding=False):
    diffusers = pytest.importorskip("diffusers")
    s = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                variance_type="learned_range", thresholding=thresholding, clip_sample=False,
                                sample_max_value=1.5)
    s.set_timesteps(timesteps=timesteps)
    return s


@pytest.mark.parametrize("i", [0, 10, 32])
def test_learned_range_step_matches_diffusers(i):
    """Oracle: diffusers' DDPMScheduler with the report's custom timesteps. It adds its own randn (same generator,
    same draw) when t > 0 and takes t' from its timesteps list, like our loop."""
    ts = strided_timesteps()
    sched = diffusers_learned_range(ts)
    t, t_prev = ts[i], ts[i + 1]
    x_t, eps = rand(2, 3, 8, 8, seed=7, dtype=torch.float32), rand(2, 3, 8, 8, seed=8, dtype=torch.float32)
    v = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(9)) * 2 - 1
    out = sched.step(torch.cat([eps, v], 1), t, x_t, generator=torch.Generator().manual_seed(10)).prev_sample
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(10))
    mean = step(COSINE, x_t, t, t_prev, eps)
    ours = step(COSINE, x_t, t, t_prev, eps, v, noise=z)
    their_sigma_z = torch.exp(0.5 * sched._get_variance(t, predicted_variance=v)) * z
    torch.testing.assert_close(out - their_sigma_z, mean, rtol=1e-4, atol=1e-4)        # the mean [A.3]
    torch.testing.assert_close(ours - mean, their_sigma_z, rtol=1e-4, atol=1e-5)       # the variance term
    torch.testing.assert_close(ours, out, rtol=1e-4, atol=1e-4)


def test_thresholded_step_matches_diffusers():
    ts = strided_timesteps()
    sched = diffusers_learned_range(ts, thresholding=True)
    x_t, eps = 3 * rand(1, 3, 8, 8, seed=11, dtype=torch.float32), rand(1, 3, 8, 8, seed=12, dtype=torch.float32)
    v = torch.zeros_like(x_t)
    out = sched.step(torch.cat([eps, v], 1), 960, x_t, generator=torch.Generator().manual_seed(0)).prev_sample
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(step(COSINE, x_t, 960, 930, eps, v, z, threshold=1.5), out,
                               rtol=1e-4, atol=1e-4)


def test_loop_with_the_exact_estimator_of_one_image_returns_it():
    """With the DDPM timesteps [..., 0, -1] the last step lands on abar = 1 with x0_hat = x0: the loop returns x0
    exactly (up to float error), whatever noise it added on the way. The strided loop ends at t = 0, 1e-4 away."""
    x0 = rand(2, 1, 8, 8).clamp(-1, 1)
    g = torch.Generator().manual_seed(0)
    out = iterative_denoise(point_oracle(LINEAR, x0), LINEAR, rand(2, 1, 8, 8, seed=1), ddpm_timesteps(300),
                            generator=g)
    torch.testing.assert_close(out, x0)
    out = iterative_denoise(point_oracle(COSINE, x0), COSINE, rand(2, 1, 8, 8, seed=1), strided_timesteps(),
                            generator=g)
    assert (out - x0).abs().max() < 0.05


def test_loop_callback_sees_every_step_and_is_deterministic():
    x0 = rand(1, 1, 8, 8)
    ts = strided_timesteps(290, 10)
    seen = []

    def callback(i, t_prev, x, x0_hat):
        seen.append((i, t_prev))
        torch.testing.assert_close(x0_hat, x0)                   # the exact estimator's x0_hat is x0

    eps_fn = point_oracle(LINEAR, x0)
    x = rand(1, 1, 8, 8, seed=2)
    a = iterative_denoise(eps_fn, LINEAR, x, ts, i_start=5, generator=torch.Generator().manual_seed(3),
                          callback=callback)
    assert seen == [(i, ts[i + 1]) for i in range(5, len(ts) - 1)]
    b = iterative_denoise(eps_fn, LINEAR, x, ts, i_start=5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="i_start"):
        iterative_denoise(eps_fn, LINEAR, x, ts, i_start=len(ts) - 1)


def test_one_step_denoise_with_the_true_eps():
    x0, eps = rand(1, 3, 8, 8), rand(1, 3, 8, 8, seed=1)
    x_t = COSINE.add_noise(x0, 750, eps)
    torch.testing.assert_close(one_step_denoise(lambda x, t: (eps, None), COSINE, x_t, 750), x0)


def test_callback_sees_the_thresholded_x0_hat():
    ts = strided_timesteps()
    seen = []
    x = 3 * rand(1, 3, 8, 8, seed=13)
    iterative_denoise(lambda x_t, t: (torch.zeros_like(x_t), None), COSINE, x, ts, i_start=30, threshold=1.5,
                      generator=torch.Generator().manual_seed(0), callback=lambda i, t, x_t, x0_hat: seen.append(x0_hat))
    assert seen[0].abs().max() <= 1.0 + 1e-6           # clamp(x0_hat, -s, s) / s lies in [-1, 1]
    torch.testing.assert_close(seen[0], dynamic_threshold(predict_x0(COSINE, x, ts[30], torch.zeros_like(x)), 1.5))


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_loop_shows_a_progress_bar_in_a_terminal_only(monkeypatch):
    ts, x = strided_timesteps(), rand(1, 3, 8, 8)
    eps_fn = lambda x_t, t: (torch.zeros_like(x_t), None)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    iterative_denoise(eps_fn, COSINE, x, ts, i_start=30, generator=torch.Generator().manual_seed(0), progress=True)
    assert "denoising:" in terminal.getvalue() and "/3 " in terminal.getvalue()   # 3 steps: i = 30, 31, 32
    pipe = io.StringIO()                                                          # isatty() is False
    monkeypatch.setattr(sys, "stderr", pipe)
    iterative_denoise(eps_fn, COSINE, x, ts, i_start=30, generator=torch.Generator().manual_seed(0), progress=True)
    assert pipe.getvalue() == ""
    terminal = _Terminal()                                                        # progress is a choice
    monkeypatch.setattr(sys, "stderr", terminal)
    iterative_denoise(eps_fn, COSINE, x, ts, i_start=30, generator=torch.Generator().manual_seed(0))
    assert terminal.getvalue() == ""


def test_an_update_rule_is_a_function_that_gets_the_one_x0_hat_of_the_step():
    """The loop computes x0_hat once per step (thresholded once) and hands the same tensor to the update rule and
    to the callback; a new sampler is a plain function of (x_t, x0_hat, eps_hat, v_hat, abar_t, abar_t')."""
    seen_by_step, seen_by_callback = [], []

    def move_along_eps(x_t, x0_hat, eps_hat, v_hat, alpha_bar, alpha_bar_prev):   # DDIM with eta = 0, by hand
        seen_by_step.append(x0_hat)
        return math.sqrt(alpha_bar_prev) * x0_hat + math.sqrt(1 - alpha_bar_prev) * eps_hat, None

    x = 3 * rand(1, 3, 8, 8, seed=14)
    eps_fn = lambda x_t, t: (torch.tanh(x_t), None)                                  # noqa: E731
    ts = strided_timesteps()
    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    out = iterative_denoise(eps_fn, COSINE, x, ts, i_start=28, step=move_along_eps, threshold=1.5, generator=g,
                            callback=lambda i, t, x_t, x0_hat: seen_by_callback.append(x0_hat))
    assert len(seen_by_step) == len(ts) - 1 - 28 and all(a is b for a, b in zip(seen_by_step, seen_by_callback))
    assert torch.equal(g.get_state(), before)                           # sigma None: no noise drawn
    from minidiff.sampling import ddim_step
    torch.testing.assert_close(out, iterative_denoise(eps_fn, COSINE, x, ts, i_start=28, step=ddim_step,
                                                      threshold=1.5))
