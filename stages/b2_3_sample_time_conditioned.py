"""Report 5B §2.3: sampling from the time-conditioned DDPM after 5 and 20 epochs (quick profile: 1 and 3).

DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) over all T = 300 steps from pure noise.
Outputs in outputs/b2_3_sample_time_conditioned/:
  samples_epoch{e}.png   a grid of samples per snapshot
  denoising_epoch{e}.gif the reverse process of those samples, every 10th step
  autoguided.png         beyond the report: the last snapshot's samples, and the same noise autoguided by the first
                         snapshot (Karras et al. 2024; --autoguidance W, 1 to skip)
  metrics.json           the quality of 1000 samples (quick: 200, of the last snapshot only; and autoguided), measured
                         by independent classifiers (minidiff.evaluate): their mean confidence and the Fréchet distance
                         with its floor
  samples.pt             {"images": (N, 1, 28, 28) in [0, 1]} from the last epoch
"""
import common
import part_b
from minidiff import ddpm


def main(argv=None):
    args = part_b.add_sampling_args(common.parser(__doc__), "b2_2").parse_args(argv)
    rec = common.record(args, "b2_3_sample_time_conditioned")

    def draw(model, x_T, digits, generator, callback, autoguide=None):    # Algorithm 2, all T = 300 steps
        return ddpm.sample(model, x_T, generator=generator, callback=callback, progress=True, autoguide=autoguide)
    return part_b.sample_time_model(args, rec, "time", draw, ddpm.NUM_STEPS, "time-conditioned UNet")


if __name__ == "__main__":
    common.run(main)
