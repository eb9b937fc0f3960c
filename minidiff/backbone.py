"""The Part A backbone interface: what every §1.x experiment needs from a pretrained diffusion model.

Part A's stages never see a network, only this object. Two implementations:
  - `minidiff.mnist_backbone.MNISTBackbone`: our class-conditioned MNIST UNet from Part B; digits are prompts.
  - the DeepFloyd IF backbone (minidiff/deepfloyd.py, stage I + II, T5 prompts).
Adding a third is an adapter like these plus one line in the stages' registry (stages/part_a.py).

A backbone is any object with these attributes and methods (structural typing: no base class to inherit):

    name: str                          its name in the stages' registry (stages/part_a.py BACKBONES), e.g. "mnist",
                                       "deepfloyd"; stages key their per-backbone defaults on it
    schedule: NoiseSchedule            IF: NoiseSchedule.cosine(1000); MNIST: NoiseSchedule.linear(1e-4, 0.02, 300)
    timesteps: list[int]               the report's strided schedule (§1.4): IF 990, 960, ..., 0 (stride 30, 34
                                       entries); MNIST 290, 280, ..., 0 (stride 10, 30 entries). i_start indexes it.
    image_shape: tuple[int, int, int]  (C, H, W) of the sampled images: IF stage I (3, 64, 64); MNIST (1, 28, 28)

    model_fn(x_t, t, cond) -> (eps_hat, v_hat)
        x_t (B, C, H, W) float on the model's device, in the model's range; t an int timestep; cond (B, ...) from
        embed(). eps_hat (B, C, H, W) in x_t's dtype; v_hat (B, C, H, W) in [-1, 1] (IF's variance channels) or
        None. A half-precision model casts internally: inputs and outputs stay in x_t's dtype.
    embed(prompts: list[str]) -> cond (N, ...)
        on the model's device. "" is the unconditional prompt (IF: T5(""); MNIST: the all-zero class vector).
        MNIST accepts "0".."9" and "" only; anything else is a one-line ValueError.
    load_image(path) -> (1, C, H, W)   a photo/drawing resized to image_shape, in the model's range, on its device
    to_unit(x) -> x in [0, 1]          model range -> [0, 1] for figures and samples.pt (clamped)
    test_images() -> list[tuple[str, Tensor]]
                                       (name, (1, C, H, W) in the model's range) inputs of §1.1-§1.7: IF the photos
                                       in data/; MNIST a few fixed digits of the MNIST test set
    upsample(x, prompts) -> x          the final super-resolution pass after a sample (IF stage II to 256 px);
                                       identity for MNIST. x in the model's range; prompts one per image.

Image ranges: IF works in [-1, 1]; the MNIST model in [0, 1] (its training range). Pure-noise starts are N(0, I)
in both cases.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

import torch

from .schedule import NoiseSchedule


@runtime_checkable
class Backbone(Protocol):
    name: str
    schedule: NoiseSchedule
    timesteps: list[int]
    image_shape: tuple[int, int, int]

    def model_fn(self, x_t: torch.Tensor, t: int, cond: torch.Tensor
                 ) -> tuple[torch.Tensor, Optional[torch.Tensor]]: ...

    def embed(self, prompts: list[str]) -> torch.Tensor: ...

    def load_image(self, path: Path | str) -> torch.Tensor: ...

    def to_unit(self, x: torch.Tensor) -> torch.Tensor: ...

    def test_images(self) -> list[tuple[str, torch.Tensor]]: ...

    def upsample(self, x: torch.Tensor, prompts: list[str]) -> torch.Tensor: ...
