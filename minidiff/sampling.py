"""The reverse process: the x0 estimate, the update rules (one strided step [A.3], DDIM, Euler, Heun), and THE
sampling loop.

Every experiment of the report runs through `iterative_denoise`. A backbone is seen only through its estimator
(DESIGN §2):

    eps_fn(x_t, t) -> (eps_hat, v_hat)     x_t (B, C, H, W), t an int, v_hat None or IF's variance channels

On a DDPM schedule the estimate is the noise; on a flow path (schedule.FlowPath, t a float in [0, 1]) it is the
velocity u_hat. Each step of the loop turns the estimate into the clean image and the noise it implies
(x0_hat, eps_hat = schedule.predict(...): [A.1] solved for x0, Ho et al. 2020 eq. 15; or the flow's path solved
for its ends) and hands them to an update rule: a pure formula of (x_t, x0_hat, eps_hat, v_hat, level_t,
level_t') that returns the mean and standard deviation of the next sample, x_t' ~ N(mean, sigma^2). The levels are
alpha_bar_t and alpha_bar_t' on a DDPM schedule, t and t' on a flow path. The rules:

- `reverse_step`, the report's [A.3] (the default). Strided sampling (report 5A §1.4; Song et al. 2021 use the
  same trick for DDIM) skips timesteps: from t to an earlier t' the DDPM posterior mean becomes

    x_t' = sqrt(alpha_bar_t') beta_t / (1 - alpha_bar_t) * x0_hat
         + sqrt(alpha_t) (1 - alpha_bar_t') / (1 - alpha_bar_t) * x_t          + sigma * z
    with alpha_t = alpha_bar_t / alpha_bar_t',  beta_t = 1 - alpha_t

  which, for t' = t - 1, is exactly the posterior mean of Ho et al. 2020 (eq. 7).
- `ddim_step` (Song et al. 2021, eq. 12, with sigma_t(eta) of eq. 16; a report 5B extension):

    x_t' = sqrt(alpha_bar_t') x0_hat + sqrt(1 - alpha_bar_t' - sigma^2) eps_hat + sigma * z
    sigma = eta * sqrt((1 - alpha_bar_t') / (1 - alpha_bar_t)) * sqrt(1 - alpha_bar_t / alpha_bar_t')

  eta = 0 is deterministic (an ODE-like sampler that works with few steps); eta = 1 with t' = t - 1 has the DDPM
  posterior variance beta_tilde_t. Pass `step=functools.partial(ddim_step, eta=...)` for eta > 0.
- `euler_step`, a flow's sampler (the course's Part B since 2025): x_t' = x_t + (t' - t) u_hat.
- `heun(eps_fn)`, Heun's second-order correction of it (Karras et al. 2022, Algorithm 1): two model calls a step but the
  last.

A new sampler of this kind is a new function with the same arguments, passed as `step=`.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from tqdm.auto import tqdm

from .schedule import FlowPath, NoiseSchedule

EpsFn = Callable[[torch.Tensor, int], "tuple[torch.Tensor, Optional[torch.Tensor]]"]
Sigma = Optional["float | torch.Tensor"]     # a step's standard deviation; None = deterministic, no noise
StepFn = Callable[..., "tuple[torch.Tensor, Sigma]"]


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


def flow_times(h: float, start: float = 0.0) -> list[float]:
    """The times of Euler steps of size h on a flow path, from `start` to 1: [start, start + h, ..., 1], the last
    step shortened to land exactly on t = 1. The course's Part B: h = 1 / N from 0 (N = 50 or 300 steps)."""
    n = math.ceil((1.0 - start) / h - 1e-9)                 # steps; the 1e-9 forgives 1 / (1 / N) = N + rounding
    return [start + k * h for k in range(n)] + [1.0]


def predict_x0(schedule: NoiseSchedule, x_t: torch.Tensor, t: int, eps_hat: torch.Tensor) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t)   ([A.1] solved for x0; report 5A §1.3,
    Ho et al. 2020 eq. 15). Shapes (B, C, H, W) in and out; follows x_t's dtype and device."""
    return schedule.predict(x_t, t, eps_hat)[0]


