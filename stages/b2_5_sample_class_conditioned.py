"""Report 5B §2.4 (sampling): the class-conditioned DDPM with classifier-free guidance, gamma = 5.

For each snapshot (after 5 and 20 epochs; quick profile: 1 and 2): 4 samples of every digit and their denoising
GIF; and the quality measured by an independent classifier (minidiff.evaluate) on a larger batch of which those are
the first 4 rows (100 samples per digit; quick profile: the last snapshot only, 10 per digit).
Outputs in outputs/b2_5_sample_class_conditioned/:
  samples_epoch{e}.png   4 rows x 10 digits
  denoising_epoch{e}.gif the reverse process, every 10th of the 300 steps
  metrics.json           class accuracy, confidence and Fréchet distance per snapshot
  samples.pt             {"images": (N, 1, 28, 28) in [0, 1], "labels": (N,)} from the last epoch
"""
import json

import torch

import common
import part_b
from minidiff import ddpm, evaluate, viz
from minidiff.data import save_samples
from minidiff.train import load_model

GAMMA = ddpm.GAMMA          # report 5B §2.4: 5
SAMPLES_PER_DIGIT = 4
SHOWN = 10 * SAMPLES_PER_DIGIT   # the figures show the first 4 rows of 0..9
EVAL_PER_DIGIT = 100        # 1000 samples for the metrics
QUICK_EVAL_PER_DIGIT = 10


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--checkpoint", help="the training checkpoint.pt (default: the b2_4 stage's)")
    p.add_argument("--gamma", type=float, default=GAMMA, help="classifier-free guidance scale")
    p.add_argument("--per-digit", type=int, help=f"samples per digit for the metrics (default {EVAL_PER_DIGIT}, "
                                                 f"quick {QUICK_EVAL_PER_DIGIT})")
    p.add_argument("--epoch", type=int, help="sample only this snapshot (default: each; on a CPU the report "
                                             "profile's 1000 samples take over an hour a snapshot)")
    args = p.parse_args(argv)
    rec = common.record(args, "b2_5_sample_class_conditioned")
    dev = common.device(args.device)
    snapshots = part_b.trained_run(args, "class", rec).weights            # first: fail fast without a model
    if args.epoch is not None:
        epochs = [e for e, _ in snapshots]
        if args.epoch not in epochs:
            raise ValueError(f"no snapshot of epoch {args.epoch}; this run has epochs {epochs}")
        snapshots = [snapshots[epochs.index(args.epoch)]]
    classifier = evaluate.load_or_train_classifier(args.out / "classifier" / "mnist_classifier.pt", dev)
    per_digit = args.per_digit or (QUICK_EVAL_PER_DIGIT if args.quick else EVAL_PER_DIGIT)
    for epoch, path in snapshots:
        model = load_model(path, dev)
        measure = not args.quick or epoch == snapshots[-1][0]          # quick: metrics of the last snapshot only
        digits = torch.arange(10).repeat(per_digit if measure else SAMPLES_PER_DIGIT)   # (N,) rows of 0..9
        gen = common.generator(args.seed, dev)
        x_T = torch.randn((len(digits), 1, 28, 28), generator=gen, device=dev)          # Algorithm 2, line 1
        frames, keep = part_b.gif_frames(x_T, SHOWN)
        images = ddpm.sample(model, x_T, digits, args.gamma, gen, callback=keep, progress=True)
        rec.wrote(viz.save_grid(images[:SHOWN], rec.out / f"samples_epoch{epoch}.png", nrow=10,
                                title=f"class-conditioned, γ = {args.gamma}, epoch {epoch}"))
        rec.wrote(viz.save_gif(frames, rec.out / f"denoising_epoch{epoch}.gif", nrow=10))
        if measure:
            m = evaluate.evaluate_samples(classifier, images, digits)
            rec.notes.append(f"epoch {epoch}: {m}")
            rec.metrics[f"epoch{epoch}"] = m.__dict__
    (rec.out / "metrics.json").write_text(json.dumps(rec.metrics, indent=2))
    rec.wrote(rec.out / "metrics.json")
    rec.wrote(save_samples(rec.out / "samples.pt", images, digits))
    return rec


if __name__ == "__main__":
    common.run(main)
