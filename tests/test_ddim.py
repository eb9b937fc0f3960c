"""DDIM (Song et al. 2021, eqs. 12 and 16): identities and the diffusers oracle (the b2_6 stage: test_stages_b.py)."""
import math
from functools import partial

import pytest
import torch

from minidiff.sampling import (ddim_sigma, ddim_step, ddpm_timesteps, iterative_denoise, predict_x0, reverse_step,
                               spaced_timesteps)
from minidiff.schedule import NoiseSchedule

COSINE, LINEAR = NoiseSchedule.cosine(), NoiseSchedule.linear()
PAIRS = [(COSINE, 990, 960), (COSINE, 500, 499), (COSINE, 40, 0), (COSINE, 0, -1),
         (LINEAR, 299, 239), (LINEAR, 150, 149), (LINEAR, 59, -1), (LINEAR, 1, 0)]


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def step(rule, schedule, x_t, t, t_prev, eps_hat, v_hat=None, noise=None, **kw):
    """One step of the loop with the update rule `rule`: x0_hat, then mean (+ sigma * noise when given)."""
    mean, sigma = rule(x_t, predict_x0(schedule, x_t, t, eps_hat), eps_hat, v_hat, schedule.alpha_bar_at(t),
                       schedule.alpha_bar_at(t_prev), **kw)
    return mean if noise is None or sigma is None else mean + sigma * noise


def sigma_of(schedule, t, t_prev, eta):
    return ddim_sigma(schedule.alpha_bar_at(t), schedule.alpha_bar_at(t_prev), eta)


