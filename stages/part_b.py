"""What the Part B stages share: the training profiles, the training driver, the trained run a sampling stage samples,
and the sampling of every snapshot of a run.

Part B comes in two versions on one UNet: the fall 2024 report's DDPM (stages b*) and the course's flow matching
since 2025 (stages fm*; its Part 1 is the report's b1_2*, plus fm1_2_3). Profiles: the default is the report's (or
the 2025 course's) hyperparameters, meant for a GPU, or a CPU given hours. `--quick` is a CPU profile (smaller D,
fewer epochs, bf16 autocast and the NHWC layout where the hardware computes bf16) that trains every model in minutes
on two cores.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

import common
from minidiff import ddpm, distributed, evaluate, flow, viz
from minidiff.data import load_mnist, save_samples
from minidiff.train import CHECKPOINT, TrainConfig, TrainingRun, load_model, train, training_run

REPORT = {   # the report's hyperparameters (5B §1.2.1, §2.2, §2.4), and the 2025 course's for flow matching
    "denoiser": TrainConfig.denoiser(),
    "time": TrainConfig.time_conditioned(snapshot_epochs=(5,)),
    "class": TrainConfig.class_conditioned(snapshot_epochs=(5,)),
    "pure_noise": TrainConfig.pure_noise_denoiser(),
    "flow_time": TrainConfig.flow_time_conditioned(),
    "flow_class": TrainConfig.flow_class_conditioned(),
    "flow_class_no_scheduler": TrainConfig.flow_class_conditioned(lr=1e-3, lr_schedule="constant", ema=0.999),
}
QUICK = {   # the CPU profile: D = 16, several times faster than the report's D = 64; each lever measured (README)
    "denoiser": TrainConfig.denoiser(num_hiddens=16, epochs=2, lr=1e-3, snapshot_epochs=(1,)),
    "time": TrainConfig.time_conditioned(num_hiddens=16, epochs=3, batch_size=64, lr=1e-2, lr_schedule="one-cycle",
                                         ema=0.999, snapshot_epochs=(1,)),
    "class": TrainConfig.class_conditioned(num_hiddens=16, epochs=4, batch_size=64, lr=1e-2, lr_schedule="one-cycle",
                                           ema=0.999, snapshot_epochs=(1,)),
    "pure_noise": TrainConfig.pure_noise_denoiser(num_hiddens=16, epochs=2, lr=1e-3, snapshot_epochs=(1,)),
    "flow_time": TrainConfig.flow_time_conditioned(num_hiddens=16, epochs=3, lr_schedule="one-cycle", ema=0.999,
                                                   snapshot_epochs=(1,)),
    "flow_class": TrainConfig.flow_class_conditioned(num_hiddens=16, epochs=2, ema=0.999, snapshot_epochs=(1,)),
    "flow_class_no_scheduler": TrainConfig.flow_class_conditioned(num_hiddens=16, epochs=2, snapshot_epochs=(1,),
                                                                  lr=1e-3, lr_schedule="constant", ema=0.999),
}
QUICK_IMAGES = {"denoiser": 10_000, "time": 60_000, "class": 60_000,   # --quick trains on the first N digits
                "pure_noise": 10_000, "flow_time": 60_000, "flow_class": 60_000, "flow_class_no_scheduler": 60_000}
TRAIN_STAGE = {"denoiser": "b1_2_1_train_denoiser", "time": "b2_2_train_time_conditioned",
               "class": "b2_4_train_class_conditioned", "pure_noise": "fm1_2_3_denoising_pure_noise",
               "flow_time": "fm2_2_train_time_conditioned", "flow_class": "fm2_5_train_class_conditioned",
               "flow_class_no_scheduler": "fm2_6_1_without_the_scheduler"}
GIF_EVERY = 10             # a GIF frame every 10th step of the sampling loop (and the last)
SAMPLES_PER_DIGIT = 4      # report 5B §2.4, 2025 course §2.6: the figures show 4 samples of each digit
EVAL_PER_DIGIT = 100       # the class models' metrics: 1000 samples ...
QUICK_EVAL_PER_DIGIT = 20  # ... and 200 with --quick
QUICK_FLOW_STEPS = 50      # --quick: Euler 50 for the class flow model, not the course's 300 (its paths are nearly
                           # straight: 50 and 300 steps measured the same accuracy and Fréchet distance, README)
AUTOGUIDANCE_W = 3.0       # beyond the courses: the time-only models' last snapshot guided by their first, with this w
                           # (guidance.autoguidance; measured on the quick models, README: "Autoguidance")
QUICK_GAMMA = 3.0          # --quick: the class models sample with CFG gamma = 3, not the courses' 5: at 5 no model we
                           # trained, the report's 20 epochs included, came within 2x of the real-data Fréchet floor
                           # (README: "The guidance scale")


def flow_class_steps(args: argparse.Namespace) -> int:
    """The Euler steps that sample the class-conditioned flow model: --steps, else the course's 300 (quick: 50)."""
    return args.steps or (QUICK_FLOW_STEPS if args.quick else flow.NUM_STEPS["class"])


