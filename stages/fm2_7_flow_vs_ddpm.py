"""Beyond the course: the report's DDPM (b2_4) and the 2025 course's flow matching (fm2_5), on the same UNet, at the
same sampling cost.

Both class-conditioned models train on the same digits at the same D and batch in the quick profile, the DDPM for two
epochs more (4 vs 2: what it needs to draw the asked digit 98 % of the time on every training measured;
tools/quality.py's curve compares the two at equal epochs); the report profiles differ more (20 epochs at batch 128
vs 10 at batch 64). Both sample with CFG gamma = 5 (quick: 3, as b2_5 and fm2_6) from the same starting noise, with
10, 50 and 300 model evaluations (each one batched CFG forward): DDIM (eta = 0) and the report's 300-step DDPM for
the DDPM model; Euler, and Heun, for the flow (Heun takes two evaluations a step but the last: its 5 and 25 steps
make 9 and 49). An independent classifier measures each setting (minidiff.evaluate): class accuracy, and the Fréchet
distance beside the real-data floor at the same sample count.
The quick profile leaves out the 300-evaluation settings (80 s of a CPU's demo; the README has them).
Outputs in outputs/fm2_7_flow_vs_ddpm/: samples.png (one row of 0..9 per setting), metrics.json, samples.pt.
"""
import time

import torch

import common
import part_b
from minidiff import ddpm, evaluate, flow, viz
from minidiff.data import save_samples
from minidiff.sampling import ddim_step, reverse_step, spaced_timesteps
from minidiff.train import load_model

SETTINGS = [   # (model, sampler, model evaluations)
    ("class", "DDIM", 10), ("class", "DDIM", 50), ("class", "DDPM", 300),
    ("flow_class", "Euler", 10), ("flow_class", "Euler", 50), ("flow_class", "Euler", 300),
    ("flow_class", "Heun", 9), ("flow_class", "Heun", 49),
]
QUICK_EVALUATIONS = 50     # --quick skips the 300-evaluation settings (b2_5 and b2_6 sample the DDPM model at 300)
PER_DIGIT = 20                                            # 200 samples per setting


def draw(sampler: str, model, x_T, digits, gamma: float, evaluations: int, generator) -> torch.Tensor:
    """Samples (N, 1, 28, 28) in [0, 1] of one setting."""
    if sampler in ("Euler", "Heun"):
        steps = (evaluations + 1) // 2 if sampler == "Heun" else evaluations              # Heun: 2 N - 1 evaluations
        return flow.sample(model, x_T, digits, gamma, steps, second_order=sampler == "Heun")
    timesteps = spaced_timesteps(ddpm.NUM_STEPS, evaluations)             # 300: every t
    step = ddim_step if sampler == "DDIM" else reverse_step
    return ddpm.sample(model, x_T, digits, gamma, generator, timesteps, step)


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--per-digit", type=common.integer(1), default=PER_DIGIT, help="samples per digit and setting (default: "
                                                                     "%(default)s)")
    args = p.parse_args(argv)
    rec = common.record(args, "fm2_7_flow_vs_ddpm")
    dev, gamma = common.device(args.device), part_b.class_gamma(args)       # the courses' 5; quick: 3
    dtype = common.model_dtype(args, dev)
    models = {name: load_model(part_b.trained_run(args, name, rec).checkpoint, dev, dtype=dtype)
              for name in ("class", "flow_class")}
    judged = part_b.judges(args, rec)
    digits = torch.arange(10).repeat(args.per_digit)                                     # (N,) rows of 0..9
    x_T = torch.randn((len(digits), 1, 28, 28), generator=common.generator(args.seed, dev), device=dev)
    rows, names = [], []
    for model, sampler, evaluations in SETTINGS:
        if args.quick and evaluations > QUICK_EVALUATIONS:
            continue
        name = f"{'DDPM model' if model == 'class' else 'flow model'}, {sampler} {evaluations}"
        start = time.perf_counter()
        images = draw(sampler, models[model], x_T, digits, gamma, evaluations, common.generator(args.seed + 1, dev))
        seconds = time.perf_counter() - start
        m = evaluate.evaluate_samples(judged, images, digits)
        rec.notes.append(f"{name} ({seconds:.1f} s): {m}")
        rec.metrics[name] = {**m.__dict__, "model_evaluations": evaluations, "seconds": seconds}
        rows.append(list(images[:10].cpu()))
        names.append(name)
    rec.wrote(viz.save_table(rows, rec.out / "samples.png", col_titles=[str(d) for d in range(10)], row_titles=names,
                             title=f"DDPM vs flow matching, CFG γ = {gamma:g}, by model evaluations"))
    rec.write_metrics()
    rec.wrote(save_samples(rec.out / "samples.pt", torch.stack([x for row in rows for x in row]),
                           torch.arange(10).repeat(len(rows)), settings=names))
    return rec


if __name__ == "__main__":
    common.run(main)
