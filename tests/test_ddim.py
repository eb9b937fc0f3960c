"""DDIM (Song et al. 2021, eqs. 12 and 16): identities, the diffusers oracle, and the b2_6 stage end to end."""
import importlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from minidiff.sampling import (ddim_sigma, ddim_step, ddpm_timesteps, iterative_denoise, reverse_step,
                               spaced_timesteps)
from minidiff.schedule import NoiseSchedule

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "stages"))

COSINE, LINEAR = NoiseSchedule.cosine(), NoiseSchedule.linear()
PAIRS = [(COSINE, 990, 960), (COSINE, 500, 499), (COSINE, 40, 0), (COSINE, 0, -1),
         (LINEAR, 299, 239), (LINEAR, 150, 149), (LINEAR, 59, -1), (LINEAR, 1, 0)]


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("schedule,t,t_prev", PAIRS)
def test_eta_0_with_the_exact_eps_moves_along_the_forward_process(schedule, t, t_prev):
    """x_t = sqrt(abar_t) x0 + sqrt(1-abar_t) eps  ->  sqrt(abar_t') x0 + sqrt(1-abar_t') eps, for any stride."""
    x0, eps = rand(2, 3, 8, 8), rand(2, 3, 8, 8, seed=1)
    x_t = schedule.add_noise(x0, t, eps)
    out = ddim_step(schedule, x_t, t, t_prev, eps, eta=0.0, noise=rand(2, 3, 8, 8, seed=2))   # noise unused
    torch.testing.assert_close(out, schedule.add_noise(x0, t_prev, eps), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("schedule,t", [(COSINE, 500), (COSINE, 30), (LINEAR, 150), (LINEAR, 30)])
def test_eta_1_one_step_has_the_ddpm_posterior_variance(schedule, t):
    """sigma_t(1)^2 = beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t (Ho et al. 2020 eq. 7), with the
    schedule's own beta_t. The step sees beta_t only through the float32 ratio abar_t / abar_{t-1}, which carries
    an absolute error of ~1e-7, i.e. a relative error of ~1e-7 / beta_t (3e-4 measured for IF's beta_30 = 1.9e-4)."""
    abar, abar_prev, beta = (float(v) for v in (schedule.alpha_bar[t], schedule.alpha_bar[t - 1], schedule.betas[t]))
    beta_tilde = (1 - abar_prev) / (1 - abar) * beta
    assert math.isclose(ddim_sigma(schedule, t, t - 1, 1.0) ** 2, beta_tilde, rel_tol=max(1e-5, 2e-7 / beta))
    assert ddim_sigma(schedule, t, t - 1, 0.0) == 0.0 and ddim_sigma(schedule, t, -1, 1.0) == 0.0


@pytest.mark.parametrize("schedule,t,t_prev", PAIRS)
def test_eta_1_is_the_strided_ddpm_step_with_the_posterior_variance(schedule, t, t_prev):
    """With eta = 1, eq. 12's mean sqrt(abar') x0_hat + sqrt(1 - abar' - beta_tilde) eps_hat is the posterior mean
    [A.3] for any stride (1 - abar' - beta_tilde = alpha (1 - abar')^2 / (1 - abar)), and the noise is
    sqrt(beta_tilde) z: reverse_step with IF's variance value v = -1 (frac = 0, log sigma^2 = log beta_tilde)."""
    x_t, eps_hat, z = rand(2, 3, 8, 8), rand(2, 3, 8, 8, seed=1), rand(2, 3, 8, 8, seed=2)
    torch.testing.assert_close(ddim_step(schedule, x_t, t, t_prev, eps_hat, eta=1.0),
                               reverse_step(schedule, x_t, t, t_prev, eps_hat))
    if t_prev >= 0:
        v = -torch.ones_like(x_t)
        torch.testing.assert_close(ddim_step(schedule, x_t, t, t_prev, eps_hat, eta=1.0, noise=z),
                                   reverse_step(schedule, x_t, t, t_prev, eps_hat, v_hat=v, noise=z))


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
                            step="ddim", eta=eta)
    torch.testing.assert_close(out, x0)
    assert torch.equal(g.get_state(), before) == (eta == 0.0)     # deterministic DDIM consumes no randomness
    with pytest.raises(ValueError, match="'ddpm' or 'ddim'"):
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
        torch.testing.assert_close(ddim_step(ours, x_t, t, t_prev, eps_hat, eta, noise=z), ref, rtol=1e-5, atol=1e-5)


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
                             step="ddim")
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# The b2_6 stage on a tiny model and a tiny (untrained) classifier: seconds, never the real training.
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from minidiff.data import load_mnist
    from minidiff.evaluate import MNISTClassifier
    from minidiff.train import TrainConfig, train
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ddim")
    x, y = load_mnist()
    train(TrainConfig.class_conditioned(num_hiddens=8, epochs=1, batch_size=64), root / "model", x[:512], y[:512],
          progress=False)
    (root / "out" / "classifier").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(MNISTClassifier().state_dict(), root / "out" / "classifier" / "mnist_classifier.pt")
    yield root
    torch.set_num_threads(threads)


def test_stage_b2_6_writes_figure_metrics_and_samples(tiny_run, capsys):
    stage = importlib.import_module("b2_6_ddim_steps")
    out = tiny_run / "out"
    stage.main(["--quick", "--per-digit", "1", "--device", "cpu", "--out", str(out),
                "--checkpoint", str(tiny_run / "model" / "checkpoint.pt")])
    d = out / "b2_6_ddim_steps"
    assert sorted(p.name for p in d.iterdir()) == ["metrics.json", "samples.png", "samples.pt"]
    printed = capsys.readouterr().out
    assert all(f"b2_6_ddim_steps/{name}" in printed for name in ("samples.png", "metrics.json", "samples.pt"))
    metrics = json.loads((d / "metrics.json").read_text())
    assert list(metrics) == ["ddim_5", "ddim_10", "ddim_20", "ddim_50", "ddpm_300"]
    assert all(0.0 <= m["class_accuracy"] <= 1.0 and m["n"] == 10 for m in metrics.values())
    s = torch.load(d / "samples.pt", weights_only=True)
    assert s["images"].shape == (50, 1, 28, 28) and 0 <= s["images"].min() and s["images"].max() <= 1
    assert s["labels"].tolist() == list(range(10)) * 5 and len(s["settings"]) == 5
