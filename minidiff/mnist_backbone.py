"""Our class-conditioned MNIST models (Part B) as Part A backbones (minidiff/backbone.py), so every §1.x experiment
also runs where DeepFloyd IF cannot: digits play the prompts.

Two models, one adapter: the report's DDPM (b2_4; a noise estimator on the linear schedule, T = 300;
minidiff/ddpm.py) and the 2025 course's flow-matching model (fm2_5; a velocity estimator on the straight path,
minidiff/flow.py). Both were trained on digits in [0, 1]; the all-zero class vector is "no class", the role the
empty prompt plays for DeepFloyd IF.
"""
from __future__ import annotations

import torch

from . import data, ddpm, flow
from .mnist_unet import MNISTUNet
from .sampling import flow_times
from .train import load_checkpoint, load_model

START, STRIDE = 290, 10          # the report strides 990..0 by 30 of T = 1000 (§1.4); we stride 290..0 by 10 of 300
FLOW_H = 0.02                    # the fall 2026 draft's Euler step on a flow: 0, 0.02, ..., 1 (50 steps)
TEST_DIGITS = (3, 2, 1, 18, 4, 8, 11, 0, 61, 7)   # MNIST test-set indices of one 0, 1, ..., 9 (labels checked)


class MNISTBackbone:
    """A class-conditioned MNIST UNet of Part B behind the Part A interface (backbone.Backbone): the report's DDPM
    (objective "ddpm", name "mnist") or the 2025 course's flow model (objective "flow", name "mnist-flow").

    Digits play the prompts: "0".."9" -> one-hot, "" -> all zeros (the "no class" the model was trained with
    p = 0.1). Images live in [0, 1], the training range; samples start from N(0, I).
    """

    domain = "digits"
    image_shape = (1, 28, 28)
    image_range = (0.0, 1.0)

    def __init__(self, model: MNISTUNet, objective: str = "ddpm"):
        if model.config.kind != "class":
            raise ValueError(f"the MNIST backbone needs a class-conditioned model, got the {model.config.kind!r} "
                             f"one (train it with b2_4, or fm2_5 for flow matching)")
        self.model = model.eval()
        if objective == "flow":
            self.name, self.schedule = "mnist-flow", flow.PATH
            self.timesteps = flow_times(FLOW_H)                                      # [0, 0.02, ..., 1]
            self._fn = flow.estimator(model)
        else:
            self.name, self.schedule = "mnist", ddpm.SCHEDULE
            self.timesteps = list(range(START, -1, -STRIDE))                         # [290, 280, ..., 0]
            self._fn = ddpm.estimator(model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_checkpoint(cls, path, device="cpu", dtype=torch.float32) -> "MNISTBackbone":
        """The backbone of a training run's checkpoint or snapshot, its model in `dtype` (the estimates come back in
        x_t's: ddpm.estimator); the run's objective says which model it is."""
        return cls(load_model(path, device, dtype=dtype), load_checkpoint(path)["config"].get("objective", "ddpm"))

    @torch.no_grad()
    def model_fn(self, x_t: torch.Tensor, t: int | float, cond: torch.Tensor):
        """(B, 1, 28, 28), t (an int timestep, or a flow's float time), (B, 10) one-hot -> (eps_hat or the velocity
        u_hat (B, 1, 28, 28), None)."""
        return self._fn(x_t, t, cond)

    def embed(self, prompts: list[str]) -> torch.Tensor:
        """["3", "", ...] -> (N, 10) float one-hots on the model's device ("" -> zeros)."""
        digits = []
        for p in prompts:
            p = p.strip()
            if p != "" and not (len(p) == 1 and p in "0123456789"):   # (not isdigit: "²" is a digit to it)
                raise ValueError(f"the MNIST backbone's prompts are the digits '0'..'9' or '' (unconditional), got {p!r}")
            digits.append(int(p) if p else -1)
        return ddpm.one_hot(digits, device=self.device)

    def load_image(self, path) -> torch.Tensor:
        """A drawing or photo as a (1, 1, 28, 28) grayscale image in [0, 1] (MNIST draws white on black)."""
        return data.load_image(path, 28, channels=1).to(self.device)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0.0, 1.0)

    def test_images(self) -> list[tuple[str, torch.Tensor]]:
        """Three fixed test-set digits (a 7, a 2 and a 3), each (1, 1, 28, 28) in [0, 1]."""
        images, labels = data.load_mnist(train=False)
        picks = [TEST_DIGITS[d] for d in (7, 2, 3)]
        return [(f"test digit {int(labels[i])}", images[i].float().div(255.0).view(1, 1, 28, 28).to(self.device))
                for i in picks]

    def upsample(self, x: torch.Tensor, prompts: list[str], guide=None, noise_level=None) -> torch.Tensor:
        """No stage II: a digit is done at 28 px (the guide of an illusion has nothing left to do)."""
        return x
