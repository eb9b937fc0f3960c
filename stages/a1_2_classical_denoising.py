"""Report 5A §1.2, classical denoising: the §1.1 noisy images smoothed by a Gaussian blur.

A low-pass filter removes the high-frequency noise, and the image's own detail with it.
Figure: outputs/a1_2_classical_denoising/blur.png, per test image a row of x_t (t = 250, 500, 750 of T = 1000;
MNIST 75, 150, 225 of 300) and a row of their blurs (guidance.gaussian_blur).
"""
import common
import part_a
from minidiff import viz

NOISE_FRACTIONS = (0.25, 0.5, 0.75)               # §1.1 / §1.2: t = 250, 500, 750 of T = 1000


def main(argv=None):
    args, dev, gen, backbone, rec = part_a.setup(__doc__, "a1_2_classical_denoising", argv,
                                                  part_a.add_blur_option, prompt=None)
    ts = part_a.noise_levels(backbone, NOISE_FRACTIONS)
    sigma = part_a.option(args, backbone, part_a.BLUR_SIGMA, "blur_sigma")
    rows, names = [], []
    for name, x0 in part_a.inputs(args, backbone):
        noisy = part_a.noised_series(backbone, x0, ts, gen)
        rows += [[backbone.to_unit(x)[0] for x in noisy],
                 [backbone.to_unit(part_a.blur(args, backbone, x))[0] for x in noisy]]
        names += [f"{name}: noisy", f"{name}: blurred"]
    rec.wrote(viz.save_table(rows, rec.out / "blur.png", col_titles=[f"t = {t}" for t in ts], row_titles=names,
                             title=f"§1.2 Gaussian blur, kernel {part_a.BLUR_KERNEL}, sigma {sigma} "
                                   f"({backbone.name})"))
    return rec


if __name__ == "__main__":
    common.run(main)
