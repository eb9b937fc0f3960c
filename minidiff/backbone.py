"""The Part A backbone interface: what every §1.x experiment needs from a pretrained diffusion or flow model.

Part A's stages never see a network, only this object. The implementations:
  - the DeepFloyd IF backbone (minidiff/deepfloyd.py, stage I + II, T5 prompts; a noise estimator);
  - `minidiff.mnist_backbone.MNISTBackbone`: our class-conditioned MNIST UNets from Part B, digits as prompts: the
    report's DDPM ("mnist", a noise estimator) or the 2025 course's flow-matching model ("mnist-flow", a velocity).
Adding another is an adapter like these plus one line in the stages' registry (stages/part_a.py).

A backbone is any object with these attributes and methods (structural typing: no base class to inherit):

    name: str                          its name in the stages' registry (stages/part_a.py BACKBONES), e.g. "mnist"
    domain: str                        what it draws, the key of the stages' per-backbone defaults (prompts, images,
                                       blur): "photos" (DeepFloyd IF) or "digits" (the MNIST models)
    schedule: NoiseSchedule | FlowPath what the estimator predicts and how its time runs: a NoiseSchedule for a noise
                                       estimator on a DDPM schedule (IF: cosine, T = 1000; MNIST: linear, T = 300;
                                       t an int, from T - 1 down to 0), a FlowPath for a velocity estimator (t a float,
                                       from 0 = noise up to 1 = data). The samplers read everything else from it.
    timesteps: list[int] | list[float] the sampling loop's schedule, from noise toward data; i_start indexes it.
                                       IF: the report's strided 990, 960, ..., 0 (§1.4, 34 entries); MNIST DDPM: 290,
                                       280, ..., 0 (30); MNIST flow: 0, 0.02, ..., 1 (h = 0.02, the fall 2026 draft's)
    image_shape: tuple[int, int, int]  (C, H, W) of the sampled images: IF stage I (3, 64, 64); MNIST (1, 28, 28)
    image_range: tuple[float, float]   the model's pixel range: IF (-1, 1); MNIST (0, 1), its training range

    model_fn(x_t, t, cond) -> (estimate, v_hat)
        x_t (B, C, H, W) float on the model's device, in the model's range; t a timestep of `timesteps`; cond (B, ...)
        from embed(). The estimate (B, C, H, W) in x_t's dtype is the noise eps_hat (DDPM schedule) or the velocity
        u_hat (flow path); v_hat (B, C, H, W) in [-1, 1] (IF's variance channels) or None. A half-precision model
        casts internally: inputs and outputs stay in x_t's dtype.
    embed(prompts: list[str]) -> cond (N, ...)
        on the model's device. "" is the unconditional prompt (IF: T5(""); MNIST: the all-zero class vector).
        MNIST accepts "0".."9" and "" only; anything else is a one-line ValueError.
    load_image(path) -> (1, C, H, W)   a photo/drawing resized to image_shape, in the model's range, on its device
    to_unit(x) -> x in [0, 1]          model range -> [0, 1] for figures and samples.pt (clamped)
    test_images() -> list[tuple[str, Tensor]]
                                       (name, (1, C, H, W) in the model's range) inputs of §1.1-§1.7: IF the photos
                                       in data/; MNIST a few fixed digits of the MNIST test set
    upsample(x, prompts, guide=None, noise_level=None) -> x
                                       the final super-resolution pass after a sample (IF stage II to 256 px);
                                       identity for MNIST. x in the model's range; prompts one per image; an
                                       illusion's guide(model_fn, size) -> eps_fn and noise level (deepfloyd).

Pure-noise starts are N(0, I) for every backbone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

import torch

from .schedule import FlowPath, NoiseSchedule


@runtime_checkable
class Backbone(Protocol):
    name: str
    domain: str
    schedule: NoiseSchedule | FlowPath
    timesteps: list[int] | list[float]
    image_shape: tuple[int, int, int]
    image_range: tuple[float, float]

    def model_fn(self, x_t: torch.Tensor, t: int | float, cond: torch.Tensor
                 ) -> tuple[torch.Tensor, Optional[torch.Tensor]]: ...

    def embed(self, prompts: list[str]) -> torch.Tensor: ...

    def load_image(self, path: Path | str) -> torch.Tensor: ...

    def to_unit(self, x: torch.Tensor) -> torch.Tensor: ...

    def test_images(self) -> list[tuple[str, torch.Tensor]]: ...

    def upsample(self, x: torch.Tensor, prompts: list[str], guide=None, noise_level=None) -> torch.Tensor: ...
