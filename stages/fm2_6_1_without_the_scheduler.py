"""2025 course §2.6, "can we get rid of the annoying learning rate scheduler?": the class-conditioned flow UNet
trained at a constant learning rate, then sampled beside the scheduled one of fm2_5 from the same noise.

The scheduler decays Adam's rate 10x over the run (1e-2 -> 1e-3): large steps early for progress, small ones late
so that the weights settle. At a constant rate the weights keep jittering at that rate's scale. What compensates here
(both measured in the README): a constant rate 10x lower than the scheduled start, 1e-3, and an exponential moving
average of the weights (decay 0.999; Polyak & Juditsky 1992), which averages the late jitter away as the decay
would have damped it. Sampling uses the average.
Outputs in outputs/fm2_6_1_without_the_scheduler/: loss.png, checkpoint.pt and snapshots, compare.png (4 samples of
each digit from each model, the same starting noise), metrics.json (both models, CFG gamma = 5, Euler N = 300; quick
profile: gamma = 3, N = 50, as fm2_6).
"""
from pathlib import Path

import torch

import common
import part_b
from minidiff import evaluate, flow, viz
from minidiff.train import CHECKPOINT, load_model


def main(argv=None):
    p = part_b.add_training_args(common.parser(__doc__))
    p.add_argument("--scheduled", type=Path, help="the scheduled run to compare with (default: the fm2_5 stage's "
                                                  "checkpoint.pt under --out)")
    p.add_argument("--per-digit", type=common.integer(1), default=part_b.QUICK_EVAL_PER_DIGIT,
                   help="samples per digit for the metrics (default: %(default)s)")
    p.add_argument("--steps", type=common.integer(1), help=f"Euler steps (default: the course's {flow.NUM_STEPS['class']}; "
                                             f"quick: {part_b.QUICK_FLOW_STEPS})")
    args = p.parse_args(argv)
    state, rec = part_b.run_training(args, "flow_class_no_scheduler", "class flow UNet, constant rate + EMA")
    dev = common.device(args.device)
    runs = {"constant rate 1e-3 + EMA": rec.out / CHECKPOINT}
    scheduled = args.scheduled or Path(args.out) / part_b.TRAIN_STAGE["flow_class"] / CHECKPOINT
    if scheduled.exists():
        run = part_b.trained_run(args, "flow_class", rec, scheduled)    # a one-line error if it is another model
        runs = {f"{run.config.lr_schedule} schedule (fm2_5)": scheduled, **runs}
    else:
        rec.notes.append(f"no scheduled run at {scheduled} to compare with: run "
                         f"`{common.command(part_b.TRAIN_STAGE['flow_class'], args)}` first")
    judged = part_b.judges(args, rec)
    digits = torch.arange(10).repeat(args.per_digit)                           # (N,) rows of 0..9
    x0 = torch.randn((len(digits), 1, 28, 28), generator=common.generator(args.seed, dev), device=dev)
    grids = []
    for name, path in runs.items():                                           # the same noise for both models
        model = load_model(path, dev, dtype=common.model_dtype(args, dev))      # the EMA weights
        images = flow.sample(model, x0, digits, part_b.class_gamma(args), part_b.flow_class_steps(args),
                             progress=True)                                   # CFG, Euler: as fm2_6 samples
        m = evaluate.evaluate_samples(judged, images, digits)
        rec.notes.append(f"{name}: {m}")
        rec.metrics[name] = m.__dict__
        grids.append(viz.tile(images[:10 * part_b.SAMPLES_PER_DIGIT], nrow=10))
    rec.wrote(viz.save_table([grids], rec.out / "compare.png", col_titles=list(runs), cell_inches=4.0,
                             title=f"class-conditioned flow, γ = {part_b.class_gamma(args):g}, with and without the "
                                   f"scheduler"))
    rec.write_metrics()
    return rec


if __name__ == "__main__":
    common.run(main)
