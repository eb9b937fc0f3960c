"""Report 5B §1.2: the noising process used to train the single-step denoiser.

A training digit x is corrupted as z = x + sigma * eps, eps ~ N(0, I)  [B.2], for sigma = 0, 0.2, ..., 1.
Figure: outputs/b1_2_noising/noising.png (one row of the same digit at increasing sigma).
"""
import torch

import common
from minidiff import viz
from minidiff.data import load_mnist

SIGMAS = [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0]   # report 5B §1.2, Figure 3


def main(argv=None):
    args = common.parser(__doc__).parse_args(argv)
    rec = common.record(args, "b1_2_noising")
    g = common.generator(args.seed, torch.device("cpu"))
    images, labels = load_mnist(train=True)
    rows = []
    for k in range(3):                                                   # three digits, one per row
        x = images[k].float().div(255).unsqueeze(0)                      # (1, 28, 28) in [0, 1]
        eps = torch.randn(x.shape, generator=g)
        rows.append([(x + s * eps).clamp(0, 1) for s in SIGMAS])         # z = x + sigma * eps  [B.2]
    rec.wrote(viz.save_table(rows, rec.out / "noising.png", col_titles=[f"σ = {s}" for s in SIGMAS],
                             row_titles=[f"digit {int(labels[k])}" for k in range(3)],
                             title="z = x + σ ε (report 5B §1.2)"))
    return rec


if __name__ == "__main__":
    common.run(main)
