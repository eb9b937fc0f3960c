"""The reverse process: the x0 estimate, one strided step [A.3], and THE sampling loop.

Every experiment of the report runs through `iterative_denoise`. A backbone is seen only through its noise
estimator (DESIGN §2):

    eps_fn(x_t, t) -> (eps_hat, v_hat)     x_t (B, C, H, W), t an int, v_hat None or IF's variance channels

Strided sampling (report 5A §1.4; Song et al. 2021 use the same trick for DDIM) skips timesteps: from t to an
earlier t' the DDPM posterior mean becomes [A.3]

    x_t' = sqrt(alpha_bar_t') beta_t / (1 - alpha_bar_t) * x0_hat
         + sqrt(alpha_t) (1 - alpha_bar_t') / (1 - alpha_bar_t) * x_t          + sigma * z
    with alpha_t = alpha_bar_t / alpha_bar_t',  beta_t = 1 - alpha_t

which, for t' = t - 1, is exactly the posterior mean of Ho et al. 2020 (eq. 7). x0_hat comes from inverting
[A.1] with the estimated noise (Ho et al. 2020, eq. 15).

The same loop also takes DDIM steps (Song et al. 2021, eq. 12, with sigma_t(eta) of eq. 16; report 5B extension):

    x_t' = sqrt(alpha_bar_t') x0_hat + sqrt(1 - alpha_bar_t' - sigma^2) eps_hat + sigma * z
    sigma = eta * sqrt((1 - alpha_bar_t') / (1 - alpha_bar_t)) * sqrt(1 - alpha_bar_t / alpha_bar_t')

eta = 0 is deterministic (an ODE-like sampler that works with few steps); eta = 1 with t' = t - 1 has the DDPM
posterior variance beta_tilde_t.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from tqdm.auto import tqdm

from .schedule import NoiseSchedule

EpsFn = Callable[[torch.Tensor, int], "tuple[torch.Tensor, Optional[torch.Tensor]]"]


def strided_timesteps(start: int = 990, stride: int = 30) -> list[int]:
    """The report's strided schedule (5A §1.4): [start, start - stride, ..., 0]; 990 by 30 gives 34 timesteps,
    i.e. 33 steps."""
    if start % stride:
        raise ValueError(f"start {start} must be a multiple of stride {stride} so the schedule ends at t = 0")
    return list(range(start, -1, -stride))


def ddpm_timesteps(num_steps: int) -> list[int]:
    """Every timestep, as in Part B's DDPM sampler (Ho et al. 2020, Algorithm 2): [T-1, ..., 0, -1].
    The final -1 is the clean image (alpha_bar = 1), where the last step t = 0 lands."""
    return list(range(num_steps - 1, -2, -1))


def spaced_timesteps(num_steps: int, n: int) -> list[int]:
    """n evenly spaced steps for a model trained with T = num_steps: the "trailing" spacing of Lin et al. 2024
    (Table 2; diffusers' timestep_spacing="trailing"): [T-1, T-1-T/n, ..., T/n-1, -1], rounded, ending on the
    clean image. n = T gives ddpm_timesteps(T). For DDIM with few steps (e.g. 5, 10, 20, 50 of T = 300)."""
    if not 1 <= n <= num_steps:
        raise ValueError(f"the number of sampling steps must be in [1, {num_steps}], got {n}")
    return [round(num_steps - k * num_steps / n) - 1 for k in range(n)] + [-1]


def dynamic_threshold(x0_hat: torch.Tensor, max_value: float, ratio: float = 0.95) -> torch.Tensor:
    """Imagen's dynamic thresholding (Saharia et al. 2022, §2.3), as IF's scheduler config enables it:
    s = clamp(quantile_ratio(|x0_hat|), 1, max_value) per image; x0_hat <- clamp(x0_hat, -s, s) / s."""
    B = x0_hat.shape[0]
    s = torch.quantile(x0_hat.abs().reshape(B, -1).float(), ratio, dim=1)      # (B,)
    s = s.clamp(min=1.0, max=max_value).to(x0_hat.dtype).view(B, *([1] * (x0_hat.dim() - 1)))
    return torch.maximum(torch.minimum(x0_hat, s), -s) / s


def predict_x0(schedule: NoiseSchedule, x_t: torch.Tensor, t: int, eps_hat: torch.Tensor) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t)   ([A.1] solved for x0; report 5A §1.3,
    Ho et al. 2020 eq. 15). Shapes (B, C, H, W) in and out; follows x_t's dtype and device."""
    a = schedule.alpha_bar_at(t)
    return (x_t - math.sqrt(1.0 - a) * eps_hat) / math.sqrt(a)


def reverse_step(
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    t: int,
    t_prev: int,
    eps_hat: torch.Tensor,
    v_hat: Optional[torch.Tensor] = None,
    noise: Optional[torch.Tensor] = None,
    threshold: Optional[float] = None,
) -> torch.Tensor:
    """One step of the reverse process from t to t_prev < t: the mean [A.3], plus sigma * noise when noise is given.

    The variance (only used when `noise` is given):
      - v_hat given: IF's learned range (Nichol & Dhariwal 2021, eq. 15), interpolating in log space between
        beta_t and the posterior variance beta_tilde_t = (1 - alpha_bar_t') / (1 - alpha_bar_t) * beta_t:
        log sigma^2 = frac * log beta_t + (1 - frac) * log beta_tilde_t,  frac = (v_hat + 1) / 2.
      - v_hat None: the fixed sigma^2 = beta_t of Ho et al. 2020 (Algorithm 2), Part B's choice.

    Args:
        x_t: (B, C, H, W) current sample.
        t, t_prev: int timesteps, -1 <= t_prev < t.
        eps_hat: (B, C, H, W) estimated noise.
        v_hat: (B, C, H, W) in [-1, 1], IF's variance channels, or None.
        noise: (B, C, H, W) standard normal noise to add, or None for the mean alone.
        threshold: if set, dynamic thresholding of x0_hat with this max value (IF stage I: 1.5).
    Returns:
        x_t_prev: (B, C, H, W), same dtype and device as x_t.
    """
    if not t_prev < t:
        raise ValueError(f"reverse_step goes backwards in time: got t={t}, t_prev={t_prev}")
    alpha_bar, alpha_bar_prev = schedule.alpha_bar_at(t), schedule.alpha_bar_at(t_prev)
    alpha = alpha_bar / alpha_bar_prev
    beta = 1.0 - alpha

    x0_hat = predict_x0(schedule, x_t, t, eps_hat)
    if threshold is not None:
        x0_hat = dynamic_threshold(x0_hat, threshold)
    # [A.3]: the Gaussian posterior q(x_t' | x_t, x0) evaluated at x0 = x0_hat.
    mean = (math.sqrt(alpha_bar_prev) * beta / (1.0 - alpha_bar)) * x0_hat \
        + (math.sqrt(alpha) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)) * x_t
    if noise is None:
        return mean

    beta_tilde = max((1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * beta, 1e-20)
    if v_hat is None:
        return mean + math.sqrt(beta) * noise
    frac = (v_hat + 1.0) / 2.0                                                   # (B, C, H, W)
    log_var = frac * math.log(beta) + (1.0 - frac) * math.log(beta_tilde)
    return mean + torch.exp(0.5 * log_var) * noise


def ddim_sigma(schedule: NoiseSchedule, t: int, t_prev: int, eta: float) -> float:
    """sigma_t(eta) = eta sqrt((1 - alpha_bar_t') / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_t')
    (Song et al. 2021, eq. 16). eta = 1 gives sqrt(beta_tilde_t), the DDPM posterior standard deviation."""
    alpha_bar, alpha_bar_prev = schedule.alpha_bar_at(t), schedule.alpha_bar_at(t_prev)
    return eta * math.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * max(1.0 - alpha_bar / alpha_bar_prev, 0.0))


