"""Part B's DDPM (minidiff/ddpm.py): the step and the sampler equal Ho et al. 2020's Algorithms, written out
independently here; the loss is Algorithm 1; one_hot's "no class"."""
import math

import pytest
import torch
import torch.nn.functional as F

from minidiff import ddpm
from minidiff.mnist_unet import MNISTUNet, MNISTUNetConfig
from minidiff.sampling import ddpm_timesteps, predict_x0, reverse_step
from minidiff.schedule import NoiseSchedule


def algorithm2_step(betas, t, x_t, eps_hat, z):
    """x_{t-1} = 1/sqrt(alpha_t) (x_t - (1 - alpha_t)/sqrt(1 - alpha_bar_t) eps_hat) + sigma_t z, sigma_t^2 = beta_t."""
    betas = betas.double()
    alpha_t = 1 - betas[t]
    alpha_bar_t = torch.prod(1 - betas[: t + 1])
    mean = (x_t - (1 - alpha_t) / torch.sqrt(1 - alpha_bar_t) * eps_hat) / torch.sqrt(alpha_t)
    return mean + torch.sqrt(betas[t]) * z


def test_reverse_step_with_t_prev_t_minus_1_is_algorithm_2():
    s = NoiseSchedule.linear(1e-4, 0.02, 300)
    g = torch.Generator().manual_seed(0)
    for t in [299, 150, 1, 0]:
        x_t, eps_hat, z = (torch.randn(2, 1, 5, 5, generator=g, dtype=torch.float64) for _ in range(3))
        z = z if t > 0 else torch.zeros_like(z)
        mean, sigma = reverse_step(x_t, predict_x0(s, x_t, t, eps_hat), eps_hat, None, s.alpha_bar_at(t),
                                   s.alpha_bar_at(t - 1))
        ours = mean + sigma * z
        assert torch.allclose(ours, algorithm2_step(s.betas, t, x_t, eps_hat, z), atol=1e-5), t


@pytest.mark.parametrize("guide_below", [1.0, 0.6])
def test_part_b_sampler_is_algorithm_2_with_cfg(guide_below):
    """ddpm.sample (the shared loop + CFG) against a hand-written Algorithm 2 loop with the same noise; with
    guide_below = 0.6 the steps t > 0.6 T take the conditional estimate (Kynkaanniemi et al. 2024)."""
    torch.manual_seed(0)
    model = MNISTUNet(MNISTUNetConfig(num_hiddens=8, kind="class")).eval()
    with torch.no_grad():                     # a class embedding that matters (at initialisation it barely does)
        for p in [*model.c_emb1.parameters(), *model.c_emb2.parameters()]:
            p.normal_(0, 2)
    digits, gamma = torch.tensor([3, 7]), 5.0
    g = torch.Generator().manual_seed(1)
    ours = ddpm.sample(model, torch.randn(2, 1, 28, 28, generator=g), digits, gamma, g, guide_below=guide_below)
    if guide_below < 1:                       # the unguided steps make a difference
        everywhere = ddpm.sample(model, torch.randn(2, 1, 28, 28, generator=g.manual_seed(1)), digits, gamma, g)
        assert (ours - everywhere).abs().max() > 1e-3

    s = ddpm.SCHEDULE
    T = s.num_steps
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 28, 28, generator=g)
    c = torch.eye(10)[digits]
    with torch.no_grad():
        for t in range(T - 1, -1, -1):
            tt = torch.full((2,), t / T)
            eps_c, eps_u = model(x, tt, c), model(x, tt, torch.zeros_like(c))
            eps_hat = eps_u + gamma * (eps_c - eps_u) if t <= guide_below * T else eps_c    # Ho & Salimans 2022
            z = torch.randn(x.shape, generator=g) if t > 0 else torch.zeros_like(x)
            x = algorithm2_step(s.betas, t, x.double(), eps_hat.double(), z.double()).float()
    assert torch.allclose(ours, x.clamp(0, 1), atol=1e-4)
    assert ddpm_timesteps(T)[0] == T - 1 and ddpm_timesteps(T)[-1] == -1 and len(ddpm_timesteps(T)) == T + 1


def test_linear_schedule_hand_values():
    s = NoiseSchedule.linear(1e-4, 0.02, 300)
    assert math.isclose(float(s.betas[0]), 1e-4, rel_tol=1e-6)
    assert math.isclose(float(s.betas[-1]), 0.02, rel_tol=1e-6)
    assert math.isclose(float(s.betas[1]), 1e-4 + (0.02 - 1e-4) / 299, rel_tol=1e-5)
    assert math.isclose(s.alpha_bar_at(1), (1 - 1e-4) * (1 - float(s.betas[1])), rel_tol=1e-6)
    assert s.alpha_bar_at(-1) == 1.0


def test_loss_is_algorithm_1_and_one_hot_has_no_class():
    """L = || eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t / T, c) - eps ||^2, recomputed by hand; the digit
    -1 is the all-zero vector the class model is trained to read as "no class"."""
    torch.manual_seed(0)
    model = MNISTUNet(MNISTUNetConfig(num_hiddens=8, kind="class")).eval()
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.rand(4, 1, 28, 28, generator=g), torch.randn(4, 1, 28, 28, generator=g)
    t = torch.tensor([0, 17, 150, 299])
    c = ddpm.one_hot([3, -1, 0, 9])
    assert c.tolist()[1] == [0.0] * 10 and c.sum() == 3 and c[0, 3] == c[2, 0] == c[3, 9] == 1
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 300), 0)[t].view(4, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    with torch.no_grad():
        want = F.mse_loss(model(x_t, t / 300, c), eps)
        torch.testing.assert_close(ddpm.loss(model, x0, t, eps, c), want)


def test_autoguided_sampler_is_algorithm_2_on_the_extrapolated_noise():
    """ddpm.sample(..., autoguide=(bad, w)) for a time-only model against Algorithm 2 written out with
    eps_hat = eps_bad + w (eps - eps_bad) (Karras et al. 2024), the same noise."""
    torch.manual_seed(2)
    main, bad = (MNISTUNet(MNISTUNetConfig(num_hiddens=8, kind="time")).eval() for _ in range(2))
    g = torch.Generator().manual_seed(3)
    ours = ddpm.sample(main, torch.randn(2, 1, 28, 28, generator=g), generator=g, autoguide=(bad, 2.0))
    s, T = ddpm.SCHEDULE, ddpm.NUM_STEPS
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1, 28, 28, generator=g)
    with torch.no_grad():
        for t in range(T - 1, -1, -1):
            tt = torch.full((2,), t / T)
            eps, eps_bad = main(x, tt), bad(x, tt)
            z = torch.randn(x.shape, generator=g) if t > 0 else torch.zeros_like(x)
            x = algorithm2_step(s.betas, t, x.double(), (eps_bad + 2.0 * (eps - eps_bad)).double(), z.double()).float()
    assert torch.allclose(ours, x.clamp(0, 1), atol=1e-4)
    unguided = ddpm.sample(main, torch.randn(2, 1, 28, 28, generator=g.manual_seed(3)), generator=g)
    assert (ours - unguided).abs().max() > 1e-3                                     # the guidance matters here
