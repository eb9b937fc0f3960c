"""Part B's diffusion model on MNIST (report 5B §2.1-2.4): the DDPM of Ho et al. 2020 with the report's numbers.

What Part B's DDPMs need beside the UNet (mnist_unet.py) and the training loop (train.py):

    SCHEDULE            linear betas 1e-4 .. 0.02, T = 300                                       (5B §2.1)
    loss                Algorithm 1: x_t by [A.1], L = || eps_theta(x_t, t / T, c) - eps ||^2       (5B §2.2, §2.4)
    one_hot             the class vector c; the digit -1 is "no class", the all-zero vector         (5B §2.4)
    estimator           a trained UNet as a noise estimator, model_fn(x_t, t, cond) -> (eps_hat, None)
    sample              Algorithm 2 (every t, sigma_t^2 = beta_t), with CFG [A.4] gamma = 5         (5B §2.3, §2.4)
                        (and beyond the report: autoguided by a less-trained snapshot, Karras et al. 2024)

The UNet sees digits in [0, 1] (the report's range) and the timestep as t / T. The all-zero class vector is the
unconditional input that classifier-free guidance needs (Ho & Salimans 2022): training drops the class with
probability p_uncond = 0.1 (train.py). Sampling runs through the one loop of sampling.py that every Part A
experiment uses too, so DDIM is `sample(..., timesteps=spaced_timesteps(T, 10), step=ddim_step)`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .guidance import autoguidance, cfg, conditional, limited
from .mnist_unet import MNISTUNet
from .sampling import StepFn, ddpm_timesteps, iterative_denoise, reverse_step
from .schedule import NoiseSchedule

NUM_STEPS, BETA_START, BETA_END = 300, 1e-4, 0.02          # report 5B §2.1
SCHEDULE = NoiseSchedule.linear(BETA_START, BETA_END, NUM_STEPS)
NUM_CLASSES = 10
GAMMA = 5.0                                                 # report 5B §2.4: the CFG scale for sampling


def one_hot(digits: torch.Tensor | list[int], device=None) -> torch.Tensor:
    """(B,) digits -> (B, 10) float one-hots; a digit of -1 gives the all-zero "no class" vector (5B §2.4)."""
    digits = torch.as_tensor(digits, device=device).long()
    return F.one_hot(digits.clamp(min=0), NUM_CLASSES).float() * (digits >= 0).float().unsqueeze(1)


def loss(model: MNISTUNet, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
         c: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Algorithm 1 of Ho et al. 2020 (report 5B §2.2; with the class c, §2.4):

        x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps   [A.1],    L = || eps_theta(x_t, t / T, c) - eps ||^2

    Args:
        x0: (B, 1, 28, 28) clean digits in [0, 1]; t: (B,) int64 timesteps in [0, T); eps: (B, 1, 28, 28) N(0, I).
        c: (B, 10) one-hots, all zeros where the class was dropped (class model), or None (time model).
    Returns:
        the mean squared error, a scalar tensor.
    """
    x_t = SCHEDULE.add_noise(x0, t, eps)                                  # (B, 1, 28, 28)
    t_frac = t.float() / NUM_STEPS                                        # (B,) in [0, 1)
    eps_hat = model(x_t, t_frac) if c is None else model(x_t, t_frac, c)
    return F.mse_loss(eps_hat, eps)


def estimator(model: MNISTUNet):
    """A trained time- or class-conditioned UNet as the conditional noise estimator of DESIGN §2:

        model_fn(x_t, t, cond) -> (eps_hat, None)    x_t (B, 1, 28, 28), t an int timestep, cond (B, 10) one-hots

    The time-only model ignores cond. The model runs in its own dtype (a stage may cast it to bfloat16, which
    computes faster where the hardware has it): its inputs are cast to it, and eps_hat back to x_t's dtype, so the
    sampling loop keeps x_t's precision."""
    dtype = next(model.parameters()).dtype
    def model_fn(x_t: torch.Tensor, t: int, cond: Optional[torch.Tensor] = None):
        t_frac = torch.full((x_t.shape[0],), t / NUM_STEPS, device=x_t.device, dtype=dtype)       # (B,)
        if model.config.kind == "class":
            return model(x_t.to(dtype), t_frac, cond.to(dtype)).to(x_t.dtype), None
        return model(x_t.to(dtype), t_frac).to(x_t.dtype), None
    return model_fn


def guided_estimator(model: MNISTUNet, digits: Optional[torch.Tensor] = None, gamma: float = GAMMA,
                     guide_below: float = 1.0):
    """The eps_fn that samples `digits` (N,): CFG [A.4] eps_u + gamma (eps_c - eps_u) against "no class", both
    branches in one batched forward (guidance.cfg). With digits None: the unconditional estimate (the only one a
    time-only model has). guide_below < 1: CFG only at the steps whose noise fraction t / T is at most guide_below,
    the conditional estimate at the noisier ones (guidance.limited); 1, the report's, guides every step."""
    device = next(model.parameters()).device
    no_class = one_hot([-1], device=device)                              # (1, 10) zeros
    if digits is None:
        return conditional(estimator(model), no_class)
    c = one_hot(digits, device=device)                                   # (N, 10)
    guided = cfg(estimator(model), c, no_class, gamma)
    if guide_below >= 1.0:
        return guided
    return limited(guided, conditional(estimator(model), c), lambda t: t / NUM_STEPS <= guide_below)


@torch.no_grad()
def sample(model: MNISTUNet, x_T: torch.Tensor, digits: Optional[torch.Tensor] = None, gamma: float = GAMMA,
           generator: Optional[torch.Generator] = None, timesteps: Optional[list[int]] = None,
           step: StepFn = reverse_step, callback=None, progress: bool = False, guide_below: float = 1.0,
           autoguide: Optional[tuple[MNISTUNet, float]] = None) -> torch.Tensor:
    """Algorithm 2 of Ho et al. 2020 (report 5B §2.3), with CFG when digits are given (§2.4): from x_T through every
    t = T-1, ..., 0, x_{t-1} = [A.3](x_t, x0_hat) + sqrt(beta_t) z, with z = 0 at the last step.

    Args:
        x_T: (N, 1, 28, 28) standard normal noise (the caller draws it, so that samplers can share it).
        digits: (N,) the digits asked for, or None (unconditional); gamma: the CFG scale; guide_below: CFG only
            where t / T <= guide_below (guided_estimator).
        generator: seeds the loop's noise, on x_T's device.
        timesteps, step: the loop's schedule and update rule; default every timestep with reverse_step (DDPM), or
            e.g. spaced_timesteps(T, 10) with ddim_step.
        callback, progress: as in sampling.iterative_denoise.
        autoguide: (bad_model, w): guide by a worse model of the same kind, e.g. an earlier snapshot of the run,
            eps_bad + w (eps - eps_bad) (guidance.autoguidance); None, the report's, samples the model alone.
    Returns:
        (N, 1, 28, 28) in [0, 1]: clamped for display (the loop itself never clamps).
    """
    eps_fn = guided_estimator(model, digits, gamma, guide_below)
    if autoguide is not None:
        bad_model, w = autoguide
        eps_fn = autoguidance(eps_fn, guided_estimator(bad_model, digits, gamma, guide_below), w)
    x0 = iterative_denoise(eps_fn, SCHEDULE, x_T, timesteps or ddpm_timesteps(NUM_STEPS), step=step,
                           generator=generator, callback=callback, progress=progress)
    return x0.clamp(0, 1)
