"""2025 course §1.2.3, denoising pure noise: the §1.2.1 denoiser trained on z = eps alone, with no digit in its input.

    L = || D(eps) - x ||^2  over independent (eps, x) is minimised by the constant D(eps) = E[x], the mean digit:

nothing in pure noise says which digit to draw, so the best a one-step denoiser can do is the average of them all.
Training as §1.2.1 (D = 128, batch 256, 5 epochs, Adam 1e-4) is resumable. Figures in
outputs/fm1_2_3_denoising_pure_noise/:
  loss.png                 training loss per step (log scale): it falls to the digits' variance around their mean
  results_epoch{e}.png     pure-noise inputs z, the outputs D(z), and the mean training digit, after epoch 1 and the
                           last; the note measures how far the outputs are from the mean digit and from real digits
"""
import torch

import common
import part_b
from minidiff import viz
from minidiff.data import load_mnist
from minidiff.train import CHECKPOINT, load_model, training_run

NUM_EXAMPLES = 6


def main(argv=None):
    args = part_b.add_training_args(common.parser(__doc__)).parse_args(argv)
    state, rec = part_b.run_training(args, "pure_noise", "denoiser of pure noise, z = ε")
    dev = common.device(args.device)
    train_x, _ = load_mnist(train=True)
    digits = train_x[:len(train_x) if not args.quick else part_b.QUICK_IMAGES["pure_noise"]]
    digits = digits.unsqueeze(1).float().div(255).to(dev)                     # (N, 1, 28, 28) in [0, 1]
    mean_digit = digits.mean(0, keepdim=True)                                  # E[x], the minimiser of L
    z = torch.randn((NUM_EXAMPLES, 1, 28, 28), generator=common.generator(args.seed, dev), device=dev)
    rms = lambda a, b: float(((a - b) ** 2).mean().sqrt())                     # noqa: E731
    for epoch, path in training_run(rec.out / CHECKPOINT).weights:
        with torch.no_grad():
            x_hat = load_model(path, dev)(z)                                   # (6, 1, 28, 28)
        rec.wrote(viz.save_table([list(z.clamp(0, 1)), list(x_hat.clamp(0, 1)), [mean_digit[0]]],
                                 rec.out / f"results_epoch{epoch}.png",
                                 row_titles=["pure noise z", "D(z)", "mean digit"],
                                 title=f"denoising pure noise after epoch {epoch}"))
        rec.notes.append(f"epoch {epoch}: D(z) is {rms(x_hat, mean_digit):.3f} RMS from the mean training digit, "
                         f"and {rms(x_hat, digits[:NUM_EXAMPLES]):.3f} from real digits (real digits are "
                         f"{rms(digits[:1000], mean_digit):.3f} from the mean)")
    return rec


if __name__ == "__main__":
    common.run(main)