def class_gamma(args: argparse.Namespace) -> float:
    """The CFG scale the class-conditioned models are sampled with: --gamma, else the courses' 5 (quick: 3)."""
    given = getattr(args, "gamma", None)
    return given if given is not None else (QUICK_GAMMA if args.quick else ddpm.GAMMA)


def gamma_option(p: argparse.ArgumentParser) -> None:
    """--gamma, the CFG scale of the class-conditioned models' sampling stages (class_gamma)."""
    p.add_argument("--gamma", type=common.real(0), help=f"classifier-free guidance scale (default: the courses' "
                                                        f"{ddpm.GAMMA:g}; quick: {QUICK_GAMMA:g})")


def add_training_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--epochs", type=common.integer(1), help="override the profile's number of epochs")
    p.add_argument("--num-hiddens", type=common.integer(1), help="override the profile's UNet width D")
    p.add_argument("--images", type=common.integer(1, 60_000), help="train on the first N training digits (default: all 60k; "
                                              "--quick: the profile's QUICK_IMAGES)")
    p.add_argument("--ema", type=common.real(0, 1, hi_open=True), help="keep an exponential moving average of the weights with this decay, e.g. "
                                             "0.999, and sample with it (default: the profile's; 0 = none)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (fast on GPUs and AMX CPUs; --quick turns "
                                                       "it on where the hardware has it)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory layout (helps with --bf16; --quick turns "
                                                                "it on with bf16)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (a minute of compiling first)")
    return p


def training_config(args: argparse.Namespace, model: str, dev: torch.device) -> TrainConfig:
    cfg = (QUICK if args.quick else REPORT)[model]
    changes = {"seed": args.seed, "bf16": args.bf16 or (args.quick and common.native_bf16(dev))}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.num_hiddens is not None:
        changes["num_hiddens"] = args.num_hiddens
    if args.ema is not None:
        changes["ema"] = args.ema
    return dataclasses.replace(cfg, **changes)


def run_training(args: argparse.Namespace, model: str, title: str) -> tuple[dict, common.Record]:
    """Train `model` (a key of REPORT; resuming if a checkpoint exists) and plot the loss curve. Returns (final state,
    the stage's record)."""
    dev = common.device(args.device)
    cfg = training_config(args, model, dev)
    rec = common.record(args, TRAIN_STAGE[model])
    images, labels = load_mnist(train=True)
    n = args.images or (QUICK_IMAGES[model] if args.quick else len(images))
    images, labels = images[:n], labels[:n]
    print(f"training the {model} UNet on {dev} with {len(images)} digits: {cfg}")
    channels_last = args.channels_last or (args.quick and common.native_bf16(dev))   # faster with bf16 (README)
    state = train(cfg, rec.out, images, labels, device=dev, channels_last=channels_last, compile=args.compile)
    if not distributed.is_main():                 # under torchrun, rank 0 alone reports and plots
        return state, rec
    weights = [path for _, path in training_run(rec.out / CHECKPOINT).weights]
    rec.files += list(dict.fromkeys([rec.out / CHECKPOINT, *weights]))   # the checkpoint, then the snapshots
    losses = state["losses"]
    rec.wrote(viz.plot_losses(losses, rec.out / "loss.png", f"{title} (D={cfg.num_hiddens}, {cfg.epochs} epochs)"))
    rec.notes.append(f"final loss (mean of the last 100 steps): {sum(losses[-100:]) / len(losses[-100:]):.4f}")
    return state, rec


