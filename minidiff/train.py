"""Part B training: the single-step denoiser [B.1/B.2] and the DDPM noise predictors (report 5B §1.2, §2.2, §2.4).

One loop serves the three models; what differs is the loss on a batch of clean digits x0 in [0, 1]:

  denoiser  z = x0 + sigma * eps,                 L = || D_theta(z) - x0 ||^2            (report 5B eq. B.2)
  time      x_t = sqrt(ab_t) x0 + sqrt(1-ab_t) eps, L = || eps_theta(x_t, t/T) - eps ||^2  (ddpm.loss: Ho et al. 2020,
  class     as time, with a one-hot c zeroed with probability p_uncond           Alg. 1; Ho & Salimans 2022, Alg. 1)

Work is never lost: after every epoch `checkpoint.pt` (model, optimizer, LR scheduler, RNG state, epoch, loss
history, config) is written atomically; rerunning the same call resumes after the last completed epoch and
gives the same result as an uninterrupted run. Snapshots `model_epoch{e}.pt` keep the weights of chosen epochs;
`training_run(checkpoint)` lists what a run has written so far.

Under torchrun (WORLD_SIZE > 1) the same call trains data-parallel (distributed.py): the global batch, learning
rate and random draws are the report's, each rank computes its slice of every global batch, and rank 0 alone
writes checkpoints and shows progress. The result equals one process's up to float rounding.
"""
from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import ddpm, distributed
from .data import atomic_save
from .mnist_unet import MNISTUNet, MNISTUNetConfig

CHECKPOINT = "checkpoint.pt"          # the latest epoch: everything needed to resume


def snapshot_name(epoch: int) -> str:
    """The file that keeps the weights after `epoch`, beside checkpoint.pt."""
    return f"model_epoch{epoch}.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Defaults are the report's time-conditioned DDPM (5B §2.2); see the classmethods for the three models."""

    kind: str = "time"               # "denoiser" | "time" | "class"
    num_hiddens: int = 64            # D
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    lr_decay: bool = True            # ExponentialLR with gamma = 0.1 ** (1 / epochs), stepped per epoch
    sigma: float = 0.5               # denoiser only
    p_uncond: float = 0.1            # class only
    snapshot_epochs: tuple = (5,)    # also keep the weights after these epochs (and the last one)
    bf16: bool = False               # autocast the forward pass to bfloat16
    seed: int = 0

    @classmethod
    def denoiser(cls, **kw) -> "TrainConfig":
        """Report 5B §1.2.1: D = 128, batch 256, 5 epochs, Adam 1e-4, sigma = 0.5."""
        return cls(**{**dict(kind="denoiser", num_hiddens=128, epochs=5, batch_size=256, lr=1e-4,
                             lr_decay=False, snapshot_epochs=(1,)), **kw})

    @classmethod
    def time_conditioned(cls, **kw) -> "TrainConfig":
        """Report 5B §2.2: D = 64, batch 128, 20 epochs, Adam 1e-3, exponential decay to 0.1x."""
        return cls(**{**dict(kind="time"), **kw})

    @classmethod
    def class_conditioned(cls, **kw) -> "TrainConfig":
        """Report 5B §2.4: as time-conditioned, plus the one-hot class dropped with p = 0.1."""
        return cls(**{**dict(kind="class"), **kw})

    def model_config(self) -> MNISTUNetConfig:
        return MNISTUNetConfig(num_hiddens=self.num_hiddens, kind=self.kind)


