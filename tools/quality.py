"""Quality per CPU minute: `python tools/quality.py [curve|levers|rate|guidance|time|autoguidance|all] [--out DIR]
[--json FILE] [--plot FILE]`.

Off the learning path, like tools/bench.py: it measures what the README's quick-profile tables and its "quality vs
CPU minutes" figure report. Every model is trained from scratch with minidiff.train.train on this machine's CPU, and
timed; then 200 digits (20 of each) are sampled with CFG from one fixed noise and judged by minidiff.evaluate: the
CNN's class accuracy, the MLP's beside it, and the Fréchet distance over its real-data floor at 200 samples.

- curve: the quick profile's class-conditioned DDPM and flow models (stages/part_b.py QUICK) trained for half an
  epoch (one epoch of 30,000 digits), one, two, three and four epochs (separate runs: the learning rate follows each
  run's own schedule, as `--epochs E` would), sampled at gamma = 3 and 5 (DDPM: the report's 300 steps; flow: Euler
  50, the quick profile's). Plotted with --plot.
- levers: the class DDPM model as the quick profile trained it for 2 epochs (before it took 3, then 4), with one setting
  changed at a time, sampled at gamma = 5.
- guidance: the quick class models as the profile trains them (DDPM 4 epochs, flow 2) sampled with the guidance of
  GUIDANCE: gamma = 5 at every step (the courses'), only below the noise fractions 0.8 and 0.6 (guidance in a
  limited interval, Kynkaanniemi et al. 2024; `--guide-below`), and gamma = 4 and 3 (the quick profile's) at every
  step. Run it with several --seed values (each seed its own training and noise).
- rate: the 2-epoch class DDPM model of the levers with its one-cycle schedule to Adam 1e-2, and with the report's
  per-epoch decay from 1e-2 and from 3e-3 (train.learning_rate), sampled at gamma = 5: run it with several --seed
  values to see the spread from seed to seed.
- time: the quick time-only DDPM and flow models (no class to guide toward: the judges' confidence and the Fréchet
  distance) as the profile trains them, with the courses' per-epoch decay instead of one-cycle, for twice the
  epochs, and twice as wide.
- autoguidance: the quick time-only models' last epoch autoguided by their first (Karras et al. 2024), w = 1
  (unguided) to 5.

Runs are cached in --out (default outputs/quality/): a rerun reuses finished trainings, their timings and their
judged samples, so an interrupted run loses at most the training in progress. The numbers depend on the machine;
the README names its.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "stages")]      # run from a checkout without installing; the profiles

import common  # noqa: E402  (stages/common.py: where the hardware computes bf16)
import part_b  # noqa: E402  (stages/part_b.py: the QUICK profile, the one source of its settings)
from minidiff import ddpm, evaluate, flow  # noqa: E402
from minidiff.data import load_mnist  # noqa: E402
from minidiff.train import CHECKPOINT, load_model, train  # noqa: E402

PER_DIGIT = 20                      # 200 samples a point, as the demo's metrics
IMAGES = 60_000                     # every training digit, as the quick profile
CURVE = ((1, 30_000), (1, 60_000), (2, 60_000), (3, 60_000), (4, 60_000))   # (epochs, digits): half an epoch, 1 … 4
CURVE_GAMMAS = (3.0, 5.0)
LEVERS_EPOCHS = 2                   # the levers and rates: the class DDPM as the profile trained it when measured
LEVERS = {                          # name -> changes to the quick class DDPM model's TrainConfig
    "2 epochs (D = 16, batch 64, one-cycle to Adam 1e-2, EMA 0.999)": {},
    "D = 8, 2 epochs": {"num_hiddens": 8},
    "batch 128 (the report's), 2 epochs": {"batch_size": 128},
    "1 epoch": {"epochs": 1},
    "1 epoch, no EMA": {"epochs": 1, "ema": 0.0},
    "1 epoch, Adam 1e-3 (the report's rate)": {"epochs": 1, "lr": 1e-3},
}

RATES = {                           # the rate bench: the quick class DDPM's Adam rate and its schedule
    "one-cycle to Adam 1e-2 (the quick profile)": {},
    "Adam 1e-2 decayed per epoch (the courses' schedule)": {"lr_schedule": "exponential"},
    "Adam 3e-3 decayed per epoch": {"lr": 3e-3, "lr_schedule": "exponential"},
}
GUIDANCE = ((5.0, 1.0), (5.0, 0.8), (5.0, 0.6), (4.0, 1.0), (3.0, 1.0))   # the guidance bench: (gamma, guide_below)
TIME_LEVERS = {                     # name -> changes to the quick time-only models' TrainConfig (DDPM and flow)
    "3 epochs (D = 16, batch 64, one-cycle to Adam 1e-2, EMA 0.999)": {},
    "3 epochs, Adam 1e-2 decayed per epoch (the courses' schedule)": {"lr_schedule": "exponential"},
    "6 epochs": {"epochs": 6},
    "D = 32, 3 epochs": {"num_hiddens": 32},
}
AUTOGUIDANCE_WS = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0)   # the autoguidance bench: w (1: the main model alone)


def point(cfg, n_images: int, gamma: float | None, out: Path, judges: evaluate.Judges, seed: int,
          device: torch.device, guide_below: float = 1.0, autoguidance: float = 1.0) -> dict:
    """Train (or reuse) the run of `cfg` on the first `n_images` digits, sample it at `gamma` (None: a time-only
    model, unguided; autoguidance w > 1: guided by the run's epoch-1 snapshot) or reuse those samples, and return
    {"train_minutes", "images_per_s", and judged_samples' figures}. A run's folder is named by a hash of cfg and
    n_images, so the curve and the levers share equal runs."""
    key = hashlib.sha1(json.dumps([dataclasses.asdict(cfg), n_images], sort_keys=True).encode()).hexdigest()[:12]
    folder = out / f"{cfg.objective}_{cfg.kind}_{key}"
    timing = folder / "timing.json"
    dtype = torch.bfloat16 if common.native_bf16(device) else torch.float32      # as the quick stages sample
    result = folder / ((f"gamma{gamma:g}{f'_below{guide_below:g}' if guide_below < 1 else ''}" if gamma is not None
                        else f"{f'autoguided{autoguidance:g}' if autoguidance > 1 else 'unguided'}")
                       + f"{'_bf16' if dtype == torch.bfloat16 else ''}_seed{seed}.json")
    if not (timing.is_file() and (folder / CHECKPOINT).is_file()):
        images, labels = load_mnist(train=True)
        start = time.perf_counter()
        train(cfg, folder, images[:n_images], labels[:n_images], device=device,
              channels_last=common.native_bf16(device))          # as the quick profile trains (stages/part_b.py)
        minutes = (time.perf_counter() - start) / 60
        seen = cfg.epochs * (n_images // cfg.batch_size) * cfg.batch_size
        timing.write_text(json.dumps({"train_minutes": minutes, "images_per_s": seen / (60 * minutes)}))
    if not result.is_file():
        model = load_model(folder / CHECKPOINT, device, dtype=dtype)
        autoguide = (load_model(folder / "model_epoch1.pt", device, dtype=dtype), autoguidance) if autoguidance > 1 \
            else None
        result.write_text(json.dumps(judged_samples(model, cfg.objective, gamma, judges, seed, device, guide_below,
                                                    autoguide)))
    return {**json.loads(timing.read_text()), **json.loads(result.read_text())}


def judged_samples(model, objective: str, gamma: float | None, judges: evaluate.Judges, seed: int,
                   device: torch.device, guide_below: float = 1.0, autoguide: tuple | None = None) -> dict:
    """200 samples from the noise of `seed`, and what the judges say of them: CFG samples, 20 of each digit; with
    gamma None (a time-only model) unguided ones, or autoguided by (bad model, w), and no class accuracy."""
    digits = torch.arange(10, device=device).repeat(PER_DIGIT) if gamma is not None else None      # (200,)
    g = torch.Generator(device=device).manual_seed(seed)
    noise = torch.randn((10 * PER_DIGIT, 1, 28, 28), generator=g, device=device)
    start = time.perf_counter()
    with torch.no_grad():
        if objective == "ddpm":          # the report's sampler: all 300 steps, noise from the next seed
            images = ddpm.sample(model, noise, digits, gamma, torch.Generator(device=device).manual_seed(seed + 1),
                                 guide_below=guide_below, autoguide=autoguide)
        else:                            # Euler: the quick profile's steps (class), the course's 50 (time-only)
            images = flow.sample(model, noise, digits, gamma,
                                 num_steps=part_b.QUICK_FLOW_STEPS if digits is not None else None,
                                 guide_below=guide_below, autoguide=autoguide)
    m = evaluate.evaluate_samples(judges, images, digits)
    return {"gamma": gamma, "guide_below": guide_below, "autoguidance": autoguide[1] if autoguide else 1.0,
            "sampling_s": time.perf_counter() - start, "n": m.n,
            "class_accuracy": m.class_accuracy, "mlp_accuracy": m.second_accuracy, "confidence": m.mean_confidence,
            "frechet": m.frechet, "floor": m.frechet_real_floor, "frechet_over_floor": m.frechet / m.frechet_real_floor}


def quick(model_name: str, seed: int, device: torch.device, **changes):
    """The quick profile's TrainConfig of `model_name` as the stages train it here (bf16 where the hardware has it),
    seeded, keeping only its last epoch (unless `changes` say otherwise), with `changes`."""
    return dataclasses.replace(part_b.QUICK[model_name], seed=seed, bf16=common.native_bf16(device),
                               **{"snapshot_epochs": (), **changes})


def curve(out: Path, judges: evaluate.Judges, seed: int, device: torch.device) -> list[dict]:
    rows = []
    for model_name in ("class", "flow_class"):
        for epochs, n_images in CURVE:
            cfg = quick(model_name, seed, device, epochs=epochs)
            n_images = min(n_images, IMAGES)
            for gamma in CURVE_GAMMAS:
                row = {"bench": "curve", "model": model_name, "epochs": epochs * n_images / IMAGES, "seed": seed,
                       **point(cfg, n_images, gamma, out, judges, seed, device)}
                print(row, flush=True)
                rows.append(row)
    return rows


def class_ddpm(bench: str, settings: dict, out: Path, judges: evaluate.Judges, seed: int, device: torch.device
               ) -> list[dict]:
    """The 2-epoch quick class DDPM model with each of `settings` (name -> changes to its TrainConfig), sampled at
    gamma = 5."""
    rows = []
    for lever, changes in settings.items():
        cfg = quick("class", seed, device, **{"epochs": LEVERS_EPOCHS, **changes})
        row = {"bench": bench, "lever": lever, "lr": cfg.lr, "lr_schedule": cfg.lr_schedule, "seed": seed,
               **point(cfg, IMAGES, ddpm.GAMMA, out, judges, seed, device)}
        print(row, flush=True)
        rows.append(row)
    return rows


def levers(out: Path, judges: evaluate.Judges, seed: int, device: torch.device) -> list[dict]:
    return class_ddpm("lever", LEVERS, out, judges, seed, device)


def rate(out: Path, judges: evaluate.Judges, seed: int, device: torch.device) -> list[dict]:
    return class_ddpm("rate", RATES, out, judges, seed, device)


def guidance(out: Path, judges: evaluate.Judges, seed: int, device: torch.device) -> list[dict]:
    rows = []
    for model_name in ("class", "flow_class"):
        cfg = quick(model_name, seed, device)                          # the profile's run (also one of the curve's)
        for gamma, guide_below in GUIDANCE:
            row = {"bench": "guidance", "model": model_name, "epochs": cfg.epochs,
                   **point(cfg, IMAGES, gamma, out, judges, seed, device, guide_below)}
            print(row, flush=True)
            rows.append(row)
    return rows


def time_models(out: Path, judges: evaluate.Judges, seed: int, device: torch.device) -> list[dict]:
    rows = []
    for model_name in ("time", "flow_time"):
        for lever, changes in TIME_LEVERS.items():
            row = {"bench": "time", "model": model_name, "lever": lever,
                   **point(quick(model_name, seed, device, **changes), IMAGES, None, out, judges, seed, device)}
            print(row, flush=True)
            rows.append(row)
    return rows


def autoguidance(out: Path, judges: evaluate.Judges, seed: int, device: torch.device) -> list[dict]:
    rows = []
    for model_name in ("time", "flow_time"):
        cfg = quick(model_name, seed, device, snapshot_epochs=(1,))     # the profile's run, keeping its epoch 1
        for w in AUTOGUIDANCE_WS:
            row = {"bench": "autoguidance", "model": model_name,
                   **point(cfg, IMAGES, None, out, judges, seed, device, autoguidance=w)}
            print(row, flush=True)
            rows.append(row)
    return rows


def plot(rows: list[dict], path: Path) -> Path:
    """Class accuracy and Fréchet / floor against training minutes, one line per model and gamma, from the curve rows
    of one run of main (one seed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_acc, ax_fd) = plt.subplots(1, 2, figsize=(10, 4))
    for model_name, label in (("class", "DDPM"), ("flow_class", "flow matching")):
        for gamma in CURVE_GAMMAS:
            profile = gamma == part_b.QUICK_GAMMA                 # the quick profile's gamma: solid, epochs labelled
            pts = sorted((r for r in rows if r["bench"] == "curve" and r["model"] == model_name
                          and r["gamma"] == gamma), key=lambda r: r["train_minutes"])
            minutes = [r["train_minutes"] for r in pts]
            kw = dict(ls="-" if profile else ":", marker="o", color="C0" if model_name == "class" else "C1",
                      label=f"{label}, γ = {gamma:g}")
            ax_acc.plot(minutes, [100 * r["class_accuracy"] for r in pts], **kw)
            ax_fd.plot(minutes, [r["frechet_over_floor"] for r in pts], **kw)
            for r in pts if profile else ():
                ax_fd.annotate(f"{r['epochs']:g}", (r["train_minutes"], r["frechet_over_floor"]), fontsize=7,
                               xytext=(3, 4 if model_name == "class" else -10), textcoords="offset points")
    ax_acc.axhline(98, color="gray", lw=0.8)
    ax_fd.axhline(2, color="gray", lw=0.8)
    ax_acc.set(xlabel="training minutes (this machine)", ylabel="class accuracy (%)",
               title="asked digit drawn (CNN judge, 200 samples)")
    ax_fd.set(xlabel="training minutes (this machine)", ylabel="Fréchet distance / real-data floor",
              title="distance to real digits (labels: epochs)")
    ax_acc.legend(fontsize=8)
    seed = next(r["seed"] for r in rows if r["bench"] == "curve")
    fig.suptitle(f"Quick profile (D = 16): quality vs CPU minutes of training (seed {seed})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


BENCHES = {"curve": curve, "levers": levers, "rate": rate, "guidance": guidance, "time": time_models,
           "autoguidance": autoguidance}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="?", default="all", choices=[*BENCHES, "all"])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "quality", help="where the runs are cached")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--plot", type=Path, help="draw the curve's figure into this PNG")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    torch.manual_seed(args.seed)
    judges = evaluate.judges(device=device, bf16=common.native_bf16(device))
    print(judges)
    rows = []
    for name in (list(BENCHES) if args.which == "all" else [args.which]):
        rows += BENCHES[name](args.out, judges, args.seed, device)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
        print(f"wrote {args.json}")
    if args.plot and any(r["bench"] == "curve" for r in rows):
        print(f"wrote {plot(rows, args.plot)}")
    return rows


if __name__ == "__main__":
    main()