def reverse_step(x_t: torch.Tensor, x0_hat: torch.Tensor, eps_hat: torch.Tensor, v_hat: Optional[torch.Tensor],
                 alpha_bar: float, alpha_bar_prev: float) -> tuple[torch.Tensor, Sigma]:
    """One step of the reverse process from t to t' < t: the mean [A.3] and the standard deviation sigma, so that
    x_t' = mean + sigma * z with z ~ N(0, I) (the loop draws z).

    The variance:
      - v_hat given: IF's learned range (Nichol & Dhariwal 2021, eq. 15), interpolating in log space between
        beta_t and the posterior variance beta_tilde_t = (1 - alpha_bar_t') / (1 - alpha_bar_t) * beta_t:
        log sigma^2 = frac * log beta_t + (1 - frac) * log beta_tilde_t,  frac = (v_hat + 1) / 2.
      - v_hat None: the fixed sigma^2 = beta_t of Ho et al. 2020 (Algorithm 2), Part B's choice.

    Args:
        x_t, x0_hat: (B, C, H, W) the current sample and the clean image estimated from it.
        eps_hat: (B, C, H, W) the estimated noise (the posterior mean needs only x0_hat; DDIM uses it).
        v_hat: (B, C, H, W) in [-1, 1], IF's variance channels, or None.
        alpha_bar, alpha_bar_prev: alpha_bar_t and alpha_bar_t' (Python floats; 1.0 for t' = -1, the clean image).
    Returns:
        mean: (B, C, H, W), x_t's dtype and device; sigma: a float, or a (B, C, H, W) tensor with v_hat.
    """
    alpha = alpha_bar / alpha_bar_prev
    beta = 1.0 - alpha
    # [A.3]: the Gaussian posterior q(x_t' | x_t, x0) evaluated at x0 = x0_hat.
    mean = (math.sqrt(alpha_bar_prev) * beta / (1.0 - alpha_bar)) * x0_hat \
        + (math.sqrt(alpha) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)) * x_t
    if v_hat is None:
        return mean, math.sqrt(beta)
    beta_tilde = max((1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * beta, 1e-20)
    frac = (v_hat + 1.0) / 2.0                                                   # (B, C, H, W)
    log_var = frac * math.log(beta) + (1.0 - frac) * math.log(beta_tilde)
    return mean, torch.exp(0.5 * log_var)


def ddim_sigma(alpha_bar: float, alpha_bar_prev: float, eta: float) -> float:
    """sigma_t(eta) = eta sqrt((1 - alpha_bar_t') / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_t')
    (Song et al. 2021, eq. 16). eta = 1 gives sqrt(beta_tilde_t), the DDPM posterior standard deviation."""
    return eta * math.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * max(1.0 - alpha_bar / alpha_bar_prev, 0.0))


def ddim_step(x_t: torch.Tensor, x0_hat: torch.Tensor, eps_hat: torch.Tensor, v_hat: Optional[torch.Tensor],
              alpha_bar: float, alpha_bar_prev: float, eta: float = 0.0) -> tuple[torch.Tensor, Sigma]:
    """One DDIM step from t to t' < t, any stride (Song et al. 2021, eq. 12):

        x_t' = sqrt(alpha_bar_t') x0_hat + sqrt(1 - alpha_bar_t' - sigma^2) eps_hat + sigma * z

    with sigma = ddim_sigma(alpha_bar_t, alpha_bar_t', eta) (eq. 16). IF's v_hat plays no part.
    Args and returns as reverse_step; eta: 0 = deterministic DDIM (sigma None: the loop draws no noise),
    1 = DDPM-like variance.
    """
    sigma = ddim_sigma(alpha_bar, alpha_bar_prev, eta)
    # eq. 12: the predicted x0, then the "direction pointing to x_t"
    mean = math.sqrt(alpha_bar_prev) * x0_hat + math.sqrt(max(1.0 - alpha_bar_prev - sigma ** 2, 0.0)) * eps_hat
    return mean, (None if sigma == 0.0 else sigma)