def batch_loss(model: MNISTUNet, cfg: TrainConfig, x0: torch.Tensor, y: torch.Tensor,
               generator: torch.Generator, part: slice = slice(None), global_batch: int | None = None) -> torch.Tensor:
    """The training loss on one batch. x0: (B, 1, 28, 28) in [0, 1]; y: (B,) int64 digits.

    Data-parallel ranks pass their slice `part` of a global batch of `global_batch` images: the random draws
    are made for the whole global batch (the same on every rank) and sliced, so each image gets the noise,
    timestep and dropout it gets in a single process."""
    dev = x0.device
    B = global_batch or x0.shape[0]
    eps = torch.randn((B, *x0.shape[1:]), generator=generator, device=dev)[part]      # (b, 1, 28, 28)
    if cfg.kind == "denoiser":
        return F.mse_loss(model(x0 + cfg.sigma * eps), x0)                             # [B.2]
    t = torch.randint(0, ddpm.NUM_STEPS, (B,), generator=generator, device=dev)[part]  # (b,)
    if cfg.kind == "time":
        return ddpm.loss(model, x0, t, eps)
    keep = (torch.rand(B, generator=generator, device=dev) >= cfg.p_uncond)[part]     # (b,) False = dropped
    c = ddpm.one_hot(torch.where(keep, y, -1))                                         # (b, 10), zeros if dropped
    return ddpm.loss(model, x0, t, eps, c)


def train(cfg: TrainConfig, out_dir: Path | str, images: torch.Tensor, labels: torch.Tensor,
          device: torch.device | str = "cpu", progress: bool = True, channels_last: bool = False,
          compile: bool = False) -> dict:
    """Train (or resume training) and return the final checkpoint dict.

    Args:
        images: (N, 28, 28) uint8 MNIST; moved to `device` once, batches are slices of a permutation.
        labels: (N,) int64.
        out_dir: where checkpoint.pt and the snapshots live; an existing checkpoint.pt is resumed.
        channels_last, compile: how to run, not what to compute (so not part of cfg): NHWC activations (faster
            convolutions on GPUs with bf16), and torch.compile of the model (a minute of compiling first; the
            README's benchmarks say when either pays).
    Returns:
        {"model", "optimizer", "scheduler", "epoch", "losses" (list of per-step floats), "config", "rng",
        "num_images"}.
    Raises:
        FloatingPointError if the loss stops being finite (the last good checkpoint is kept).
    """
    device = distributed.setup(torch.device(device))   # under torchrun: join the group (cuda -> cuda:LOCAL_RANK)
    main = distributed.is_main()
    part = distributed.shard(cfg.batch_size)        # this rank's slice of each global batch (all of it alone)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):        # the initial weights depend on cfg.seed alone
        torch.manual_seed(cfg.seed)
        model = MNISTUNet(cfg.model_config()).to(device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    ddp_model = distributed.wrap(model, device)    # the model itself with one process
    forward = torch.compile(ddp_model) if compile else ddp_model
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gamma = 0.1 ** (1.0 / cfg.epochs) if cfg.lr_decay else 1.0
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    state = {"epoch": 0, "losses": []}

    path = out_dir / CHECKPOINT
    if path.exists():
        state = load_checkpoint(path)
        if state["config"] != dataclasses.asdict(cfg):
            raise ValueError(f"{path} was trained with another configuration; delete it or choose another --out")
        if state.get("num_images", len(images)) != len(images):      # (older checkpoints lack it)
            raise ValueError(f"{path} was trained on {state['num_images']} images, not {len(images)}; "
                             f"delete it or choose another --out")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["rng"].to(generator.get_state().device))

    images = images.to(device)
    labels = labels.to(device)
    N = images.shape[0]
    steps = N // cfg.batch_size                     # drop the last partial batch: every step sees B images
    losses: list[float] = list(state["losses"])
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        ddp_model.train()
        perm = torch.randperm(N, generator=generator, device=device)
        epoch_losses = torch.zeros(steps, device=device)
        bar = tqdm(range(steps), desc=f"{cfg.kind} epoch {epoch}/{cfg.epochs}", disable=not (progress and main),
                   leave=False, dynamic_ncols=True)
        for i in bar:
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size][part]
            x0 = images[idx].unsqueeze(1).float() / 255.0                 # (b, 1, 28, 28) in [0, 1]
            x0 = x0.contiguous(memory_format=layout)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = batch_loss(forward, cfg, x0, labels[idx], generator, part, cfg.batch_size)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()                                               # DDP: gradients averaged over ranks
            optimizer.step()
            epoch_losses[i] = distributed.mean(loss.detach())             # the global batch's loss
            if i % 25 == 0 or i == steps - 1:                             # one host sync every 25 steps
                value = float(epoch_losses[i])
                _check_finite(value, epoch, i, path)
                bar.set_postfix(loss=f"{value:.4f}")
        scheduler.step()
        _check_finite(float(epoch_losses.sum()), epoch, steps - 1, path)
        losses += epoch_losses.tolist()
        state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch, "losses": losses, "config": dataclasses.asdict(cfg), "rng": generator.get_state(),
            "num_images": N,
        }
        if main:
            atomic_save(state, path)
            if epoch in cfg.snapshot_epochs or epoch == cfg.epochs:
                atomic_save({"model": state["model"], "config": state["config"], "epoch": epoch},
                            out_dir / snapshot_name(epoch))
    distributed.barrier()                           # every rank returns after rank 0 wrote the last checkpoint
    return state


