"""Report 5A §1.3, one-step denoising: the UNet's noise estimate removed in one go (Ho et al. 2020, eq. 15),

    x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t),   eps_hat = eps_theta(x_t, t, "a high quality photo")

Figure: outputs/a1_3_one_step_denoising/one_step.png, per test image a row of the §1.1 noisy images and a row
of their one-step estimates, beside the original. MNIST uses the unconditional "" as its generic prompt.
"""
import common
import part_a
from minidiff import viz
from minidiff.sampling import one_step_denoise

NOISE_FRACTIONS = (0.25, 0.5, 0.75)                                     # §1.1: t = 250, 500, 750 of T = 1000
PROMPT = {"photos": ["a high quality photo"], "digits": [""]}        # §1.3, no CFG


def main(argv=None):
    args, dev, gen, backbone, rec = part_a.setup(__doc__, "a1_3_one_step_denoising", argv, prompt=1)
    ts = part_a.noise_levels(backbone, NOISE_FRACTIONS)
    prompt = part_a.pick(args, backbone, PROMPT)[0]
    eps_fn = part_a.eps_fn_for(backbone, prompt)
    rows, names = [], []
    for name, x0 in part_a.inputs(args, backbone):
        noisy = part_a.noised_series(backbone, x0, ts, gen)
        clean = [one_step_denoise(eps_fn, backbone.schedule, x, t) for x, t in zip(noisy, ts)]
        rows += [[backbone.to_unit(x)[0] for x in [x0] + noisy], [backbone.to_unit(x)[0] for x in [x0] + clean]]
        names += [f"{name}: noisy", f"{name}: one-step"]
    rec.wrote(viz.save_table(rows, rec.out / "one_step.png", col_titles=["original"] + [f"t = {t}" for t in ts],
                             row_titles=names, title=f"§1.3 one-step denoising, {part_a.title(prompt)} "
                                                     f"({backbone.name})"))
    return rec


if __name__ == "__main__":
    common.run(main)
