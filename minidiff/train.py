"""Part B training: the single-step denoiser [B.1/B.2], the DDPM noise predictors (report 5B §1.2, §2.2, §2.4) and
the flow-matching velocity predictors of the 2025 course.

One loop serves every model; what differs is the loss on a batch of clean digits x0 in [0, 1]:

  denoiser  z = x0 + sigma * eps,                 L = || D_theta(z) - x0 ||^2            (report 5B eq. B.2)
            z = eps ("pure noise", 2025 course §1.2.3): D learns the mean digit, the minimiser of L
  time      x_t = sqrt(ab_t) x0 + sqrt(1-ab_t) eps, L = || eps_theta(x_t, t/T) - eps ||^2  (ddpm.loss: Ho et al. 2020,
  class     as time, with a one-hot c zeroed with probability p_uncond           Alg. 1; Ho & Salimans 2022, Alg. 1)
  flow      x_t = (1 - t) eps + t x0, t ~ U[0, 1], L = || u_theta(x_t, t) - (x0 - eps) ||^2   (flow.loss; the time
            and class models of objective="flow"; Lipman et al. 2023. The course writes the digit x1, the noise x0)

An exponential moving average of the weights (cfg.ema, Polyak & Juditsky 1992) is kept beside them when asked:
checkpoints and snapshots hold both, resuming restores both, and load_model returns the average.

Work is never lost: after every epoch `checkpoint.pt` (model, optimizer, RNG state, epoch, loss history, config;
the learning rate is a function of the step: learning_rate) is written atomically; rerunning the same call resumes
after the last completed epoch and gives the same result as an uninterrupted run. Snapshots `model_epoch{e}.pt`
keep the weights of chosen epochs. The snapshot of epoch e is written BEFORE the checkpoint of epoch e: a death
between the two makes the rerun redo epoch e (bit-identically) and write both; a missing snapshot of the
checkpoint's own epoch is rewritten from it on resume. `training_run(checkpoint)` lists what a run has written so
far. One trainer at a time holds a folder (training.lock with its PID, released when the process ends however it
ends).

Under torchrun (WORLD_SIZE > 1) the same call trains data-parallel (distributed.py): the global batch, learning
rate and random draws are the report's, each rank computes its slice of every global batch, and rank 0 alone
writes checkpoints and shows progress. The result equals one process's up to float rounding.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import ddpm, distributed, flow
from .data import atomic_save, hold, load_verified, release
from .mnist_unet import MNISTUNet, MNISTUNetConfig

CHECKPOINT = "checkpoint.pt"          # the latest epoch: everything needed to resume


def snapshot_name(epoch: int) -> str:
    """The file that keeps the weights after `epoch`, beside checkpoint.pt."""
    return f"model_epoch{epoch}.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Defaults are the report's time-conditioned DDPM (5B §2.2); see the classmethods for every model."""

    kind: str = "time"               # "denoiser" | "time" | "class"
    num_hiddens: int = 64            # D
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "exponential"  # "exponential" | "constant" | "one-cycle": learning_rate() below
    sigma: float = 0.5               # denoiser only
    pure_noise: bool = False         # denoiser only: z = eps alone (2025 course §1.2.3)
    objective: str = "ddpm"          # time and class only: "ddpm" (predict the noise) | "flow" (the velocity)
    p_uncond: float = 0.1            # class only
    ema: float = 0.0                 # decay of the weights' moving average, e.g. 0.999 (0: none)
    snapshot_epochs: tuple = (5,)    # also keep the weights after these epochs (and the last one)
    bf16: bool = False               # autocast the forward pass to bfloat16
    seed: int = 0

    def __post_init__(self):
        if self.kind not in ("denoiser", "time", "class") or self.objective not in ("ddpm", "flow"):
            raise ValueError(f"kind must be 'denoiser', 'time' or 'class' and objective 'ddpm' or 'flow', got "
                             f"{self.kind!r}, {self.objective!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"the moving average's decay must be in [0, 1), got {self.ema}")
        for name in ("num_hiddens", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"the learning rate must be positive, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")

    @classmethod
    def denoiser(cls, **kw) -> "TrainConfig":
        """Report 5B §1.2.1: D = 128, batch 256, 5 epochs, Adam 1e-4, sigma = 0.5."""
        return cls(**{**dict(kind="denoiser", num_hiddens=128, epochs=5, batch_size=256, lr=1e-4,
                             lr_schedule="constant", snapshot_epochs=(1,)), **kw})

    @classmethod
    def time_conditioned(cls, **kw) -> "TrainConfig":
        """Report 5B §2.2: D = 64, batch 128, 20 epochs, Adam 1e-3, exponential decay to 0.1x."""
        return cls(**{**dict(kind="time"), **kw})

    @classmethod
    def class_conditioned(cls, **kw) -> "TrainConfig":
        """Report 5B §2.4: as time-conditioned, plus the one-hot class dropped with p = 0.1."""
        return cls(**{**dict(kind="class"), **kw})

    @classmethod
    def pure_noise_denoiser(cls, **kw) -> "TrainConfig":
        """2025 course §1.2.3: the §1.2.1 denoiser (D = 128, batch 256, 5 epochs, Adam 1e-4) trained on z = eps."""
        return cls.denoiser(**{"pure_noise": True, **kw})

    @classmethod
    def flow_time_conditioned(cls, **kw) -> "TrainConfig":
        """2025 course §2.2: flow matching, D = 64, batch 64, 10 epochs, Adam 1e-2, exponential decay to 0.1x;
        snapshots after epochs 1 and 5 (and 10)."""
        return cls(**{**dict(kind="time", objective="flow", epochs=10, batch_size=64, lr=1e-2,
                             snapshot_epochs=(1, 5)), **kw})

    @classmethod
    def flow_class_conditioned(cls, **kw) -> "TrainConfig":
        """2025 course §2.5: as flow_time_conditioned, plus the one-hot class dropped with p = 0.1."""
        return cls.flow_time_conditioned(**{"kind": "class", **kw})

    def model_config(self) -> MNISTUNetConfig:
        multiply = self.kind == "time" and self.objective == "flow"       # the course's flow time-only UNet
        return MNISTUNetConfig(num_hiddens=self.num_hiddens, kind=self.kind,
                               time_injection="multiply" if multiply else "add")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The config a checkpoint recorded (lists back to tuples); options it predates take their defaults."""
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        if "lr_decay" in d:                         # recorded before lr_schedule: lr_decay True or False
            d["lr_schedule"] = "exponential" if d.pop("lr_decay") else "constant"
        return cls(**d)


LR_SCHEDULES = ("exponential", "constant", "one-cycle")
WARMUP = 0.1                        # one-cycle: the first 10 % of the steps warm up


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Adam's rate for optimizer step `step` (0, 1, ...) of a run of cfg.epochs * steps_per_epoch steps.

      exponential  the report's (5B §2.2) and the 2025 course's: cfg.lr * 0.1 ** (e / epochs) through epoch e
                   (0, 1, ...), i.e. ExponentialLR(gamma = 0.1 ** (1 / epochs)) stepped after every epoch
      constant     cfg.lr throughout (the denoiser of §1.2.1; the 2025 course's §2.6 "without the scheduler")
      one-cycle    a linear warm-up from 0 over the first WARMUP of the steps, then a cosine from cfg.lr down to 0 at
                   the last step (Smith & Topin 2019; the cosine of Loshchilov & Hutter 2017). The quick profile's
                   (README: The learning-rate schedule): it narrows the spread from seed to seed of the 2-epoch DDPM
    """
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "exponential":
        return cfg.lr * 0.1 ** ((step // steps_per_epoch) / cfg.epochs)
    k, total = step + 1, cfg.epochs * steps_per_epoch          # k: the optimizer steps taken once this one is
    warm = max(1, int(WARMUP * total))
    if k <= warm:
        return cfg.lr * k / warm
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (k - warm) / (total - warm)))


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
        z = eps if cfg.pure_noise else x0 + cfg.sigma * eps                            # [B.2]
        return F.mse_loss(model(z), x0)
    if cfg.objective == "flow":
        objective, t = flow, torch.rand(B, generator=generator, device=dev)[part]      # (b,) in [0, 1)
    else:
        objective, t = ddpm, torch.randint(0, ddpm.NUM_STEPS, (B,), generator=generator, device=dev)[part]
    if cfg.kind == "time":
        return objective.loss(model, x0, t, eps)
    keep = (torch.rand(B, generator=generator, device=dev) >= cfg.p_uncond)[part]     # (b,) False = dropped
    c = ddpm.one_hot(torch.where(keep, y, -1))                                         # (b, 10), zeros if dropped
    return objective.loss(model, x0, t, eps, c)


def train(cfg: TrainConfig, out_dir: Path | str, images: torch.Tensor, labels: torch.Tensor,
          device: torch.device | str = "cpu", progress: bool = True, channels_last: bool = False,
          compile: bool = False) -> dict:
    """Train (or resume training) and return the final checkpoint dict.

    Args:
        images: (N, 28, 28) uint8 MNIST; moved to `device` once, batches are slices of a permutation.
        labels: (N,) int64.
        out_dir: where checkpoint.pt and the snapshots live; an existing checkpoint.pt is resumed.
        channels_last, compile: how to run, not what to compute (so not part of cfg): NHWC activations (faster
            convolutions with bf16, on GPUs and on bf16 CPUs), and torch.compile of the model (a minute of
            compiling first; the README's benchmarks say when either pays).
    Returns:
        {"model", "optimizer", "epoch", "losses" (list of per-step floats), "config", "rng",
        "num_images"}, and "ema" (the averaged weights) when cfg.ema is set.
    Raises:
        FloatingPointError if the loss stops being finite (the last good checkpoint is kept); OSError if another
        process is training in out_dir.
    """
    if len(images) < cfg.batch_size:
        raise ValueError(f"{len(images)} training images are fewer than one batch of {cfg.batch_size}; train on at "
                         f"least {cfg.batch_size}")
    device = distributed.setup(torch.device(device))   # under torchrun: join the group (cuda -> cuda:LOCAL_RANK)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = _hold(out_dir) if distributed.is_main() else None      # one trainer per folder (rank 0 holds it)
    try:
        return _train(cfg, out_dir, images, labels, device, progress, channels_last, compile)
    finally:
        if lock is not None:
            release(lock)


def _train(cfg, out_dir, images, labels, device, progress, channels_last, compile) -> dict:
    """train()'s body, in a folder this process holds."""
    main = distributed.is_main()
    part = distributed.shard(cfg.batch_size)        # this rank's slice of each global batch (all of it alone)
    with torch.random.fork_rng(devices=[]):        # the initial weights depend on cfg.seed alone
        torch.manual_seed(cfg.seed)
        model = MNISTUNet(cfg.model_config()).to(device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    ddp_model = distributed.wrap(model, device)    # the model itself with one process
    forward = torch.compile(ddp_model) if compile else ddp_model
    # fused: one kernel updates every parameter, instead of a Python loop over them (the same Adam; a D = 16
    # step on two CPU cores spends 1 ms in it instead of 3, of about 45)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()} if cfg.ema else None
    state = {"epoch": 0, "losses": []}

    path = out_dir / CHECKPOINT
    if main:
        for stale in out_dir.glob("*.tmp"):        # a write that died: no other trainer can own it now
            stale.unlink()
    if path.exists():
        state = load_checkpoint(path)
        if "optimizer" not in state:
            raise ValueError(f"{path} is a snapshot (the weights of epoch {state['epoch']}), not a training "
                             f"checkpoint: it cannot be resumed; move it away and rerun")
        if dataclasses.asdict(TrainConfig.from_dict(state["config"])) != dataclasses.asdict(cfg):
            raise ValueError(f"{path} was trained with another configuration; delete it or choose another --out")
        if state.get("num_images", len(images)) != len(images):      # (older checkpoints lack it)
            raise ValueError(f"{path} was trained on {state['num_images']} images, not {len(images)}; "
                             f"delete it or choose another --out")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["rng"].to(generator.get_state().device))
        if ema is not None:
            ema = {k: v.to(device) for k, v in state["ema"].items()}
        if main and _keeps(cfg, state["epoch"]) and not (out_dir / snapshot_name(state["epoch"])).is_file():
            _save_snapshot(state, out_dir)         # lost after the checkpoint was written (older runs, or deleted)

    images = images.to(device)
    labels = labels.to(device)
    N = images.shape[0]
    steps = N // cfg.batch_size                     # drop the last partial batch: every step sees B images
    losses: list[float] = list(state["losses"])
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        ddp_model.train()
        perm = torch.randperm(N, generator=generator, device=device)
        epoch_losses = torch.zeros(steps, device=device)
        bar = tqdm(range(steps), desc=f"{cfg.kind} epoch {epoch}/{cfg.epochs}", leave=False, dynamic_ncols=True,
                   disable=None if progress and main else True)            # None: shown in a terminal only
        for i in bar:
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size][part]
            x0 = images[idx].unsqueeze(1).float() / 255.0                 # (b, 1, 28, 28) in [0, 1]
            x0 = x0.contiguous(memory_format=layout)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = batch_loss(forward, cfg, x0, labels[idx], generator, part, cfg.batch_size)
            optimizer.zero_grad(set_to_none=True)
            for group in optimizer.param_groups:                          # the rate: a function of the step
                group["lr"] = learning_rate(cfg, (epoch - 1) * steps + i, steps)
            loss.backward()                                               # DDP: gradients averaged over ranks
            optimizer.step()
            if ema is not None:
                update_ema(ema, model, cfg.ema, (epoch - 1) * steps + i + 1)
            epoch_losses[i] = distributed.mean(loss.detach())             # the global batch's loss
            if i % 25 == 0 or i == steps - 1:                             # one host sync every 25 steps
                value = float(epoch_losses[i])
                _check_finite(value, epoch, i, path)
                bar.set_postfix(loss=f"{value:.4f}")
        _check_finite(float(epoch_losses.sum()), epoch, steps - 1, path)
        losses += epoch_losses.tolist()
        state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "losses": losses,
            "config": dataclasses.asdict(cfg), "rng": generator.get_state(), "num_images": N,
            **({"ema": ema} if ema is not None else {}),
        }
        if main:
            if _keeps(cfg, epoch):
                _save_snapshot(state, out_dir)      # first: a checkpoint of epoch e implies its snapshot exists
            atomic_save(state, path)
    distributed.barrier()                           # every rank returns after rank 0 wrote the last checkpoint
    return state


