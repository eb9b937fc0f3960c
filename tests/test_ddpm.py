"""Part B sampling: the DDPM step equals Ho et al. 2020 Algorithm 2, written out independently here."""
import math
import sys
from pathlib import Path

import torch

from minidiff import mnist_backbone
from minidiff.mnist_unet import MNISTUNet, MNISTUNetConfig
from minidiff.sampling import ddpm_timesteps, reverse_step
from minidiff.schedule import NoiseSchedule

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "stages"))
import part_b  # noqa: E402


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
        ours = reverse_step(s, x_t, t, t - 1, eps_hat, noise=z)
        assert torch.allclose(ours, algorithm2_step(s.betas, t, x_t, eps_hat, z), atol=1e-5), t


def test_part_b_sampler_is_algorithm_2_with_cfg():
    """part_b.sample (the shared loop + CFG) against a hand-written Algorithm 2 loop with the same noise."""
    torch.manual_seed(0)
    model = MNISTUNet(MNISTUNetConfig(num_hiddens=8, conditioning="class")).eval()
    digits, gamma = torch.tensor([3, 7]), 5.0
    ours, _ = part_b.sample(model, 2, torch.Generator().manual_seed(1), digits, gamma)

    s = mnist_backbone.schedule()
    T = s.num_steps
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 28, 28, generator=g)
    c = torch.eye(10)[digits]
    with torch.no_grad():
        for t in range(T - 1, -1, -1):
            tt = torch.full((2,), t / T)
            eps_c, eps_u = model(x, tt, c), model(x, tt, torch.zeros_like(c))
            eps_hat = eps_u + gamma * (eps_c - eps_u)                 # Ho & Salimans 2022
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
