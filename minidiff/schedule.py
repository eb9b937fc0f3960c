"""Noise schedules and the forward process [A.1].

A diffusion model is trained on images noised by a fixed schedule of variances beta_t, t = 0 .. T-1.
Everything the samplers need follows from the cumulative product

    alpha_t = 1 - beta_t,    alpha_bar_t = prod_{s <= t} alpha_s          (Ho et al. 2020, §2)

and the forward process [A.1] noises a clean image x0 to any timestep in one shot:

    x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * eps,   eps ~ N(0, I)   (Ho et al. 2020, eq. 4)

Two schedules appear in the report:
- Part A, DeepFloyd IF: the "squaredcos_cap_v2" cosine schedule of Nichol & Dhariwal 2021 (eq. 17),
  T = 1000, betas capped at 0.999, cumulative product taken in float32 exactly as IF's scheduler does.
- Part B, MNIST: linear betas from 1e-4 to 0.02, T = 300 (Ho et al. 2020 use T = 1000).

Timesteps are 0-indexed. `alpha_bar_at(-1)` is 1: "t = -1" stands for the clean image, which is where the
last DDPM step of Part B lands.

The course's Part B since 2025 trains flow models instead, whose forward process is a straight line from noise to
data (`FlowPath`). Both kinds answer the sampling loop's two questions the same way (sampling.py): `predict`, the
clean image and the noise a model's estimate implies at x_t, and `level`, the time variable the update rules read
(alpha_bar_t here, t itself on a flow path), which grows toward the clean image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NoiseSchedule:
    """A fixed variance schedule. Tensors live on the CPU in float32; lookups return Python floats
    (scalar t, used by the samplers: no device sync) or tensors on the input's device (batched t, training).
    """

    betas: torch.Tensor      # (T,) float32, beta_t
    alpha_bar: torch.Tensor  # (T,) float32, cumprod(1 - beta)

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> "NoiseSchedule":
        betas = betas.to(torch.float32).cpu()
        return cls(betas=betas, alpha_bar=torch.cumprod(1.0 - betas, dim=0))

    @classmethod
    def cosine(cls, num_steps: int = 1000, max_beta: float = 0.999) -> "NoiseSchedule":
        """DeepFloyd IF's schedule (squaredcos_cap_v2; Nichol & Dhariwal 2021, eq. 17 with s = 0.008):
        f(u) = cos^2(((u + 0.008) / 1.008) * pi / 2),  beta_i = min(1 - f((i+1)/T) / f(i/T), max_beta).
        The betas are computed in float64 and cast to float32 before the cumulative product, as IF does.
        """
        def f(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [min(1 - f((i + 1) / num_steps) / f(i / num_steps), max_beta) for i in range(num_steps)]
        return cls.from_betas(torch.tensor(betas, dtype=torch.float32))

    @classmethod
    def linear(cls, beta_start: float = 1e-4, beta_end: float = 0.02, num_steps: int = 300) -> "NoiseSchedule":
        """Part B's schedule (report 5B §2.1; Ho et al. 2020, §4): betas evenly spaced in [beta_start, beta_end]."""
        return cls.from_betas(torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float32))

    @property
    def num_steps(self) -> int:
        """T, the number of training timesteps."""
        return self.betas.shape[0]

    def alpha_bar_at(self, t: int) -> float:
        """alpha_bar_t as a Python float; t = -1 (the clean image) gives 1.0."""
        if not -1 <= t < self.num_steps:
            raise ValueError(f"timestep {t} is outside [-1, {self.num_steps - 1}] for this schedule")
        return 1.0 if t < 0 else float(self.alpha_bar[t])

    def level(self, t: int) -> float:
        """The update rules' time variable (sampling.reverse_step, ddim_step): alpha_bar_t, which grows toward the
        clean image (alpha_bar_{-1} = 1)."""
        return self.alpha_bar_at(t)

    def predict(self, x_t: torch.Tensor, t: int, eps_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_hat, eps_hat): the clean image a noise estimate implies, [A.1] solved for x0 (report 5A §1.3; Ho et
        al. 2020, eq. 15), x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t); and the noise
        estimate itself. Shapes (B, C, H, W); follows x_t's dtype and device."""
        a = self.alpha_bar_at(t)
        return (x_t - math.sqrt(1.0 - a) * eps_hat) / math.sqrt(a), eps_hat

    def add_noise(self, x0: torch.Tensor, t: int | torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """[A.1] x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps   (Ho et al. 2020, eq. 4).

        Args:
            x0: (B, C, H, W) clean images in [-1, 1] (Part A) or [0, 1] (Part B), any float dtype/device.
            t: an int timestep, or a (B,) int64 tensor of per-image timesteps.
            eps: (B, C, H, W) standard normal noise.
        Returns:
            x_t: (B, C, H, W), same dtype and device as x0.
        """
        if isinstance(t, int):
            a = self.alpha_bar_at(t)
            return math.sqrt(a) * x0 + math.sqrt(1.0 - a) * eps
        a = self.alpha_bar.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))  # (B, 1, 1, 1)
        return a.sqrt() * x0 + (1.0 - a).sqrt() * eps


@dataclass(frozen=True)
class FlowPath:
    """The straight path of flow matching (Lipman et al. 2023; Liu et al. 2023, rectified flow) in the course's
    direction, t = 0 noise and t = 1 data (the course calls the noise x0 and the digit x1):

        x_t = (1 - t) eps + t x1,   eps ~ N(0, I),  t in [0, 1];    its velocity  dx_t/dt = x1 - eps

    A flow model estimates that velocity, u_hat(x_t, t). Solving the path for x1 and eps gives the clean image and
    the noise the estimate implies: x1_hat = x_t + (1 - t) u_hat, eps_hat = x_t - t u_hat.
    """

    def level(self, t: float) -> float:
        """The update rules' time variable (sampling.euler_step): t itself, 0 = noise, 1 = the clean image."""
        return float(t)

    def predict(self, x_t: torch.Tensor, t: float, u_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x1_hat, eps_hat) = (x_t + (1 - t) u_hat, x_t - t u_hat): the path solved for its two ends, given the
        velocity estimate u_hat. Shapes (B, C, H, W); follows x_t's dtype and device."""
        return x_t + (1.0 - t) * u_hat, x_t - t * u_hat

    def add_noise(self, x1: torch.Tensor, t: float | torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = (1 - t) eps + t x1: a clean image x1 (B, C, H, W) moved to time t on the path, t a float or a (B,)
        tensor of per-image times (training). Same dtype and device as x1."""
        if torch.is_tensor(t):
            t = t.to(x1.dtype).view(-1, *([1] * (x1.dim() - 1)))                      # (B, 1, 1, 1)
        return (1.0 - t) * eps + t * x1
