"""What the Part B stages share: the training profiles, the training driver, DDPM sampling with CFG.

Profiles: the default is the report's hyperparameters (5B §1.2.1, §2.2, §2.4; meant for a GPU, or a CPU given
hours). `--quick` is a CPU profile (smaller D, fewer epochs, bf16 autocast where the hardware computes bf16) that
trains all three models in minutes on two cores.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

import common
from minidiff import distributed, mnist_backbone, viz
from minidiff.data import load_mnist
from minidiff.guidance import cfg as classifier_free_guidance, conditional
from minidiff.sampling import ddpm_timesteps, iterative_denoise
from minidiff.train import CHECKPOINT, TrainConfig, load_checkpoint, train

REPORT = {
    "denoiser": TrainConfig.denoiser(),
    "time": TrainConfig.time_conditioned(snapshot_epochs=(5,)),
    "class": TrainConfig.class_conditioned(snapshot_epochs=(5,)),
}
QUICK = {   # D = 16: about 300 training images/s on 2 CPU cores (the report's D = 64: about 40)
    "denoiser": TrainConfig.denoiser(num_hiddens=16, epochs=2, lr=1e-3, snapshot_epochs=(1,)),
    "time": TrainConfig.time_conditioned(num_hiddens=16, epochs=2, batch_size=64, snapshot_epochs=(1,)),
    "class": TrainConfig.class_conditioned(num_hiddens=16, epochs=2, batch_size=64, snapshot_epochs=(1,)),
}
QUICK_IMAGES = {"denoiser": 10_000, "time": 15_000, "class": 60_000}   # --quick trains on the first N digits
TRAIN_STAGE = {"denoiser": "b1_2_1_train_denoiser", "time": "b2_2_train_time_conditioned",
               "class": "b2_4_train_class_conditioned"}


def add_training_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--epochs", type=int, help="override the profile's number of epochs")
    p.add_argument("--num-hiddens", type=int, help="override the profile's UNet width D")
    p.add_argument("--images", type=int, help="train on the first N training digits (default: all 60k; "
                                              "--quick: the profile's QUICK_IMAGES)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (fast on GPUs and AMX CPUs; --quick turns "
                                                       "it on where the hardware has it)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory layout (helps GPUs, mostly with --bf16)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (a minute of compiling first)")
    return p


def native_bf16(dev: torch.device) -> bool:
    """Whether `dev` computes bfloat16 in hardware (then --quick turns bf16 autocast on): CUDA GPUs from Ampere
    (compute capability 8) on, CPUs with AVX-512 BF16 or AMX. Elsewhere bf16 is emulated: slower than fp32
    (about 12x slower on the 2-core AMD EPYC we measured, `python -m minidiff.bench train`)."""
    if dev.type == "cuda":
        return torch.cuda.get_device_capability(dev)[0] >= 8
    return dev.type == "cpu" and bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def _cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")                        # Linux; elsewhere no flags are known
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return set(next((l.split(":", 1)[1].split() for l in lines if l.startswith("flags")), []))


def training_config(args: argparse.Namespace, kind: str, dev: torch.device) -> TrainConfig:
    cfg = (QUICK if args.quick else REPORT)[kind]
    changes = {"seed": args.seed, "bf16": args.bf16 or (args.quick and native_bf16(dev))}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.num_hiddens is not None:
        changes["num_hiddens"] = args.num_hiddens
    return dataclasses.replace(cfg, **changes)


def run_training(args: argparse.Namespace, kind: str, title: str) -> tuple[dict, Path]:
    """Train (resuming if a checkpoint exists) and plot the loss curve. Returns (final state, output folder)."""
    dev = common.device(args.device)
    cfg = training_config(args, kind, dev)
    out = common.stage_dir(args, TRAIN_STAGE[kind])
    images, labels = load_mnist(train=True)
    n = args.images or (QUICK_IMAGES[kind] if args.quick else len(images))
    images, labels = images[:n], labels[:n]
    print(f"training the {kind} UNet on {dev} with {len(images)} digits: {cfg}")
    state = train(cfg, out, images, labels, device=dev, channels_last=args.channels_last, compile=args.compile)
    if not distributed.is_main():                 # under torchrun, rank 0 alone reports and plots
        return state, out
    common.wrote(out / CHECKPOINT)
    for e in sorted({e for e in cfg.snapshot_epochs if e < cfg.epochs} | {cfg.epochs}):
        common.wrote(out / f"model_epoch{e}.pt")
    losses = state["losses"]
    common.wrote(viz.plot_losses(losses, out / "loss.png", f"{title} (D={cfg.num_hiddens}, {cfg.epochs} epochs)"))
    print(f"final loss (mean of the last 100 steps): {sum(losses[-100:]) / len(losses[-100:]):.4f}")
    return state, out


def snapshots(checkpoint: Path) -> list[tuple[int, Path]]:
    """[(epoch, weights file)] of a training run, in training order: the snapshots model_epoch{e}.pt kept so far,
    then the latest epoch. A run that stopped early (Ctrl-C, or still training) has no snapshot of its latest
    epoch: checkpoint.pt itself holds those weights."""
    state = load_checkpoint(checkpoint)
    folder, last = Path(checkpoint).parent, state["epoch"]
    kept = [(e, folder / f"model_epoch{e}.pt") for e in sorted(state["config"]["snapshot_epochs"]) if e < last]
    if last < state["config"]["epochs"]:
        print(f"{checkpoint} stopped after epoch {last} of {state['config']['epochs']}: sampling it as it is "
              f"(rerun the training stage to finish)")
    latest = folder / f"model_epoch{last}.pt"
    return kept + [(last, latest if latest.exists() else Path(checkpoint))]


def default_checkpoint(args: argparse.Namespace, kind: str) -> Path:
    path = args.checkpoint or Path(args.out) / TRAIN_STAGE[kind] / CHECKPOINT
    if not Path(path).exists():
        raise FileNotFoundError(f"no trained model at {path}; run `{common.command(TRAIN_STAGE[kind], args)}` first")
    return Path(path)


@torch.no_grad()
def sample(model, n: int, generator: torch.Generator, digits: torch.Tensor | None = None, gamma: float = 5.0,
           frame_every: int | None = 10) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2, sigma_t^2 = beta_t) with all T = 300 steps,
    with CFG (one batched forward) when `digits` (n,) are given. Returns (images (n, 1, 28, 28) in [0, 1],
    frames for a GIF: every `frame_every`-th x_t, clamped to [0, 1]; none when frame_every is None)."""
    dev = generator.device
    model_fn = mnist_backbone.model_fn(model)
    if digits is None:
        eps_fn = conditional(model_fn, torch.zeros(1, 10, device=dev))
    else:
        eps_fn = classifier_free_guidance(model_fn, mnist_backbone.one_hot(digits, device=dev),
                                          torch.zeros(1, 10, device=dev), gamma)
    x_T = torch.randn((n, 1, 28, 28), generator=generator, device=dev)
    frames = [] if frame_every is None else [x_T.clamp(0, 1).cpu()]

    def keep(i, t_prev, x, x0_hat):
        if (i + 1) % frame_every == 0 or t_prev == -1:
            frames.append(x.clamp(0, 1).cpu())

    x0 = iterative_denoise(eps_fn, mnist_backbone.schedule(), x_T, ddpm_timesteps(mnist_backbone.NUM_STEPS),
                           generator=generator, callback=None if frame_every is None else keep)
    return x0.clamp(0, 1), frames

