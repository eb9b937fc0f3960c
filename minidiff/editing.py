"""Editing with the one sampling loop (report 5A §1.7): SDEdit, inpainting [A.5], text-conditioned editing.

None of these needs a new sampler; each is a way of starting or constraining `iterative_denoise`:

- SDEdit / image-to-image (§1.7; Meng et al. 2021): noise a real image to timesteps[i_start] with [A.1] and
  denoise from there. Small i_start = much noise = a new image; large i_start = little noise = nearly the input.
- Inpainting [A.5] (§1.7.2; Lugmayr et al. 2022, RePaint): sample from pure noise, and after every step force the
  pixels outside the mask back to the original noised to the current timestep:
      x_t <- m * x_t + (1 - m) * forward(x_orig, t)      (m = 1: generate, m = 0: keep)
- Text-conditioned editing (§1.7.3): SDEdit whose eps_fn is guided by a prompt (guidance.cfg with the new prompt).
  It is `sdedit` with a different eps_fn, so it has no function of its own.

The image range is the backbone's (IF: [-1, 1]; our MNIST model: [0, 1]); nothing here imports a model.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .sampling import EpsFn, iterative_denoise
from .schedule import NoiseSchedule


def sdedit(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    x_orig: torch.Tensor,
    timesteps: list[int],
    i_start: int,
    generator: Optional[torch.Generator] = None,
    callback: Optional[Callable] = None,
) -> torch.Tensor:
    """SDEdit (§1.7; Meng et al. 2021): x_t = [A.1](x_orig, timesteps[i_start], eps), then the loop from i_start.

    i_start = len(timesteps) - 1 noises to the last timestep and has no step left: it returns the (barely)
    noised input itself.
    Args:
        x_orig: (B, C, H, W) images in the backbone's range.
        timesteps: decreasing ints (e.g. strided_timesteps()); i_start in [0, len(timesteps) - 1].
        generator: seeds the forward noise and the loop's noise; lives on x_orig's device.
    Returns:
        (B, C, H, W) the edit, same dtype and device as x_orig.
    """
    if not 0 <= i_start < len(timesteps):
        raise ValueError(f"i_start must be in [0, {len(timesteps) - 1}], got {i_start}")
    eps = torch.randn(x_orig.shape, generator=generator, device=x_orig.device, dtype=x_orig.dtype)
    x_t = schedule.add_noise(x_orig, timesteps[i_start], eps)                      # [A.1]
    if i_start == len(timesteps) - 1:
        return x_t
    return iterative_denoise(eps_fn, schedule, x_t, timesteps, i_start=i_start, generator=generator,
                             callback=callback)


def inpaint(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    x_orig: torch.Tensor,
    mask: torch.Tensor,
    timesteps: list[int],
    generator: Optional[torch.Generator] = None,
    callback: Optional[Callable] = None,
) -> torch.Tensor:
    """Inpainting [A.5] (§1.7.2; Lugmayr et al. 2022): pure noise, then after every step
    x_t <- m * x_t + (1 - m) * forward(x_orig, t); the last step pastes the clean original.
    Args:
        x_orig: (B, C, H, W) images in the backbone's range.
        mask: (1 or B, 1 or C, H, W) in {0, 1}; 1 = generate, 0 = keep the original.
    Returns:
        (B, C, H, W): equal to x_orig where mask = 0.
    """
    if mask.shape[-2:] != x_orig.shape[-2:]:
        raise ValueError(f"the mask is {tuple(mask.shape[-2:])} but the image is {tuple(x_orig.shape[-2:])}")
    x = torch.randn(x_orig.shape, generator=generator, device=x_orig.device, dtype=x_orig.dtype)
    mask = mask.to(device=x_orig.device, dtype=x_orig.dtype)
    return iterative_denoise(eps_fn, schedule, x, timesteps, generator=generator, inpaint=(x_orig, mask),
                             callback=callback)
