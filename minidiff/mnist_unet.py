"""The report's UNet for 28x28 MNIST (report 5B, Figures 1-3 and 8-10), in three variants from one config.

    x (B, 1, 28, 28)
      ConvBlock(1 -> D)                       x0  (B, D, 28, 28)
      DownBlock(D -> D)                       x1  (B, D, 14, 14)
      DownBlock(D -> 2D)                      x2  (B, 2D, 7, 7)
      Unflatten(Flatten(x2))                  u0  (B, 2D, 7, 7)     Flatten: 7x7 -> 1x1, Unflatten: back to 7x7
      [cond] u0 = c1 * u0 + t1                                      (time only: u0 + t1, or u0 * t1)
      UpBlock(4D -> D)(cat[x2, u0])           u1  (B, D, 14, 14)
      [cond] u1 = c2 * u1 + t2                                      (time only: u1 + t2, or u1 * t2)
      UpBlock(2D -> D)(cat[x1, u1])           u2  (B, D, 28, 28)
      Conv2d(D -> 1)(ConvBlock(2D -> D)(cat[x0, u2]))   out (B, 1, 28, 28)

Variants (report 5B §1.1, §2.1, §2.4), named as minidiff.train names the models:
  "denoiser" : the single-step denoiser D(z) ~ x, no conditioning,
  "time"     : eps_theta(x_t, t) with t1, t2 = FCBlock(t / T), injected additively (the DDPM report), or
               multiplicatively, time_injection = "multiply" (the course's flow-matching time-only UNet, t in [0, 1]),
  "class"    : eps_theta(x_t, t, c) with c a one-hot vector (all zeros = unconditional), c1, c2 = FCBlock(c) scaling,
               and t added (both courses).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn


@dataclass(frozen=True)
class MNISTUNetConfig:
    """Defaults are the report's time-conditioned model; the single-step denoiser uses num_hiddens = 128."""

    num_hiddens: int = 64          # D
    kind: str = "time"             # "denoiser" | "time" | "class"
    num_classes: int = 10
    time_injection: str = "add"    # the time-only UNet: u0 + t1 ("add", DDPM) or u0 * t1 ("multiply", flow matching)

    def __post_init__(self):
        if self.kind not in ("denoiser", "time", "class"):
            raise ValueError(f"kind must be 'denoiser', 'time' or 'class', got {self.kind!r}")
        multiply = self.time_injection == "multiply"
        if self.time_injection not in ("add", "multiply") or (multiply and self.kind != "time"):
            raise ValueError(f"time_injection must be 'add', or 'multiply' for the time-only UNet, got "
                             f"{self.time_injection!r} for {self.kind!r}")


class GELU(nn.GELU):
    """nn.GELU (exact, with erf). A channels_last (NHWC) input goes through as its (B, H, W, C) view, an ordinary
    contiguous tensor, on which PyTorch's CPU kernel (torch 2.14) runs about twice as fast as on the (B, C, H, W)
    view, forward and backward: the quick profile's NHWC training is ~10 % faster (README: Benchmarks). On the same
    tensor the result is nn.GELU's bit for bit (tests/test_mnist_unet.py); in a training step the gradients around
    it can arrive in other layouts and round differently, so a seed trains a slightly different model than with
    nn.GELU (not a worse one)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return super().forward(x)


def _conv_bn_gelu(conv: nn.Module, out_channels: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), GELU())


def Conv(cin: int, cout: int) -> nn.Sequential:          # keeps the resolution
    return _conv_bn_gelu(nn.Conv2d(cin, cout, 3, 1, 1), cout)


def DownConv(cin: int, cout: int) -> nn.Sequential:      # halves it
    return _conv_bn_gelu(nn.Conv2d(cin, cout, 3, 2, 1), cout)


def UpConv(cin: int, cout: int) -> nn.Sequential:        # doubles it
    return _conv_bn_gelu(nn.ConvTranspose2d(cin, cout, 4, 2, 1), cout)


def ConvBlock(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(Conv(cin, cout), Conv(cout, cout))


def DownBlock(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(DownConv(cin, cout), ConvBlock(cout, cout))


def UpBlock(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(UpConv(cin, cout), ConvBlock(cout, cout))


def FCBlock(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, cout), nn.GELU(), nn.Linear(cout, cout))


class MNISTUNet(nn.Module):
    def __init__(self, config: MNISTUNetConfig = MNISTUNetConfig()):
        super().__init__()
        self.config = config
        D = config.num_hiddens
        self.down0 = ConvBlock(1, D)
        self.down1 = DownBlock(D, D)
        self.down2 = DownBlock(D, 2 * D)
        self.flatten = nn.Sequential(nn.AvgPool2d(7), nn.GELU())
        self.unflatten = _conv_bn_gelu(nn.ConvTranspose2d(2 * D, 2 * D, 7, 7, 0), 2 * D)
        self.up1 = UpBlock(4 * D, D)
        self.up2 = UpBlock(2 * D, D)
        self.out = nn.Sequential(ConvBlock(2 * D, D), nn.Conv2d(D, 1, 3, 1, 1))
        if config.kind in ("time", "class"):
            self.t_emb1, self.t_emb2 = FCBlock(1, 2 * D), FCBlock(1, D)
        if config.kind == "class":
            self.c_emb1, self.c_emb2 = FCBlock(config.num_classes, 2 * D), FCBlock(config.num_classes, D)

    def forward(self, x: torch.Tensor, t: Optional[torch.Tensor] = None, c: Optional[torch.Tensor] = None):
        """
        Args:
            x: (B, 1, 28, 28) noisy digits.
            t: (B,) float in [0, 1]: the timestep t / T (DDPM) or a flow's time; "time" and "class" variants.
            c: (B, num_classes) float one-hot class, all zeros for "no class"; "class" variant.
        Returns:
            (B, 1, 28, 28): the clean-digit estimate (denoiser), the noise estimate eps_hat (DDPM) or the velocity
            u_hat (flow matching).
        """
        kind, multiply = self.config.kind, self.config.time_injection == "multiply"
        if (t is None) != (kind == "denoiser") or (c is None) != (kind != "class"):
            raise ValueError(f"the {kind!r} UNet takes "
                             + {"denoiser": "x only", "time": "(x, t)", "class": "(x, t, c)"}[kind])
        x0 = self.down0(x)                                    # (B, D, 28, 28)
        x1 = self.down1(x0)                                   # (B, D, 14, 14)
        x2 = self.down2(x1)                                   # (B, 2D, 7, 7)
        u0 = self.unflatten(self.flatten(x2))                 # (B, 2D, 7, 7)
        if kind != "denoiser":
            t = t.to(x.dtype).view(-1, 1)                     # (B, 1)
            t1 = self.t_emb1(t)[:, :, None, None]             # (B, 2D, 1, 1)
            t2 = self.t_emb2(t)[:, :, None, None]             # (B, D, 1, 1)
            if kind == "class":
                c = c.to(x.dtype)
                u0 = self.c_emb1(c)[:, :, None, None] * u0 + t1
            else:
                u0 = u0 * t1 if multiply else u0 + t1
        u1 = self.up1(torch.cat([x2, u0], dim=1))             # (B, D, 14, 14)
        if kind == "class":
            u1 = self.c_emb2(c)[:, :, None, None] * u1 + t2
        elif kind == "time":
            u1 = u1 * t2 if multiply else u1 + t2
        u2 = self.up2(torch.cat([x1, u1], dim=1))             # (B, D, 28, 28)
        return self.out(torch.cat([x0, u2], dim=1))           # (B, 1, 28, 28)