def ddim_step(
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    t: int,
    t_prev: int,
    eps_hat: torch.Tensor,
    eta: float = 0.0,
    noise: Optional[torch.Tensor] = None,
    threshold: Optional[float] = None,
) -> torch.Tensor:
    """One DDIM step from t to t_prev < t (Song et al. 2021, eq. 12):

        x_t' = sqrt(alpha_bar_t') x0_hat + sqrt(1 - alpha_bar_t' - sigma^2) eps_hat + sigma * noise

    with sigma = ddim_sigma(t, t_prev, eta) (eq. 16); the last term only when noise is given.
    Args:
        x_t, eps_hat: (B, C, H, W); t, t_prev: int timesteps, -1 <= t_prev < t (any stride).
        eta: 0 = deterministic DDIM, 1 = DDPM-like variance; noise: (B, C, H, W) standard normal or None.
        threshold: dynamic thresholding of x0_hat (as in reverse_step); eps_hat itself is not re-derived.
    Returns:
        x_t_prev: (B, C, H, W), same dtype and device as x_t.
    """
    if not t_prev < t:
        raise ValueError(f"ddim_step goes backwards in time: got t={t}, t_prev={t_prev}")
    alpha_bar_prev = schedule.alpha_bar_at(t_prev)
    sigma = ddim_sigma(schedule, t, t_prev, eta)
    x0_hat = predict_x0(schedule, x_t, t, eps_hat)
    if threshold is not None:
        x0_hat = dynamic_threshold(x0_hat, threshold)
    # eq. 12: the predicted x0, the "direction pointing to x_t", and fresh noise
    x = math.sqrt(alpha_bar_prev) * x0_hat + math.sqrt(max(1.0 - alpha_bar_prev - sigma ** 2, 0.0)) * eps_hat
    return x if noise is None or sigma == 0.0 else x + sigma * noise


