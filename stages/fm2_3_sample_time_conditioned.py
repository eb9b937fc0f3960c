"""2025 course §2.3: sampling the time-conditioned flow UNet after 1, 5 and 10 epochs (quick profile: 1 and 3).

Euler integration of the learned velocity from pure noise at t = 0 to the digits at t = 1 in N = 50 steps,
x <- x + (1 / N) u_theta(x, t) (flow.sample). Outputs in outputs/fm2_3_sample_time_conditioned/:
  samples_epoch{e}.png   a grid of samples per snapshot
  denoising_epoch{e}.gif the integration of those samples, every 10th step
  autoguided.png         beyond the course: the last snapshot's samples, and the same noise autoguided by the first
                         snapshot (Karras et al. 2024; --autoguidance W, 1 to skip)
  metrics.json           the quality of 1000 samples (quick: 200, of the last snapshot only; and autoguided), measured
                         by independent classifiers (minidiff.evaluate): their mean confidence and the Fréchet distance
                         with its floor
  samples.pt             {"images": (N, 1, 28, 28) in [0, 1]} from the last epoch
"""
import common
import part_b
from minidiff import flow


def main(argv=None):
    p = part_b.add_sampling_args(common.parser(__doc__), "fm2_2")
    p.add_argument("--steps", type=common.integer(1), default=flow.NUM_STEPS["time"], help="Euler steps (default: %(default)s)")
    args = p.parse_args(argv)
    rec = common.record(args, "fm2_3_sample_time_conditioned")

    def draw(model, x0, digits, generator, callback, autoguide=None):  # Euler, no noise drawn
        return flow.sample(model, x0, num_steps=args.steps, callback=callback, progress=True, autoguide=autoguide)
    return part_b.sample_time_model(args, rec, "flow_time", draw, args.steps, "time-conditioned flow UNet")


if __name__ == "__main__":
    common.run(main)