def euler_step(x_t: torch.Tensor, x1_hat: torch.Tensor, eps_hat: torch.Tensor, v_hat: Optional[torch.Tensor],
               t: float, t_next: float) -> tuple[torch.Tensor, Sigma]:
    """One Euler step of a flow's ODE dx/dt = u(x, t) from t to t' > t (Lipman et al. 2023; the course's sampler):

        x_t' = x_t + (t' - t) u_hat,    u_hat = x1_hat - eps_hat

    (the velocity of the straight path through the estimated ends; FlowPath.predict made them from the model's
    u_hat). With t' - t = 1 / N from t = 0 this is the course's x <- x + (1 / N) u(x, t). Deterministic (sigma
    None); v_hat plays no part. Shapes (B, C, H, W)."""
    return x_t + (t_next - t) * (x1_hat - eps_hat), None


def heun(eps_fn: EpsFn) -> StepFn:
    """Heun's method for a flow's ODE (the explicit trapezoid rule; Karras et al. 2022, Algorithm 1): an Euler step to
    t', the velocity there, then the step from x_t again with the mean of the two velocities,

        x_euler = x_t + (t' - t) u_hat(x_t, t),    x_t' = x_t + (t' - t) (u_hat(x_t, t) + u_hat(x_euler, t')) / 2.

    Second order: its error shrinks with the square of the step. The step that lands on t = 1 is the Euler step alone,
    as Karras et al. do on their last step: the correction there, with the velocity at the very end of the path,
    made 5-step samples of the MNIST flow model much worse (Fréchet distance 198 vs 148, floor 45; fm2_7). The second
    velocity needs the model, so this makes the update rule for a given velocity estimator: `step=heun(eps_fn)`, two
    model calls per step but the last (2N - 1 for N steps)."""
    def heun_step(x_t, x1_hat, eps_hat, v_hat, t, t_next):
        u_hat = x1_hat - eps_hat
        x_euler = x_t + (t_next - t) * u_hat
        if t_next == 1.0:                                      # the last step: Euler
            return x_euler, None
        u_next, _ = eps_fn(x_euler, t_next)
        return x_t + (t_next - t) * (u_hat + u_next) / 2, None
    return heun_step


def inpaint_projection(
    schedule: NoiseSchedule, x_t: torch.Tensor, t: int, x_orig: torch.Tensor, mask: torch.Tensor,
    noise: Optional[torch.Tensor],
) -> torch.Tensor:
    """[A.5] (RePaint, Lugmayr et al. 2022): keep the generated pixels where mask = 1 and force the rest to the
    original image noised to the same timestep by the schedule's forward process: x_t <- m x_t + (1 - m)
    forward(x_orig, t).
    With noise None the original is pasted in clean (the loop's last step).
    mask: (1 or B, 1 or C, H, W) in {0, 1}, 1 = generate."""
    known = x_orig if noise is None else schedule.add_noise(x_orig, t, noise)
    return mask * x_t + (1.0 - mask) * known