def inpaint_projection(
    schedule: NoiseSchedule, x_t: torch.Tensor, t: int, x_orig: torch.Tensor, mask: torch.Tensor,
    noise: Optional[torch.Tensor],
) -> torch.Tensor:
    """[A.5] (RePaint, Lugmayr et al. 2022): keep the generated pixels where mask = 1 and force the rest to the
    original image noised to the same timestep: x_t <- m x_t + (1 - m) forward(x_orig, t).
    With noise None the original is pasted in clean (the loop's last step).
    mask: (1 or B, 1 or C, H, W) in {0, 1}, 1 = generate."""
    known = x_orig if noise is None else schedule.add_noise(x_orig, t, noise)
    return mask * x_t + (1.0 - mask) * known


@torch.no_grad()
def iterative_denoise(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    timesteps: list[int],
    i_start: int = 0,
    generator: Optional[torch.Generator] = None,
    callback: Optional[Callable[[int, int, torch.Tensor, torch.Tensor], None]] = None,
    inpaint: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    threshold: Optional[float] = None,
    step: str = "ddpm",
    eta: float = 0.0,
) -> torch.Tensor:
    """The one sampling loop (report 5A §1.4): x starts at timesteps[i_start] and is denoised to timesteps[-1].

    Each step is `reverse_step` [A.3] (step="ddpm") or `ddim_step` with `eta` (step="ddim"; Song et al. 2021).
    Noise is added on every step but the last (and never by DDIM with eta = 0, which draws none). Pure-noise
    sampling is i_start = 0 with x ~ N(0, I); SDEdit is i_start > 0 with x the noised image (editing.py);
    inpainting passes `inpaint=(x_orig, mask)` [A.5].

    Args:
        eps_fn: the noise estimator (DESIGN §2).
        x: (B, C, H, W) the sample at timesteps[i_start].
        timesteps: decreasing ints, e.g. strided_timesteps() or ddpm_timesteps(T).
        generator: seeds the noise; must live on x's device.
        callback: called as callback(i, t_prev, x_t_prev, x0_hat) after every step (for figures and GIFs).
        inpaint: (x_orig (1 or B, C, H, W), mask (.., 1 or C, H, W)), mask 1 = generate.
        threshold: dynamic thresholding max value for x0_hat, or None (the report's default).
        step: "ddpm" (the report's sampler) or "ddim"; eta: DDIM's noise scale (eq. 16), 0 = deterministic.
    Returns:
        (B, C, H, W) the sample at timesteps[-1].

    In a terminal a progress bar counts the steps (the report's 300-step MNIST sampling of 1000 digits takes over an
    hour on a CPU); it stays silent when stderr is a file or pipe, as under pytest.
    """
    if not 0 <= i_start < len(timesteps) - 1:
        raise ValueError(f"i_start must be in [0, {len(timesteps) - 2}], got {i_start}")
    if step not in ("ddpm", "ddim"):
        raise ValueError(f"step must be 'ddpm' or 'ddim', got {step!r}")
    draws_noise = step == "ddpm" or eta != 0.0
    last = len(timesteps) - 2
    for i in tqdm(range(i_start, last + 1), desc="denoising", unit="step", leave=False, disable=None):
        t, t_prev = timesteps[i], timesteps[i + 1]
        eps_hat, v_hat = eps_fn(x, t)
        noise = None if i == last or not draws_noise else torch.randn(
            x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x0_hat = None
        if callback is not None:                  # the x0_hat the step uses (thresholded when it is)
            x0_hat = predict_x0(schedule, x, t, eps_hat)
            x0_hat = x0_hat if threshold is None else dynamic_threshold(x0_hat, threshold)
        if step == "ddpm":
            x = reverse_step(schedule, x, t, t_prev, eps_hat, v_hat, noise, threshold)
        else:                                     # IF's v_hat plays no part in DDIM
            x = ddim_step(schedule, x, t, t_prev, eps_hat, eta, noise, threshold)
        if inpaint is not None:
            x_orig, mask = inpaint
            keep_noise = None if i == last else torch.randn(
                x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = inpaint_projection(schedule, x, t_prev, x_orig, mask, keep_noise)
        if callback is not None:
            callback(i, t_prev, x, x0_hat)
    return x


@torch.no_grad()
def one_step_denoise(eps_fn: EpsFn, schedule: NoiseSchedule, x_t: torch.Tensor, t: int) -> torch.Tensor:
    """Report 5A §1.3: a single estimate of the clean image, x0_hat = predict_x0(x_t, eps_fn(x_t, t))."""
    eps_hat, _ = eps_fn(x_t, t)
    return predict_x0(schedule, x_t, t, eps_hat)