def _keeps(cfg: TrainConfig, epoch: int) -> bool:
    """Whether a run keeps a snapshot of `epoch`: the chosen epochs and the last."""
    return epoch in cfg.snapshot_epochs or epoch == cfg.epochs


def _save_snapshot(state: dict, out_dir: Path) -> None:
    weights = {k: state[k] for k in ("model", "ema") if k in state}
    atomic_save({**weights, "config": state["config"], "epoch": state["epoch"]}, out_dir / snapshot_name(state["epoch"]))


LOCK = "training.lock"


def _hold(out_dir: Path):
    """An exclusive lock on `out_dir` for this process (data.hold on its training.lock). Returns the open lock file,
    for data.release."""
    try:
        return hold(out_dir / LOCK)
    except BlockingIOError as e:
        raise OSError(f"{out_dir} is in use by another training process (PID {e.args[0]}); wait for it to finish, "
                      f"stop it, or choose another --out") from None


@torch.no_grad()
def update_ema(ema: dict[str, torch.Tensor], model: MNISTUNet, decay: float, step: int) -> None:
    """ema <- d ema + (1 - d) weights after optimizer step `step` (1, 2, ...), with d = min(decay, (1 + step) /
    (10 + step)): the warm-up of TensorFlow's ExponentialMovingAverage(num_updates), so that the average forgets the
    random initialisation within a few hundred steps. BatchNorm's running statistics are averaged too; its step
    counter is copied."""
    d = min(decay, (1 + step) / (10 + step))
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            ema[k].lerp_(v, 1.0 - d)
        else:
            ema[k].copy_(v)


