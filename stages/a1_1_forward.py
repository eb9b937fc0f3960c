"""Report 5A §1.1, the forward process [A.1]: a test image noised to t = 250, 500, 750 (of T = 1000).

    x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps        (Ho et al. 2020, eq. 4)

Figure: outputs/a1_1_forward/forward.png, one row per test image: the original, then x_t at the three levels.
With --backbone mnist the levels are the same fractions of T = 300 (t = 75, 150, 225).
"""
import common
import part_a
from minidiff import viz

NOISE_FRACTIONS = (0.25, 0.5, 0.75)   # §1.1: t = 250, 500, 750 of T = 1000


def main(argv=None):
    args, dev, gen, backbone, rec = part_a.setup(__doc__, "a1_1_forward", argv, prompt=None)
    ts = part_a.noise_levels(backbone, NOISE_FRACTIONS)
    rows, names = [], []
    for name, x0 in part_a.inputs(args, backbone):
        rows.append([backbone.to_unit(x)[0] for x in [x0] + part_a.noised_series(backbone, x0, ts, gen)])
        names.append(name)
    rec.wrote(viz.save_table(rows, rec.out / "forward.png", col_titles=["original"] + [f"t = {t}" for t in ts],
                             row_titles=names, title=f"§1.1 forward process [A.1] ({backbone.name})"))
    return rec


if __name__ == "__main__":
    common.run(main)
