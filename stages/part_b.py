"""What the Part B stages share: the training profiles, the training driver, the trained run a sampling stage samples.

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
from minidiff import distributed, viz
from minidiff.data import load_mnist
from minidiff.train import CHECKPOINT, TrainConfig, TrainingRun, train, training_run

REPORT = {
    "denoiser": TrainConfig.denoiser(),
    "time": TrainConfig.time_conditioned(snapshot_epochs=(5,)),
    "class": TrainConfig.class_conditioned(snapshot_epochs=(5,)),
}
QUICK = {   # D = 16: several times faster than the report's D = 64 (the README's benchmarks say how much)
    "denoiser": TrainConfig.denoiser(num_hiddens=16, epochs=2, lr=1e-3, snapshot_epochs=(1,)),
    "time": TrainConfig.time_conditioned(num_hiddens=16, epochs=2, batch_size=64, snapshot_epochs=(1,)),
    "class": TrainConfig.class_conditioned(num_hiddens=16, epochs=2, batch_size=64, snapshot_epochs=(1,)),
}
QUICK_IMAGES = {"denoiser": 10_000, "time": 15_000, "class": 60_000}   # --quick trains on the first N digits
TRAIN_STAGE = {"denoiser": "b1_2_1_train_denoiser", "time": "b2_2_train_time_conditioned",
               "class": "b2_4_train_class_conditioned"}
GIF_EVERY = 10             # a GIF frame every 10th step of the sampling loop


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
    (compute capability 8) on, CPUs with AVX-512 BF16 or AMX. Elsewhere bf16 is emulated, and much slower than fp32
    (`python tools/bench.py train` measures it)."""
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


def run_training(args: argparse.Namespace, kind: str, title: str) -> tuple[dict, common.Record]:
    """Train (resuming if a checkpoint exists) and plot the loss curve. Returns (final state, the stage's record)."""
    dev = common.device(args.device)
    cfg = training_config(args, kind, dev)
    rec = common.record(args, TRAIN_STAGE[kind])
    images, labels = load_mnist(train=True)
    n = args.images or (QUICK_IMAGES[kind] if args.quick else len(images))
    images, labels = images[:n], labels[:n]
    print(f"training the {kind} UNet on {dev} with {len(images)} digits: {cfg}")
    state = train(cfg, rec.out, images, labels, device=dev, channels_last=args.channels_last, compile=args.compile)
    if not distributed.is_main():                 # under torchrun, rank 0 alone reports and plots
        return state, rec
    weights = [path for _, path in training_run(rec.out / CHECKPOINT).weights]
    rec.files += list(dict.fromkeys([rec.out / CHECKPOINT, *weights]))   # the checkpoint, then the snapshots
    losses = state["losses"]
    rec.wrote(viz.plot_losses(losses, rec.out / "loss.png", f"{title} (D={cfg.num_hiddens}, {cfg.epochs} epochs)"))
    rec.notes.append(f"final loss (mean of the last 100 steps): {sum(losses[-100:]) / len(losses[-100:]):.4f}")
    return state, rec


def trained_run(args: argparse.Namespace, kind: str, rec: common.Record) -> TrainingRun:
    """The training run a sampling stage samples: --checkpoint, else the training stage's under --out (a one-line
    error says which command to run first). A run that is not finished is sampled as it is, with a note."""
    path = Path(args.checkpoint or Path(args.out) / TRAIN_STAGE[kind] / CHECKPOINT)
    if not path.exists():
        raise FileNotFoundError(f"no trained model at {path}; run `{common.command(TRAIN_STAGE[kind], args)}` first")
    run = training_run(path)
    if not run.finished:
        rec.notes.append(f"{path} stopped after epoch {run.epoch} of {run.epochs}: sampling it as it is "
                         f"(rerun the training stage to finish)")
    return run


def gif_frames(x_T: torch.Tensor, shown: int | None = None, every: int = GIF_EVERY):
    """(frames, callback) for a denoising GIF of the first `shown` samples (all by default): frames starts as
    [x_T], and the sampling loop's callback appends every `every`-th x_t and the last one, each clamped to [0, 1]
    on the CPU (viz.save_gif's input)."""
    frames = [x_T[:shown].clamp(0, 1).cpu()]

    def keep(i, t_prev, x, x0_hat):
        if (i + 1) % every == 0 or t_prev == -1:
            frames.append(x[:shown].clamp(0, 1).cpu())
    return frames, keep
