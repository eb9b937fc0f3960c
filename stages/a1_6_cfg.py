"""Report 5A §1.6, classifier-free guidance [A.4] (Ho & Salimans 2022):

    eps_hat = eps_u + gamma (eps_c - eps_u),   gamma = 7,   eps_u from the empty prompt ""

Samples from pure noise, one per prompt: the report's 5 x "a high quality photo"; MNIST one of each digit.
Outputs in outputs/a1_6_cfg/: samples.png (DeepFloyd: the 64 px stage-I row above the 256 px one) and samples.pt
(labels = the digits with MNIST). With digits, the class
accuracy and the Fréchet distance against gamma (MEASURED samples of each digit from other seeds, minidiff.evaluate
with the Part B judges): more guidance draws the asked digit more often, and the same few ways (metrics.json).
"""
import torch

import common
import part_a
from minidiff import evaluate, viz
from minidiff.sampling import iterative_denoise

GAMMA = 7.0                                                                       # §1.6
PROMPTS = {"photos": ["a high quality photo"] * 5, "digits": [str(d) for d in range(10)]}
GAMMAS = (0.0, 1.0, 3.0, 5.0, 7.0)                                                # the measured sweep


def main(argv=None):
    args, dev, gen, backbone, rec = part_a.setup(__doc__, "a1_6_cfg", argv, image=None)
    prompts = part_a.pick(args, backbone, PROMPTS)
    x = part_a.noise(backbone, len(prompts), dev, gen)
    x = iterative_denoise(part_a.eps_fn_for(backbone, prompts, GAMMA), backbone.schedule, x, backbone.timesteps,
                          generator=gen, progress=True)
    images = backbone.to_unit(backbone.upsample(x, prompts))
    rows, row_titles, extra = part_a.stage_rows(backbone, x, images)          # IF: 64 px above 256 px
    rec.wrote(viz.save_table(rows, rec.out / "samples.png", col_titles=[part_a.title(p) for p in prompts],
                             row_titles=row_titles, title=f"§1.6 CFG, gamma = {GAMMA:g} ({backbone.name})"))
    part_a.save_samples(rec, images, prompts, **extra)
    judged = part_a.judges(backbone, dev, rec)
    if judged is not None:                                     # accuracy vs gamma, on fresh seeds
        digits = torch.arange(10).repeat(part_a.MEASURED)
        for gamma in GAMMAS:
            g = common.generator(args.seed + 1, dev)                             # the same noise for every gamma
            x = iterative_denoise(part_a.eps_fn_for(backbone, [str(int(d)) for d in digits], gamma),
                                  backbone.schedule, part_a.noise(backbone, len(digits), dev, g), backbone.timesteps,
                                  generator=g)
            m = evaluate.evaluate_samples(judged, backbone.to_unit(x), digits)
            rec.metrics[f"gamma_{gamma:g}"] = m.__dict__
            rec.notes.append(f"gamma = {gamma:g}: {m}")
        rec.write_metrics()
    return rec


if __name__ == "__main__":
    common.run(main)