@torch.no_grad()
def iterative_denoise(
    eps_fn: EpsFn,
    schedule: NoiseSchedule | FlowPath,
    x: torch.Tensor,
    timesteps: list[int] | list[float],
    i_start: int = 0,
    step: Optional[StepFn] = None,
    generator: Optional[torch.Generator] = None,
    threshold: Optional[float] = None,
    inpaint: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    callback: Optional[Callable[[int, int, torch.Tensor, torch.Tensor], None]] = None,
    progress: bool = False,
) -> torch.Tensor:
    """The one sampling loop (report 5A §1.4): x starts at timesteps[i_start] and is denoised to timesteps[-1].

    Noise is added on every step but the last, and never by a deterministic step (DDIM with eta = 0, Euler). Pure-
    noise sampling is i_start = 0 with x ~ N(0, I); SDEdit is i_start > 0 with x the noised image (editing.py);
    inpainting passes `inpaint=(x_orig, mask)` [A.5].

    Args:
        eps_fn: the estimator (DESIGN §2): the noise on a DDPM schedule, the velocity on a flow path.
        schedule: a NoiseSchedule, or a FlowPath.
        x: (B, C, H, W) the sample at timesteps[i_start].
        timesteps: from noise toward the clean image: decreasing ints on a DDPM schedule (strided_timesteps(),
            ddpm_timesteps(T)), increasing floats from 0 to 1 on a flow path (flow_times(h)).
        step: the update rule: reverse_step [A.3] (the report's) or ddim_step on a DDPM schedule; euler_step or
            heun(eps_fn) on a flow path. None: the schedule's own, reverse_step or euler_step.
        generator: seeds the noise; must live on x's device.
        threshold: dynamic thresholding max value for x0_hat, or None (the report's default).
        inpaint: (x_orig (1 or B, C, H, W), mask (.., 1 or C, H, W)), mask 1 = generate.
        callback: called as callback(i, t_prev, x_t_prev, x0_hat) after every step (for figures and GIFs).
        progress: show a progress bar of the steps in a terminal (silent when stderr is a file or pipe).
    Returns:
        (B, C, H, W) the sample at timesteps[-1].
    """
    if not 0 <= i_start < len(timesteps) - 1:
        raise ValueError(f"i_start must be in [0, {len(timesteps) - 2}], got {i_start}")
    if step is None:                                       # [A.3] on a DDPM schedule, Euler on a flow path
        step = euler_step if isinstance(schedule, FlowPath) else reverse_step
    if not callable(step):
        raise TypeError(f"step must be an update rule such as reverse_step or ddim_step, got {step!r}")
    levels = [schedule.level(t) for t in timesteps]          # alpha_bar_t, or a flow's t: they grow toward the data
    if any(b <= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"the loop goes backwards in time: timesteps must go from noise toward the clean image, got "
                         f"{timesteps}")
    last = len(timesteps) - 2

    def randn() -> torch.Tensor:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    for i in tqdm(range(i_start, last + 1), desc="denoising", unit="step", leave=False,
                  disable=None if progress else True):
        t, t_prev = timesteps[i], timesteps[i + 1]
        # 1. the model's estimate at x_t: the noise (or a flow's velocity), one batched call whatever the combinator
        estimate, v_hat = eps_fn(x, t)
        # 2. the clean image and the noise it implies: [A.1] (or the flow's path) solved for them (report §1.3)
        x0_hat, eps_hat = schedule.predict(x, t, estimate)
        if threshold is not None:
            x0_hat = dynamic_threshold(x0_hat, threshold)
        # 3. one step to t' (x_t' ~ N(mean, sigma^2)); the last step adds no noise
        mean, sigma = step(x, x0_hat, eps_hat, v_hat, levels[i], levels[i + 1])
        x = mean if i == last or sigma is None else mean + sigma * randn()
        # 4. inpainting [A.5]: the pixels to keep are the original, noised to t'
        if inpaint is not None:
            x_orig, mask = inpaint
            x = inpaint_projection(schedule, x, t_prev, x_orig, mask, None if i == last else randn())
        if callback is not None:
            callback(i, t_prev, x, x0_hat)
    return x


@torch.no_grad()
def one_step_denoise(eps_fn: EpsFn, schedule: NoiseSchedule | FlowPath, x_t: torch.Tensor, t: int | float
                     ) -> torch.Tensor:
    """Report 5A §1.3: a single estimate of the clean image, x0_hat = predict_x0(x_t, eps_fn(x_t, t)) (on a flow path
    x1_hat = x_t + (1 - t) u_hat)."""
    estimate, _ = eps_fn(x_t, t)
    return schedule.predict(x_t, t, estimate)[0]
