"""2025 course §2.6: sampling the class-conditioned flow UNet with CFG on the velocity, gamma = 5 (quick profile: 3).

    u = u_u + gamma (u_c - u_u),   Euler in N = 300 steps from t = 0 to 1    (flow.sample; quick profile: N = 50)

For each snapshot (after 1, 5 and 10 epochs; quick profile: 1 and 2): 4 samples of every digit and their GIF; and the
quality measured by an independent classifier (minidiff.evaluate) on a larger batch of which those are the first 4
rows (100 samples per digit; quick profile: the last snapshot only, 20 per digit).
Outputs in outputs/fm2_6_sample_class_conditioned/:
  samples_epoch{e}.png   4 rows x 10 digits
  denoising_epoch{e}.gif the integration, every 10th step
  metrics.json           class accuracy, confidence and Fréchet distance per snapshot
  samples.pt             {"images": (N, 1, 28, 28) in [0, 1], "labels": (N,)} from the last epoch
"""
import common
import part_b
from minidiff import flow


def main(argv=None):
    p = part_b.add_sampling_args(common.parser(__doc__), "fm2_5", classes=True)
    p.add_argument("--steps", type=common.integer(1), help=f"Euler steps (default: the course's {flow.NUM_STEPS['class']}; "
                                             f"quick: {part_b.QUICK_FLOW_STEPS})")
    args = p.parse_args(argv)
    rec = common.record(args, "fm2_6_sample_class_conditioned")

    steps, gamma = part_b.flow_class_steps(args), part_b.class_gamma(args)      # course: 300 and 5; quick: 50 and 3

    def draw(model, x0, digits, generator, callback):                  # Euler with CFG, no noise drawn
        return flow.sample(model, x0, digits, gamma, steps, callback=callback, progress=True,
                           guide_below=args.guide_below)
    return part_b.sample_class_model(args, rec, "flow_class", draw, steps,
                                     f"class-conditioned flow, γ = {gamma:g}{part_b.interval_title(args)}")


if __name__ == "__main__":
    common.run(main)