def describe(cfg: TrainConfig) -> str:
    """The kind of model a run trains, in words: 'class-conditioned flow', 'time-conditioned DDPM', 'denoiser'."""
    if cfg.kind == "denoiser":
        return "pure-noise denoiser" if cfg.pure_noise else "denoiser"
    return f"{cfg.kind}-conditioned {'flow' if cfg.objective == 'flow' else 'DDPM'}"


def trained_run(args: argparse.Namespace, model: str, rec: common.Record, checkpoint: Path | None = None
                ) -> TrainingRun:
    """The training run of `model` that a sampling stage samples: `checkpoint` (a stage's --checkpoint), else the
    training stage's under --out (a one-line error says which command to run first, or that the checkpoint holds
    another kind of model). A run that is not finished, or has lost a snapshot, is sampled as it is, with a note."""
    path = Path(checkpoint or Path(args.out) / TRAIN_STAGE[model] / CHECKPOINT)
    if not path.exists():
        raise FileNotFoundError(f"no trained model at {path}; run `{common.command(TRAIN_STAGE[model], args)}` first")
    run = training_run(path)
    wanted, found = describe(REPORT[model]), describe(run.config)
    if found != wanted:
        raise ValueError(f"{path} holds a {found} model; this stage samples a {wanted} one (train it with "
                         f"`{common.command(TRAIN_STAGE[model], args)}`)")
    if not run.finished:
        rec.notes.append(f"{path} stopped after epoch {run.epoch} of {run.config.epochs}: sampling it as it is "
                         f"(rerun the training stage to finish)")
    if run.missing:
        rec.notes.append(f"the snapshots of epochs {run.missing} are gone from {path.parent} (deleted?): sampling the "
                         f"others (retrain into another --out to get them back)")
    return run


def gif_frames(x_T: torch.Tensor, steps: int, shown: int | None = None, every: int = GIF_EVERY):
    """(frames, callback) for a denoising GIF of the first `shown` samples (all by default) of a `steps`-step loop:
    frames starts as [x_T], and the sampling loop's callback appends every `every`-th x_t and the last one, each
    clamped to [0, 1] on the CPU (viz.save_gif's input)."""
    frames = [x_T[:shown].clamp(0, 1).cpu()]

    def keep(i, t_prev, x, x0_hat):
        if (i + 1) % every == 0 or i == steps - 1:
            frames.append(x[:shown].clamp(0, 1).cpu())
    return frames, keep


def sample_snapshots(args: argparse.Namespace, rec: common.Record, weights: list[tuple[int, Path]], draw,
                     steps: int, title: str, batch_for, judged=None, measured=(), shown: int = 40):
    """Sample each snapshot of a run from the same seed: samples_epoch{e}.png (the first `shown`, 10 a row) and
    denoising_epoch{e}.gif; for the epochs in `measured`, the metrics of all the samples (minidiff.evaluate with the
    `judged` Judges) as a note and in rec.metrics. Returns (images, digits) of the last snapshot, for samples.pt.

    draw(model, x_T, digits, generator, callback) -> (N, 1, 28, 28) in [0, 1]: the stage's sampler of `steps` steps.
    batch_for(epoch) -> (N, digits): how many samples, and the (N,) digits to ask for or None (unconditional).
    """
    dev = common.device(args.device)
    for epoch, path in weights:
        model = load_model(path, dev, dtype=common.model_dtype(args, dev))
        n, digits = batch_for(epoch)
        gen = common.generator(args.seed, dev)
        x_T = torch.randn((n, 1, 28, 28), generator=gen, device=dev)                    # the starting noise
        frames, keep = gif_frames(x_T, steps, shown)
        images = draw(model, x_T, digits, gen, keep)
        rec.wrote(viz.save_grid(images[:shown], rec.out / f"samples_epoch{epoch}.png", nrow=10,
                                title=f"{title}, epoch {epoch}"))
        rec.wrote(viz.save_gif(frames, rec.out / f"denoising_epoch{epoch}.gif", nrow=10))
        if epoch in measured:
            m = evaluate.evaluate_samples(judged, images, digits)
            rec.notes.append(f"epoch {epoch}: {m}")
            rec.metrics[f"epoch{epoch}"] = m.__dict__
    return images, digits


