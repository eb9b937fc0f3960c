"""Report 5B extension: DDIM with few steps vs the report's 300-step DDPM sampler (Song et al. 2021).

The class-conditioned model of §2.4, with classifier-free guidance gamma = 5 (quick: 3), sampled by deterministic DDIM
(eta = 0, eq. 12) at 5, 10, 20 and 50 evenly spaced steps ("trailing" spacing) and by DDPM with all 300 steps
(--quick leaves that one out: b2_5 samples the same model with it).
The same network, the same starting noise: only the sampler changes. An independent classifier
(minidiff.evaluate) measures how often each setting draws the digit it was asked for.
Outputs in outputs/b2_6_ddim_steps/:
  samples.png   one row of digits 0..9 per setting
  metrics.json  per setting: model evaluations (each a batched CFG forward), class accuracy, seconds
  samples.pt    {"images": (S * 10, 1, 28, 28) in [0, 1], "labels": (S * 10,), "settings": S names}
"""
import time
from functools import partial

import torch

import common
import part_b
from minidiff import ddpm, evaluate, viz
from minidiff.data import save_samples
from minidiff.sampling import ddim_step, reverse_step, spaced_timesteps
from minidiff.train import load_model

ETA = 0.0                                       # Song et al. 2021: eta = 0 is DDIM proper (deterministic)
SETTINGS = [("ddim", 5), ("ddim", 10), ("ddim", 20), ("ddim", 50), ("ddpm", 300)]   # (update rule, steps)
STEPS = {"ddim": partial(ddim_step, eta=ETA), "ddpm": reverse_step}
EVAL_PER_DIGIT = 20                             # 200 samples per setting
QUICK_STEPS = 50                                # --quick leaves out DDPM 300 (b2_5 samples the same model with it)


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--checkpoint", help="the class-conditioned checkpoint.pt (default: the b2_4 stage's)")
    part_b.gamma_option(p)
    p.add_argument("--per-digit", type=common.integer(1), help=f"samples per digit and setting (default {EVAL_PER_DIGIT})")
    args = p.parse_args(argv)
    rec = common.record(args, "b2_6_ddim_steps")
    dev, gamma = common.device(args.device), part_b.class_gamma(args)         # report 5B §2.4: 5; quick: 3 (b2_5's)
    run = part_b.trained_run(args, "class", rec, args.checkpoint)
    model = load_model(run.checkpoint, dev, dtype=common.model_dtype(args, dev))      # the latest epoch
    judged = part_b.judges(args, rec)
    per_digit = args.per_digit or EVAL_PER_DIGIT
    digits = torch.arange(10).repeat(per_digit)                               # (N,) rows of 0..9
    x_T = torch.randn((len(digits), 1, 28, 28), generator=common.generator(args.seed, dev), device=dev)

    rows, names = [], []
    for rule, n_steps in SETTINGS:               # the same x_T for every setting: only the sampler changes
        if args.quick and n_steps > QUICK_STEPS:
            rec.notes.append(f"--quick leaves out {rule.upper()} {n_steps} steps: b2_5 measures this model with it")
            continue
        name = f"{rule.upper()} {n_steps} steps"
        start = time.perf_counter()
        images = ddpm.sample(model, x_T, digits, gamma, common.generator(args.seed + 1, dev),
                             spaced_timesteps(ddpm.NUM_STEPS, n_steps), STEPS[rule])   # 300 steps: every t
        seconds = time.perf_counter() - start
        accuracy = evaluate.accuracy(judged.classifier, images, digits)
        lo, hi = evaluate.wilson_interval(round(accuracy * len(digits)), len(digits))
        rec.notes.append(f"{name}: class accuracy {100 * accuracy:.1f} % of {len(digits)} samples (95 % interval "
                         f"{100 * lo:.1f}-{100 * hi:.1f} %; {seconds:.1f} s)")
        rec.metrics[f"{rule}_{n_steps}"] = {"step": rule, "eta": ETA if rule == "ddim" else None, "steps": n_steps,
                                            "class_accuracy": accuracy, "accuracy_interval": [lo, hi],
                                            "n": len(digits), "seconds": seconds}
        rows.append(list(images[:10].cpu()))
        names.append(name)
    rec.wrote(viz.save_table(rows, rec.out / "samples.png", col_titles=[str(d) for d in range(10)],
                             row_titles=names, title=f"DDIM (η = {ETA}) vs DDPM, CFG γ = {gamma:g}"))
    rec.write_metrics()
    rec.wrote(save_samples(rec.out / "samples.pt", torch.stack([x for row in rows for x in row]),
                           torch.arange(10).repeat(len(rows)), settings=names))
    return rec


if __name__ == "__main__":
    common.run(main)
