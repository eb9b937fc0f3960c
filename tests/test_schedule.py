"""NoiseSchedule: the cosine schedule is DeepFloyd IF's, the linear one Part B's, add_noise is [A.1]."""
import math

import pytest
import torch

from minidiff.schedule import NoiseSchedule


def if_alphas_cumprod_float64(T=1000, max_beta=0.999):
    """DESIGN §5 written out again independently: abar(s) = cos^2(((s + 0.008) / 1.008) pi / 2),
    beta_i = min(1 - abar((i+1)/T) / abar(i/T), 0.999), alpha_bar_t = prod_{i<=t} (1 - beta_i), all in float64."""
    def abar(s):
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    out, prod = [], 1.0
    for i in range(T):
        prod *= 1.0 - min(1.0 - abar((i + 1) / T) / abar(i / T), max_beta)
        out.append(prod)
    return torch.tensor(out, dtype=torch.float64)


def test_cosine_alpha_bar_is_the_if_formula():
    s = NoiseSchedule.cosine(1000)
    assert s.alpha_bar.dtype == torch.float32 and s.alpha_bar.shape == (1000,)
    torch.testing.assert_close(s.alpha_bar.double(), if_alphas_cumprod_float64(), rtol=0, atol=1e-6)
    assert s.betas.max().item() == pytest.approx(0.999)          # the cap bites at the very end
    assert torch.all(s.alpha_bar[1:] < s.alpha_bar[:-1])


def test_cosine_alpha_bar_matches_diffusers_alphas_cumprod():
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod
    torch.testing.assert_close(NoiseSchedule.cosine(1000).alpha_bar, ref.float(), rtol=0, atol=1e-6)


def test_linear_schedule_is_part_b():
    s = NoiseSchedule.linear(1e-4, 0.02, 300)
    betas = torch.linspace(1e-4, 0.02, 300, dtype=torch.float64)
    torch.testing.assert_close(s.alpha_bar.double(), torch.cumprod(1 - betas, 0), rtol=0, atol=1e-6)
    assert s.num_steps == 300 and s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)


def test_linear_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(num_train_timesteps=300, beta_start=1e-4, beta_end=0.02).alphas_cumprod
    torch.testing.assert_close(NoiseSchedule.linear(1e-4, 0.02, 300).alpha_bar, ref.float(), rtol=0, atol=1e-6)


def test_alpha_bar_at_clean_image_and_range():
    s = NoiseSchedule.linear()
    assert s.alpha_bar_at(-1) == 1.0 and s.alpha_bar_at(5) == pytest.approx(float(s.alpha_bar[5]))
    for bad in (-2, 300):
        with pytest.raises(ValueError, match="outside"):
            s.alpha_bar_at(bad)


def test_add_noise_is_A1_for_int_and_tensor_t():
    s = NoiseSchedule.cosine()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1, torch.randn(3, 3, 8, 8, generator=g)
    t = 500
    a = if_alphas_cumprod_float64()[t].item()
    expected = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps                        # [A.1] by hand
    torch.testing.assert_close(s.add_noise(x0, t, eps), expected, atol=1e-6, rtol=0)
    ts = torch.tensor([t, 10, 999])
    batched = s.add_noise(x0, ts, eps)
    for i, ti in enumerate(ts.tolist()):
        torch.testing.assert_close(batched[i], s.add_noise(x0[i:i + 1], ti, eps[i:i + 1])[0])


def test_add_noise_follows_dtype():
    s = NoiseSchedule.linear()
    x0 = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    assert s.add_noise(x0, 100, torch.randn_like(x0)).dtype == torch.float64
    assert s.add_noise(x0, torch.tensor([1, 2]), torch.randn_like(x0)).dtype == torch.float64


def test_noised_image_statistics_follow_alpha_bar():
    """[A.1] at large t is almost pure noise: mean sqrt(abar) x0, variance 1 - abar (Ho et al. 2020, eq. 4)."""
    s = NoiseSchedule.cosine()
    g = torch.Generator().manual_seed(1)
    x0 = torch.full((1, 1, 200, 200), 0.5)
    x_t = s.add_noise(x0, 750, torch.randn(x0.shape, generator=g))
    a = s.alpha_bar_at(750)
    assert x_t.mean().item() == pytest.approx(0.5 * math.sqrt(a), abs=0.01)
    assert x_t.var().item() == pytest.approx(1 - a, rel=0.02)