def _check_finite(value: float, epoch: int, step: int, path: Path) -> None:
    if value != value or value in (float("inf"), float("-inf")):
        raise FloatingPointError(f"the loss became {value} at epoch {epoch}, step {step}; training stopped and "
                                 f"{path} keeps the last good epoch (try a lower learning rate)")


def load_checkpoint(path: Path | str) -> dict:
    """Load a checkpoint or snapshot safely (weights_only=True); a damaged file gives a one-line error.

    torch.save writes a zip archive that stores a CRC-32 of every record, but torch.load does not check them: a
    flipped bit in the weights would load silently. `testzip` reads every record and compares its CRC first."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; run the training stage first")
    try:
        with zipfile.ZipFile(path) as archive:
            bad_record = archive.testzip()
        if bad_record is not None:
            raise ValueError(f"CRC mismatch in {bad_record}")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zipfile and torch raise several types for truncated/corrupted archives
        raise ValueError(f"checkpoint {path} is corrupted or truncated ({type(e).__name__}: {_first_line(e)}); "
                         f"delete it and rerun the training stage") from None
    if not isinstance(state, dict) or not {"model", "config", "epoch"} <= state.keys():
        raise ValueError(f"{path} is not a minidiff checkpoint (missing model/config/epoch)")
    return state


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0][:120]


def load_model(path: Path | str, device: torch.device | str = "cpu") -> MNISTUNet:
    """A trained model (eval mode) from a checkpoint or snapshot written by `train`."""
    state = load_checkpoint(path)
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()})
    model = MNISTUNet(cfg.model_config())
    model.load_state_dict(state["model"])
    return model.to(device).eval()



@dataclass(frozen=True)
class TrainingRun:
    """A training run as its folder holds it: what the sampling stages sample."""

    checkpoint: Path
    epoch: int                              # epochs done
    epochs: int                             # epochs asked for
    weights: list[tuple[int, Path]]         # (epoch, weights file) in training order: the snapshots kept so far,
                                            # then the latest epoch (checkpoint.pt itself if it has no snapshot)

    @property
    def finished(self) -> bool:
        return self.epoch == self.epochs


def training_run(checkpoint: Path | str) -> TrainingRun:
    """The run whose latest epoch `checkpoint` holds. A run that stopped early (Ctrl-C, or still training) has no
    snapshot of its latest epoch: checkpoint.pt itself holds those weights."""
    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint)
    last, folder = state["epoch"], checkpoint.parent
    kept = [(e, folder / snapshot_name(e)) for e in sorted(state["config"]["snapshot_epochs"]) if e < last]
    latest = folder / snapshot_name(last)
    return TrainingRun(checkpoint, last, state["config"]["epochs"],
                       kept + [(last, latest if latest.exists() else checkpoint)])
