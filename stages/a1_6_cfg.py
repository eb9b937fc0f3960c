"""Report 5A §1.6, classifier-free guidance [A.4] (Ho & Salimans 2022):

    eps_hat = eps_u + gamma (eps_c - eps_u),   gamma = 7,   eps_u from the empty prompt ""

Samples from pure noise, one per prompt: the report's 5 x "a high quality photo"; MNIST one of each digit.
Outputs in outputs/a1_6_cfg/: samples.png and samples.pt (labels = the digits with MNIST).
"""
import common
import part_a
from minidiff import viz
from minidiff.sampling import iterative_denoise

GAMMA = 7.0                                                                       # §1.6
PROMPTS = {"photos": ["a high quality photo"] * 5, "digits": [str(d) for d in range(10)]}


def main(argv=None):
    args, dev, gen, backbone, rec = part_a.setup(__doc__, "a1_6_cfg", argv, image=None)
    prompts = part_a.pick(args, backbone, PROMPTS)
    x = part_a.noise(backbone, len(prompts), dev, gen)
    x = iterative_denoise(part_a.eps_fn_for(backbone, prompts, GAMMA), backbone.schedule, x, backbone.timesteps,
                          generator=gen, progress=True)
    images = backbone.to_unit(backbone.upsample(x, prompts))
    rec.wrote(viz.save_table([list(images)], rec.out / "samples.png", col_titles=[part_a.title(p) for p in prompts],
                             title=f"§1.6 CFG, gamma = {GAMMA:g} ({backbone.name})"))
    part_a.save_samples(rec, images, prompts)
    return rec


if __name__ == "__main__":
    common.run(main)