def _check_finite(value: float, epoch: int, step: int, path: Path) -> None:
    if value != value or value in (float("inf"), float("-inf")):
        raise FloatingPointError(f"the loss became {value} at epoch {epoch}, step {step}; training stopped and "
                                 f"{path} keeps the last good epoch (try a lower learning rate)")


def load_checkpoint(path: Path | str) -> dict:
    """Load a checkpoint or snapshot safely (weights_only=True, every record's CRC checked: data.load_verified); a
    damaged file gives a one-line error."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a checkpoint; move it away (a training stage then starts "
                                f"afresh there) or pass the checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; run the training stage first")
    state = load_verified(path, "delete it and rerun the training stage")
    if not isinstance(state, dict) or not {"model", "config", "epoch"} <= state.keys():
        raise ValueError(f"{path} is not a minidiff checkpoint (missing model/config/epoch)")
    return state


def load_model(path: Path | str, device: torch.device | str = "cpu", ema: bool = True,
               dtype: torch.dtype = torch.float32) -> MNISTUNet:
    """A trained model (eval mode) from a checkpoint or snapshot written by `train`, on `device` in `dtype`: the moving
    average of its weights when the run kept one (ema=False: the raw weights)."""
    state = load_checkpoint(path)
    model = MNISTUNet(TrainConfig.from_dict(state["config"]).model_config())
    model.load_state_dict(state["ema"] if ema and "ema" in state else state["model"])
    return model.to(device, dtype).eval()



@dataclass(frozen=True)
class TrainingRun:
    """A training run as its folder holds it: what the sampling stages sample."""

    checkpoint: Path
    config: TrainConfig                     # how it was trained (the kind of model it is)
    epoch: int                              # epochs done
    weights: list[tuple[int, Path]]         # (epoch, weights file) in training order: the snapshots on disk, then
                                            # the latest epoch (checkpoint.pt itself if it has no snapshot)
    missing: list[int]                      # epochs whose snapshot the run wrote but the folder no longer has

    @property
    def finished(self) -> bool:
        return self.epoch == self.config.epochs


def training_run(checkpoint: Path | str) -> TrainingRun:
    """The run whose latest epoch `checkpoint` holds. A run that stopped early (Ctrl-C, or still training) has no
    snapshot of its latest epoch: checkpoint.pt itself holds those weights."""
    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint)
    config, last, folder = TrainConfig.from_dict(state["config"]), state["epoch"], checkpoint.parent
    kept = [(e, folder / snapshot_name(e)) for e in sorted(config.snapshot_epochs) if e < last]
    latest = folder / snapshot_name(last)
    return TrainingRun(checkpoint, config, last,
                       [(e, p) for e, p in kept if p.is_file()] + [(last, latest if latest.is_file() else checkpoint)],
                       [e for e, p in kept if not p.is_file()])
