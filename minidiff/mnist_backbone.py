"""Our trained MNIST UNets seen as noise estimators (DESIGN §2), so every sampler also runs on them.

Part B's DDPMs were trained on digits in [0, 1] with the linear schedule (T = 300) and see the timestep as
t / T. The class-conditioned one takes a one-hot digit; the all-zero vector is "no class", the role the empty
prompt plays for DeepFloyd IF (report 5B §2.4).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .mnist_unet import MNISTUNet
from .schedule import NoiseSchedule

NUM_STEPS, BETA_START, BETA_END = 300, 1e-4, 0.02   # report 5B §2.1


def schedule() -> NoiseSchedule:
    return NoiseSchedule.linear(BETA_START, BETA_END, NUM_STEPS)


def one_hot(digits: torch.Tensor | list[int], num_classes: int = 10, device=None) -> torch.Tensor:
    """(B,) digits -> (B, num_classes) float one-hot; a digit of -1 gives the all-zero "no class" vector."""
    digits = torch.as_tensor(digits, device=device).long()
    return F.one_hot(digits.clamp(min=0), num_classes).float() * (digits >= 0).float().unsqueeze(1)


def model_fn(model: MNISTUNet):
    """The conditional estimator model_fn(x_t, t, cond) -> (eps_hat, None) of a time- or class-conditioned UNet.
    cond: (B, 10) one-hot (ignored by a time-only model, pass None then)."""
    T = NUM_STEPS

    def fn(x_t: torch.Tensor, t: int, cond: torch.Tensor | None = None):
        t_frac = torch.full((x_t.shape[0],), t / T, device=x_t.device, dtype=x_t.dtype)   # (B,)
        if model.config.conditioning == "class":
            return model(x_t, t_frac, cond.to(x_t.dtype)), None
        return model(x_t, t_frac), None
    return fn
