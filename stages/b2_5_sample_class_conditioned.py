"""Report 5B §2.4 (sampling): the class-conditioned DDPM with classifier-free guidance, gamma = 5 (quick profile: 3).

For each snapshot (after 5 and 20 epochs; quick profile: 1 and 4): 4 samples of every digit and their denoising
GIF; and the quality measured by an independent classifier (minidiff.evaluate) on a larger batch of which those are
the first 4 rows (100 samples per digit; quick profile: the last snapshot only, 20 per digit).
Outputs in outputs/b2_5_sample_class_conditioned/:
  samples_epoch{e}.png   4 rows x 10 digits
  denoising_epoch{e}.gif the reverse process, every 10th of the 300 steps
  metrics.json           class accuracy, confidence and Fréchet distance per snapshot
  samples.pt             {"images": (N, 1, 28, 28) in [0, 1], "labels": (N,)} from the last epoch
"""
import common
import part_b
from minidiff import ddpm


def main(argv=None):
    args = part_b.add_sampling_args(common.parser(__doc__), "b2_4", classes=True).parse_args(argv)
    rec = common.record(args, "b2_5_sample_class_conditioned")
    gamma = part_b.class_gamma(args)                                   # report 5B §2.4: 5; quick: 3

    def draw(model, x_T, digits, generator, callback):                # Algorithm 2 with CFG, all T = 300 steps
        return ddpm.sample(model, x_T, digits, gamma, generator, callback=callback, progress=True,
                           guide_below=args.guide_below)
    return part_b.sample_class_model(args, rec, "class", draw, ddpm.NUM_STEPS,
                                     f"class-conditioned, γ = {gamma:g}{part_b.interval_title(args)}")


if __name__ == "__main__":
    common.run(main)
