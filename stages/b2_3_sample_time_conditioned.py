"""Report 5B §2.3: sampling from the time-conditioned DDPM after 5 and 20 epochs (quick profile: 1 and 2).

DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) over all T = 300 steps from pure noise.
Outputs in outputs/b2_3_sample_time_conditioned/:
  samples_epoch{e}.png   a grid of samples per snapshot
  denoising_epoch{e}.gif the reverse process of those samples, every 10th step
  samples.pt             {"images": (N, 1, 28, 28) in [0, 1]} from the last epoch
"""
import torch

import common
import part_b
from minidiff import ddpm, viz
from minidiff.data import save_samples
from minidiff.train import load_model

NUM_SAMPLES = 40


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--checkpoint", help="the training checkpoint.pt (default: the b2_2 stage's)")
    p.add_argument("--num-samples", type=int, default=NUM_SAMPLES, help="samples per snapshot")
    args = p.parse_args(argv)
    rec = common.record(args, "b2_3_sample_time_conditioned")
    dev = common.device(args.device)
    for epoch, path in part_b.trained_run(args, "time", rec).weights:
        model = load_model(path, dev)
        gen = common.generator(args.seed, dev)
        x_T = torch.randn((args.num_samples, 1, 28, 28), generator=gen, device=dev)        # Algorithm 2, line 1
        frames, keep = part_b.gif_frames(x_T)
        images = ddpm.sample(model, x_T, generator=gen, callback=keep, progress=True)
        rec.wrote(viz.save_grid(images, rec.out / f"samples_epoch{epoch}.png", nrow=10,
                                title=f"time-conditioned UNet, epoch {epoch}"))
        rec.wrote(viz.save_gif(frames, rec.out / f"denoising_epoch{epoch}.gif", nrow=10))
    rec.wrote(save_samples(rec.out / "samples.pt", images))
    return rec


if __name__ == "__main__":
    common.run(main)