@pytest.mark.parametrize("schedule,t,t_prev", PAIRS)
def test_eta_0_with_the_exact_eps_moves_along_the_forward_process(schedule, t, t_prev):
    """x_t = sqrt(abar_t) x0 + sqrt(1-abar_t) eps  ->  sqrt(abar_t') x0 + sqrt(1-abar_t') eps, for any stride."""
    x0, eps = rand(2, 3, 8, 8), rand(2, 3, 8, 8, seed=1)
    x_t = schedule.add_noise(x0, t, eps)
    out = step(ddim_step, schedule, x_t, t, t_prev, eps, eta=0.0, noise=rand(2, 3, 8, 8, seed=2))   # noise unused
    torch.testing.assert_close(out, schedule.add_noise(x0, t_prev, eps), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("schedule,t", [(COSINE, 500), (COSINE, 30), (LINEAR, 150), (LINEAR, 30)])
def test_eta_1_one_step_has_the_ddpm_posterior_variance(schedule, t):
    """sigma_t(1)^2 = beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t (Ho et al. 2020 eq. 7), with the
    schedule's own beta_t. The step sees beta_t only through the float32 ratio abar_t / abar_{t-1}, which carries
    an absolute error of ~1e-7, i.e. a relative error of ~1e-7 / beta_t (3e-4 measured for IF's beta_30 = 1.9e-4)."""
    abar, abar_prev, beta = (float(v) for v in (schedule.alpha_bar[t], schedule.alpha_bar[t - 1], schedule.betas[t]))
    beta_tilde = (1 - abar_prev) / (1 - abar) * beta
    assert math.isclose(sigma_of(schedule, t, t - 1, 1.0) ** 2, beta_tilde, rel_tol=max(1e-5, 2e-7 / beta))
    assert sigma_of(schedule, t, t - 1, 0.0) == 0.0 and sigma_of(schedule, t, -1, 1.0) == 0.0


@pytest.mark.parametrize("schedule,t,t_prev", PAIRS)
def test_eta_1_is_the_strided_ddpm_step_with_the_posterior_variance(schedule, t, t_prev):
    """With eta = 1, eq. 12's mean sqrt(abar') x0_hat + sqrt(1 - abar' - beta_tilde) eps_hat is the posterior mean
    [A.3] for any stride (1 - abar' - beta_tilde = alpha (1 - abar')^2 / (1 - abar)), and the noise is
    sqrt(beta_tilde) z: reverse_step with IF's variance value v = -1 (frac = 0, log sigma^2 = log beta_tilde)."""
    x_t, eps_hat, z = rand(2, 3, 8, 8), rand(2, 3, 8, 8, seed=1), rand(2, 3, 8, 8, seed=2)
    torch.testing.assert_close(step(ddim_step, schedule, x_t, t, t_prev, eps_hat, eta=1.0),
                               step(reverse_step, schedule, x_t, t, t_prev, eps_hat))
    if t_prev >= 0:
        v = -torch.ones_like(x_t)
        torch.testing.assert_close(step(ddim_step, schedule, x_t, t, t_prev, eps_hat, eta=1.0, noise=z),
                                   step(reverse_step, schedule, x_t, t, t_prev, eps_hat, v_hat=v, noise=z))


def test_spaced_timesteps():
    assert spaced_timesteps(300, 5) == [299, 239, 179, 119, 59, -1]
    assert spaced_timesteps(300, 300) == ddpm_timesteps(300)
    assert spaced_timesteps(1000, 1) == [999, -1]
    ts = spaced_timesteps(300, 7)
    assert len(ts) == 8 and ts == sorted(set(ts), reverse=True)
    with pytest.raises(ValueError, match="sampling steps"):
        spaced_timesteps(300, 0)


def point_oracle(schedule, x0):
    """The exact noise estimator of a data set with one image x0."""
    def eps_fn(x_t, t):
        a = schedule.alpha_bar_at(t)
        return (x_t - math.sqrt(a) * x0) / math.sqrt(1 - a), None
    return eps_fn


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_the_loop_with_exact_eps_lands_on_x0_and_eta_0_draws_no_noise(eta):
    x0, x_T = rand(2, 1, 6, 6), rand(2, 1, 6, 6, seed=3)
    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    out = iterative_denoise(point_oracle(LINEAR, x0), LINEAR, x_T, spaced_timesteps(300, 10), generator=g,
                            step=partial(ddim_step, eta=eta))
    torch.testing.assert_close(out, x0)
    assert torch.equal(g.get_state(), before) == (eta == 0.0)     # deterministic DDIM consumes no randomness
    with pytest.raises(TypeError, match="update rule such as reverse_step or ddim_step"):
        iterative_denoise(point_oracle(LINEAR, x0), LINEAR, x_T, [3, 2], step="euler")


# ---------------------------------------------------------------------------------------------------------------
# diffusers' DDIMScheduler as a test-only oracle. Its step goes from t to t - T // n (set_timesteps(n)) and lands
# on final_alpha_cumprod = 1 (set_alpha_to_one=True) below t = 0: our spaced_timesteps with the final -1.
# ---------------------------------------------------------------------------------------------------------------

def oracle_scheduler(schedule_name, n):
    diffusers = pytest.importorskip("diffusers")
    kw = (dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2") if schedule_name == "cosine" else
          dict(num_train_timesteps=300, beta_start=1e-4, beta_end=0.02, beta_schedule="linear"))
    s = diffusers.DDIMScheduler(**kw, clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    s.set_timesteps(n)
    return s


@pytest.mark.parametrize("schedule_name,n,eta", [("cosine", 20, 0.0), ("cosine", 8, 0.7), ("linear", 10, 0.0),
                                                 ("linear", 6, 1.0)])
def test_matches_diffusers_ddim_step(schedule_name, n, eta):
    sched = oracle_scheduler(schedule_name, n)
    ours = COSINE if schedule_name == "cosine" else LINEAR
    torch.testing.assert_close(sched.alphas_cumprod, ours.alpha_bar, rtol=0, atol=0)
    timesteps = spaced_timesteps(ours.num_steps, n)
    assert sched.timesteps.tolist() == timesteps[:-1]
    for i, (t, t_prev) in enumerate(zip(timesteps[:-1], timesteps[1:])):
        x_t, eps_hat, z = (rand(2, 3, 8, 8, seed=10 * i + k, dtype=torch.float32) for k in range(3))
        ref = sched.step(eps_hat, t, x_t, eta=eta, variance_noise=z).prev_sample
        torch.testing.assert_close(step(ddim_step, ours, x_t, t, t_prev, eps_hat, noise=z, eta=eta), ref,
                                   rtol=1e-5, atol=1e-5)


def test_matches_a_diffusers_ddim_sampling_loop():
    """eta = 0, 10 steps of T = 300, a fixed nonlinear stand-in for the model, from the same x_T."""
    sched = oracle_scheduler("linear", 10)

    def model(x, t):
        return torch.tanh(x) * (0.5 + t / 600)

    x_T = rand(2, 1, 8, 8, seed=4, dtype=torch.float32)
    x = x_T
    for t in sched.timesteps.tolist():
        x = sched.step(model(x, t), t, x, eta=0.0).prev_sample
    ours = iterative_denoise(lambda x_t, t: (model(x_t, t), None), LINEAR, x_T, spaced_timesteps(300, 10),
                             step=ddim_step)
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)
