"""Report 5B §1.2.2: the sigma = 0.5 denoiser on noise levels it was not trained for.

Figure: outputs/b1_2_2_out_of_distribution/ood.png, noisy digits (top) and the denoiser's output (bottom) for
sigma = 0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0. Needs the trained denoiser from b1_2_1_train_denoiser.py.
"""
import torch

import common
import part_b
from minidiff import viz
from minidiff.data import load_mnist
from minidiff.train import load_model

SIGMAS = [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0]   # report 5B §1.2.2


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--checkpoint", help="the denoiser's checkpoint.pt (default: the b1_2_1 stage's)")
    args = p.parse_args(argv)
    rec = common.record(args, "b1_2_2_out_of_distribution")
    dev = common.device(args.device)
    run = part_b.trained_run(args, "denoiser", rec, args.checkpoint)
    model = load_model(run.checkpoint, dev)                                  # the latest epoch
    test_x, test_y = load_mnist(train=False)
    g = common.generator(args.seed, dev)
    rows, row_titles = [], []
    for k in range(2):                                                      # two test digits
        x = test_x[k].float().div(255).view(1, 1, 28, 28).to(dev)
        eps = torch.randn(x.shape, generator=g, device=dev)
        z = torch.cat([x + s * eps for s in SIGMAS])                        # (7, 1, 28, 28)  [B.2]
        with torch.no_grad():
            x_hat = model(z)
        rows += [list(z.clamp(0, 1)), list(x_hat.clamp(0, 1))]
        row_titles += [f"noisy {int(test_y[k])}", "denoised"]
    rec.wrote(viz.save_table(rows, rec.out / "ood.png", col_titles=[f"σ = {s}" for s in SIGMAS],
                             row_titles=row_titles, title="trained at σ = 0.5, tested at other σ"))
    return rec


if __name__ == "__main__":
    common.run(main)
