"""Report 5B extension: DDIM with few steps vs the report's 300-step DDPM sampler (Song et al. 2021).

The class-conditioned model of §2.4, with classifier-free guidance gamma = 5, sampled by deterministic DDIM
(eta = 0, eq. 12) at 5, 10, 20 and 50 evenly spaced steps ("trailing" spacing) and by DDPM with all 300 steps.
The same network, the same starting noise: only the sampler changes. An independent classifier
(minidiff.evaluate) measures how often each setting draws the digit it was asked for.
Outputs in outputs/b2_6_ddim_steps/:
  samples.png   one row of digits 0..9 per setting
  metrics.json  per setting: model evaluations (each a batched CFG forward), class accuracy, seconds
  samples.pt    {"images": (S * 10, 1, 28, 28) in [0, 1], "labels": (S * 10,), "settings": S names}
"""
import json
import time

import torch

import common
import part_b
from minidiff import evaluate, mnist_backbone, viz
from minidiff.guidance import cfg as classifier_free_guidance
from minidiff.sampling import iterative_denoise, spaced_timesteps
from minidiff.train import load_model

GAMMA = 5.0                                     # report 5B §2.4
SETTINGS = [("ddim", 5), ("ddim", 10), ("ddim", 20), ("ddim", 50), ("ddpm", 300)]   # (step, number of steps)
ETA = 0.0                                       # Song et al. 2021: eta = 0 is DDIM proper (deterministic)
EVAL_PER_DIGIT = 10                             # 100 samples per setting (quick: 3 per digit)


@torch.no_grad()
def sample(model, digits: torch.Tensor, x_T: torch.Tensor, step: str, n_steps: int, generator: torch.Generator,
           gamma: float) -> torch.Tensor:
    """digits (N,), x_T (N, 1, 28, 28) -> (N, 1, 28, 28) in [0, 1] with n_steps of `step` and CFG gamma."""
    dev = x_T.device
    eps_fn = classifier_free_guidance(mnist_backbone.model_fn(model), mnist_backbone.one_hot(digits, device=dev),
                                      torch.zeros(1, 10, device=dev), gamma)
    timesteps = spaced_timesteps(mnist_backbone.NUM_STEPS, n_steps)   # 300 steps: every t, as part_b.sample
    x0 = iterative_denoise(eps_fn, mnist_backbone.schedule(), x_T, timesteps, generator=generator,
                           step=step, eta=ETA)
    return x0.clamp(0, 1)


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--checkpoint", help="the class-conditioned checkpoint.pt (default: the b2_4 stage's)")
    p.add_argument("--gamma", type=float, default=GAMMA, help="classifier-free guidance scale")
    p.add_argument("--per-digit", type=int, help=f"samples per digit and setting (default {EVAL_PER_DIGIT}, quick 3)")
    args = p.parse_args(argv)
    out = common.stage_dir(args, "b2_6_ddim_steps")
    dev = common.device(args.device)
    model = load_model(part_b.default_checkpoint(args, "class"), dev)
    classifier = evaluate.load_or_train_classifier(args.out / "classifier" / "mnist_classifier.pt", dev)
    per_digit = args.per_digit or (3 if args.quick else EVAL_PER_DIGIT)
    digits = torch.arange(10).repeat(per_digit)                               # (N,) rows of 0..9
    x_T = torch.randn((len(digits), 1, 28, 28), generator=common.generator(args.seed, dev), device=dev)

    rows, names, metrics = [], [], {}
    for step, n_steps in SETTINGS:
        name = f"{step.upper()} {n_steps} steps"
        start = time.perf_counter()
        images = sample(model, digits, x_T, step, n_steps, common.generator(args.seed + 1, dev), args.gamma)
        seconds = time.perf_counter() - start
        accuracy = evaluate.accuracy(classifier, images, digits)
        print(f"{name}: class accuracy {100 * accuracy:.1f} % of {len(digits)} samples ({seconds:.1f} s)")
        metrics[f"{step}_{n_steps}"] = {"step": step, "eta": ETA if step == "ddim" else None, "steps": n_steps,
                                        "class_accuracy": accuracy, "n": len(digits), "seconds": seconds}
        rows.append(list(images[:10].cpu()))
        names.append(name)
    common.wrote(viz.save_table(rows, out / "samples.png", col_titles=[str(d) for d in range(10)],
                                row_titles=names, title=f"DDIM (η = {ETA}) vs DDPM, CFG γ = {args.gamma}"))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    common.wrote(out / "metrics.json")
    torch.save({"images": torch.stack([x for row in rows for x in row]), "labels": torch.arange(10).repeat(len(rows)),
                "settings": names}, out / "samples.pt")
    common.wrote(out / "samples.pt")


if __name__ == "__main__":
    common.run(main)
