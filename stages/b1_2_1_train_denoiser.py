"""Report 5B §1.2.1: train the single-step denoiser D(z) ~ x at sigma = 0.5, and show its results.

Training (report: D = 128, batch 256, 5 epochs, Adam 1e-4; L2 loss [B.2]) is resumable: rerun the same command
after an interruption. Figures in outputs/b1_2_1_train_denoiser/:
  loss.png                 training loss per step (log scale)
  results_epoch{e}.png     clean / noisy (sigma = 0.5) / denoised test digits after epoch 1 and the last epoch
"""
import torch

import common
import part_b
from minidiff import viz
from minidiff.data import load_mnist
from minidiff.train import CHECKPOINT, load_model, training_run

SIGMA = 0.5          # report 5B §1.2.1
NUM_EXAMPLES = 6


def main(argv=None):
    args = part_b.add_training_args(common.parser(__doc__)).parse_args(argv)
    state, rec = part_b.run_training(args, "denoiser", "single-step denoiser, σ = 0.5")
    dev = common.device(args.device)
    test_x, _ = load_mnist(train=False)
    x = test_x[:NUM_EXAMPLES].unsqueeze(1).float().div(255).to(dev)          # (N, 1, 28, 28)
    g = common.generator(args.seed, dev)
    z = x + SIGMA * torch.randn(x.shape, generator=g, device=dev)             # [B.2]
    for epoch, path in training_run(rec.out / CHECKPOINT).weights:
        model = load_model(path, dev)
        with torch.no_grad():
            x_hat = model(z)
        rows = [list(x), list(z.clamp(0, 1)), list(x_hat.clamp(0, 1))]
        rec.wrote(viz.save_table(rows, rec.out / f"results_epoch{epoch}.png",
                                 row_titles=["clean x", "noisy z", "D(z)"],
                                 title=f"denoising σ = {SIGMA} after epoch {epoch}"))
    return rec


if __name__ == "__main__":
    common.run(main)