def judges(args: argparse.Namespace, rec: common.Record) -> evaluate.Judges:
    """The two classifiers that measure samples (minidiff.evaluate), trained on first use and cached for the machine
    (evaluate.default_judges_dir), in bf16 where the hardware computes it; a note says how good they are."""
    dev = common.device(args.device)
    judged = evaluate.judges(device=dev, bf16=common.native_bf16(dev))
    rec.notes.append(f"the metrics are {judged}")
    return judged


def add_sampling_args(p: argparse.ArgumentParser, train_stage: str, classes: bool = False):
    """The sampling stages' options: --checkpoint, --epoch, and --num-samples and --autoguidance (time-only models)
    or --per-digit, --gamma and --guide-below (class models)."""
    p.add_argument("--checkpoint", help=f"the training checkpoint.pt (default: the {train_stage} stage's)")
    if not classes:
        p.add_argument("--num-samples", type=common.integer(1), help=f"samples for the metrics (default {10 * EVAL_PER_DIGIT}, "
                                                       f"quick {10 * QUICK_EVAL_PER_DIGIT}); the figures show 40")
        p.add_argument("--autoguidance", type=common.real(1), default=AUTOGUIDANCE_W,
                       help="also sample the last snapshot guided by the run's first, eps_bad + w (eps - eps_bad), with "
                            "this w (Karras et al. 2024; default %(default)s; 1: skip it)")
    else:
        gamma_option(p)
        p.add_argument("--guide-below", type=common.real(0, 1), default=1.0,
                       help="guide only the steps whose noise fraction (DDPM t / T, flow 1 - t) is at most this, "
                            "e.g. 0.6 (Kynkäänniemi et al. 2024; default 1: every step, as the courses)")
        p.add_argument("--per-digit", type=common.integer(1), help=f"samples per digit for the metrics (default {EVAL_PER_DIGIT}, "
                                                     f"quick {QUICK_EVAL_PER_DIGIT})")
    p.add_argument("--epoch", type=common.integer(1), help="sample only this snapshot (default: each; on a CPU the report "
                                             "profile's 1000 samples take over an hour a snapshot)")
    return p


def interval_title(args: argparse.Namespace) -> str:
    """', guided below noise 0.6' for a figure's title when --guide-below limits the guidance, else ''."""
    return f", guided below noise {args.guide_below:g}" if args.guide_below < 1 else ""


def snapshots_to_sample(args: argparse.Namespace, model: str, rec: common.Record) -> tuple[list, set, list]:
    """The run's snapshots a sampling stage samples (all, or --epoch), those it measures (quick: the last), and all the
    run's snapshots [(epoch, weights file)]."""
    weights = snapshots = trained_run(args, model, rec, args.checkpoint).weights    # first: fail fast without a model
    if args.epoch is not None:
        epochs = [e for e, _ in snapshots]
        if args.epoch not in epochs:
            raise ValueError(f"no snapshot of epoch {args.epoch}; this run has epochs {epochs}")
        snapshots = [snapshots[epochs.index(args.epoch)]]
    return snapshots, ({snapshots[-1][0]} if args.quick else {e for e, _ in snapshots}), weights


