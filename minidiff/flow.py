"""The current course's Part B (2025 on): flow matching on MNIST, the sibling of ddpm.py on the same UNet.

What the flow-matching models need beside the UNet (mnist_unet.py) and the one training loop (train.py):

    PATH                x_t = (1 - t) x0 + t x1: x0 ~ N(0, I) noise, x1 a digit, t ~ U[0, 1]  (schedule.FlowPath)
    loss                L = || u_theta(x_t, t, c) - (x1 - x0) ||^2    (Lipman et al. 2023; Liu et al. 2023)
    estimator           a trained UNet as a velocity estimator, model_fn(x_t, t, cond) -> (u_hat, None)
    guided_estimator    CFG on the velocity, u = u_u + gamma (u_c - u_u), gamma = 5 (Ho & Salimans 2022 for eps)
    sample              Euler from t = 0 to 1 in N steps, x <- x + (1 / N) u (course: N = 50 time-only, 300 class),
                        or Heun's second-order steps; optionally autoguided by a less-trained snapshot
                        (Karras et al. 2024; beyond the course)

The course calls the noise x0 and the digit x1 (t = 0 is noise, t = 1 is data: the other way round from DDPM's t,
and from some libraries). The code names the noise eps, as everywhere else in minidiff. Unlike DDPM's eps_theta, the
UNet sees t itself, and the time-only model multiplies its time embeddings in (mnist_unet.py, time_injection).
Sampling runs through the one loop of sampling.py; nothing is clamped inside it, only the final images for display.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .ddpm import one_hot
from .guidance import autoguidance, cfg, conditional, limited
from .mnist_unet import MNISTUNet
from .sampling import euler_step, flow_times, heun, iterative_denoise
from .schedule import FlowPath

PATH = FlowPath()
GAMMA = 5.0                     # the course's CFG scale on the velocity
NUM_STEPS = {"time": 50, "class": 300}                   # the course notebook's Euler steps per model


def loss(model: MNISTUNet, x1: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
         c: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The flow-matching loss (Lipman et al. 2023, eq. 23 with the straight path; Liu et al. 2023):

        x_t = (1 - t) eps + t x1,    L = || u_theta(x_t, t, c) - (x1 - eps) ||^2

    The target x1 - eps is the path's velocity; the one function that minimises L is the velocity field that carries
    the noise distribution to the digits.
    Args:
        x1: (B, 1, 28, 28) clean digits in [0, 1]; t: (B,) float times in [0, 1]; eps: (B, 1, 28, 28) N(0, I).
        c: (B, 10) one-hots, all zeros where the class was dropped (class model), or None (time model).
    Returns:
        the mean squared error, a scalar tensor.
    """
    x_t = PATH.add_noise(x1, t, eps)                                        # (B, 1, 28, 28)
    u_hat = model(x_t, t) if c is None else model(x_t, t, c)
    return F.mse_loss(u_hat, x1 - eps)


def estimator(model: MNISTUNet):
    """A trained time- or class-conditioned flow UNet as the conditional estimator of DESIGN §2:

        model_fn(x_t, t, cond) -> (u_hat, None)    x_t (B, 1, 28, 28), t a float in [0, 1], cond (B, 10) one-hots

    The time-only model ignores cond. The model runs in its own dtype, x_t and u_hat stay in x_t's (as
    ddpm.estimator)."""
    dtype = next(model.parameters()).dtype
    def model_fn(x_t: torch.Tensor, t: float, cond: Optional[torch.Tensor] = None):
        t_batch = torch.full((x_t.shape[0],), float(t), device=x_t.device, dtype=dtype)       # (B,)
        if model.config.kind == "class":
            return model(x_t.to(dtype), t_batch, cond.to(dtype)).to(x_t.dtype), None
        return model(x_t.to(dtype), t_batch).to(x_t.dtype), None
    return model_fn


def guided_estimator(model: MNISTUNet, digits: Optional[torch.Tensor] = None, gamma: float = GAMMA,
                     guide_below: float = 1.0):
    """The velocity that samples `digits` (N,): CFG on the velocity, u = u_u + gamma (u_c - u_u) against "no class"
    (guidance.cfg: the combinators are linear in the estimate, so they serve velocities unchanged), both branches in
    one batched forward. With digits None: the unconditional velocity (the only one a time-only model has).
    guide_below < 1: CFG only where the noise fraction 1 - t is at most guide_below (t = 0 is pure noise), the
    conditional velocity before (guidance.limited); 1, the course's, guides every step."""
    device = next(model.parameters()).device
    no_class = one_hot([-1], device=device)                              # (1, 10) zeros
    if digits is None:
        return conditional(estimator(model), no_class)
    c = one_hot(digits, device=device)                                   # (N, 10)
    guided = cfg(estimator(model), c, no_class, gamma)
    if guide_below >= 1.0:
        return guided
    return limited(guided, conditional(estimator(model), c), lambda t: 1.0 - t <= guide_below)


@torch.no_grad()
def sample(model: MNISTUNet, x0: torch.Tensor, digits: Optional[torch.Tensor] = None, gamma: float = GAMMA,
           num_steps: Optional[int] = None, second_order: bool = False, callback=None,
           progress: bool = False, guide_below: float = 1.0,
           autoguide: Optional[tuple[MNISTUNet, float]] = None) -> torch.Tensor:
    """Integrate the learned velocity from the noise x0 at t = 0 to the digits at t = 1 (the course's sampler):
    Euler, x <- x + (1 / N) u_theta(x, t) for t = 0, 1/N, ..., (N-1)/N; or Heun (second_order, two model calls a
    step but the last). With digits, CFG on the velocity (gamma). No noise is drawn: the sample is a function of x0.

    Args:
        x0: (N, 1, 28, 28) standard normal noise (the caller draws it, so that samplers can share it).
        digits: (N,) the digits asked for, or None (unconditional); gamma: the CFG scale; guide_below: CFG only
            where 1 - t <= guide_below (guided_estimator).
        num_steps: N, default the course's (50 for the time-only model, 300 for the class model).
        callback, progress: as in sampling.iterative_denoise.
        autoguide: (bad_model, w): guide by a worse model of the same kind, e.g. an earlier snapshot of the run,
            u_bad + w (u - u_bad) (guidance.autoguidance); None, the course's, integrates the model alone.
    Returns:
        (N, 1, 28, 28) in [0, 1]: clamped for display (the integration itself never clamps).
    """
    u_fn = guided_estimator(model, digits, gamma, guide_below)
    if autoguide is not None:
        bad_model, w = autoguide
        u_fn = autoguidance(u_fn, guided_estimator(bad_model, digits, gamma, guide_below), w)
    n = num_steps or NUM_STEPS[model.config.kind]
    x1 = iterative_denoise(u_fn, PATH, x0, flow_times(1.0 / n), step=heun(u_fn) if second_order else euler_step,
                           callback=callback, progress=progress)
    return x1.clamp(0, 1)