def sample_time_model(args: argparse.Namespace, rec: common.Record, model: str, draw, steps: int,
                      title: str) -> common.Record:
    """§2.3 of either course: samples of every snapshot (or --epoch) of the time-only run of `model`, their GIFs, the
    quality of a larger batch (--num-samples; quick: the last snapshot only): the judges' confidence and the Fréchet
    distance (a time-only model asks for no digit); then, beyond the courses, the last snapshot autoguided by the
    run's first (`autoguided`); metrics.json, and samples.pt of the last, unguided. `draw` takes the sampler's
    autoguide=(bad_model, w) besides sample_snapshots' arguments."""
    snapshots, measured, weights = snapshots_to_sample(args, model, rec)
    judged = judges(args, rec)
    n = args.num_samples or 10 * (QUICK_EVAL_PER_DIGIT if args.quick else EVAL_PER_DIGIT)
    images, _ = sample_snapshots(args, rec, snapshots, draw, steps, title, judged=judged, measured=measured,
                                 batch_for=lambda e: (n if e in measured else 40, None))
    (first, bad_path), (last, main_path) = weights[0], snapshots[-1]
    if args.autoguidance > 1 and first < last:                    # a run with one snapshot has no earlier one
        autoguided(args, rec, images, draw, (main_path, last), (bad_path, first), judged)
    rec.write_metrics()
    rec.wrote(save_samples(rec.out / "samples.pt", images))
    return rec


def autoguided(args: argparse.Namespace, rec: common.Record, unguided: torch.Tensor, draw, main: tuple, bad: tuple,
               judged: evaluate.Judges) -> None:
    """Beyond the courses: the samples of the `main` (weights file, epoch) snapshot again, from the same noise,
    autoguided by the less-trained `bad` one (guidance.autoguidance, w = --autoguidance): autoguided.png beside the
    `unguided` samples (N, 1, 28, 28), and the metrics of all N (rec.metrics["epoch{e}_autoguided"])."""
    (path, epoch), (bad_path, bad_epoch), w = main, bad, args.autoguidance
    dev = common.device(args.device)
    gen = common.generator(args.seed, dev)
    x_T = torch.randn(unguided.shape, generator=gen, device=dev)        # the unguided samples' noise (sample_snapshots)
    main_model, bad_model = (load_model(p, dev, dtype=common.model_dtype(args, dev)) for p in (path, bad_path))
    images = draw(main_model, x_T, None, gen, None, autoguide=(bad_model, w))
    label = f"epoch {epoch} autoguided by epoch {bad_epoch}, w = {w:g}"
    m = evaluate.evaluate_samples(judged, images, None)
    rec.notes.append(f"{label}: {m}")
    rec.metrics[f"epoch{epoch}_autoguided"] = {**m.__dict__, "w": w, "bad_epoch": bad_epoch}
    rec.wrote(viz.save_table([[viz.tile(unguided[:40], nrow=10), viz.tile(images[:40], nrow=10)]],
                             rec.out / "autoguided.png", col_titles=[f"epoch {epoch}", label], cell_inches=4.0,
                             title="autoguidance (Karras et al. 2024): the same noise, guided by an earlier snapshot"))


def sample_class_model(args: argparse.Namespace, rec: common.Record, model: str, draw, steps: int,
                       title: str) -> common.Record:
    """Report 5B §2.4, 2025 course §2.6: for every snapshot (or --epoch) of the class-conditioned run of `model`,
    4 samples of each digit and their GIF, from a larger batch (--per-digit of each) whose quality the independent
    classifiers measure (quick: the last snapshot only); metrics.json, and samples.pt of the last."""
    snapshots, measured, _ = snapshots_to_sample(args, model, rec)
    judged = judges(args, rec)
    per_digit = args.per_digit or (QUICK_EVAL_PER_DIGIT if args.quick else EVAL_PER_DIGIT)

    def batch_for(epoch):                                          # rows of 0..9
        digits = torch.arange(10).repeat(per_digit if epoch in measured else SAMPLES_PER_DIGIT)
        return len(digits), digits
    images, digits = sample_snapshots(args, rec, snapshots, draw, steps, title, batch_for, judged, measured,
                                      shown=10 * SAMPLES_PER_DIGIT)
    rec.write_metrics()
    rec.wrote(save_samples(rec.out / "samples.pt", images, digits))
    return rec
